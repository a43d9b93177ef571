"""Fit a draft head in-process, with no files: for tests, notebooks and quick experiments.

    draft = train_draft(base, samples, TrainConfig(num_epochs=3, draft_vocab_size=128))
    model = EaModel(base, draft, tokenizer)

The base's features are computed once and kept in memory (the offline mode without a disk), and
the steps are the trainer's own (`Stepper`), so what this fits is what `main.py` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.train.config import TrainConfig
from eagle.train.dataset import Sample, build_vocab
from eagle.train.features import BaseRunner, StoredSource, compute_in_memory
from eagle.train.loop import Sums, micro_batches
from eagle.train.runtime import Runtime


@dataclass
class FitResult:
    draft: Eagle3Draft
    history: list[dict] = field(default_factory=list)  # per epoch: train_acc, train_ploss (+ test_*)


def as_samples(samples) -> list[Sample]:
    """Samples, (input_ids, loss_mask) pairs, or plain id lists (every token a target)."""
    out = []
    for s in samples:
        if isinstance(s, Sample) or hasattr(s, "loss_mask"):
            out.append(Sample(list(s.input_ids), list(s.loss_mask)))
        elif isinstance(s, tuple) and len(s) == 2:
            out.append(Sample(list(s[0]), list(s[1])))
        else:
            ids = [int(t) for t in s]
            out.append(Sample(ids, [1] * len(ids)))
    return out


def fit(base, samples: Sequence, cfg: TrainConfig | None = None, test_samples: Sequence | None = None,
        progress: bool = False) -> FitResult:
    from eagle.train.report import progress_bar
    from eagle.train.trainer import _make_stepper, epoch_order, initial_draft

    cfg = cfg or TrainConfig()
    train_s = as_samples(samples)
    test_s = as_samples(test_samples) if test_samples is not None else []
    device = next(base.parameters()).device
    dtype = next(base.parameters()).dtype
    batch, accum = cfg.batch_size or 2, cfg.grad_accum or 1
    rt = Runtime(0, 1, 0, device, dtype, batch, accum, cfg.max_grad_norm if cfg.max_grad_norm is not None else 0.5,
                 False, None)
    dcfg = DraftConfig.from_base(base.config, cfg.draft_vocab_size, cfg.aux_layers, cfg.draft_intermediate_size)
    target_ids = build_vocab(train_s, dcfg.vocab_size, dcfg.draft_vocab_size)

    runner = BaseRunner(base, dcfg.aux_layer_ids)
    stores = {"train": compute_in_memory(runner, train_s, batch)}
    if test_s:
        stores["test"] = compute_in_memory(runner, test_s, batch)
    source = StoredSource({"train": train_s, "test": test_s}, {k: v.__getitem__ for k, v in stores.items()})

    from eagle.train.ttt import TargetHead

    head = TargetHead.from_base(base, target_ids)
    draft = initial_draft(cfg, dcfg, target_ids, base, head).float().to(device)
    steps_per_epoch = max(1, len(train_s) // rt.global_batch)
    total = steps_per_epoch * cfg.num_epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    stepper = _make_stepper(cfg, rt, draft, head.to(device), base.get_input_embeddings().weight.detach(), total)

    result = FitResult(draft)
    lengths = [len(s.input_ids) for s in train_s]
    step = 0
    bar = progress_bar(total, 0, progress, desc="fit")
    for epoch in range(cfg.num_epochs):
        order = epoch_order(len(train_s), cfg.seed, epoch, lengths if cfg.group_by_length else None, rt.global_batch)
        sums = Sums.zeros(cfg.ttt_length)
        for s in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[s * rt.global_batch:(s + 1) * rt.global_batch]
            r = stepper.step(source, micro_batches(idx, lengths, batch, accum, 1, 0))
            sums.add(r.sums.ploss, r.sums.correct, r.sums.count, r.sums.tokens)
            step += 1
            bar.update(1)
        entry = {"epoch": epoch, "train_acc": sums.acc(), "train_ploss": sums.ploss_mean()}
        if test_s:
            t = stepper.evaluate(source, "test", list(range(len(test_s))), batch)
            entry.update(test_acc=t.acc(), test_ploss=t.ploss_mean())
        result.history.append(entry)
        if step >= total:
            break
    bar.close()
    draft.eval()
    return result


def train_draft(base, samples: Sequence, cfg: TrainConfig | None = None, **overrides) -> Eagle3Draft:
    """Fit a draft head on `samples` in-process and return it (see `fit` for the history).
    `overrides` are TrainConfig fields, e.g. `train_draft(base, ids, num_epochs=5, lr=3e-3)`."""
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides else (cfg or TrainConfig())
    return fit(base, samples, cfg).draft
