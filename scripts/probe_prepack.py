"""Would blocking the base's bf16 weights for oneDNN once cut the verify cost? A/B in one run.

    python scripts/probe_prepack.py                      # qwen2.5-coder-0.5b, bf16, context 214
    python scripts/probe_prepack.py --sizes 1,12,24 --rounds 6

`F.linear` on bf16 CPU tensors passes oneDNN a plain row-major weight each call; inductor's
freezing pass instead blocks every weight once (`torch.ops.mkldnn._reorder_linear_weight`) and
calls `_linear_pointwise`. This loads the base twice, plain and blocked, and times
`eagle.eval.tune.forward_times` on both, alternating model by model and round by round, so drift
on a shared machine hits both alike. It also checks that both give the same next tokens.
The generation loop does not prepack; this measures whether it should (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import statistics
import types

import torch

from eagle.eval.tune import forward_times
from eagle.model.base import load_base


def _blocked_forward(self, x):
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self._blocked, self.bias, "none", [], "")
    return y.view(*x.shape[:-1], y.shape[-1])


def block_linears(model, batch_hint: int = 32) -> int:
    """Every bf16 nn.Linear gets a oneDNN-blocked copy of its weight (the plain one stays)."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear) and mod.weight.dtype == torch.bfloat16:
            mod._blocked = torch.ops.mkldnn._reorder_linear_weight(mod.weight.detach(), batch_hint)
            mod.forward = types.MethodType(_blocked_forward, mod)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basepath", default="qwen2.5-coder-0.5b")
    ap.add_argument("--context", type=int, default=214, help="tokens already in the cache")
    ap.add_argument("--sizes", default="1,8,12,16,24,32", help="tokens per forward (1 = plain decoding)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no oneDNN bf16 support")
    torch.set_num_threads(args.threads)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    plain = load_base(args.basepath, dtype=torch.bfloat16)
    blocked = load_base(args.basepath, dtype=torch.bfloat16)
    print(f"blocked {block_linears(blocked)} linear layers")
    ms = {"plain": {n: [] for n in sizes}, "blocked": {n: [] for n in sizes}}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, model in (("plain", plain), ("blocked", blocked)):
                for n, s in forward_times(model, args.context, sizes, repeats=3).items():
                    ms[name][n].append(s * 1e3)
        ids = torch.randint(0, plain.config.vocab_size, (1, 200), generator=torch.Generator().manual_seed(1))
        same = (plain(ids).logits.argmax(-1) == blocked(ids).logits.argmax(-1)).float().mean().item()
    med = {name: {n: statistics.median(v) for n, v in d.items()} for name, d in ms.items()}
    print(f"{'tokens':>6} {'plain ms':>9} {'blocked ms':>10} {'blocked/plain':>13} {'cost plain':>10} {'cost blocked':>12}")
    for n in sizes:
        p, b = med["plain"][n], med["blocked"][n]
        print(f"{n:>6} {p:9.1f} {b:10.1f} {b / p:13.2f} {p / med['plain'][sizes[0]]:10.2f} "
              f"{b / med['blocked'][sizes[0]]:12.2f}")
    print(f"same next token on {same:.1%} of 200 positions")


if __name__ == "__main__":
    main()
