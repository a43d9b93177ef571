"""How much `torch.compile` would cut the base's verify cost: eager vs compiled forward after a
context, for a one-token step and tree-sized steps, in one run (medians; ratios are what count).

    python scripts/probe_compile.py                      # qwen2.5-coder-0.5b, bf16, context 200
    python scripts/probe_compile.py --sizes 1,16,24,32 --context 500

The forwards are `eagle.eval.tune.forward_times`'s: a plain step for one token, a tree-masked verify
for more. It also checks how often the compiled forward picks the same next token as the eager one.
The generation loop does not compile yet; this measures whether it should.
"""

from __future__ import annotations

import argparse

import torch

from eagle.eval.tune import forward_times
from eagle.model.base import load_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basepath", default="qwen2.5-coder-0.5b")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--context", type=int, default=200, help="tokens already in the cache")
    ap.add_argument("--sizes", default="1,24", help="tokens per forward (1 = plain decoding, 24 = the CPU tree)")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    model = load_base(args.basepath, dtype=getattr(torch, args.dtype)).eval()
    compiled = torch.compile(model, dynamic=True)

    eager_s = forward_times(model, args.context, sizes, args.reps)
    forward_times(compiled, args.context, sizes, 1)  # compile every shape before timing
    compiled_s = forward_times(compiled, args.context, sizes, args.reps)

    ids = torch.randint(0, model.config.vocab_size, (1, args.context), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same = (model(ids).logits.argmax(-1) == compiled(ids).logits.argmax(-1)).float().mean().item()

    print(f"{args.basepath} {args.dtype}, {args.threads} threads, context {args.context}")
    print(f"{'tokens':>6} {'eager ms':>9} {'compiled ms':>12} {'compiled/eager':>15} {'eager/1st':>10} "
          f"{'compiled/1st':>13}")
    for n in sizes:
        e, c = eager_s[n], compiled_s[n]
        print(f"{n:>6} {1e3 * e:>9.1f} {1e3 * c:>12.1f} {c / e:>14.2f}x {e / eager_s[sizes[0]]:>9.2f}x "
              f"{c / compiled_s[sizes[0]]:>12.2f}x")
    print(f"same next token as eager on {100 * same:.1f}% of {args.context} positions")


if __name__ == "__main__":
    main()
