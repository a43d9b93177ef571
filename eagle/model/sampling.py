"""Sampling settings and the target distribution p that both decoding loops draw from.

One implementation serves naive decoding and tree verification, so "lossless" has a single meaning:
speculative decoding samples from exactly the `probs()` that plain decoding samples from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] -> [...] argmax ids (the first of equal maxima, as argmax). `max` because on CPU
    bf16 `argmax` over a [24, 152k] verify is 4x slower (8 vs 2 ms, 6% of a decoding cycle); plain
    and speculative decoding both use this, so a tie breaks the same way in both."""
    return logits.max(-1).indices


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.0  # 0 or 1 = off (EAGLE's convention)
    top_k: int = 0  # 0 = off

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1] (0 or 1 = off), got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., V] logits -> the target distribution p (float32) after temperature, top-k, top-p."""
        logits = logits.float() / self.temperature
        if self.top_k > 0:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        p = logits.softmax(-1)
        if 0.0 < self.top_p < 1.0:
            p = p.masked_fill(p < nucleus_floor(p, self.top_p), 0.0)
            p = p / p.sum(-1, keepdim=True)
        return p

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[..., V] -> [...] token ids: argmax when greedy, else a draw from `probs`."""
        if self.greedy:
            return greedy_tokens(logits)
        return draw(self.probs(logits), generator)


def draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[..., V] probabilities -> [...] one token drawn from each row.

    `torch.multinomial` reads the whole row with a random number per entry (4-5 ms over Qwen's 152k
    words on a CPU core, paid per sampled token and per tree step). A row cut by top-p or top-k is
    mostly zeros, so a single row draws among its nonzero entries: the same distribution, 0.3 ms.
    Not on a GPU, where multinomial is cheap and `nonzero` would wait for the device."""
    rows = p.reshape(-1, p.shape[-1])
    if rows.shape[0] == 1 and rows.device.type == "cpu":
        support = rows[0].nonzero().squeeze(-1)
        if support.numel() * 4 < rows.shape[1]:
            return support[torch.multinomial(rows[0, support], 1, generator=generator)].view(p.shape[:-1])
    return torch.multinomial(rows, 1, generator=generator).view(p.shape[:-1])


def nucleus_floor(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """[..., V] probabilities -> [..., 1] the smallest probability the top-p nucleus keeps.

    The nucleus is the most probable tokens, taken in order until the mass before the next one
    reaches top_p (the first always stays); tokens tied with its last member stay too, so the
    set does not depend on how a sort orders equal values. Sorting Qwen's 152k vocabulary costs
    ~18 ms on a CPU core, paid per visited tree node and per sampled token; the nucleus almost
    always lies in the top few hundred, so a top-k grows until it holds top_p of the mass."""
    vocab = p.shape[-1]
    k = min(256, vocab)
    while True:
        top = p.topk(k, dim=-1).values  # sorted, descending
        cum = top.cumsum(-1)
        if k == vocab or bool((cum[..., -1] >= top_p).all()):
            break
        k = min(k * 16, vocab)
    kept = ((cum - top) < top_p).sum(-1, keepdim=True)  # >= 1: the first token's prior mass is 0
    return top.gather(-1, kept - 1)
