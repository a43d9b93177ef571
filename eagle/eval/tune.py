"""Base forward times by token count, and a tree size chosen from them for this hardware.

Speculative decoding pays when verifying T tree tokens costs little more than one token. On a GPU
that holds up to ~60 tokens; on a CPU the cost starts growing much earlier (DESIGN.md §5), so the
tree size must follow the hardware. `forward_times` measures one base forward over n new tokens at
a given context, exactly as the decoding loops call it, sizes interleaved; `suggest_tree` turns the table into a
`total_token`.

The rule (docs/benchmark.md): with cost(T) = time(T) / time(1) and an acceptance model
τ(T) = min(1 + gain · log2 T, depth + 1) (each doubling of the tree buys about `gain` more
accepted tokens, with diminishing returns, as EAGLE-2's trees show), pick the T of largest
ceiling τ(T) / cost(T): the tree grows while the next doubling's extra verify cost is smaller
than its expected acceptance gain.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from eagle.model.generate import tree_attention_mask
from eagle.model.kv_cache import new_base_cache
from eagle.model.tree import ancestor_matrix

SIZES = (1, 2, 4, 8, 16, 32, 64)


def _tree_shape(n: int, branching: int = 4, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ancestors [n, n], depths [n]) of a breadth-first tree: node i's parent is (i-1)//branching."""
    parents = torch.tensor([0] + [(i - 1) // branching for i in range(1, n)], dtype=torch.long, device=device)
    anc = ancestor_matrix(parents, max_depth=n)
    return anc, anc.sum(1) - 1


@torch.no_grad()
def forward_times(base, context: int, sizes=SIZES, repeats: int = 5, seed: int = 0) -> dict[int, float]:
    """Median seconds of one base forward over n new tokens after `context` cached tokens.

    n = 1 is a plain decoding step (no mask, as `naive_decode`); n > 1 is a tree verify (4-D tree
    mask, tree positions, hidden states out, as `speculative_decode`). One untimed round first."""
    dev = base.device
    g = torch.Generator().manual_seed(seed)
    vocab = base.get_input_embeddings().weight.shape[0]
    cache = new_base_cache()
    base(input_ids=torch.randint(0, vocab, (1, context), generator=g).to(dev), past_key_values=cache,
         use_cache=True, logits_to_keep=1)
    calls = {}
    for n in sizes:
        tokens = torch.randint(0, vocab, (1, n), generator=g).to(dev)
        if n == 1:
            calls[n] = dict(input_ids=tokens)
        else:
            anc, depths = _tree_shape(n, device=dev)
            mask = tree_attention_mask(base.config, context, anc, base.dtype)
            calls[n] = dict(input_ids=tokens, attention_mask=mask, position_ids=(context + depths)[None],
                            output_hidden_states=True)
    times = {n: [] for n in sizes}
    for i in range(repeats + 1):  # sizes interleaved, so drift on a shared machine hits them alike
        for n in sizes:
            t = time.perf_counter()
            base(past_key_values=cache, use_cache=True, **calls[n])
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                times[n].append(time.perf_counter() - t)
            cache.crop(-n)
    return {n: statistics.median(v) for n, v in times.items()}


def tau_model(tokens: int, gain: float, depth: int) -> float:
    """Expected accepted tokens per verify for a tree of `tokens` nodes (root included)."""
    return min(1.0 + gain * math.log2(max(tokens, 1)), depth + 1.0)


@dataclass
class TreeSuggestion:
    total_token: int
    context: int
    gain: float
    depth: int
    table: list[dict] = field(default_factory=list)  # per size: tokens, ms, cost, tau_model, ceiling
    note: str = ""

    def to_dict(self) -> dict:
        return {"total_token": self.total_token, "context": self.context, "gain": self.gain, "depth": self.depth,
                "rule": "argmax_T min(1 + gain*log2 T, depth+1) / (time(T) / time(1))",
                "table": self.table, "note": self.note}

    def format(self) -> str:
        lines = [f"base forward at context {self.context} (median ms), tau model 1 + {self.gain:g}*log2(T):",
                 f"{'tokens':>7} {'ms':>8} {'cost':>6} {'tau~':>6} {'ceiling':>8}"]
        for r in self.table:
            mark = "  <- total_token" if r["tokens"] == self.total_token else ""
            lines.append(f"{r['tokens']:>7} {r['ms']:>8.1f} {r['cost']:>6.2f} {r['tau_model']:>6.2f} "
                         f"{r['ceiling']:>8.2f}{mark}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def suggest_tree(base, context: int = 256, sizes=SIZES, depth: int = 6, gain: float = 0.5,
                 repeats: int = 5, times: dict[int, float] | None = None) -> TreeSuggestion:
    """Measure (or take `times`) and pick `total_token` by the rule in the module docstring."""
    sizes = tuple(sorted(set(times) if times else set(sizes) | {1}))
    times = times or forward_times(base, context, sizes, repeats)
    one = times[1]
    table = []
    for n in sizes:
        cost = times[n] / one
        tau = tau_model(n, gain, depth)
        table.append({"tokens": n, "ms": times[n] * 1e3, "cost": cost, "tau_model": tau, "ceiling": tau / cost})
    trees = [r for r in table if r["tokens"] >= 2] or table
    best = max(trees, key=lambda r: (round(r["ceiling"], 6), -r["tokens"]))
    note = "" if best["ceiling"] > 1.0 else \
        "no tree size beats plain decoding on this model/hardware under the tau model: expect no speedup"
    return TreeSuggestion(best["tokens"], context, gain, depth, table, note)
