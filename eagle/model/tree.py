"""EAGLE-2 dynamic draft trees (arXiv 2406.16858 §4): expand by confidence, then rerank.

Expansion: the root's top_k children form depth 1; each later round feeds the top_k nodes of the
newest layer (by cumulative draft log-probability) through the draft and adds their top_k children.
Rerank: keep the `total_token - 1` best nodes of all drafted ones. A child's score never exceeds its
parent's (log-probs are <= 0), and parents are created first, so a stable descending sort keeps
every kept node's parent: the kept set is a tree. For the same reason a frontier node already
below the `total_token - 1`-th best score, or below `min_prob`, is not expanded: no descendant of
it could be kept, so the tree is the same and the draft call smaller or skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from eagle.model.draft import Eagle3Draft
from eagle.model.kv_cache import DraftKV


@dataclass(frozen=True)
class TreeConfig:
    total_token: int = 60  # nodes verified per step, root included
    depth: int = 6  # longest drafted path below the root; tau <= depth + 1
    top_k: int = 10  # children per expanded node, and nodes expanded per layer
    lookup: int = 0  # extra branch: up to this many tokens copied from an earlier n-gram match (0 = off)
    # Stop drafting deeper once the summed path probability of the frontier nodes that can still be
    # kept is below this. That sum bounds the accepted tokens one more draft call can add, so when
    # the draft is unsure the call costs more than it can return (0 = draft up to `depth` layers).
    expand_threshold: float = 0.0
    # Drop drafted nodes whose path probability under the draft is below this. Where every verified
    # token costs (a CPU), a node the draft gives 1% adds less acceptance than its verify time.
    min_prob: float = 0.0

    def __post_init__(self):
        for name in ("total_token", "depth", "top_k"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.lookup, int) or self.lookup < 0:
            raise ValueError(f"lookup must be an int >= 0, got {self.lookup!r}")
        for name in ("expand_threshold", "min_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

    def override(self, **fields) -> "TreeConfig":
        """This tree with the given fields replaced, those passed as None (a flag left unset) kept."""
        return replace(self, **{k: v for k, v in fields.items() if v is not None})

    @classmethod
    def for_device(cls, device: torch.device | str, dtype: torch.dtype | None = None) -> "TreeConfig":
        """A tree the hardware verifies cheaply, for a base of `dtype` on `device`. On CPU a forward's
        cost grows with the token count already past ~8 tokens (DESIGN.md §5), so the tree is small;
        a GPU verifies 60 nearly free. The GPU keeps EAGLE-2's fixed depth (expand_threshold 0): not
        measured there yet."""
        if torch.device(device).type == "cuda":
            return cls(total_token=60, depth=6, top_k=10, lookup=10)
        # A draft call is ~4% of a CPU cycle; past a frontier mass of 0.2 a deeper layer returns
        # less (Qwen2.5-Coder-0.5B code: same τ, 2.4 instead of 6 draft calls per cycle). Code
        # answers copy long stretches of the prompt, so the lookup branch runs up to 32 tokens, and
        # nodes under 1% are not worth their verify cost (docs/benchmark.md, "The lookup branch").
        # In float32 a verify's cost climbs several times faster than in bf16 (each token past 8 adds
        # ~0.065 one-token forwards against ~0.01), so a node must be likelier to pay for itself: fewer
        # drafted nodes, none under 10%, a lookup branch of 16 (docs/benchmark.md, "Which nodes pay in
        # float32").
        if dtype == torch.float32:
            return cls(total_token=8, depth=6, top_k=6, lookup=16, expand_threshold=0.2, min_prob=0.1)
        return cls(total_token=24, depth=6, top_k=6, lookup=32, expand_threshold=0.2, min_prob=0.01)


@dataclass
class Tree:
    tokens: torch.Tensor  # [T] base-vocabulary ids; tokens[0] is the root (already generated)
    parents: torch.Tensor  # [T] index of each node's parent; parents[0] = 0
    depths: torch.Tensor  # [T] root = 0
    ancestors: torch.Tensor  # [T, T] bool: ancestors[i, j] iff j is i or an ancestor of i
    logp: torch.Tensor | None = None  # [T] the draft's path log-probability (root 0, grafted nodes nan)

    def __len__(self) -> int:
        return self.tokens.numel()


def ancestor_matrix(parents: torch.Tensor, max_depth: int) -> torch.Tensor:
    """[T] parent indices (root points to itself) -> [T, T] ancestor-or-self mask."""
    t = parents.numel()
    idx = torch.arange(t, device=parents.device)
    anc = torch.zeros(t, t, dtype=torch.bool, device=parents.device)
    anc[idx, idx] = True
    cur = idx
    for _ in range(max_depth):
        cur = parents[cur]
        anc[idx, cur] = True
    return anc


@torch.no_grad()
def draft_tree(draft: Eagle3Draft, embed: torch.nn.Module, kv: DraftKV, h_root: torch.Tensor,
               root_token: torch.Tensor, cfg: TreeConfig) -> Tree:
    """kv: the draft's cache over committed positions 0..n-1; h_root: [H] its output at n-1, which
    predicts the root's child; root_token: [] the base's token at position n."""
    n, k, dev = kv.length, cfg.top_k, h_root.device
    logp = torch.log_softmax(draft.logits(h_root).float(), -1)  # [Vd]
    score, tok = logp.topk(k)  # [k]
    scores, tokens, parents, depths = [score], [tok], [torch.full((k,), -1, device=dev)], [torch.ones(k, dtype=torch.long, device=dev)]
    # frontier: nodes expanded this round (node index, their parent's draft output h, cumulative score)
    f_node, f_h, f_score, f_tok = torch.arange(k, device=dev), h_root.expand(k, -1), score, tok
    f_parent_row = torch.full((k,), -1, device=dev)  # row of each frontier node's parent among expanded
    tree_k = tree_v = None  # keys/values of expanded nodes: [1, n_kv, E, hd]
    exp_anc = torch.zeros(0, 0, dtype=torch.bool, device=dev)  # [E, E] ancestors among expanded nodes
    count, n_keep = k, cfg.total_token - 1
    floor = math.log(cfg.min_prob) if cfg.min_prob else -math.inf
    for d in range(1, cfg.depth):
        # Only frontier nodes scoring at least `cut` can have a kept descendant, since a child never
        # outscores its parent: min_prob, and the n_keep-th best score drafted so far. The rest are
        # not expanded, and the frontier's mass that counts against expand_threshold is theirs alone.
        if n_keep == 0:
            break
        cut = floor if count < n_keep else max(floor, float(torch.cat(scores).topk(n_keep).values[-1]))
        live = f_score >= cut
        if not live.any() or float(f_score[live].exp().sum()) < cfg.expand_threshold:
            break
        if not live.all():
            f_node, f_h, f_score, f_tok, f_parent_row = (x[live] for x in (f_node, f_h, f_score, f_tok, f_parent_row))
        m, e = f_node.numel(), exp_anc.shape[0]
        new_anc = torch.zeros(m, e + m, dtype=torch.bool, device=dev)
        if e:
            has_parent = f_parent_row >= 0
            new_anc[has_parent, :e] = exp_anc[f_parent_row[has_parent]]
        idx = torch.arange(m, device=dev)
        new_anc[idx, e + idx] = True
        exp_anc = torch.cat([torch.nn.functional.pad(exp_anc, (0, m)), new_anc], 0)
        mask = torch.cat([torch.ones(m, n, dtype=torch.bool, device=dev), new_anc], 1)[None, None]
        past = kv.kv if tree_k is None else (torch.cat([kv.k, tree_k], 2), torch.cat([kv.v, tree_v], 2))
        pos = torch.full((1, m), n + d - 1, device=dev)
        out = draft(f_h[None], embed(draft.to_target(f_tok))[None], pos, past_kv=past, mask=mask)
        tree_k = out.key if tree_k is None else torch.cat([tree_k, out.key], 2)
        tree_v = out.value if tree_v is None else torch.cat([tree_v, out.value], 2)

        logp = torch.log_softmax(draft.logits(out.hidden[0]).float(), -1)  # [m, Vd]
        child_score, child_tok = logp.topk(k)  # [m, k]
        child_score = child_score + f_score[:, None]
        scores.append(child_score.flatten())
        tokens.append(child_tok.flatten())
        parents.append(f_node.repeat_interleave(k))
        depths.append(torch.full((m * k,), d + 1, device=dev))
        best = child_score.flatten().topk(k).indices  # next frontier, from this layer's children
        f_node, f_score, f_tok = count + best, child_score.flatten()[best], child_tok.flatten()[best]
        f_h, f_parent_row = out.hidden[0][best // k], e + best // k
        count += m * k

    scores, tokens, parents, depths = (torch.cat(x) for x in (scores, tokens, parents, depths))
    keep = torch.sort(scores, descending=True, stable=True).indices[: cfg.total_token - 1].sort().values
    if cfg.min_prob:  # a child never scores above its parent, so what survives is still a tree
        keep = keep[scores[keep] >= floor]
    remap = torch.full((count,), -1, dtype=torch.long, device=dev)
    remap[keep] = torch.arange(1, keep.numel() + 1, device=dev)
    par = parents[keep]
    par = torch.where(par < 0, 0, remap[par.clamp(min=0)])
    all_parents = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), par])
    all_depths = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), depths[keep]])
    all_tokens = torch.cat([root_token.view(1), draft.to_target(tokens[keep])])
    all_logp = torch.cat([torch.zeros(1, device=dev), scores[keep]])
    return Tree(all_tokens, all_parents, all_depths, ancestor_matrix(all_parents, cfg.depth), all_logp)


def lookup_continuation(context: torch.Tensor, length: int, max_ngram: int = 3) -> torch.Tensor:
    """Prompt lookup (Saxena 2023): find the latest earlier occurrence of the context's last n-gram
    (longest n first) and return the tokens that followed it. context: [L] -> [<= length].

    A match shorter than `max_ngram` is more often a coincidence, so its chain is halved for each
    missing token (32, 16, 8 tokens for n = 3, 2, 1): the verify cost follows the odds."""
    n_ctx = context.numel()
    for n in range(min(max_ngram, n_ctx - 1), 0, -1):
        windows = context.unfold(0, n, 1)[:-1]  # every n-gram but the final one itself
        hits = (windows == context[-n:]).all(1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return context[start: start + max(1, length >> (max_ngram - n))]
    return context[:0]


def add_branch(tree: Tree, chain: torch.Tensor) -> Tree:
    """Graft a token chain under the root, sharing any prefix the tree already holds. Drafts from
    any source verify the same way, so the output is unchanged; only acceptance can grow."""
    if chain.numel() == 0:
        return tree
    tokens, parents, depths = tree.tokens.tolist(), tree.parents.tolist(), tree.depths.tolist()
    node = 0
    for t in chain.tolist():
        child = next((i for i in range(1, len(tokens)) if parents[i] == node and tokens[i] == t), None)
        if child is None:
            tokens.append(t)
            parents.append(node)
            depths.append(depths[node] + 1)
            child = len(tokens) - 1
        node = child
    if len(tokens) == len(tree):
        return tree
    dev = tree.tokens.device
    par = torch.tensor(parents, device=dev)
    logp = None if tree.logp is None else \
        torch.cat([tree.logp, tree.logp.new_full((len(tokens) - len(tree),), math.nan)])
    return Tree(torch.tensor(tokens, device=dev), par, torch.tensor(depths, device=dev),
                ancestor_matrix(par, max(depths)), logp)
