"""The tutorial's quick speed check (step 5.4.2), made right.

    from eagle.eval.speed import benchmark_speed
    speedup = benchmark_speed(model, model.tokenizer, "Write a Python function to calculate the fibonacci sequence")

Two fixes over the tutorial's version: it counts *new* tokens (the tutorial's `outputs.shape[1]`
includes the prompt, which inflates both rates), and it runs one short untimed warm-up of each
method first (the first call pays for memory allocation and kernel selection). The speedup is
seconds per token of `naivegenerate` over that of `eagenerate`, so a run where the two stop at
different lengths (sampling) is still compared fairly. For a real measurement use `eagle bench`.
"""

from __future__ import annotations

import time


def benchmark_speed(model, tokenizer, prompt: str, max_tokens: int = 100, warmup: bool = True) -> float:
    """Prints EAGLE / Baseline / Speedup lines as in the tutorial and returns the speedup."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    n = ids.shape[1]
    if warmup:
        model.eagenerate(ids, max_new_tokens=min(8, max_tokens))
        model.naivegenerate(ids, max_new_tokens=min(8, max_tokens))

    start = time.perf_counter()
    outputs_eagle = model.eagenerate(ids, max_new_tokens=max_tokens)
    time_eagle = time.perf_counter() - start
    tokens_eagle = outputs_eagle.shape[1] - n

    start = time.perf_counter()
    outputs_baseline = model.naivegenerate(ids, max_new_tokens=max_tokens)
    time_baseline = time.perf_counter() - start
    tokens_baseline = outputs_baseline.shape[1] - n

    speedup = (time_baseline / max(tokens_baseline, 1)) / (time_eagle / max(tokens_eagle, 1))
    print(f"EAGLE: {tokens_eagle} tokens in {time_eagle:.2f}s ({tokens_eagle / time_eagle:.1f} tok/s)")
    print(f"Baseline: {tokens_baseline} tokens in {time_baseline:.2f}s ({tokens_baseline / time_baseline:.1f} tok/s)")
    print(f"Speedup: {speedup:.2f}x")
    return speedup
