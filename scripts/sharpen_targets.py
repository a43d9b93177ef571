"""`eagle train` against a sharpened target: the base's draft-vocabulary logits divided by T < 1
before the softmax, so the soft cross-entropy leans toward the base's greedy pick.

    TARGET_T=0.5 python scripts/sharpen_targets.py --basepath qwen2.5-coder-0.5b --trainpath ... [eagle train flags]

An experiment, not a training flag: greedy acceptance only needs the draft to rank the base's pick
first, and a third of this base's chat tokens are near-ties (scripts/vocab_coverage.py), so a target
that favours the pick might rank it first more often. Measured Dec 7 (docs/training.md, "What is
trained"): chat τ 2.98 at T = 0.5 and 2.96 at T = 0.2 against 2.93 at T = 1, within the noise of 40
prompts, and a sharpened draft no longer matches the base's distribution, which sampling needs.
The test figures use the same target, so their pLoss is not comparable with a T = 1 run's.
"""

from __future__ import annotations

import os
import sys

import torch

from eagle.train import ttt
from eagle.train.cli import main


def sharpened(temperature: float):
    base_log_probs = ttt.TargetHead.log_probs

    def log_probs(self: ttt.TargetHead, hidden: torch.Tensor) -> torch.Tensor:
        # log_softmax(z) is z less a constant, so this is log_softmax(z / T) of the base's logits z
        return torch.log_softmax(base_log_probs(self, hidden) / temperature, -1)
    return log_probs


if __name__ == "__main__":
    raw = os.environ.get("TARGET_T", "0.5")
    try:
        t = float(raw)
    except ValueError:
        t = float("nan")
    if not t > 0:  # also refuses nan
        sys.exit(f"error: TARGET_T must be a number > 0, got {raw!r}")
    ttt.TargetHead.log_probs = sharpened(t)
    sys.exit(main(sys.argv[1:], prog="sharpen_targets.py"))
