"""`from bleu_score import corpus_bleu`: the module the tutorial's completion test imports (step 5.4.1).

The tutorial calls it as

    score = corpus_bleu([expected_suffix], [[generated]])    # then prints f"BLEU Score: {score:.2f}"

that is, references first as a list of strings, then the hypotheses as a list of lists of
strings. That order is odd (NLTK's `corpus_bleu` takes a list of reference *lists* first and
hypotheses second; sacrebleu takes hypotheses first), so every common shape is accepted and read
by its structure:

    corpus_bleu(["ref a", "ref b"], [["hyp a"], ["hyp b"]])     # the tutorial's: one hypothesis per inner list
    corpus_bleu(["ref a", "ref b"], [["hyp a", "hyp b"]])       # the same, as one sacrebleu-style stream
    corpus_bleu(["ref a", "ref b"], ["hyp a", "hyp b"])         # plain pairs: references, hypotheses
    corpus_bleu([["ref a", "alt a"], ["ref b"]], ["hyp a", "hyp b"])  # NLTK order: reference lists, hypotheses

Strings are compared as text (sacrebleu's 13a tokenizer), not as lists of characters. The result
is a float BLEU in [0, 100] from `eagle.eval.quality.bleu`: a single pair is scored as sacrebleu's
sentence BLEU (effective n-gram order), so a short but correct completion does not score 0 for
lack of 4-grams.
"""

from __future__ import annotations

__all__ = ["corpus_bleu", "sentence_bleu"]


def _strings(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(s, str) for s in x)


def _lists_of_strings(x) -> bool:
    return isinstance(x, (list, tuple)) and all(_strings(s) for s in x)


def _pairs(references, hypotheses) -> tuple[list[str], list[list[str]]]:
    """-> (hypotheses [N], reference lists [N][R]) whatever shape the caller used."""
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("corpus_bleu takes lists: corpus_bleu([reference], [[hypothesis]]) "
                        "(or sentence_bleu(reference, hypothesis) for one pair)")
    if _strings(references) and _lists_of_strings(hypotheses):
        n = len(references)
        if len(hypotheses) == n and all(len(h) == 1 for h in hypotheses):  # the tutorial: [[h1], [h2], ...]
            return [h[0] for h in hypotheses], [[r] for r in references]
        if len(hypotheses) == 1 and len(hypotheses[0]) == n:  # one stream: [[h1, h2, ...]]
            return list(hypotheses[0]), [[r] for r in references]
        raise ValueError(f"{n} references but hypotheses shaped {[len(h) for h in hypotheses]}: "
                         "give one hypothesis per reference, e.g. corpus_bleu([ref], [[hyp]])")
    if _strings(references) and _strings(hypotheses):
        if len(references) != len(hypotheses):
            raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
        return list(hypotheses), [[r] for r in references]
    if _lists_of_strings(references) and _strings(hypotheses):  # NLTK: list of reference lists first
        if len(references) != len(hypotheses):
            raise ValueError(f"{len(references)} reference lists but {len(hypotheses)} hypotheses")
        if any(not r for r in references):
            raise ValueError("every hypothesis needs at least one reference")
        return list(hypotheses), [list(r) for r in references]
    raise TypeError("corpus_bleu(references, hypotheses) takes strings: ([ref, ...], [[hyp], ...]), "
                    "([ref, ...], [hyp, ...]) or ([[ref, ...], ...], [hyp, ...])")


def corpus_bleu(references, hypotheses) -> float:
    """BLEU in [0, 100] of hypotheses against references (see the module docstring for shapes)."""
    from eagle.eval.quality import bleu

    hyps, refs = _pairs(references, hypotheses)
    return bleu(refs, hyps)


def sentence_bleu(reference: str, hypothesis: str) -> float:
    """BLEU in [0, 100] of one hypothesis against one reference."""
    return corpus_bleu([reference], [hypothesis])
