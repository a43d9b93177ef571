"""Where τ comes from, and what other tree settings would give, from one greedy pass per prompt.

    python scripts/replay_tree.py --ea-model-path runs/quickstart/ckpt/state_1
    python scripts/replay_tree.py --ea-model-path DIR --workloads code --lookup 0,10,32 --min-prob 0,0.01
    python scripts/replay_tree.py --ea-model-path DIR --dtype float32 --tree-dtype bfloat16   # no bf16 CPU
    python scripts/replay_tree.py --ea-model-path DIR --dtype float32 --tree-dtype bfloat16 \
        --top-k 8 --cost 1:1,2:1.03,4:1.12,8:1.11,16:1.18,32:1.32,64:1.67   # another tree, priced as on AMX

Each prompt of the greedy workloads is decoded once with the default tree. Then, at every position
of that text, the draft tree the loop would build there (teacher-forced: the draft reads the base's
features of the true prefix) and the prompt-lookup branch are matched against the text. Replaying
the decode loop over those matches gives τ for every (lookup, min_prob) pair, for the draft tree
alone (lookup 0) and for the lookup branch alone (`lookup only`), in minutes and without timing
noise. A verify's cost is read from the base's measured forward times (`--tune`'s table), or from
`--cost` (another machine's table, say the AMX one of DESIGN.md §5), so the printed ceiling
τ / cost ranks settings as a timed run would; `eagle bench` then measures the one
chosen. The functions are the loop's own: draft_tree, lookup_continuation, add_branch, accept_targets.

Several heads of one base (`--ea-model-path A,B,...`) are compared on one text per prompt, the
base's own greedy decoding (naivegenerate): a bf16 loop's text depends on the head (its trees
round differently), and that alone moves chat τ by a few percent between two heads.

    python scripts/replay_tree.py --ea-model-path runs/a/state_0,runs/b/state_0 --workloads chat --num-prompts 40
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from eagle.eval.tune import forward_times
from eagle.eval.workloads import build_workload
from eagle.model.base import resolve_path
from eagle.model.checkpoint import load_draft
from eagle.model.ea_model import EaModel
from eagle.model.generate import accept_targets, draft_over_text, text_hidden_states
from eagle.model.kv_cache import DraftKV
from eagle.model.tree import Tree, TreeConfig, add_branch, draft_tree, lookup_continuation

COST_SIZES = (1, 2, 4, 8, 16, 32, 64)


def matched(tree: Tree, text: list[int], r: int) -> int:
    """How many tokens after the root (text[r]) the tree's best path gets right: the loop's own
    greedy acceptance, with the text's next token in place of the base's argmax."""
    after = torch.tensor(text[r + 1:] + [-1] * (int(tree.depths.max()) + 1))  # -1 past the text's end
    path, _ = accept_targets(tree, after[tree.depths])
    return path.numel() - 1


def root_only(token: int) -> Tree:
    return Tree(torch.tensor([token]), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                torch.ones(1, 1, dtype=torch.bool))


@torch.no_grad()
def positions(model: EaModel, text: list[int], n0: int, settings: list[tuple], hidden_states=None) -> list[dict]:
    """For each root position r >= n0: {setting: (matched tokens, verified tree size)}. hidden_states:
    the base's over text (text_hidden_states), computed here when not given."""
    base, draft = model.base_model, model.ea_layer
    embed = base.get_input_embeddings()
    ids = torch.tensor([text], device=base.device)
    d = draft_over_text(base, draft, ids, hidden_states)
    rows = []
    for r in range(n0, len(text) - 1):
        kv = DraftKV(d.key[:, :, :r], d.value[:, :, :r])
        trees = {}
        for min_prob in {s[1] for s in settings if s[1] is not None}:
            cfg = dataclasses.replace(model.tree, min_prob=min_prob)
            trees[min_prob] = draft_tree(draft, embed, kv, d.hidden[0, r - 1], ids[0, r], cfg)
        row = {}
        for lookup, min_prob in settings:
            tree = root_only(text[r]) if min_prob is None else trees[min_prob]
            if lookup:
                tree = add_branch(tree, lookup_continuation(ids[0, : r + 1], lookup))
            row[(lookup, min_prob)] = (matched(tree, text, r), len(tree))
        rows.append(row)
    return rows


def replay(rows: list[dict], n_text: int, n0: int, setting, cost: dict[int, float]) -> tuple[int, int, float, int]:
    """The decode loop over recorded matches: (tokens, cycles, summed verify cost, summed tree size)."""
    def cost_of(t):
        lo = max(s for s in cost if s <= t)
        hi = min((s for s in cost if s >= t), default=lo)
        return cost[lo] if hi == lo else cost[lo] + (cost[hi] - cost[lo]) * (t - lo) / (hi - lo)

    r, tokens, cycles, total, size = n0, 0, 0, 0.0, 0
    while r < n_text - 1:
        a, t = rows[r - n0][setting]
        tokens += min(a + 1, n_text - 1 - r)
        cycles, total, size = cycles + 1, total + cost_of(t), size + t
        r += a + 1
    return tokens, cycles, total, size


def parse_cost(text: str) -> dict[int, float]:
    """'1:1,8:1.11,32:1.32' -> {1: 1.0, 8: 1.11, 32: 1.32}; sizes between are interpolated, past the last held."""
    try:
        cost = {int(n): float(c) for n, c in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'tokens:cost,...', got {text!r}") from None
    if cost.get(1) != 1.0 or any(n < 1 or c <= 0 for n, c in cost.items()):
        raise argparse.ArgumentTypeError(f"need 1:1 and positive sizes and costs, got {text!r}")
    return dict(sorted(cost.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basepath", default="qwen2.5-coder-0.5b")
    ap.add_argument("--ea-model-path", required=True, help="a draft head, or several (comma-separated) "
                    "to compare on one text")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--workloads", default="code,chat,fim", help="greedy workloads only")
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lookup", default="0,10,32", help="lookup branch lengths to compare")
    ap.add_argument("--min-prob", default="0,0.01", help="min_prob values to compare")
    ap.add_argument("--context", type=int, default=256, help="context of the forward-time table")
    ap.add_argument("--tree-dtype", choices=("bfloat16", "float32"),
                    help="replay the default tree of this dtype (default: --dtype's); τ hardly depends on the "
                         "base's dtype, so a CPU without bf16 arithmetic can replay the bf16 tree in float32")
    ap.add_argument("--total-token", type=int, help="override the tree's total_token")
    ap.add_argument("--depth", type=int, help="override the tree's depth")
    ap.add_argument("--top-k", type=int, help="override the tree's top_k")
    ap.add_argument("--expand-threshold", type=float, help="override the tree's expand_threshold")
    ap.add_argument("--cost", type=parse_cost,
                    help="verify cost in one-token forwards by tree size, 'tokens:cost,...' with 1:1 (default: "
                         "measured here)")
    args = ap.parse_args()

    overrides = {f: getattr(args, f) for f in ("total_token", "depth", "top_k", "expand_threshold")}
    try:
        TreeConfig().override(**overrides)  # a bad value fails here, before the model loads
    except ValueError as e:
        ap.error(str(e))
    paths = args.ea_model_path.split(",")
    model = EaModel.from_pretrained(args.basepath, paths[0], dtype=getattr(torch, args.dtype))
    if args.tree_dtype:
        model.tree = TreeConfig.for_device(model.device, getattr(torch, args.tree_dtype))
    model.tree = model.tree.override(**overrides)
    heads = [model] + [EaModel(model.base_model, load_draft(resolve_path(p)), model.tokenizer, model.tree)
                       for p in paths[1:]]
    lookups = [int(x) for x in args.lookup.split(",")]
    probs = [float(x) for x in args.min_prob.split(",")]
    settings = [(lk, mp) for lk in lookups for mp in probs] + [(max(lookups), None)]
    if args.cost:
        cost = args.cost
    else:
        times = forward_times(model.base_model, args.context, COST_SIZES, repeats=5)
        cost = {n: t / times[1] for n, t in times.items()}
    print(f"{args.basepath} {args.dtype}, tree {model.tree}")
    print("verify cost by tokens: " + ", ".join(f"{n}: {c:.2f}" for n, c in cost.items()))
    if len(heads) > 1:
        print("one text per prompt for every head: the base's greedy decoding")
    for name in args.workloads.split(","):
        wl = build_workload(name, model.tokenizer, limit=args.num_prompts, max_new_tokens=args.max_new_tokens)
        if not wl.greedy:
            raise SystemExit(f"{name}: replay needs a greedy workload")
        runs = replay_prompts(heads, [p.input_ids for p in wl.prompts], wl.max_new_tokens, settings, cost)
        print(f"\n{name} ({len(wl.prompts)} prompts)")
        print_table(paths, runs, settings)


def replay_prompts(heads: list[EaModel], prompts: list[list[int]], max_new_tokens: int, settings: list[tuple],
                   cost: dict[int, float]) -> list[dict]:
    """Per head, per setting, per prompt: replay's (tokens, cycles, summed verify cost, summed tree
    size). One head replays its own loop's text; several share the base's greedy text."""
    runs = [{s: [] for s in settings} for _ in heads]
    for prompt in prompts:
        ids = torch.tensor([prompt], device=heads[0].device)
        decode = heads[0].eagenerate if len(heads) == 1 else heads[0].naivegenerate
        text = decode(ids, max_new_tokens=max_new_tokens)[0].tolist()
        hs = text_hidden_states(heads[0].base_model, torch.tensor([text], device=ids.device))  # one base, every head
        for head, run in zip(heads, runs):
            rows = positions(head, text, len(prompt), settings, hs)
            for s in settings:
                run[s].append(replay(rows, len(text), len(prompt), s, cost))
    return runs


def print_table(paths: list[str], runs: list[dict], settings: list[tuple]) -> None:
    """One row per head and setting; with several heads, how many prompts each gains or loses
    against the first head, so a difference in τ can be told from one prompt's luck."""
    several = len(paths) > 1
    print(("head " if several else "") + f"{'lookup':>12} {'min_prob':>9} {'tau':>6} {'tokens':>7} {'ceiling':>8}"
          + ("  vs head 1 (prompts better/worse)" if several else ""))
    for h, (path, run) in enumerate(zip(paths, runs)):
        if several:
            print(f"{h + 1}: {path}")
        for s in settings:
            tok, cyc, total, size = (sum(col) for col in zip(*run[s]))
            cyc, total = max(cyc, 1), total or 1.0  # no cycle at all: every prompt ended at its first token
            mp = "no tree" if s[1] is None else f"{s[1]:g}"
            line = f"{'':5}" * several + f"{s[0]:>12} {mp:>9} {tok / cyc:>6.2f} {size / cyc:>7.1f} {tok / total:>8.2f}"
            if several and h:
                # a prompt whose answer ends at its first token has no cycle to compare
                pairs = [(a[0] / a[1], b[0] / b[1]) for a, b in zip(run[s], runs[0][s]) if a[1] and b[1]]
                line += f"  {sum(a > b for a, b in pairs)}/{sum(a < b for a, b in pairs)}"
            print(line)


if __name__ == "__main__":
    main()
