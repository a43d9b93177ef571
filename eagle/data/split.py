"""Train/test split of a JSONL file (tutorial step 5.1.2, `split_dataset`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SplitResult:
    train: int
    test: int
    train_file: Path
    test_file: Path


def split_dataset(input_file: str | Path, train_ratio: float = 0.95,
                  train_file: str | Path = "train.jsonl", test_file: str | Path = "test.jsonl",
                  seed: int | None = None) -> SplitResult:
    """Shuffle the lines of `input_file` and write the first `train_ratio` to `train_file`.

    As in the tutorial: files default to train.jsonl/test.jsonl in the current folder, and it
    prints ``Train: N, Test: M``. Unlike it: blank lines are dropped, a last line without a
    newline is not glued to the next one, and `seed` makes the split repeatable (None: random).
    """
    if not 0.0 <= train_ratio <= 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}")
    with open(input_file, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    random.Random(seed).shuffle(lines) if seed is not None else random.shuffle(lines)
    split = int(len(lines) * train_ratio)
    train_file, test_file = Path(train_file), Path(test_file)
    for path, part in ((train_file, lines[:split]), (test_file, lines[split:])):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(part)
    print(f"Train: {split}, Test: {len(lines) - split}")
    return SplitResult(split, len(lines) - split, train_file, test_file)
