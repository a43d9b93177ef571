"""The benchmark's prompt sets (BENCHMARK.md "Workloads"), as token ids ready to generate from.

- code:   HumanEval "Complete the code I provided" questions, chat template, greedy, 256 new tokens
- chat:   MT-Bench first turns, chat template, greedy, 256 new tokens
- fim:    infilling on held-out Python files (PSM with the model's own sentinels), greedy, <= 128
- sample: the code prompts at temperature 0.7, top_p 0.95 (naive, hf, eagle: speed and τ)

The question files live in the shared data folder (`data/eval/*.jsonl`), found by
`find_data_dir`: `--data-dir`, else `$EAGLE_EVAL_DATA`, else `shared/data/eval` beside or inside
the repository (a fresh clone sits next to `shared/`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

NAMES = ("code", "chat", "fim", "sample")
DEFAULT_NEW_TOKENS = {"code": 256, "chat": 256, "fim": 128, "sample": 256}
SAMPLE_TEMPERATURE, SAMPLE_TOP_P = 0.7, 0.95
QUESTION_FILES = {"code": "humaneval.jsonl", "chat": "mt_bench.jsonl", "sample": "humaneval.jsonl"}
ENV_DATA = "EAGLE_EVAL_DATA"


class WorkloadError(ValueError):
    """A workload cannot be built; the message says what is missing and how to point at it."""


@dataclass(frozen=True)
class Prompt:
    id: str
    input_ids: tuple[int, ...]


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: tuple[Prompt, ...]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 0.0
    extra_eos: frozenset[int] = frozenset()  # FIM: the end-of-middle token, beside the model's EOS ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


# ---------------------------------------------------------------------------- the data folder

def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def data_dir_candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    if explicit:
        return [Path(explicit)]
    if os.environ.get(ENV_DATA):
        return [Path(os.environ[ENV_DATA])]
    roots = [_repo_root(), Path.cwd()]
    out = []
    for root in roots:
        for rel in ("../shared/data/eval", "shared/data/eval", "data/eval"):
            p = (root / rel).resolve()
            if p not in out:
                out.append(p)
    return out


def find_data_dir(explicit: str | os.PathLike | None = None, need: tuple[str, ...] = ("humaneval.jsonl",)) -> Path:
    """The folder holding the eval question files `need`; an explicit folder (or $EAGLE_EVAL_DATA)
    must hold them, otherwise the first of the usual places that does."""
    tried = data_dir_candidates(explicit)
    for p in tried:
        if all((p / f).is_file() for f in need):
            return p
    where = ", ".join(str(p) for p in tried)
    raise WorkloadError(f"eval question files {', '.join(need)} not found (looked in {where}); "
                        f"pass --data-dir DIR or set {ENV_DATA}=DIR (the shared data/eval folder)")


def load_questions(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, str]]:
    """(question_id, first user turn) of each line of an EAGLE/Spec-Bench question file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                turn = rec["turns"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                raise WorkloadError(f"{path}:{lineno}: expected a JSON object with a non-empty 'turns' list") from None
            out.append((str(rec.get("question_id", lineno)), turn))
            if limit is not None and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------------------- prompt rendering

def chat_ids(tokenizer, user_text: str) -> tuple[int, ...]:
    """The user turn in the tokenizer's own chat template, ready for the assistant's reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise WorkloadError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
                            "the code and chat workloads need an instruct model")
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], add_generation_prompt=True,
                                         tokenize=False)
    return tuple(tokenizer(text, add_special_tokens=False).input_ids)


def fim_records(limit: int, source: str | os.PathLike | None = None, split: str = "eval",
                max_middle_lines: int = 30, seed: int = 0) -> list[dict]:
    """FIM records (prefix, middle, suffix, file) from files training never saw.

    The files are those of `eagle data corpus stdlib --split eval` (the stdlib, tests excluded,
    the held-out hash rule), or of `source` under the same rule. One record per file first, then
    a second per file and so on, so a small set still spans many files."""
    from eagle.data.corpus import NEVER_DIRS, TEST_DIRS, stdlib_roots
    from eagle.data.fim_source import FimConfig, FimReport, fim_records as cut, iter_python_files, select_files

    config = FimConfig(split=split, max_middle_lines=max_middle_lines, seed=seed)
    roots = [source] if source else stdlib_roots()
    skip = NEVER_DIRS | TEST_DIRS
    files = select_files(iter_python_files(roots, exclude_dir=lambda part: part in skip), config)
    per_file: dict[str, list[dict]] = {}
    for rec in cut(files, config, FimReport(), progress=False):
        lines = rec["middle"].count("\n") + (not rec["middle"].endswith("\n"))
        if 1 <= lines <= max_middle_lines:
            per_file.setdefault(rec["file"], []).append(rec)
    out, rank = [], 0
    while len(out) < limit and any(len(v) > rank for v in per_file.values()):
        out += [v[rank] for v in per_file.values() if len(v) > rank][: limit - len(out)]
        rank += 1
    if not out:
        raise WorkloadError(f"no held-out ({split}) Python files with usable FIM middles under "
                            f"{', '.join(map(str, roots))}; pass --fim-source DIR (and --fim-split all "
                            "for a folder that is held out as a whole)")
    return out


def fim_ids(tokenizer, rec: dict, max_tokens: int = 1536) -> tuple[int, ...]:
    from eagle.data.fim_tokens import fim_prompt_ids

    return tuple(fim_prompt_ids(tokenizer, rec["prefix"], rec["suffix"], "psm", max_tokens=max_tokens))


# ---------------------------------------------------------------------------- workloads

def build_workload(name: str, tokenizer, limit: int | None = None, max_new_tokens: int | None = None,
                   data_dir: str | os.PathLike | None = None, fim_source: str | os.PathLike | None = None,
                   fim_split: str = "eval") -> Workload:
    if name not in NAMES:
        raise WorkloadError(f"unknown workload {name!r}; choose from {', '.join(NAMES)}")
    new = max_new_tokens or DEFAULT_NEW_TOKENS[name]
    if name == "fim":
        from eagle.data.fim_tokens import detect_fim_sentinels

        try:
            sentinels = detect_fim_sentinels(tokenizer)
        except ValueError as e:
            raise WorkloadError(f"fim workload: {e}") from None
        recs = fim_records(limit if limit is not None else 80, fim_source, fim_split)
        prompts = tuple(Prompt(f"{r['file']}:{r['line']}", fim_ids(tokenizer, r)) for r in recs)
        return Workload(name, prompts, new, extra_eos=frozenset({sentinels.end_id}))
    folder = find_data_dir(data_dir, need=(QUESTION_FILES[name],))
    questions = load_questions(folder / QUESTION_FILES[name], limit)
    prompts = tuple(Prompt(qid, chat_ids(tokenizer, text)) for qid, text in questions)
    if name == "sample":
        return Workload(name, prompts, new, temperature=SAMPLE_TEMPERATURE, top_p=SAMPLE_TOP_P)
    return Workload(name, prompts, new)
