"""What share of the base's tokens a head's vocabulary can draft at all, and how sure the base is of them.

    python scripts/vocab_coverage.py --ea-model-path runs/large-regen/ckpt/state_0 --num-prompts 24,8,8

The base decodes each workload's first prompts greedily (the benchmark's prompts and chat template); a token
outside the head's `t2d` map can never be drafted, so (share)^k bounds the chance that k tokens in a row
are draftable. On Dec 7 the `N_REGEN=1600` head's 12,000 tokens held 92.0% of chat, 92.1% of code and
91.5% of fim output (benchmarks/README.md, "The issue-5 run").

The base's own probability of each token it picks says how far any draft can follow it: where the
base itself hesitates between words, a draft that reads only its features guesses among them too.
The same run: mean 0.67 on chat (under 0.5 for 33% of tokens), 0.96 on code (2.5%), 0.86 on fim (12%).
"""

from __future__ import annotations

import argparse

import torch

from eagle.eval.workloads import build_workload
from eagle.model.base import eos_token_ids, load_base, load_tokenizer, resolve_dtype
from eagle.model.checkpoint import load_draft
from eagle.train.config import parse_int_list


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--basepath", default="qwen2.5-coder-0.5b")
    ap.add_argument("--ea-model-path", required=True)
    ap.add_argument("--workloads", default="chat,code,fim")
    ap.add_argument("--num-prompts", default="24,8,8", help="per workload, in order")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = ap.parse_args()

    try:
        names, counts = args.workloads.split(","), parse_int_list(args.num_prompts)
    except ValueError as e:
        ap.error(f"--num-prompts: {e}")
    if len(counts) != len(names):
        ap.error(f"--num-prompts gives {len(counts)} counts for {len(names)} workloads")
    tok = load_tokenizer(args.basepath)
    base = load_base(args.basepath, dtype=resolve_dtype(args.dtype))
    t2d = load_draft(args.ea_model_path).t2d  # derived from d2t and checked, as the decoder reads it
    for name, n in zip(names, counts):
        wl = build_workload(name, tok, limit=n, max_new_tokens=args.max_new_tokens)
        eos = sorted(eos_token_ids(base, tok) | wl.extra_eos)  # the benchmark's stop ids (fim: its sentinel too)
        held, top1 = 0, []
        for p in wl.prompts:
            ids = torch.tensor([p.input_ids])
            with torch.no_grad():
                out = base.generate(ids, max_new_tokens=wl.max_new_tokens, do_sample=False, eos_token_id=eos,
                                    output_scores=True, return_dict_in_generate=True)
            new = out.sequences[0, ids.shape[1]:]
            held += int(t2d[new].sum())
            top1 += [float(s.float().softmax(-1).max()) for s in out.scores]  # greedy: the picked token's probability
        p1 = torch.tensor(top1)
        under = {c: 100 * (p1 < c).float().mean() for c in (0.5, 0.9)}
        print(f"{name}: {len(wl.prompts)} prompts, the draft vocabulary holds {100 * held / len(p1):.1f}% "
              f"of {len(p1)} generated tokens; the base's probability of its pick: mean {p1.mean():.2f}, "
              f"under 0.5 for {under[0.5]:.1f}%, under 0.9 for {under[0.9]:.1f}%", flush=True)


if __name__ == "__main__":
    main()
