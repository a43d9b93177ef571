"""Training curves from the local checkpoints (tutorial step 5.3.1), no wandb account needed.

    eagle eval curves --savedir checkpoints -o training_curves.png

The tutorial's `monitor_training` reads a wandb run's history; the trainer writes the same
figures next to every checkpoint (`state_N/metrics.json`: `train_acc`, `train_ploss`, `test_acc`,
`test_ploss` per TTT position, `lr` and `global_step` at the epoch's end), so the three panels
are drawn from those files:

1. training accuracy at positions 0 and 1, per epoch (test accuracy at position 0 dashed);
2. pLoss at position 0, train against test, per epoch;
3. the learning rate at each epoch's end, against the optimizer step.

The per-step learning rate is in wandb / TensorBoard only (`--wandb` / `--tensorboard` when
training); the epoch-end points show the schedule's shape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

STATE_RE = re.compile(r"^state_(\d+)$")


def state_dirs(savedir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of every `state_N` under savedir, by epoch."""
    savedir = Path(savedir)
    if not savedir.is_dir():
        raise FileNotFoundError(f"--savedir {savedir}: no such folder")
    found = []
    for p in savedir.iterdir():
        m = STATE_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def load_history(savedir: str | Path) -> list[dict]:
    """The metrics.json of every state_N, by epoch (each with its `epoch`)."""
    history = []
    for epoch, folder in state_dirs(savedir):
        f = folder / "metrics.json"
        if not f.is_file():
            continue
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: bad JSON ({e.msg})") from None
        m.setdefault("epoch", epoch)
        history.append(m)
    if not history:
        raise FileNotFoundError(f"no state_N/metrics.json under {savedir}: train first "
                                "(every epoch writes one), or point --savedir at the training output")
    return history


def _series(history: list[dict], key: str, pos: int | None = None) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for m in history:
        v = m.get(key)
        if pos is not None:
            v = v[pos] if isinstance(v, list) and len(v) > pos else None
        if isinstance(v, (int, float)):
            xs.append(m["epoch"])
            ys.append(float(v))
    return xs, ys


def plot_training_curves(history: list[dict], output: str | Path = "training_curves.png") -> Path:
    """The tutorial's three panels, saved as a PNG (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(12, 4))
    try:
        ax = fig.add_subplot(1, 3, 1)
        for pos in (0, 1):
            xs, ys = _series(history, "train_acc", pos)
            if xs:
                ax.plot(xs, ys, marker="o", label=f"Position {pos}")
        xs, ys = _series(history, "test_acc", 0)
        if xs:
            ax.plot(xs, ys, linestyle="--", label="Position 0 (test)")
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Accuracy (%)")
        ax.legend()
        ax.set_title("Training Accuracy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

        ax = fig.add_subplot(1, 3, 2)
        for key, label in (("train_ploss", "Train"), ("test_ploss", "Test")):
            xs, ys = _series(history, key, 0)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Loss")
        ax.legend()
        ax.set_title("Perplexity Loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

        ax = fig.add_subplot(1, 3, 3)
        steps = [(m.get("global_step", m["epoch"]), m["lr"]) for m in history if isinstance(m.get("lr"), (int, float))]
        if steps:
            ax.plot([s for s, _ in steps], [lr for _, lr in steps], marker="o")
        ax.set_xlabel("Step")
        ax.set_ylabel("Learning Rate")
        ax.set_title("Learning Rate Schedule")

        fig.tight_layout()
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output)
    finally:
        plt.close(fig)
    return output


def training_curves(savedir: str | Path, output: str | Path = "training_curves.png") -> Path:
    """Read `savedir`'s metrics and plot them; prints the tutorial's confirmation line."""
    path = plot_training_curves(load_history(savedir), output)
    print(f"✓ Saved {path}")
    return path
