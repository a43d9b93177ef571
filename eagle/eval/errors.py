"""Error analysis (tutorial step 5.3.3, `analyze_errors`): where the model's completion differs
from the expected one.

    eagle eval errors --basepath B --ea-model-path D --testpath test.jsonl --num-samples 10 -o errors.json

Each test record becomes a prompt and an expected text: a FIM record's prompt is
`fim_prompt_ids(prefix, suffix)` (middle sentinel last) and its target the `middle`; a chat
record's target is its last assistant turn; the tutorial's `{"text", "expected"}` pairs are taken
as they are. The completion is greedy EAGLE decoding, which is the base's own greedy output, so
a mismatch is the base model's error, not the draft's.

Two fixes over the tutorial's version: only the new tokens are compared (decoding `outputs[0]`
includes the prompt, so every sample was an "error"), and generation stops at the end-of-middle
token of FIM prompts. A prediction matches when equal once whitespace at both ends is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from eagle.eval.quality import case_from_record, complete, exact_match, prompt_room


def first_difference(a: str, b: str) -> int:
    """Index of the first character where a and b differ (len of the shorter when one is a prefix)."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def analyze_errors(model, test_data, num_samples: int = 10, max_new_tokens: int = 50, tokenizer=None,
                   verbose: bool = True) -> list[dict]:
    """The mismatching samples among the first `num_samples` of `test_data` (records or a JSONL path):
    a list of {index, input, predicted, target, first_difference}. `model` is an EaModel."""
    from eagle.eval.quality import load_records

    tok = tokenizer or model.tokenizer
    errors = []
    room = prompt_room(model, max_new_tokens)
    for i, rec in enumerate(load_records(test_data, limit=num_samples)):
        case = case_from_record(tok, rec, room)
        c = complete(model, case.prompt_ids, max_new_tokens, case.stop_ids)
        pred = c.text
        if exact_match(case.reference, pred):
            continue
        errors.append({"index": i, "input": case.input_text, "predicted": pred, "target": case.reference,
                       "first_difference": first_difference(pred.strip(), case.reference.strip()),
                       "finish_reason": c.finish_reason})
    if verbose:
        for k, error in enumerate(errors):
            print(f"\n=== Error {k + 1} ===")
            print(f"Input: {error['input']}")
            print(f"Predicted: {error['predicted']}")
            print(f"Target: {error['target']}")
    return errors


def write_errors(errors: list[dict], n: int, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"samples": n, "errors": len(errors), "exact_match": (n - len(errors)) / n if n else None,
              "mismatches": errors}
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return path
