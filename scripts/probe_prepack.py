"""Does reordering the base's weights once for oneDNN cut forward times? A/B in one run.

    python scripts/probe_prepack.py                              # qwen2.5-coder-0.5b, float32, context 214
    python scripts/probe_prepack.py --dtype bfloat16 --sizes 1,12,24 --rounds 6

Float32 `F.linear` on the CPU goes to MKL's sgemm; bf16 goes to oneDNN with a plain row-major weight.
`eagle.model.cpu_linear.PackedLinear` reorders each weight once into oneDNN's blocked layout
(inductor's freezing pass does the same) and calls `_linear_pointwise`. This loads the base twice,
plain and packed, and times `eagle.eval.tune.forward_times` on both, alternating model by model and
round by round, so drift on a shared machine hits both alike. It also checks that both give the same
next tokens. `load_base` packs float32 bases; these numbers are why (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from eagle.eval.tune import forward_times
from eagle.model.base import dtype_name, fast_dtype, load_base
from eagle.model.cpu_linear import PackedLinear, pack_linears


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basepath", default="qwen2.5-coder-0.5b")
    ap.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="default: this CPU's fast dtype")
    ap.add_argument("--context", type=int, default=214, help="tokens already in the cache")
    ap.add_argument("--sizes", default="1,2,4,8,12,16,24,32", help="tokens per forward (1 = plain decoding)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype) if args.dtype else fast_dtype("cpu")
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no oneDNN bf16 support")
    torch.set_num_threads(args.threads)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    plain = load_base(args.basepath, dtype=dtype)
    for mod in plain.modules():  # load_base packs float32 bases: undo that on the plain side
        if type(mod) is PackedLinear:
            mod.__class__ = nn.Linear
    packed = load_base(args.basepath, dtype=dtype)
    pack_linears(packed)  # bf16 bases are not packed on load
    count = sum(type(m) is PackedLinear for m in packed.modules())
    if not count:
        raise SystemExit("this PyTorch build lacks the oneDNN linear ops")
    print(f"{dtype_name(dtype)}, {args.threads} threads, context {args.context}: {count} packed linear layers")
    ms = {"plain": {n: [] for n in sizes}, "packed": {n: [] for n in sizes}}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, model in (("plain", plain), ("packed", packed)):
                for n, s in forward_times(model, args.context, sizes, repeats=3).items():
                    ms[name][n].append(s * 1e3)
        ids = torch.randint(0, plain.config.vocab_size, (1, 200), generator=torch.Generator().manual_seed(1))
        same = (plain(ids).logits.argmax(-1) == packed(ids).logits.argmax(-1)).float().mean().item()
    med = {name: {n: statistics.median(v) for n, v in d.items()} for name, d in ms.items()}
    print(f"{'tokens':>6} {'plain ms':>9} {'packed ms':>10} {'packed/plain':>12} {'cost plain':>10} {'cost packed':>11}")
    for n in sizes:
        p, b = med["plain"][n], med["packed"][n]
        print(f"{n:>6} {p:9.1f} {b:10.1f} {b / p:12.2f} {p / med['plain'][sizes[0]]:10.2f} "
              f"{b / med['packed'][sizes[0]]:11.2f}")
    print(f"same next token on {same:.1%} of 200 positions")


if __name__ == "__main__":
    main()
