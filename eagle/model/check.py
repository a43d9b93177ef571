"""`eagle models check BASE`: does this causal LM work with EAGLE's decoding loop, unmodified?

The tutorial's step 5.2 edits a model's modeling file to add a KV cache, then tests it by comparing
the *shapes* of two outputs. Here nothing is edited, and what the loop really needs from the model
is checked on its numbers, in float32:

1. kv cache: the last token's logits from one forward over a text equal those of a cached prefill
   of all but that token followed by a one-token step (the tutorial's 5.2.4 test, on logits);
2. tree verify: a random token tree, verified in one forward over the cache with the 4-D ancestor
   mask and explicit position ids, gives each node the logits a plain forward of its path gives;
3. cache compaction: after the cache keeps only one path of the tree, the next step's logits equal
   a plain forward of the text, that path and the next token;
4. end to end: greedy speculative decoding with an untrained draft head (random drafts, plus the
   prompt-lookup branch) writes exactly the tokens of plain decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.generate import prefill, tree_attention_mask
from eagle.model.kv_cache import keep_path, new_base_cache
from eagle.model.tree import TreeConfig, ancestor_matrix

TEXT = ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
        "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n")


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str


def _last_logits(base, ids: list[int]) -> torch.Tensor:
    """[V] next-token logits after `ids`, from a plain forward without any cache."""
    return base(input_ids=torch.tensor([ids], device=base.device), use_cache=False).logits[0, -1].float()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> tuple[bool, float]:
    diff = float((a - b).abs().max())
    return diff <= atol and int(a.argmax()) == int(b.argmax()), diff


def random_tree(n: int, max_depth: int, vocab: int, generator: torch.Generator):
    """(tokens [n], parents [n], depths [n]) of a random tree; node 0 is the root."""
    parents, depths = [0], [0]
    for i in range(1, n):
        choices = [j for j in range(i) if depths[j] < max_depth]
        p = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        parents.append(p)
        depths.append(depths[p] + 1)
    tokens = torch.randint(vocab, (n,), generator=generator)
    return tokens, torch.tensor(parents), torch.tensor(depths)


@torch.no_grad()
def check_base(base, tokenizer=None, new_tokens: int = 32, tree_nodes: int = 16, seed: int = 0,
               echo: Callable[[str], None] = print) -> list[CheckResult]:
    """Run the four checks on a loaded base. In float32 a logit may differ by 1e-3 of the largest;
    in other dtypes rounding differs too much for a tolerance, and only the argmax is compared."""
    from eagle.model.ea_model import EaModel

    g = torch.Generator().manual_seed(seed)
    vocab = base.get_output_embeddings().weight.shape[0]
    ids = tokenizer(TEXT).input_ids if tokenizer is not None else []
    if len(ids) < 8 or max(ids) >= vocab:  # no usable tokenizer (transformers may build an empty one)
        ids = torch.randint(vocab, (48,), generator=g).tolist()
    dev = base.device
    # float32 differences between kernels over different token counts stay far below this
    full = _last_logits(base, ids)
    atol = 1e-3 * max(1.0, float(full.abs().max())) if base.dtype == torch.float32 else math.inf
    results = []

    def report(name: str, ok: bool, detail: str) -> None:
        results.append(CheckResult(name, ok, detail))
        echo(f"{'✓' if ok else '✗'} {name}: {detail}")

    # 1. the tutorial's KV cache test, on logits
    cache = new_base_cache()
    prefill(base, torch.tensor([ids[:-1]], device=dev), cache, want_features=False)
    step = base(input_ids=torch.tensor([[ids[-1]]], device=dev), past_key_values=cache, use_cache=True)
    ok, diff = _close(step.logits[0, -1].float(), full, atol)
    report("kv cache", ok, f"cached step vs full forward, max |Δlogit| {diff:.2e}")

    # 2. one tree verified through the model's own forward
    n = len(ids)
    tokens, parents, depths = random_tree(tree_nodes, 5, vocab, g)
    anc = ancestor_matrix(parents, 5)  # a parent's index is below its child's: row i is i's path in order
    cache = new_base_cache()
    prefill(base, torch.tensor([ids], device=dev), cache, want_features=False)
    mask = tree_attention_mask(base.config, n, anc.to(dev), base.dtype)
    out = base(input_ids=tokens[None].to(dev), attention_mask=mask, position_ids=(n + depths)[None].to(dev),
               past_key_values=cache, use_cache=True)
    worst, bad = 0.0, []
    for i in range(tree_nodes):
        ok, diff = _close(out.logits[0, i].float(), _last_logits(base, ids + tokens[anc[i]].tolist()), atol)
        worst = max(worst, diff)
        if not ok:
            bad.append(i)
    report("tree verify", not bad, f"{tree_nodes} nodes, depth <= 5, max |Δlogit| {worst:.2e} against each "
                                  f"node's path run alone" + (f"; wrong at nodes {bad}" if bad else ""))

    # 3. keep the deepest node's path, drop the rest, take one more step
    path = anc[int(depths.argmax())].nonzero().flatten()
    keep_path(cache, n, path.to(dev))
    nxt = int(torch.randint(vocab, (1,), generator=g))
    step = base(input_ids=torch.tensor([[nxt]], device=dev), position_ids=torch.tensor([[n + len(path)]], device=dev),
                past_key_values=cache, use_cache=True)
    ok, diff = _close(step.logits[0, -1].float(), _last_logits(base, ids + tokens[path].tolist() + [nxt]), atol)
    report("cache compaction", ok, f"kept a {len(path)}-token path, next step max |Δlogit| {diff:.2e}")

    # 4. the whole loop, with drafts that are mostly wrong
    draft = Eagle3Draft(DraftConfig.from_base(base.config))
    model = EaModel(base, draft, tokenizer, tree=TreeConfig(total_token=12, depth=4, top_k=3, lookup=8))
    prompt = torch.tensor([ids], device=dev)
    spec = model.eagenerate(prompt, max_new_tokens=new_tokens)
    plain = model.naivegenerate(prompt, max_new_tokens=new_tokens)
    same = torch.equal(spec, plain)
    if same:
        report("greedy decoding", True, f"speculative == plain on {spec.shape[1] - n} new tokens")
    else:
        from eagle.eval.report import first_divergence

        at = first_divergence(spec[0, n:].tolist(), plain[0, n:].tolist())
        report("greedy decoding", False, f"speculative != plain from new token {at} on")
    return results


def run(args) -> int:
    """`eagle models check NAME_OR_PATH`."""
    import sys

    from eagle.model.base import load_base, load_tokenizer

    try:
        base = load_base(args.basepath, dtype=torch.float32, trust_remote_code=args.trust_remote_code)
        try:
            tok = load_tokenizer(args.basepath, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError):
            tok = None  # a model without a tokenizer is checked on random token ids
    except (OSError, ValueError) as e:
        print(f"eagle models check: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.basepath}: {type(base).__name__}, float32, {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M "
          f"parameters, attention {base.config._attn_implementation}")
    results = check_base(base, tok, new_tokens=args.new_tokens)
    failed = [r.name for r in results if not r.ok]
    print("all checks passed: EAGLE decodes this model unmodified" if not failed
          else f"failed: {', '.join(failed)}")
    return 1 if failed else 0
