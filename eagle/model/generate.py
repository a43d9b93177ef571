"""Decoding loops as flat functions: prefill, draft a tree, verify, accept, commit (EAGLE-2/3).

Both loops are generators yielding the newly accepted token ids of each base forward, so callers
stream, count τ or stop early without flags inside the loop. Batch size 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from eagle.model.draft import Eagle3Draft
from eagle.model.kv_cache import DraftKV, keep_path, new_base_cache
from eagle.model.sampling import SamplingParams, draw, greedy_tokens
from eagle.model.tree import Tree, TreeConfig, add_branch, draft_tree, lookup_continuation


@dataclass(frozen=True)
class Limits:
    max_new_tokens: int
    eos_ids: frozenset[int]


# ---------------------------------------------------------------------------------------------
# base model calls

def _attention_layout(config) -> tuple[str, int | None, list[str] | None]:
    cfg = getattr(config, "text_config", None) or config
    impl = getattr(cfg, "_attn_implementation", None) or "sdpa"
    if "flash" in impl:
        raise ValueError(f"attn_implementation={impl!r} cannot take a tree mask; load the base with "
                         "attn_implementation='sdpa' or 'eager'")
    window = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:
        window = None
    layer_types = getattr(cfg, "layer_types", None)
    return impl, window, layer_types


def tree_attention_mask(config, cache_len: int, ancestors: torch.Tensor, dtype: torch.dtype):
    """The 4-D mask for verifying a tree: all of the cache plus each node's own ancestors.

    Returned in the form the base's attention expects (bool for sdpa, additive float for eager),
    and per layer type for models that mix full and sliding-window layers."""
    impl, window, layer_types = _attention_layout(config)
    t, dev = ancestors.shape[0], ancestors.device
    full = torch.cat([torch.ones(t, cache_len, dtype=torch.bool, device=dev), ancestors], 1)[None, None]

    def windowed(mask):
        if not window:
            return mask
        q_pos = cache_len + ancestors.sum(1) - 1  # depth of node = ancestors - 1
        kv_pos = torch.arange(cache_len + t, device=dev)
        kv_pos = torch.cat([kv_pos[:cache_len], q_pos]) if t else kv_pos
        return mask & ((q_pos[:, None] - kv_pos[None, :]) < window)[None, None]

    def fmt(mask):
        if impl == "eager":
            return torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill(~mask, torch.finfo(dtype).min)
        return mask

    if layer_types:
        return {lt: fmt(windowed(full) if "sliding" in lt else full) for lt in set(layer_types)}
    return fmt(windowed(full))


def fused_features(hidden_states, aux_layer_ids) -> torch.Tensor:
    """EAGLE-3 features: the base's hidden states at the aux depths, concatenated. [B, S, 3H]"""
    return torch.cat([hidden_states[i] for i in aux_layer_ids], dim=-1)


@torch.no_grad()
def text_hidden_states(base, ids: torch.Tensor):
    """The base's hidden states (every layer) over a known text ids [1, L]."""
    return base(input_ids=ids, output_hidden_states=True, use_cache=False, logits_to_keep=1).hidden_states


@torch.no_grad()
def draft_over_text(base, draft, ids: torch.Tensor, hidden_states=None):
    """The draft's step 0 at every position of a known text ids [1, L], teacher-forced: position t
    reads the base's features f_t and x_{t+1}, as the loop's drafter does at a root (its output at
    t guesses x_{t+2}; the last row has no x_{t+1} and means nothing). For offline analyses;
    hidden_states (text_hidden_states over ids) spares the base's forward when several drafts read one text."""
    if hidden_states is None:
        hidden_states = text_hidden_states(base, ids)
    feats = fused_features(hidden_states, draft.config.aux_layer_ids)
    nxt = torch.cat([ids[:, 1:], ids[:, -1:]], 1)
    return draft(feats, base.get_input_embeddings()(nxt), torch.arange(ids.shape[1], device=ids.device)[None])


def prefill(base, input_ids: torch.Tensor, cache, want_features: bool):
    out = base(input_ids=input_ids, past_key_values=cache, use_cache=True,
               output_hidden_states=want_features, logits_to_keep=1)
    return out


# ---------------------------------------------------------------------------------------------
# acceptance (EAGLE §3.3 / SpecInfer multi-candidate verification)

def _children(tree: Tree) -> dict[int, list[int]]:
    """node -> its children, in tree order (for a top-k draw, the draft's order). Siblings hold
    distinct tokens: the top-k of one draw, with the lookup branch merged into it."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents.tolist()[1:], 1):
        children.setdefault(p, []).append(i)
    return children


def accept_greedy(tree: Tree, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Longest root path whose every token is the base's argmax; plus the base's next token.
    logits: [T, V]. Returns (path [k+1] tree indices from the root, bonus token []).

    On the CPU the walk from the root takes the argmax of the nodes it visits only: a row's max
    over the vocabulary costs ~0.05 ms there, and a tree with its lookup branch has up to ~60 rows
    of which τ are visited. A GPU takes every row at once, for a single device read."""
    if logits.device.type != "cpu":
        return accept_targets(tree, greedy_tokens(logits))
    children, tokens = _children(tree), tree.tokens.tolist()
    node, path = 0, [0]
    while True:
        target = greedy_tokens(logits[node])
        t = int(target)
        node = next((c for c in children.get(node, ()) if tokens[c] == t), None)
        if node is None:
            return torch.tensor(path), target
        path.append(node)


def accept_targets(tree: Tree, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """accept_greedy given target[i], the token that must follow node i ([T])."""
    match = tree.tokens == target[tree.parents]
    match[0] = True
    accepted = ~(tree.ancestors & ~match[None, :]).any(1)  # every ancestor matched
    deepest = int(torch.where(accepted, tree.depths, -1).argmax())
    return tree.ancestors[deepest].nonzero().squeeze(1), target[deepest]


def accept_sampling(tree: Tree, logits: torch.Tensor, sp: SamplingParams,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lossless for deterministic (top-k) drafts: at a node with target distribution p, try the
    children in draft order, accepting child x with probability p(x) / (the mass not yet rejected),
    i.e. p(x) in p renormalised after zeroing the rejected children. This is a sequential draw from
    p, so the output follows p exactly. If no child is accepted, the bonus token is drawn from that
    residual. One device read and one batch of uniforms per visited node, not one per child."""
    children, tokens = _children(tree), tree.tokens.tolist()
    node, path = 0, [0]
    while True:
        p = sp.probs(logits[node])  # visited nodes only: top-p sorts the whole vocabulary
        kids = children.get(node, [])  # distinct tokens: top-k of one draw, the lookup branch merged
        accepted, rejected = None, []
        if kids:
            ids = torch.tensor([tokens[c] for c in kids], device=p.device)
            *probs, left = torch.cat([p[ids], p.sum().view(1)]).tolist()
            draws = torch.rand(len(kids), generator=generator, device=p.device).tolist()
            for c, pc, u in zip(kids, probs, draws):
                if left <= 0:  # float rounding: every bit of mass was rejected
                    break
                if u * left < pc:
                    accepted = c
                    break
                rejected.append(tokens[c])
                left -= pc
        if accepted is None:
            if rejected:
                residual = p.clone()
                residual[torch.tensor(rejected, device=p.device)] = 0.0
                p = residual if residual.sum() > 0 else p
            bonus = draw(p, generator)
            return torch.tensor(path, device=logits.device), bonus
        node = accepted
        path.append(node)


# ---------------------------------------------------------------------------------------------
# loops

def _cut(tokens: list[int], budget: int, eos_ids: frozenset[int]) -> tuple[list[int], bool]:
    """Trim a step's tokens to the remaining budget and at the first EOS; True when done."""
    for i, t in enumerate(tokens[:budget]):
        if t in eos_ids:
            return tokens[: i + 1], True
    return tokens[:budget], len(tokens) >= budget


@torch.no_grad()
def naive_decode(base, input_ids: torch.Tensor, sp: SamplingParams, limits: Limits,
                 generator: torch.Generator | None = None) -> Iterator[list[int]]:
    """One token per base forward, through the same cache as speculative decoding."""
    cache = new_base_cache()
    out = prefill(base, input_ids, cache, want_features=False)
    produced = 0
    while True:
        token = sp.sample(out.logits[0, -1], generator)
        step, done = _cut([int(token)], limits.max_new_tokens - produced, limits.eos_ids)
        produced += len(step)
        yield step
        if done:
            return
        out = base(input_ids=token.view(1, 1), past_key_values=cache, use_cache=True)


@torch.no_grad()
def speculative_decode(base, draft: Eagle3Draft, input_ids: torch.Tensor, sp: SamplingParams,
                       tree_cfg: TreeConfig, limits: Limits, generator: torch.Generator | None = None,
                       on_phase: Callable[[str], None] | None = None) -> Iterator[list[int]]:
    """on_phase(name) is called as each phase of a cycle starts ("draft", "verify", "accept",
    "commit") and with "end" on return: a profiler's hook, free when None."""
    phase = on_phase or (lambda name: None)
    aux, embed = draft.config.aux_layer_ids, base.get_input_embeddings()
    dev = input_ids.device
    cache = new_base_cache()
    n = input_ids.shape[1]
    out = prefill(base, input_ids, cache, want_features=True)
    token = sp.sample(out.logits[0, -1], generator)  # x_n, the first root
    step, done = _cut([int(token)], limits.max_new_tokens, limits.eos_ids)
    produced = len(step)
    yield step
    if done:
        return phase("end")
    # the draft at position t sees (f_t, x_{t+1}) and predicts x_{t+2}
    feats = fused_features(out.hidden_states, aux)  # [1, n, 3H]
    d = draft(feats, embed(torch.cat([input_ids[0, 1:], token.view(1)]))[None], torch.arange(n, device=dev)[None])
    kv, h_last = DraftKV(d.key, d.value), d.hidden[0, -1]
    # every token so far, for prompt lookup: on the CPU, where its searches cost no device syncs
    context = torch.cat([input_ids[0], token.view(1)]).cpu()
    while True:
        phase("draft")
        tree = draft_tree(draft, embed, kv, h_last, token, tree_cfg)
        if tree_cfg.lookup:
            tree = add_branch(tree, lookup_continuation(context, tree_cfg.lookup))
        phase("verify")
        mask = tree_attention_mask(base.config, n, tree.ancestors, base.dtype)
        out = base(input_ids=tree.tokens[None], attention_mask=mask, position_ids=(n + tree.depths)[None],
                   past_key_values=cache, use_cache=True, output_hidden_states=True)
        logits = out.logits[0]  # [T, V]
        phase("accept")
        if sp.greedy:
            path, bonus = accept_greedy(tree, logits)
        else:
            path, bonus = accept_sampling(tree, logits, sp, generator)
        keep_path(cache, n, path)
        new = torch.cat([tree.tokens[path[1:]], bonus.view(1)])  # [m] = accepted drafts + bonus
        new_ids = new.tolist()
        step, done = _cut(new_ids, limits.max_new_tokens - produced, limits.eos_ids)
        produced += len(step)
        yield step
        if done:
            return phase("end")
        # commit: the accepted nodes' base features teach the draft the new context
        phase("commit")
        m = new.numel()
        feats = fused_features(out.hidden_states, aux)[0, path]  # [m, 3H]
        pos = torch.arange(n, n + m, device=dev)
        causal = torch.ones(m, n + m, dtype=torch.bool, device=dev).tril(n)[None, None]
        d = draft(feats[None], embed(new)[None], pos[None], past_kv=kv.kv, mask=causal)
        kv.append(d.key, d.value)
        h_last, token, n = d.hidden[0, -1], bonus, n + m
        context = torch.cat([context, torch.tensor(new_ids, dtype=context.dtype)])
