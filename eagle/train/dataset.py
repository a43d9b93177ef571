"""Training samples from JSONL files, checked before any long work, and the draft vocabulary.

The data stage (`eagle.data`) owns formats and tokenisation; `encode` is the one adapter.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from eagle.data import check_format, encode_record, iter_records


class TrainError(RuntimeError):
    """A problem with the user's input or setup; the message says what and how to fix it."""


@dataclass
class Sample:
    input_ids: list[int]
    loss_mask: list[int]
    truncated: bool = False

    @property
    def num_targets(self) -> int:
        # a target x_i needs the feature at i-2 and the token at i-1 (input pairing, DESIGN §2)
        return sum(self.loss_mask[2:])

    @property
    def num_positions(self) -> int:
        """Targets without the loss mask (--context_targets): every x_i from i = 2 on."""
        return max(len(self.input_ids) - 2, 0)


def encode(record: dict, tokenizer, data_format: str, max_length: int) -> Sample:
    """The adapter to `eagle.data`: one record -> ids and a loss mask of equal length."""
    s = encode_record(record, tokenizer, data_format, max_length)
    return Sample(list(s.input_ids), list(s.loss_mask), bool(getattr(s, "truncated", False)))


def resolve_format(path: str | Path, data_format: str) -> str:
    """Refuse a file whose records are not `data_format` ('auto' takes the file's), or no file."""
    try:
        return check_format(path, data_format)
    except ValueError as e:
        raise TrainError(str(e)) from None


def load_samples(path: str | Path, tokenizer, data_format: str, max_length: int) -> list[Sample]:
    samples = []
    try:
        for lineno, record in iter_records(path, data_format):
            try:
                samples.append(encode(record, tokenizer, data_format, max_length))
            except ValueError as e:
                raise TrainError(f"{path}:{lineno}: {e}") from None
    except TrainError:
        raise
    except ValueError as e:  # DataError: bad JSON, missing key, empty file
        raise TrainError(str(e)) from None
    return samples


def check_samples(samples: list[Sample], path: str | Path, max_length: int, split: str) -> None:
    """Stop early on data that cannot train or test anything."""
    if not samples:
        raise TrainError(f"{path}: the {split} set is empty")
    if sum(s.num_targets for s in samples) == 0:
        hint = ""
        if all(s.truncated for s in samples):
            hint = (f"; every sample is longer than --max_length {max_length} and was cut before its "
                    "targets: raise --max_length")
        raise TrainError(f"{path}: no trainable tokens in the {split} set (no loss-masked token after "
                         f"the second position){hint}")
    if split == "train" and all(s.truncated for s in samples):
        longest = max(len(s.input_ids) for s in samples)
        raise TrainError(f"{path}: every one of the {len(samples)} training samples is longer than "
                         f"--max_length {max_length} (all were cut to {longest} tokens); raise --max_length")


def sample_digest(sample: Sample) -> bytes:
    """Identity of one sample's token ids (32 bytes): the feature cache finds a sample it holds by it."""
    return hashlib.sha256(torch.tensor(sample.input_ids, dtype=torch.int64).numpy().tobytes()).digest()


def samples_digest(samples: list[Sample]) -> str:
    """Identity of tokenised data, for the feature cache's validity check."""
    h = hashlib.sha256()
    for s in samples:
        h.update(torch.tensor(s.input_ids, dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()


def build_vocab(samples: list[Sample], vocab_size: int, draft_vocab_size: int) -> torch.Tensor:
    """The draft vocabulary (DESIGN §2): the `draft_vocab_size` most frequent target tokens.

    Targets are the loss-masked tokens. When they hold fewer distinct tokens, the rest is filled by
    the most frequent other tokens of the data, then by the lowest ids, so the size is exact.
    Ties break by id, so every process builds the same mapping. Returns sorted base ids [Vd].
    """
    targets, others = Counter(), Counter()
    for s in samples:
        for t, m in zip(s.input_ids, s.loss_mask):
            (targets if m else others)[t] += 1
    chosen: list[int] = []
    seen: set[int] = set()
    for counter in (targets, others):
        for t, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(chosen) == draft_vocab_size:
                break
            if t not in seen and 0 <= t < vocab_size:
                chosen.append(t)
                seen.add(t)
    t = 0
    while len(chosen) < draft_vocab_size:
        if t not in seen:
            chosen.append(t)
            seen.add(t)
        t += 1
    return torch.tensor(sorted(chosen), dtype=torch.long)


def vocab_coverage(samples: list[Sample], target_ids: torch.Tensor) -> float:
    """Share of target tokens that the draft vocabulary holds."""
    keep = set(target_ids.tolist())
    total = hit = 0
    for s in samples:
        for t, m in zip(s.input_ids, s.loss_mask):
            if m:
                total += 1
                hit += t in keep
    return hit / max(total, 1)


# Batches are padded to a multiple of this many tokens, and the TTT subsets and loss chunks are
# rounded the same way (eagle.train.ttt). On CPUs oneDNN compiles and caches a matmul per shape (up to
# 1,024, each holding its own scratch memory): with every batch a new shape, training spent its steps
# compiling and its process grew by ~15 MB/s (2 GB to 15 GB over an epoch of the --full recipe, the
# step 3 s to 7 s). Right padding changes nothing the loss sees (causal attention; padded positions
# and rows are never trained).
SHAPE_MULTIPLE = 32


def round_up(n: int, multiple: int = SHAPE_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def pad_batch(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids [B, S], loss mask [B, S] and lengths [B], right-padded to S = the longest sample rounded up
    to SHAPE_MULTIPLE. Right padding with causal attention leaves every real position untouched."""
    lengths = torch.tensor([len(s.input_ids) for s in samples])
    s_max = round_up(int(lengths.max()))
    ids = torch.zeros(len(samples), s_max, dtype=torch.long)
    mask = torch.zeros(len(samples), s_max, dtype=torch.bool)
    for i, s in enumerate(samples):
        ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
        mask[i, : len(s.loss_mask)] = torch.tensor(s.loss_mask, dtype=torch.bool)
    return ids, mask, lengths
