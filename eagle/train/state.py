"""Checkpoints of a training run, all written atomically (temporary folder, then rename).

    <savedir>/state_<e>/     after epoch e: the draft in the engines' format (config.json,
                             model.safetensors; `EaModel.from_pretrained(ea_model_path=...)` loads it),
                             metrics.json, train_config.json, trainer_state.json
    <savedir>/resume/        the newest resumable state, every --save_steps steps and at each
                             epoch end: the draft in float32, optimizer.pt (optimizer, scheduler, RNG),
                             trainer_state.json (epoch, step in epoch, sums so far), train_config.json

Only `resume/` carries optimizer state, so the per-epoch folders stay the size of the draft. A run
killed while writing leaves the previous `resume/` in place (or, killed inside the final rename,
as `.resume.old`, which `find_resume` also accepts).
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from eagle.model.checkpoint import replace_dir, save_draft, share_permissions
from eagle.model.draft import Eagle3Draft
from eagle.train.config import TrainConfig

RESUME = "resume"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"


@dataclass
class TrainerState:
    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # optimizer steps done in it
    global_step: int = 0
    global_batch: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0  # training time, cache building and tests excluded
    epoch_seconds: float = 0.0  # the same within the epoch in progress
    base_fingerprint: str = ""
    train_sums: dict | None = None  # Sums.to_dict() of the epoch so far
    history: list = field(default_factory=list)  # per-epoch metrics

    def save(self, directory: Path) -> None:
        (directory / TRAINER_STATE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "TrainerState":
        return cls(**json.loads((directory / TRAINER_STATE).read_text()))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tmpdir(savedir: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=savedir))


def _publish(folder: Path, dst: Path) -> None:
    """Give the folder normal permissions, then swap it in."""
    share_permissions(folder)
    replace_dir(folder, dst)


def check_writable(savedir: str | Path) -> Path:
    """Create savedir and prove a file can be written there, before any long work."""
    from eagle.train.dataset import TrainError

    p = Path(savedir)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{random.getrandbits(32):08x}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise TrainError(f"--savedir {savedir} is not writable: {e.strerror or e}") from None
    return p


def clean_stale(savedir: Path) -> None:
    """Remove temporary folders a killed run left behind (never read: only renamed ones count)."""
    for p in savedir.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def draft_copy(draft: Eagle3Draft, dtype: torch.dtype) -> Eagle3Draft:
    """A CPU copy in `dtype` (integer buffers d2t/t2d keep theirs)."""
    return copy.deepcopy(draft).to(device="cpu", dtype=dtype)


def save_epoch(savedir: Path, epoch: int, draft: Eagle3Draft, dtype: torch.dtype, metrics: dict,
               cfg: TrainConfig, state: TrainerState) -> Path:
    dst = savedir / f"state_{epoch}"
    tmp = _tmpdir(savedir, dst.name)
    try:
        save_draft(draft_copy(draft, dtype), tmp / "ckpt")
        (tmp / "ckpt" / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        cfg.save(tmp / "ckpt" / "train_config.json")
        state.save(tmp / "ckpt")
        _publish(tmp / "ckpt", dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def save_resume(savedir: Path, draft: Eagle3Draft, training: dict, cfg: TrainConfig, state: TrainerState,
                write_extra=None) -> Path:
    """`training`: optimizer/scheduler/scaler state dicts (plain PyTorch) or {} (DeepSpeed writes
    its own through `write_extra(folder)`)."""
    dst = savedir / RESUME
    tmp = _tmpdir(savedir, RESUME)
    try:
        folder = tmp / "ckpt"
        save_draft(draft_copy(draft, torch.float32), folder)
        torch.save({**training, "rng": rng_state()}, folder / OPTIMIZER)
        if write_extra is not None:
            write_extra(folder)
        cfg.save(folder / "train_config.json")
        state.save(folder)
        _publish(folder, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def find_resume(savedir: str | Path) -> Path | None:
    savedir = Path(savedir)
    for name in (RESUME, f".{RESUME}.old"):
        p = savedir / name
        if (p / TRAINER_STATE).is_file() and (p / OPTIMIZER).is_file():
            return p
    return None


def load_training(directory: Path) -> dict:
    return torch.load(directory / OPTIMIZER, map_location="cpu", weights_only=False)


def epoch_dirs(savedir: str | Path) -> list[Path]:
    dirs = [p for p in Path(savedir).glob("state_*") if p.name[6:].isdigit() and (p / "config.json").is_file()]
    return sorted(dirs, key=lambda p: int(p.name[6:]))
