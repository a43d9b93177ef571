"""Greedy speculative decoding must reproduce plain decoding token for token, on every architecture."""

import pytest
import torch

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from tiny import ARCHS, VOCAB, fit_draft, tiny_base

TREES = [TreeConfig(total_token=8, depth=3, top_k=2), TreeConfig(total_token=20, depth=6, top_k=4, lookup=8),
         TreeConfig(total_token=20, depth=6, top_k=4, lookup=8, min_prob=0.05)]


def prompts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (1, int(torch.randint(4, 40, (1,), generator=g))), generator=g) for _ in range(n)]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_greedy_identical_to_naive_and_hf(arch, capsys):
    """A fitted head (long accepted paths) on a predictable base, and an untrained head (almost every
    draft rejected) on an unstructured one: both must give exactly the base's own greedy text."""
    cases = [(tiny_base(arch, predictable=True), None), (tiny_base(arch, seed=1), "random")]
    for base, kind in cases:
        draft = Eagle3Draft(DraftConfig.from_base(base.config)) if kind else fit_draft(base)
        new = steps = 0
        for tree in TREES:
            model = EaModel(base, draft, tree=tree)
            for ids in prompts(3):
                out, n_new, n_steps = model.eagenerate(ids, max_new_tokens=40, log=True)
                naive = model.naivegenerate(ids, max_new_tokens=40)
                hf = base.generate(ids, do_sample=False, max_new_tokens=40)
                assert torch.equal(out, naive), f"{arch}: eagle != naive for prompt {ids.tolist()}"
                assert torch.equal(naive, hf), f"{arch}: naive != transformers generate"
                assert n_new == 40
                new, steps = new + n_new - 1, steps + n_steps
        tau = new / steps
        with capsys.disabled():
            print(f"\n  {arch:9s} {'untrained' if kind else 'fitted':9s} head: tau = {tau:.2f}")
        if kind is None:
            assert tau > 1.05, f"{arch}: the fitted head should get multi-token paths accepted (tau={tau:.2f})"
        assert tau <= max(max(t.depth, t.lookup) for t in TREES) + 1


def test_tau_bounded_and_paths_long_on_llama():
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=24, depth=5, top_k=4))
    lengths = []
    for ids in prompts(4, seed=3):
        prev = ids.shape[1]
        for out in model.ea_generate(ids, max_new_tokens=40):
            lengths.append(out.shape[1] - prev)
            prev = out.shape[1]
    assert max(lengths) >= 3, "no step accepted two or more drafted tokens"
    assert sum(lengths) / len(lengths) > 1.5
    assert max(lengths) <= 5 + 1


def test_reduced_draft_vocabulary():
    base = tiny_base("qwen2", predictable=True)
    draft = fit_draft(base, draft_vocab_size=128)
    model = EaModel(base, draft, tree=TreeConfig(total_token=16, depth=4, top_k=4))
    for ids in prompts(3, seed=5):
        assert torch.equal(model.eagenerate(ids, max_new_tokens=32), model.naivegenerate(ids, max_new_tokens=32))


def test_stops_on_every_eos_id():
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=16, depth=4, top_k=4))
    ids = prompts(1, seed=7)[0]
    free = model.naivegenerate(ids, max_new_tokens=40)[0, ids.shape[1]:].tolist()
    eos = [free[25], free[30]]  # two stop ids; the earlier one in the text must end it
    base.generation_config.eos_token_id = eos
    first = min(free.index(e) for e in eos)
    try:
        for gen in (model.eagenerate, model.naivegenerate):
            out = gen(ids, max_new_tokens=40)[0, ids.shape[1]:].tolist()
            assert out == free[: first + 1]
    finally:
        base.generation_config.eos_token_id = None


def test_streaming_yields_growing_prefixes():
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=16, depth=4, top_k=4))
    ids = prompts(1, seed=9)[0]
    final = model.eagenerate(ids, max_new_tokens=30)
    chunks = list(model.ea_generate(ids, max_new_tokens=30))
    assert torch.equal(chunks[-1], final)
    for a, b in zip(chunks, chunks[1:]):
        assert b.shape[1] > a.shape[1] and torch.equal(b[:, : a.shape[1]], a)
    naive_chunks = list(model.naive_generate(ids, max_new_tokens=30))
    assert len(naive_chunks) == 30 and torch.equal(naive_chunks[-1], final)


def test_max_length_and_max_new_tokens_respected():
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=16, depth=4, top_k=4))
    ids = prompts(1, seed=11)[0]
    n = ids.shape[1]
    for k in (1, 2, 7):
        assert model.eagenerate(ids, max_new_tokens=k).shape[1] == n + k
    assert model.eagenerate(ids, max_new_tokens=100, max_length=n + 9).shape[1] == n + 9
    assert torch.equal(model.eagenerate(ids, max_new_tokens=0), ids)


def test_bf16_runs_and_mostly_agrees():
    base = tiny_base("llama", predictable=True)
    draft = fit_draft(base)
    base16 = base.to(torch.bfloat16)
    model = EaModel(base16, draft, tree=TreeConfig(total_token=16, depth=4, top_k=4))
    assert model.ea_layer.fc.weight.dtype == torch.bfloat16
    same = sum(torch.equal(model.eagenerate(p, max_new_tokens=24), model.naivegenerate(p, max_new_tokens=24))
               for p in prompts(4, seed=13))
    assert same >= 2  # bf16 rounding may flip rare near-ties; most prompts still agree exactly


def test_prompt_lookup_branch():
    from eagle.model.tree import add_branch, ancestor_matrix, lookup_continuation, Tree

    ctx = torch.tensor([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 3, 5, 6, 7])
    assert lookup_continuation(ctx, 3).tolist() == [2, 3, 5]  # latest earlier match of (5, 6, 7)
    assert lookup_continuation(torch.tensor([1, 2, 3]), 3).tolist() == []
    # shorter matches get shorter chains: halved per missing token of the 3-gram
    assert lookup_continuation(torch.tensor([1, 2, 9, 8, 7, 6, 5, 3, 1, 2]), 8).tolist() == [9, 8, 7, 6]
    assert lookup_continuation(torch.tensor([4, 9, 8, 7, 6, 5, 4]), 8).tolist() == [9, 8]
    assert lookup_continuation(torch.tensor([4, 9, 8, 7, 6, 5, 4]), 2).tolist() == [9]  # never empty
    parents = torch.tensor([0, 0, 0, 1])
    tree = Tree(torch.tensor([7, 2, 4, 3]), parents, torch.tensor([0, 1, 1, 2]), ancestor_matrix(parents, 2))
    grown = add_branch(tree, torch.tensor([2, 3, 5, 6]))  # shares 2 -> 3, then grows 5 -> 6
    assert grown.tokens.tolist() == [7, 2, 4, 3, 5, 6]
    assert grown.parents.tolist() == [0, 0, 0, 1, 3, 4]
    assert grown.depths.tolist() == [0, 1, 1, 2, 3, 4]
    assert grown.ancestors[5].nonzero().flatten().tolist() == [0, 1, 3, 4, 5]


def test_prompt_lookup_lifts_tau_of_an_untrained_head():
    """A near-bigram base falls into loops; copying from the context predicts them even when the
    neural draft knows nothing, and the output stays the base's own."""
    base = tiny_base("llama", predictable=True)
    draft = Eagle3Draft(DraftConfig.from_base(base.config))
    taus = {}
    for lookup in (0, 8):
        model = EaModel(base, draft, tree=TreeConfig(total_token=8, depth=3, top_k=2, lookup=lookup))
        new = steps = 0
        for ids in prompts(3, seed=21):
            out, n_new, n_steps = model.eagenerate(ids, max_new_tokens=64, log=True)
            assert torch.equal(out, model.naivegenerate(ids, max_new_tokens=64))
            new, steps = new + n_new - 1, steps + n_steps
        taus[lookup] = new / steps
    assert taus[8] > taus[0] + 0.5, taus


def _trace(model, ids, n):
    """Greedy output, the number of draft forwards, and the token counts of the verify forwards."""
    calls, sizes = [0], []
    hooks = [model.ea_layer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)),
             model.base_model.register_forward_pre_hook(
                 lambda _m, _a, kw: sizes.append(kw["input_ids"].shape[1]), with_kwargs=True)]
    try:
        out = model.eagenerate(ids, max_new_tokens=n)
    finally:
        for h in hooks:
            h.remove()
    return out, calls[0], sizes[1:]  # sizes[0] is the prefill


@pytest.mark.parametrize("setting", [dict(expand_threshold=0.3), dict(min_prob=0.05)])
def test_trimming_an_unsure_tree_is_lossless(setting):
    """An untrained draft is flat over its vocabulary: under expand_threshold it stops after the
    first layer, under min_prob no drafted node survives and each step verifies the root alone. A
    draft fitted on a predictable base stays confident: it drafts deep and keeps its paths. The
    greedy text never changes."""
    base = tiny_base("llama", predictable=True)
    for draft, unsure in ((Eagle3Draft(DraftConfig.from_base(base.config)), True), (fit_draft(base), False)):
        full = EaModel(base, draft, tree=TreeConfig(total_token=16, depth=5, top_k=4))
        lean = EaModel(base, draft, tree=TreeConfig(total_token=16, depth=5, top_k=4, **setting))
        for ids in prompts(3, seed=11):
            out_full, calls_full, sizes_full = _trace(full, ids, 30)
            out_lean, calls_lean, sizes_lean = _trace(lean, ids, 30)
            assert torch.equal(out_lean, out_full)
            assert torch.equal(out_lean, full.naivegenerate(ids, max_new_tokens=30))
            assert set(sizes_full) == {16}
            if "expand_threshold" in setting:
                fewer = calls_lean < calls_full / 2
                assert fewer if unsure else not fewer, (calls_lean, calls_full)
            elif unsure:
                assert set(sizes_lean) == {1}, sizes_lean
            else:
                assert max(sizes_lean) > 4 and sum(sizes_lean) < sum(sizes_full), sizes_lean


def test_pruned_expansion_keeps_the_tree():
    """draft_tree skips frontier nodes below min_prob or below the (total_token-1)-th best score so
    far. The tree must be exactly the rerank of the tree drafted without skipping, and the draft
    must have been called on fewer rows."""
    import math

    from eagle.model.generate import fused_features
    from eagle.model.kv_cache import DraftKV
    from eagle.model.tree import draft_tree

    base = tiny_base("llama", predictable=True)
    embed = base.get_input_embeddings()
    for draft in (fit_draft(base), Eagle3Draft(DraftConfig.from_base(base.config))):
        rows = []
        forward = draft.forward
        draft.forward = lambda hidden, *a, **kw: rows.append(hidden.shape[1]) or forward(hidden, *a, **kw)
        prompt = prompts(1, seed=5)[0]
        text = EaModel(base, draft, tree=TreeConfig(8, 3, 2)).naivegenerate(prompt, max_new_tokens=24)
        saved = full_rows = 0
        with torch.no_grad():
            feats = fused_features(base(input_ids=text, output_hidden_states=True).hidden_states,
                                   draft.config.aux_layer_ids)
            d = forward(feats, embed(torch.roll(text, -1, 1)), torch.arange(text.shape[1])[None])
            for r in range(prompt.shape[1], text.shape[1] - 1):
                kv = DraftKV(d.key[:, :, :r], d.value[:, :, :r])
                for total, min_prob, top_k in ((8, 0.0, 4), (8, 0.1, 4), (5, 0.05, 3), (16, 0.01, 4), (2, 0.0, 3)):
                    rows.clear()
                    cfg = TreeConfig(total_token=total, depth=5, top_k=top_k, min_prob=min_prob)
                    tree = draft_tree(draft, embed, kv, d.hidden[0, r - 1], text[0, r], cfg)
                    pruned_rows = sum(rows)
                    rows.clear()
                    big = draft_tree(draft, embed, kv, d.hidden[0, r - 1], text[0, r],
                                     TreeConfig(total_token=10**6, depth=5, top_k=top_k))
                    full_rows, saved = full_rows + sum(rows), saved + sum(rows) - pruned_rows
                    # the rerank of the unpruned tree: best total-1 by score (earlier node on ties), min_prob
                    keep = torch.sort(big.logp[1:], descending=True, stable=True).indices[: total - 1].sort().values + 1
                    if min_prob:
                        keep = keep[big.logp[keep] >= math.log(min_prob)]
                    keep = torch.cat([torch.zeros(1, dtype=torch.long), keep])
                    remap = torch.full((len(big),), -1, dtype=torch.long)
                    remap[keep] = torch.arange(keep.numel())
                    assert torch.equal(tree.tokens, big.tokens[keep]), (r, cfg)
                    assert torch.equal(tree.parents, remap[big.parents[keep]]), (r, cfg)
                    assert torch.equal(tree.depths, big.depths[keep]) and torch.allclose(tree.logp, big.logp[keep])
        assert 0 < saved < full_rows, (saved, full_rows)


def test_greedy_walk_accepts_what_the_all_rows_rule_accepts():
    """On the CPU accept_greedy walks from the root reading only the visited rows' argmax; the rule
    over every row at once (a GPU's, and the replay script's) must give the same path and bonus
    token, on trees with deep matches, no match, a match ending at a leaf, and tied maxima."""
    from eagle.model.generate import accept_greedy, accept_targets
    from eagle.model.sampling import greedy_tokens
    from eagle.model.tree import Tree, ancestor_matrix

    gen = torch.Generator().manual_seed(0)
    depths_seen = set()
    for trial in range(300):
        t, v = int(torch.randint(1, 40, (1,), generator=gen)), 50
        parents, tokens, depths = [0], [7], [0]
        for i in range(1, t):  # siblings hold distinct tokens, as a top-k draw does
            p = int(torch.randint(0, i, (1,), generator=gen))
            used = {tokens[c] for c in range(1, i) if parents[c] == p}
            tok = next(x for x in torch.randperm(v, generator=gen).tolist() if x not in used)
            parents.append(p), tokens.append(tok), depths.append(depths[p] + 1)
        par = torch.tensor(parents)
        tree = Tree(torch.tensor(tokens), par, torch.tensor(depths), ancestor_matrix(par, max(depths)))
        logits = torch.randn(t, v, generator=gen).to(torch.bfloat16)
        for i in range(t):  # mostly steer each row to one of its children, so paths run deep
            kids = [c for c in range(1, t) if parents[c] == i]
            if kids and torch.rand(1, generator=gen) < 0.8:
                logits[i, tokens[kids[int(torch.randint(0, len(kids), (1,), generator=gen))]]] = 10.0
            if trial % 3 == 0:  # a tie: the first maximal id wins, in both rules
                j = int(logits[i].float().argmax())
                logits[i, (j + 1 + int(torch.randint(0, v - 1, (1,), generator=gen))) % v] = logits[i, j]
        path, bonus = accept_greedy(tree, logits)
        ref_path, ref_bonus = accept_targets(tree, greedy_tokens(logits))
        assert torch.equal(path, ref_path) and int(bonus) == int(ref_bonus), trial
        depths_seen.add(path.numel() - 1)
    assert {0, 1, 2, 3} <= depths_seen  # the trees exercised no match, and deep ones


def test_loaded_lm_head_gets_a_plain_row_at_prefill(tmp_path):
    """logits_to_keep=1 slices a [1, 1, H] view with the sequence's batch stride, which sends torch's
    CPU linear through a copy of the whole lm_head; load_base hands it a plain row, same logits."""
    from eagle.model.base import load_base

    tiny_base("llama").save_pretrained(tmp_path / "b")
    base = load_base(str(tmp_path / "b"), dtype=torch.float32)
    seen = []
    base.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0].stride()))
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        last = base(input_ids=ids, logits_to_keep=1).logits[0, -1]
        full = base(input_ids=ids).logits[0, -1]
    assert seen[0] == (64, 64, 1)  # [1, 1, H] with H = 64: standard strides, not (12 * 64, 64, 1)
    assert torch.allclose(last, full, atol=1e-5)


def test_default_tree_follows_device_and_dtype():
    """A float32 verify costs more per token on a CPU than a bf16 one, so its default tree is smaller
    and each node must be likelier; EaModel takes the base's dtype when no tree is given."""
    cpu16, cpu32 = TreeConfig.for_device("cpu", torch.bfloat16), TreeConfig.for_device("cpu", torch.float32)
    assert (cpu16.total_token, cpu32.total_token, TreeConfig.for_device("cuda").total_token) == (24, 8, 60)
    assert (cpu16.lookup, cpu16.min_prob) == (32, 0.01) and (cpu32.lookup, cpu32.min_prob) == (16, 0.1)
    base = tiny_base("llama")
    assert EaModel(base, fit_draft(base, steps=1)).tree == cpu32
    base16 = tiny_base("llama", dtype=torch.bfloat16)
    assert EaModel(base16, Eagle3Draft(DraftConfig.from_base(base16.config))).tree == cpu16
