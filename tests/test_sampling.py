"""Speculative sampling must draw from exactly the base's distribution (chi-square tests)."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from eagle.model.ea_model import EaModel
from eagle.model.generate import accept_sampling
from eagle.model.sampling import SamplingParams
from eagle.model.tree import Tree, TreeConfig, ancestor_matrix
from tiny import fit_draft, tiny_base

V = 8


def small_tree():
    # root 0 -> children 1, 2, 3 (tokens 0, 1, 2, tried in that order); node 1 -> children 4, 5
    parents = torch.tensor([0, 0, 0, 0, 1, 1])
    return Tree(tokens=torch.tensor([7, 0, 1, 2, 3, 0]), parents=parents,
                depths=torch.tensor([0, 1, 1, 1, 2, 2]), ancestors=ancestor_matrix(parents, 2))


def broken_accept(tree, logits, sp, generator=None):
    """A plausible bug: a rejected child keeps its mass (no residual), so it can come back as the
    bonus token and early children are over-sampled."""
    p_all = sp.probs(logits)
    node, path = 0, [0]
    while True:
        kids = [i for i in range(1, len(tree)) if int(tree.parents[i]) == node]
        for c in kids:
            if torch.rand((), generator=generator) < p_all[node][tree.tokens[c]]:
                node = c
                break
        else:
            return torch.tensor(path), torch.multinomial(p_all[node], 1, generator=generator)[0]
        path.append(node)


def first_two_tokens(accept, tree, logits, sp, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V, V + 1)  # second index V = "no second token this step"
    for _ in range(n):
        path, bonus = accept(tree, logits, sp, g)
        out = tree.tokens[path[1:]].tolist() + [int(bonus)]
        counts[out[0], out[1] if len(out) > 1 else V] += 1
    return counts


def exact_first_two(tree, logits, sp):
    """What plain sampling gives for the first token, and for the second when the first is a tree
    child (then the step continues from that child's distribution)."""
    p = sp.probs(logits)
    child_of = {int(tree.tokens[i]): i for i in range(1, len(tree)) if int(tree.parents[i]) == 0}
    exp = torch.zeros(V, V + 1)
    for t1 in range(V):
        if t1 in child_of:
            exp[t1, :V] = p[0, t1] * p[child_of[t1]]
        else:
            exp[t1, V] = p[0, t1]
    return exp


def chi2_pvalue(counts, expected_p):
    n = counts.sum()
    keep = expected_p.flatten() * n >= 5
    obs, exp = counts.flatten()[keep], expected_p.flatten()[keep] * n
    # pool the rare cells into one so the test stays valid
    obs = torch.cat([obs, (n - obs.sum()).view(1)])
    exp = torch.cat([exp, (n - exp.sum()).view(1)])
    if exp[-1] < 1e-9:
        if obs[-1] > 0:  # tokens where the exact law has none: not the same distribution, for certain
            return 0.0
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs.numpy(), exp.numpy()).pvalue


@pytest.mark.parametrize("sp", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_p=0.9),
                                SamplingParams(temperature=1.3, top_k=5)])
def test_acceptance_rule_preserves_distribution(sp):
    g = torch.Generator().manual_seed(1)
    tree = small_tree()
    logits = torch.randn(len(tree), V, generator=g) * 1.5
    logits[0, 0] += 2.0  # make the first child likely, so both accept and reject paths are common
    exp = exact_first_two(tree, logits, sp)
    counts = first_two_tokens(accept_sampling, tree, logits, sp, n=12000)
    assert chi2_pvalue(counts, exp) > 1e-3


def test_chi_square_catches_a_broken_rule():
    g = torch.Generator().manual_seed(1)
    tree = small_tree()
    logits = torch.randn(len(tree), V, generator=g) * 1.5
    logits[0, 0] += 2.0
    sp = SamplingParams(temperature=1.0)
    counts = first_two_tokens(broken_accept, tree, logits, sp, n=12000)
    assert chi2_pvalue(counts, exact_first_two(tree, logits, sp)) < 1e-6


def test_eagenerate_samples_the_base_distribution():
    """End to end: the joint law of the first two generated tokens (the second goes through tree
    verification) equals the base's own, under temperature + top-p + top-k."""
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=10, depth=3, top_k=3, min_prob=0.02))
    sp = SamplingParams(temperature=0.9, top_p=0.95, top_k=4)
    prompt = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        p1 = sp.probs(base(prompt).logits[0, -1])
        support = p1.nonzero().flatten().tolist()
        exact = {}
        for t1 in support:
            p2 = sp.probs(base(torch.cat([prompt, torch.tensor([[t1]])], 1)).logits[0, -1])
            for t2 in p2.nonzero().flatten().tolist():
                exact[(t1, t2)] = float(p1[t1] * p2[t2])
    torch.manual_seed(0)
    n, counts, accepted = 1500, dict.fromkeys(exact, 0), 0
    for _ in range(n):
        chunks = list(model.ea_generate(prompt, temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k,
                                        max_new_tokens=2))
        out = tuple(chunks[-1][0, -2:].tolist())
        counts[out] += 1  # KeyError here = a token outside the base's top-k/top-p support
        accepted += len(chunks) == 2  # second token came from the tree step
    keys = list(exact)
    obs = torch.tensor([counts[k] for k in keys], dtype=torch.float)
    exp = torch.tensor([exact[k] for k in keys])
    assert chi2_pvalue(obs, exp / exp.sum()) > 1e-3
    assert accepted == n


def test_a_generator_makes_a_sample_repeatable_without_the_global_rng():
    base = tiny_base("llama", predictable=True)
    model = EaModel(base, fit_draft(base), tree=TreeConfig(total_token=10, depth=3, top_k=3))
    prompt = torch.tensor([[5, 17, 99, 3, 42]])
    for gen in (model.eagenerate, model.naivegenerate):
        state = torch.random.get_rng_state()
        runs = [gen(prompt, temperature=1.0, max_new_tokens=24, generator=torch.Generator().manual_seed(s)).tolist()
                for s in (3, 3, 4)]
        assert runs[0] == runs[1] != runs[2]
        assert torch.equal(torch.random.get_rng_state(), state), "the global RNG was drawn from"


def test_greedy_sampling_params_validation():
    for bad in (dict(temperature=-0.1), dict(top_p=1.5), dict(top_p=-0.1), dict(top_k=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    sp = SamplingParams(temperature=1.0, top_k=2)
    assert (sp.probs(torch.tensor([0.0, 3.0, 1.0, 2.0])) > 0).tolist() == [False, True, False, True]
    sp = SamplingParams(temperature=1.0, top_p=0.5)
    assert (sp.probs(torch.tensor([0.0, 5.0, 1.0, 0.0])) > 0).sum() == 1


def reference_nucleus(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """The definition, by a full sort: keep tokens in order until the mass before one reaches
    top_p, plus every token tied with the last kept one."""
    top, _ = torch.sort(p, descending=True)
    kept = int(((top.cumsum(0) - top) < top_p).sum())
    return p >= top[kept - 1]


@pytest.mark.parametrize("scale", [8.0, 3.0, 0.05])  # peaked, typical, nearly flat (past any top-k)
def test_top_p_nucleus_matches_full_sort(scale):
    gen = torch.Generator().manual_seed(0)
    for top_p in (0.5, 0.9, 0.95, 0.999):
        logits = torch.randn(6, 5000, generator=gen) * scale
        logits[0, :40] = logits[0].max()  # a tie at the top, spanning the cut
        logits[1] = logits[1].to(torch.bfloat16).float()  # bf16 logits: many ties everywhere
        sp = SamplingParams(temperature=1.0, top_p=top_p)
        got = sp.probs(logits)
        p = logits.softmax(-1)
        for row in range(logits.shape[0]):
            keep = reference_nucleus(p[row], top_p)
            assert torch.equal(got[row] > 0, keep), (scale, top_p, row)
            assert torch.allclose(got[row][keep], p[row][keep] / p[row][keep].sum())
            assert p[row][keep].sum() >= top_p - 1e-5


@pytest.mark.parametrize("support", [40, 5000])  # a nucleus (drawn among its entries), a full row (multinomial)
def test_draw_follows_the_distribution(support):
    from eagle.model.sampling import draw

    g = torch.Generator().manual_seed(0)
    p = torch.zeros(5000)
    idx = torch.randperm(5000, generator=g)[:support]
    p[idx] = torch.rand(support, generator=g) ** 4  # uneven, so a wrong mapping shows
    if support > 40:
        p[idx[:40]] += 0.05  # keep most mass on 40 tokens, so the test has enough counts per cell
    p /= p.sum()
    n = 20000
    draws = torch.stack([draw(p, g) for _ in range(n)])
    assert draws.shape == (n,) and bool((p[draws] > 0).all())  # never a token outside the support
    assert chi2_pvalue(torch.bincount(draws, minlength=5000).float(), p) > 1e-3
    assert draw(p[None].expand(3, -1), g).shape == (3,)  # rows drawn one each
    assert int(draw(p, torch.Generator().manual_seed(7))) == int(draw(p, torch.Generator().manual_seed(7)))


def test_greedy_tokens_break_ties_as_argmax():
    """`max` stands in for `argmax` (4x faster on CPU bf16); both must pick the first of equal maxima."""
    from eagle.model.sampling import greedy_tokens

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        logits = (torch.randn(64, 5000, generator=g) * 2).round().to(dtype)  # many exact ties
        assert torch.equal(greedy_tokens(logits), logits.argmax(-1))
        assert torch.equal(greedy_tokens(logits[0]), logits[0].argmax(-1))
