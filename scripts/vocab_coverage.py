"""What share of the base's tokens a head's vocabulary can draft at all, and how sure the base is of them.

    python scripts/vocab_coverage.py --ea-model-path runs/large-regen/ckpt/state_0 --num-prompts 24,8,8

The base decodes each workload's first prompts greedily (the benchmark's prompts and chat template); a token
outside the head's `t2d` map can never be drafted, so (share)^k bounds the chance that k tokens in a row
are draftable. On Dec 7 the `N_REGEN=1600` head's 12,000 tokens held 92.0% of chat, 92.1% of code and
91.5% of fim output (benchmarks/README.md, "The issue-5 run").

The base's own probability of each token it picks says how far any draft can follow it: where the
base itself hesitates between words, a draft that reads only its features guesses among them too.
The same run: mean 0.67 on chat (under 0.5 for 33% of tokens), 0.96 on code (2.5%), 0.86 on fim (12%).

The draft's first token (step 0, teacher-forced: the base's features of the true prefix, as at a tree's
root) is then scored against the base's pick in three bands of the base's own probability, which
shows whether the draft misses where the base is sure or where it hesitates, and the sure misses are
checked for copies (the token pair occurs earlier in the prompt or the answer). The same head, Dec 7
(a session later, same prompts): the base's pick for 56.8% of chat's draftable tokens (73.0% where
the base is at least 0.9 sure, 61.8% at 0.5-0.9, 33.6% under 0.5), 59.6% of code's (61.9% where sure)
and 62.4% of fim's (66.5%); of the sure misses, 62% on chat, 89% on code and 90% on fim are copies,
which the prompt-lookup branch, not the draft, has to supply.
"""

from __future__ import annotations

import argparse

import torch

from eagle.eval.workloads import build_workload
from eagle.model.base import eos_token_ids, load_base, load_tokenizer, resolve_dtype
from eagle.model.checkpoint import load_draft
from eagle.model.generate import draft_over_text
from eagle.train.config import parse_int_list


@torch.no_grad()
def first_draft_agrees(base, draft, seq: torch.Tensor, n: int) -> list[bool]:
    """For each generated token after the first (seq [1, L], the prompt's n tokens first): does the
    draft's step-0 guess, read from the base's features of the true prefix, equal it?"""
    h = draft_over_text(base, draft, seq).hidden[0]
    guess = draft.to_target(draft.logits(h).argmax(-1))  # guess[t] is the draft's x_{t+2}
    return (guess[n - 1:seq.shape[1] - 2] == seq[0, n + 1:]).tolist()


def repeated_pairs(seq: list[int], n: int) -> list[bool]:
    """For each token from n + 1 on: does the pair (previous token, token) occur earlier in seq (the
    prompt or the answer so far)? Such tokens are copies, which the base makes with many layers."""
    seen = {(a, b) for a, b in zip(seq[:n], seq[1:n + 1])}
    out = []
    for i in range(n + 1, len(seq)):
        out.append((seq[i - 1], seq[i]) in seen)
        seen.add((seq[i - 1], seq[i]))
    return out


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
    draft = load_draft(args.ea_model_path, dtype=base.dtype)
    t2d = draft.t2d  # derived from d2t and checked, as the decoder reads it
    bands = ((0.9, 1.01), (0.5, 0.9), (0.0, 0.5))
    for name, n in zip(names, counts):
        wl = build_workload(name, tok, limit=n, max_new_tokens=args.max_new_tokens)
        eos = sorted(eos_token_ids(base, tok) | wl.extra_eos)  # the benchmark's stop ids (fim: its sentinel too)
        held, top1, agree, sure, draftable, copied = 0, [], [], [], [], []
        for p in wl.prompts:
            ids = torch.tensor([p.input_ids])
            with torch.no_grad():
                out = base.generate(ids, max_new_tokens=wl.max_new_tokens, do_sample=False, eos_token_id=eos,
                                    output_scores=True, return_dict_in_generate=True)
            new = out.sequences[0, ids.shape[1]:]
            held += int(t2d[new].sum())
            probs = [float(s.float().softmax(-1).max()) for s in out.scores]  # greedy: the picked token's probability
            top1 += probs
            # the first generated token comes from the prefill, not the draft: scored from the second on
            agree += first_draft_agrees(base, draft, out.sequences, ids.shape[1])
            sure += probs[1:]
            draftable += t2d[out.sequences[0, ids.shape[1] + 1:]].tolist()
            copied += repeated_pairs(out.sequences[0].tolist(), ids.shape[1])
        p1 = torch.tensor(top1)
        under = {c: 100 * (p1 < c).float().mean() for c in (0.5, 0.9)}
        print(f"{name}: {len(wl.prompts)} prompts, the draft vocabulary holds {100 * held / len(p1):.1f}% "
              f"of {len(p1)} generated tokens; the base's probability of its pick: mean {p1.mean():.2f}, "
              f"under 0.5 for {under[0.5]:.1f}%, under 0.9 for {under[0.9]:.1f}%", flush=True)
        hit, p, ok = torch.tensor(agree), torch.tensor(sure), torch.tensor(draftable)
        shares = [f"{100 * hit[ok & (p >= lo) & (p < hi)].float().mean():.1f}% where it is {lo:g}-{min(hi, 1):g} "
                  f"({int((ok & (p >= lo) & (p < hi)).sum())} tokens)" for lo, hi in bands]
        print(f"  the draft's first token is the base's pick for {100 * hit.float().mean():.1f}% of the tokens, "
              f"{100 * hit[ok].float().mean():.1f}% of those in its vocabulary: " + ", ".join(shares), flush=True)
        missed = ok & (p >= 0.9) & ~hit
        print(f"  of its {int(missed.sum())} misses where the base is 0.9-1 sure, "
              f"{100 * torch.tensor(copied)[missed].float().mean():.1f}% repeat a token pair from earlier in the "
              f"prompt or answer", flush=True)


if __name__ == "__main__":
    main()
