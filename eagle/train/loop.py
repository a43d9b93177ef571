"""One optimizer step and one evaluation pass: the parts shared by the CLI trainer and `train_draft`."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from eagle.model.draft import Eagle3Draft
from eagle.train.features import FeatureSource
from eagle.train.ttt import Prepared, TargetHead, TTTObjective, prepare, step_counts


@dataclass
class Sums:
    """Per-step sums over an epoch or a test pass; turned into the printed Acc and pLoss."""

    ploss: torch.Tensor  # [K] float64
    correct: torch.Tensor  # [K]
    count: torch.Tensor  # [K]
    tokens: int = 0

    @classmethod
    def zeros(cls, k: int) -> "Sums":
        return cls(torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.long),
                   torch.zeros(k, dtype=torch.long))

    def add(self, ploss, correct, count, tokens: int = 0) -> None:
        self.ploss += ploss.detach().cpu().double()
        self.correct += correct.detach().cpu()
        self.count += count.detach().cpu()
        self.tokens += tokens

    def acc(self) -> list[float]:
        return [100.0 * c / n if n else 0.0 for c, n in zip(self.correct.tolist(), self.count.tolist())]

    def ploss_mean(self) -> list[float]:
        return [p / n if n else 0.0 for p, n in zip(self.ploss.tolist(), self.count.tolist())]

    def weighted_loss(self, decay: float) -> float:
        return sum(decay ** j * p for j, p in enumerate(self.ploss_mean()))

    def to_dict(self) -> dict:
        return {"ploss": self.ploss.tolist(), "correct": self.correct.tolist(), "count": self.count.tolist(),
                "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "Sums":
        return cls(torch.tensor(d["ploss"], dtype=torch.float64), torch.tensor(d["correct"]),
                   torch.tensor(d["count"]), int(d["tokens"]))


@dataclass
class StepResult:
    sums: Sums  # this process's
    global_tokens: int  # tokens of the whole global batch


def lr_lambda(total_steps: int, warmup_ratio: float):
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = int(total_steps * warmup_ratio)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def micro_batches(order: list[int], lengths: list[int], batch_size: int, accum: int, world: int,
                  rank: int) -> list[list[int]]:
    """This process's micro-batches of one global batch. Sorting by length first keeps padding low;
    the split only decides who computes what, not the result (the loss is a global sum)."""
    order = sorted(order, key=lambda i: (lengths[i], i))
    return [order[(a * world + rank) * batch_size:(a * world + rank + 1) * batch_size] for a in range(accum)]


@dataclass
class Stepper:
    """Runs optimizer steps of the TTT objective over a feature source."""

    objective: TTTObjective
    model: nn.Module  # objective, or its DDP wrapper, or a DeepSpeed engine
    optimizer: torch.optim.Optimizer | None
    scheduler: object | None
    head: TargetHead
    embed_weight: torch.Tensor  # [V, H] the base's input embedding (frozen)
    device: torch.device
    world: int = 1
    max_grad_norm: float = 0.0
    scaler: object | None = None  # torch.amp.GradScaler for fp16 without DeepSpeed
    deepspeed: bool = False
    all_sum: object = field(default=lambda t: t)
    context: bool = False  # --context_targets, in training steps only: test figures keep the loss mask

    @property
    def draft(self) -> Eagle3Draft:
        return self.objective.draft

    def _prepare(self, source: FeatureSource, split: str, idx: list[int]) -> Prepared:
        context = self.context and split == "train"
        return prepare(source.batch(split, idx), self.embed_weight, self.draft.t2d, self.device, context)

    def step(self, source: FeatureSource, chunks: list[list[int]]) -> StepResult:
        """One optimizer step over this process's micro-batches `chunks` (sample indices)."""
        k = self.objective.ttt_length
        prepared = [self._prepare(source, "train", c) for c in chunks if c]
        local = torch.zeros(k + 1, dtype=torch.long)  # trained positions per step, then tokens
        for p in prepared:
            local[:k] += step_counts(p.valid, k).cpu()
            local[k] += p.tokens
        total = self.all_sum(local)
        denom = total[:k].to(self.device)
        sums = Sums.zeros(k)
        self.draft.train()
        for a, p in enumerate(prepared):
            with torch.no_grad():
                p.target_p = self.head.log_probs(p.hidden_valid).exp()
            last = a == len(prepared) - 1
            # DDP: all-reduce once per step; DeepSpeed counts micro-batches itself
            skip_sync = not last and not self.deepspeed and hasattr(self.model, "no_sync")
            sync = self.model.no_sync() if skip_sync else contextlib.nullcontext()
            with sync:
                out = self.model(p.features, p.embeds, p.valid, p.target_p, p.target_idx, denom, p.draft_ids)
                # DDP and DeepSpeed average gradients over processes (DeepSpeed also over accumulation
                # steps); the objective is a global sum, so undo the averaging.
                if self.deepspeed:
                    self.model.backward(out.loss * self.world * len(chunks))
                    self.model.step()
                else:
                    loss = out.loss * self.world
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
            sums.add(out.ploss_sum, out.correct, out.count, p.tokens)
            p.target_p = None
        if not self.deepspeed:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if self.max_grad_norm and self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.draft.parameters(), self.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return StepResult(sums, int(total[k]))

    @torch.no_grad()
    def evaluate(self, source: FeatureSource, split: str, indices: list[int], batch_size: int) -> Sums:
        """Per-step test sums over `indices` (this process's share)."""
        k = self.objective.ttt_length
        sums = Sums.zeros(k)
        self.draft.eval()
        lengths = [len(source.samples[split][i].input_ids) for i in indices]
        order = [i for _, i in sorted(zip(lengths, indices))]
        ones = torch.ones(k, dtype=torch.long, device=self.device)
        for s in range(0, len(order), batch_size):
            p = self._prepare(source, split, order[s:s + batch_size])
            p.target_p = self.head.log_probs(p.hidden_valid).exp()
            out = self.objective(p.features, p.embeds, p.valid, p.target_p, p.target_idx, ones)
            sums.add(out.ploss_sum, out.correct, out.count, p.tokens)
        self.draft.train()
        return sums

    def current_lr(self) -> float:
        opt = self.optimizer if self.optimizer is not None else getattr(self.model, "optimizer", None)
        return float(opt.param_groups[0]["lr"]) if opt is not None else 0.0
