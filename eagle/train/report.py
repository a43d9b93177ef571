"""Console lines, `training.log`, and optional wandb / TensorBoard: one object, main process only."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def wandb_logged_in() -> bool:
    """True after `wandb login` (the key lands in ~/.netrc) or with WANDB_API_KEY set: the tutorial
    then expects metrics to go to wandb without a flag (5.1.5). EAGLE_WANDB=0 keeps them local."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Reporter:
    def __init__(self, savedir: Path | None, enabled: bool, wandb: bool = False, wandb_project: str = "eagle-training",
                 tensorboard: bool = False, run_config: dict | None = None):
        self.enabled = enabled
        self.log_file = open(savedir / "training.log", "a", encoding="utf-8") if enabled and savedir else None
        self.wandb = self.tb = None
        if not enabled:
            return
        flag = os.environ.get("EAGLE_WANDB")
        if wandb or flag == "1" or (flag != "0" and wandb_logged_in()):
            try:
                import wandb as wb
            except ImportError:
                self.line("wandb is not installed (pip install wandb==0.31.0): logging locally only")
            else:
                self.wandb = wb.init(project=wandb_project, config=run_config, dir=str(savedir),
                                     resume="allow")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.line("TensorBoard is not installed (pip install tensorboard==2.21.0): skipping it")
            else:
                self.tb = SummaryWriter(str(savedir / "tensorboard"))

    def line(self, text: str) -> None:
        """A line for the console and training.log."""
        if not self.enabled:
            return
        print(text, flush=True)
        if self.log_file:
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def notice(self, text: str) -> None:
        self.line(text)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.log_file:
            self.log_file.close()
            self.log_file = None
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def progress_bar(total: int, initial: int, enabled: bool, desc: str = ""):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc or None, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0)
