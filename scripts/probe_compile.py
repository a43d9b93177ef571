"""How much `torch.compile` would cut the base's verify cost: eager vs compiled forward after a
context, for a one-token step and a tree-sized step, in one run (medians; ratios are what count).

    python scripts/probe_compile.py                      # qwen2.5-coder-0.5b, bf16, context 200
    python scripts/probe_compile.py --sizes 1,16,24,32 --context 500

It also checks that the compiled forward picks the same next tokens as the eager one. The generation
loop does not compile yet; this measures whether it should.
"""

from __future__ import annotations

import argparse
import time

import torch

from eagle.model.base import load_base


def step_ms(model, context: torch.Tensor, n: int, reps: int) -> tuple[float, torch.Tensor]:
    """Median ms of an n-token forward on top of a fresh cache of `context`, and its argmax."""
    times, argmax = [], None
    gen = torch.Generator().manual_seed(n)
    new = torch.randint(100, 5000, (1, n), generator=gen)
    for _ in range(reps):
        with torch.no_grad():
            past = model(context, use_cache=True).past_key_values
            t = time.perf_counter()
            logits = model(new, past_key_values=past, use_cache=True).logits
            times.append(time.perf_counter() - t)
        argmax = logits.argmax(-1)
    return 1000 * sorted(times)[len(times) // 2], argmax


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
    sizes = [int(s) for s in args.sizes.split(",")]
    model = load_base(args.basepath, dtype=getattr(torch, args.dtype)).eval()
    context = torch.randint(100, 5000, (1, args.context), generator=torch.Generator().manual_seed(0))

    eager = {n: step_ms(model, context, n, args.reps) for n in sizes}
    compiled_model = torch.compile(model, dynamic=True)
    for n in sizes:  # compile (and warm) every shape before timing
        step_ms(compiled_model, context, n, 2)
    compiled = {n: step_ms(compiled_model, context, n, args.reps) for n in sizes}

    print(f"{args.basepath} {args.dtype}, {args.threads} threads, context {args.context}")
    print(f"{'tokens':>6} {'eager ms':>9} {'compiled ms':>12} {'compiled/eager':>15} {'eager/1 tok':>12} "
          f"{'compiled/1 tok':>15} {'same argmax':>12}")
    one_e, one_c = eager[sizes[0]][0], compiled[sizes[0]][0]
    for n in sizes:
        (e, ea), (c, ca) = eager[n], compiled[n]
        same = int((ea == ca).sum())
        print(f"{n:>6} {e:>9.1f} {c:>12.1f} {c / e:>14.2f}x {e / one_e:>11.2f}x {c / one_c:>14.2f}x "
              f"{same:>7}/{ea.numel()}")


if __name__ == "__main__":
    main()
