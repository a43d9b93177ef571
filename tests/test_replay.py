"""scripts/replay_tree.py must replay the decoding loop faithfully: in fp32 its teacher-forced trees
are the loop's own, so it counts exactly the loop's decoding steps."""

import argparse

import pytest
import torch

from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from scripts_module import load_script
from tiny import VOCAB, fit_draft, tiny_base

replay_tree = load_script("replay_tree")


def test_replay_counts_the_loops_steps():
    base = tiny_base("llama", predictable=True)
    draft = fit_draft(base)
    g = torch.Generator().manual_seed(7)
    settings = [(8, 0.0), (8, 0.05), (0, 0.0), (8, None)]
    taus = {s: [0, 0] for s in settings}
    for _ in range(3):
        ids = torch.randint(2, VOCAB, (1, 12), generator=g)
        rows = None
        for lookup, min_prob in settings[:3]:
            model = EaModel(base, draft, tree=TreeConfig(total_token=16, depth=5, top_k=4, lookup=lookup,
                                                         min_prob=min_prob))
            out, new, steps = model.eagenerate(ids, max_new_tokens=40, log=True)
            text = out[0].tolist()
            rows = rows or replay_tree.positions(model, text, ids.shape[1], settings)
            tokens, cycles, _, _ = replay_tree.replay(rows, len(text), ids.shape[1], (lookup, min_prob), {1: 1.0})
            assert (tokens, cycles) == (new - 1, steps), (lookup, min_prob)
        for s in settings:
            tokens, cycles, _, _ = replay_tree.replay(rows, len(text), ids.shape[1], s, {1: 1.0})
            taus[s][0] += tokens
            taus[s][1] += cycles
    tau = {s: t / c for s, (t, c) in taus.items()}
    assert tau[(8, 0.0)] > tau[(0, 0.0)] and tau[(8, 0.0)] > tau[(8, None)] > 1.0, tau  # both sources count


def test_cost_table_from_another_machine():
    cost = replay_tree.parse_cost("8:1.11,1:1,32:1.32")
    assert list(cost) == [1, 8, 32]
    # one cycle of a 16-token tree: between 8 and 32, interpolated; 64 tokens: the last cost held
    rows = [{(0, 0.0): (0, 16)}, {(0, 0.0): (0, 64)}]
    _, cycles, total, _ = replay_tree.replay(rows, 3, 0, (0, 0.0), cost)
    assert cycles == 2 and abs(total - (1.11 + 0.21 / 3 + 1.32)) < 1e-9
    for bad in ("8:1.1", "1:1,8", "1:1,0:0.5", "1:1,a:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            replay_tree.parse_cost(bad)


def test_several_heads_replay_one_text(capsys):
    """Heads compared side by side must be scored on the same text (the base's greedy decoding):
    the lookup branch alone, which reads the text only, then scores every head alike, and the
    first head's figures are those of a replay over that text."""
    base = tiny_base("llama", predictable=True)
    tree = TreeConfig(total_token=16, depth=5, top_k=4, lookup=8, min_prob=0.0)
    fitted, unfit = EaModel(base, fit_draft(base), tree=tree), EaModel(base, fit_draft(base, steps=1), tree=tree)
    settings = [(0, 0.0), (8, 0.0), (8, None)]
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(2, VOCAB, (12,), generator=g).tolist() for _ in range(3)]
    runs = replay_tree.replay_prompts([fitted, unfit], prompts, 30, settings, {1: 1.0})

    for i, prompt in enumerate(prompts):
        text = fitted.naivegenerate(torch.tensor([prompt]), max_new_tokens=30)[0].tolist()
        rows = replay_tree.positions(fitted, text, len(prompt), settings)
        for s in settings:
            assert runs[0][s][i] == replay_tree.replay(rows, len(text), len(prompt), s, {1: 1.0})
    assert runs[0][(8, None)] == runs[1][(8, None)]
    tau = [sum(t for t, *_ in run[(0, 0.0)]) / sum(c for _, c, *_ in run[(0, 0.0)]) for run in runs]
    assert tau[0] > 1.5 * tau[1], tau  # the fitted draft is told from the unfitted one

    replay_tree.print_table(["fit", "unfit"], runs, settings)
    table = capsys.readouterr().out.splitlines()
    assert table[1] == "1: fit" and table[5] == "2: unfit"
    assert table[6].endswith(" 0/3")  # the unfitted head's tree alone: worse on all three prompts
    assert table[8].endswith(" 0/0")  # lookup alone: the same on every prompt


def test_table_skips_prompts_without_a_cycle(capsys):
    """An answer that ends at its first token (EOS at once) replays to no cycle: it counts in
    neither head's better/worse tally, and a setting with no cycle at all prints τ 0."""
    settings = [(0, 0.0)]
    runs = [{(0, 0.0): [(0, 0, 0.0, 0), (6, 3, 3.0, 30)]}, {(0, 0.0): [(0, 0, 0.0, 0), (4, 4, 4.0, 40)]}]
    replay_tree.print_table(["a", "b"], runs, settings)
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[2] == "2.00" and out[4].split()[2] == "1.00" and out[4].endswith(" 0/1")
    replay_tree.print_table(["a"], [{(0, 0.0): [(0, 0, 0.0, 0)]}], settings)
    assert capsys.readouterr().out.splitlines()[1].split()[2] == "0.00"
