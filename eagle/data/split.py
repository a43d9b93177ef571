"""Train/test split of a JSONL file (tutorial step 5.1.2, `split_dataset`)."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from .records import iter_records


@dataclass
class SplitResult:
    train: int
    test: int
    train_file: Path
    test_file: Path


def split_dataset(input_file: str | Path, train_ratio: float = 0.95,
                  train_file: str | Path = "train.jsonl", test_file: str | Path = "test.jsonl",
                  seed: int | None = None) -> SplitResult:
    """Shuffle the records of `input_file` and write the first `train_ratio` to `train_file`.

    As in the tutorial: files default to train.jsonl/test.jsonl in the current folder, and it
    prints ``Train: N, Test: M``. Unlike it: the file is checked as the trainer loads it (a bad
    line raises DataError naming file and line, before anything is written), blank lines are
    dropped, each record is written as one line, and `seed` makes the split repeatable (None: random).
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    train_file, test_file = Path(train_file), Path(test_file)
    if Path(input_file).resolve() in (train_file.resolve(), test_file.resolve()):
        raise ValueError(f"{input_file}: the split would overwrite its own input; write it to another folder")
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for _, record in iter_records(input_file)]
    random.Random(seed).shuffle(lines) if seed is not None else random.shuffle(lines)
    split = int(len(lines) * train_ratio)
    for path, part in ((train_file, lines[:split]), (test_file, lines[split:])):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(part)
    print(f"Train: {split}, Test: {len(lines) - split}")
    if not split or split == len(lines):
        print(f"warning: {len(lines)} records at train_ratio {train_ratio} leave one side empty; "
              "training needs both", file=sys.stderr)
    return SplitResult(split, len(lines) - split, train_file, test_file)
