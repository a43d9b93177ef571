"""Coding requests from documented functions: chat records that ask for a function the way a user
would ("Write a Python function `name(args)` that ..."), answered with the function's source.

They are the offline stand-in for the instruction data a code assistant sees (HumanEval-style
requests). The answers are human-written; `eagle data regen` rewrites them with the base model,
so the head learns what the base itself writes. The held-out rule of `eagle.data.fim_source`
applies, so evaluation files stay unseen.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

from tqdm import tqdm

from .fim_source import is_heldout
from .records import atomic_output

TEMPLATES = (
    "Write a Python function `{sig}` that {doc}",
    "Implement `{sig}` in Python. It should {doc}",
    "Complete the code I provided:\n\n```python\ndef {sig}:\n    \"\"\"{full}\"\"\"\n```",
    "Can you write a Python function `{sig}`? {Doc}",
)


def _sentence(doc: str) -> str:
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return " ".join(first.split())


def function_requests(source: str, rng: random.Random, max_lines: int = 60) -> list[dict]:
    """Chat records for the documented, reasonably sized functions of one module's source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        n_lines = node.end_lineno - node.lineno + 1
        if not doc or not 3 <= n_lines <= max_lines:
            continue
        first = _sentence(doc)
        if not 20 <= len(first) <= 300:
            continue
        sig = f"{node.name}({ast.unparse(node.args)})"
        body = "\n".join(lines[node.lineno - 1 - len(node.decorator_list): node.end_lineno])
        indent = len(body) - len(body.lstrip())
        body = "\n".join(line[indent:] for line in body.splitlines())
        text = first[0].lower() + first[1:]
        request = rng.choice(TEMPLATES).format(sig=sig, doc=text, Doc=first, full=doc.strip())
        out.append({"messages": [{"role": "user", "content": request},
                                 {"role": "assistant", "content": f"```python\n{body}\n```"}],
                    "function": node.name, "line": node.lineno})
    return out


def build_requests(roots: list[Path], output: str | Path, split: str = "train", heldout_percent: float = 5.0,
                   limit: int | None = None, seed: int = 0, exclude_dir=lambda part: False) -> int:
    """Write chat records for every documented function under `roots` (shuffled with `seed`)."""
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be train, eval or all, got {split!r}")
    rng = random.Random(seed)
    records = []
    files = [(root, p) for root in roots for p in sorted(root.rglob("*.py"))
             if not any(exclude_dir(part) for part in p.relative_to(root).parts[:-1])]
    for root, path in tqdm(files, desc="functions", unit="file"):
        rel = path.relative_to(root).as_posix()
        if split != "all" and is_heldout(rel, heldout_percent) != (split == "eval"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for rec in function_requests(source, rng):
            records.append({**rec, "file": rel})
    rng.shuffle(records)
    records = records[:limit] if limit else records
    with atomic_output(output) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return len(records)
