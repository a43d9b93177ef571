"""scripts/vocab_coverage.py scores the draft's first token at each generated position against the
base's pick. Off by one position it would score the wrong pairs: a fitted draft's agreement then
collapses to a random one's, and a guess read from the whole sequence would differ from one read
from the prefix alone."""

import torch

from scripts_module import load_script
from tiny import base_sequences, fit_draft, tiny_base

vocab_coverage = load_script("vocab_coverage")


def test_first_draft_token_is_scored_against_the_token_it_guesses():
    base = tiny_base("llama", predictable=True)
    draft = fit_draft(base).eval()
    seqs = base_sequences(base, n=4, prompt_len=8, new=24)  # the base's greedy continuations
    n = 8
    agree = [a for s in seqs for a in vocab_coverage.first_draft_agrees(base, draft, s[None], n)]
    assert len(agree) == 4 * 23  # every generated token but the first (which the prefill makes)
    assert sum(agree) / len(agree) > 0.8
    unfit = fit_draft(base, steps=1)
    chance = [a for s in seqs for a in vocab_coverage.first_draft_agrees(base, unfit, s[None], n)]
    assert sum(chance) / len(chance) < 0.3

    # causality: the guess at each token equals the one made from its prefix alone
    s = seqs[0][None]
    full = vocab_coverage.first_draft_agrees(base, draft, s, n)
    for i in (n + 1, n + 7, s.shape[1] - 1):  # token i, guessed from x_0..x_{i-1}
        assert vocab_coverage.first_draft_agrees(base, draft, s[:, :i + 1], n)[-1] == full[i - n - 1]


def test_repeated_pairs_are_pairs_seen_before_in_prompt_or_answer():
    #              prompt: 5 6 7 | answer: 6 7 8 6 7 9
    seq = [5, 6, 7, 6, 7, 8, 6, 7, 9]
    # scored from the answer's second token: (6,7) in the prompt, (7,8) new, (8,6) new, (6,7), (7,9) new
    assert vocab_coverage.repeated_pairs(seq, 3) == [True, False, False, True, False]
