"""Peak memory and time of one TTT training step (forward + backward) at long sequence lengths, with
the fused lm_head and loss (eagle.train.soft_ce) over all rows in one chunk and in chunks of
TTTObjective.logit_chunk logits, for a draft the size
of Qwen2.5-0.5B's (H 896, 32k draft vocabulary), K = 7, every position trained.

    python benchmarks/ttt_memory.py --lengths 512,1024,2048

Each setting runs in a fresh process, so the peak resident memory (ru_maxrss) is its own. Prints
the peak, its growth over the state before the step, the step time, and the ratios of chunked to
one piece. Random weights and inputs: memory and time do not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(length: int, chunk: int, vocab: int, threads: int) -> dict:
    import torch

    from eagle.model.config import DraftConfig
    from eagle.model.draft import Eagle3Draft
    from eagle.train.ttt import TTTObjective, step_counts

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    h, k = 896, 7
    cfg = DraftConfig(hidden_size=h, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                      vocab_size=151936, draft_vocab_size=vocab, target_hidden_size=h, aux_layer_ids=(2, 12, 21))
    draft = Eagle3Draft(cfg)
    obj = TTTObjective(draft, k, 0.8, **({"logit_chunk": chunk} if chunk else {}))
    features, embeds = torch.randn(1, length, 3 * h), torch.randn(1, length, h)
    valid = torch.ones(1, length, dtype=torch.bool)
    valid[:, -1] = False
    n = int(valid.sum())
    target_p = torch.softmax(torch.randn(n, vocab), -1)
    target_idx = target_p.argmax(-1)
    denom = step_counts(valid, k)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    obj(features, embeds, valid, target_p, target_idx, denom).loss.backward()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"length": length, "chunk": chunk, "rows": int(denom.sum()), "peak_mib": peak / 1024,
            "step_mib": (peak - before) / 1024, "seconds": dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="512,1024,2048", help="sequence lengths (comma-separated)")
    ap.add_argument("--draft-vocab", type=int, default=32000)
    ap.add_argument("--chunk", type=int, default=0, help="logit_chunk of the chunked runs (elements; 0: the default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        length, chunk = map(int, a.child.split(","))
        print(json.dumps(one(length, chunk, a.draft_vocab, a.threads)))
        return
    print(f"{'length':>6} {'rows':>6} | {'one piece: MiB':>14} {'s':>6} | {'chunked: MiB':>12} {'s':>6} | "
          f"{'memory':>6} {'time':>6}")
    for length in (int(x) for x in a.lengths.split(",")):
        runs = []
        for chunk in (2 ** 62, a.chunk):
            cmd = [sys.executable, __file__, "--child", f"{length},{chunk}", "--draft-vocab", str(a.draft_vocab),
                   "--threads", str(a.threads)]
            runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        whole, chunked = runs
        print(f"{length:>6} {whole['rows']:>6} | {whole['step_mib']:>14.0f} {whole['seconds']:>6.1f} | "
              f"{chunked['step_mib']:>12.0f} {chunked['seconds']:>6.1f} | "
              f"{chunked['step_mib'] / whole['step_mib']:>6.2f} {chunked['seconds'] / whole['seconds']:>6.2f}")


if __name__ == "__main__":
    main()
