"""Fill-in-the-middle records from Python source (tutorial step 5.1.2, with real middles).

A record is a contiguous window of one file cut in three: ``prefix + middle + suffix`` is
exactly the file's text there. The middle is one of four shapes, mixed by `FimConfig.mix`:

- ``body``:  a function body (after its docstring), what the tutorial meant to teach;
- ``block``: the body of an if/for/while/with/try/match block;
- ``line``:  one whole line, indentation and newline included (HumanEval-infilling style);
- ``span``:  a random character span over 1..max_middle_lines lines, starting and ending
  mid-line, as an editor's cursor produces.

Files that are not UTF-8, do not parse or are huge are skipped, counted and named in one
warning; they never stop a run. Each file gets its own random stream seeded by
``(seed, relative path)``, so a file's records do not depend on which other files are included.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .records import atomic_output

KINDS = ("body", "block", "line", "span")


@dataclass
class FimConfig:
    """How FIM records are cut from source files (lengths are in characters or lines)."""

    mix: dict[str, float] = field(default_factory=lambda: {"body": 0.4, "block": 0.2, "line": 0.2, "span": 0.2})
    seed: int = 0
    lines_per_record: int = 25  # one record per this many non-blank lines of a file (at least one)
    max_middle_lines: int = 30  # the benchmark's FIM workload uses middles of 1..30 lines
    max_middle_chars: int = 2000
    max_prefix_chars: int = 2000  # context kept before the middle; 0 = the whole file
    max_suffix_chars: int = 1000  # context kept after the middle; 0 = the whole file
    max_file_bytes: int = 500_000
    split: str = "all"  # "all", "train" (files outside the held-out bucket) or "eval" (inside)
    heldout_percent: float = 5.0

    def __post_init__(self):
        unknown = set(self.mix) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown FIM kinds {sorted(unknown)} in mix: expected {KINDS}")
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {self.mix}")
        if self.split not in ("all", "train", "eval"):
            raise ValueError(f"split must be all, train or eval, got {self.split!r}")
        if self.max_middle_lines < 1 or self.lines_per_record < 1:
            raise ValueError("max_middle_lines and lines_per_record must be >= 1")
        if not 0 <= self.heldout_percent <= 100:
            raise ValueError(f"heldout_percent must be in [0, 100], got {self.heldout_percent}")


def parse_mix(text: str) -> dict[str, float]:
    """'body=0.5,span=0.5' -> {'body': 0.5, 'span': 0.5} (kinds left out get weight 0)."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bad mix entry {part!r}: expected KIND=WEIGHT, e.g. body=0.5")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad weight in mix entry {part!r}") from None
    return mix


def is_heldout(relpath: str, percent: float = 5.0) -> bool:
    """True when a file belongs to the evaluation bucket.

    The bucket comes from a hash of the path relative to its corpus root (posix form), so the
    rule is the same on every machine and train and eval never share a file.
    """
    bucket = int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:8], 16) % 10_000
    return bucket < percent * 100


@dataclass
class FimReport:
    """What one build produced and what it had to skip."""

    files_seen: int = 0
    files_used: int = 0
    records: int = 0
    kinds: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def skipped_message(self, limit: int = 20) -> str:
        names = ", ".join(f"{f} ({why})" for f, why in self.skipped[:limit])
        more = f" and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} of {self.files_seen} files: {names}{more}"


class SkipFile(Exception):
    """A file that cannot be used; the message is the reason shown to the user."""


# ---------------------------------------------------------------------------- source geometry

class _Source:
    """Source text with line offsets; converts ast (line, byte column) to string offsets."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1]
        # ast columns count UTF-8 bytes, not characters
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))

    def line_of(self, offset: int) -> int:
        """1-based line holding string offset `offset`."""
        lo, hi = 0, len(self.lines) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def statements_span(self, stmts: list[ast.stmt]) -> tuple[int, int]:
        """String span of a statement list, widened to whole lines where only blanks lie beside."""
        first, last = stmts[0], stmts[-1]
        start = self.offset(first.lineno, first.col_offset)
        line_start = self.starts[first.lineno - 1]
        if not self.text[line_start:start].strip():
            start = line_start  # the indentation belongs to the middle, as the model emits it
        end = self.offset(last.end_lineno, last.end_col_offset)
        line_end = self.starts[last.end_lineno]
        rest = self.text[end:line_end]
        if not rest.strip() or rest.strip().startswith("#"):
            end = line_end  # trailing comment and newline close the block
        return start, end


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _candidate_spans(tree: ast.AST, src: _Source) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(function bodies, other block bodies) as string spans."""
    bodies, blocks = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stmts = node.body[1:] if len(node.body) > 1 and _is_docstring(node.body[0]) else node.body
            bodies.append(src.statements_span(stmts))
        elif isinstance(node, (ast.ClassDef, ast.Module)):
            continue  # class and module bodies are whole files, not completions
        else:
            for name in ("body", "orelse", "finalbody"):
                stmts = getattr(node, name, None)
                if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                    blocks.append(src.statements_span(stmts))
    return bodies, blocks


# ---------------------------------------------------------------------------- one file

def read_python(path: Path, max_bytes: int) -> tuple[str, ast.AST]:
    """Text and syntax tree of a Python file, or SkipFile with the reason."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SkipFile(f"{size} bytes, over the {max_bytes}-byte limit")
        data = path.read_bytes()
    except OSError as e:
        raise SkipFile(f"unreadable: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SkipFile(f"not UTF-8: byte {e.start}") from None
    text = text.removeprefix("\ufeff")
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise SkipFile(f"does not parse: {e.msg}, line {e.lineno}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise SkipFile(f"does not parse: {type(e).__name__}") from None
    return text, tree


def fim_from_source(text: str, tree: ast.AST, relpath: str, config: FimConfig) -> list[dict]:
    """FIM records for one parsed file, deterministic in (config.seed, relpath)."""
    src = _Source(text)
    nonblank = sum(1 for line in src.lines if line.strip())
    if nonblank == 0:
        return []
    rng = random.Random(f"{config.seed}:{relpath}")
    bodies, blocks = _candidate_spans(tree, src)
    pools = {"body": _fitting(bodies, src, config), "block": _fitting(blocks, src, config)}
    for pool in pools.values():
        rng.shuffle(pool)
    line_pool = [i for i, line in enumerate(src.lines) if line.strip() and len(line) <= config.max_middle_chars]

    records, used = [], set()
    for _ in range(max(1, math.ceil(nonblank / config.lines_per_record))):
        kinds = [k for k, w in config.mix.items() if w > 0 and (k not in pools or pools[k])]
        if not kinds:
            break
        kind = rng.choices(kinds, weights=[config.mix[k] for k in kinds])[0]
        if kind in pools:
            span = pools[kind].pop()
        elif kind == "line" and line_pool:
            i = rng.choice(line_pool)
            span = (src.starts[i], src.starts[i + 1])
        else:
            span = _random_span(src, rng, config)
        if span is None or span in used:
            continue
        used.add(span)
        records.append(_record(src, span, relpath, kind, config))
    return records


def _fitting(spans: list[tuple[int, int]], src: _Source, config: FimConfig) -> list[tuple[int, int]]:
    keep = []
    for s, e in spans:
        middle = src.text[s:e]
        if (middle.strip() and middle.strip() not in ("pass", "...") and len(middle) <= config.max_middle_chars
                and middle.count("\n") <= config.max_middle_lines):
            keep.append((s, e))
    return keep


def _random_span(src: _Source, rng: random.Random, config: FimConfig) -> tuple[int, int] | None:
    n = len(src.text)
    for _ in range(8):  # a few tries to avoid whitespace-only middles
        start = rng.randrange(n)
        first = src.line_of(start)
        last = min(len(src.lines), first + rng.randrange(config.max_middle_lines))
        lo = max(start + 1, src.starts[last - 1])
        end = rng.randint(lo, src.starts[last]) if lo <= src.starts[last] else src.starts[last]
        end = min(end, start + config.max_middle_chars)
        if src.text[start:end].strip():
            return start, end
    return None


def _record(src: _Source, span: tuple[int, int], relpath: str, kind: str, config: FimConfig) -> dict:
    s, e = span
    p0 = 0
    if config.max_prefix_chars and s > config.max_prefix_chars:
        p0 = s - config.max_prefix_chars
        nl = src.text.find("\n", p0, s)
        p0 = nl + 1 if nl >= 0 else p0  # start the context on a line boundary
    s1 = len(src.text)
    if config.max_suffix_chars and s1 - e > config.max_suffix_chars:
        s1 = e + config.max_suffix_chars
        nl = src.text.rfind("\n", e, s1)
        s1 = nl + 1 if nl >= 0 else s1
    return {"prefix": src.text[p0:s], "middle": src.text[s:e], "suffix": src.text[e:s1],
            "file": relpath, "line": src.line_of(s), "kind": kind}


# ---------------------------------------------------------------------------- files and folders

def iter_python_files(paths: Iterable[str | Path],
                      exclude_dir: Callable[[str], bool] | None = None) -> Iterator[tuple[Path, str]]:
    """``(path, relpath)`` for every ``.py`` file under `paths` (files are taken as given).

    `relpath` is relative to the folder named on the command line, in posix form: it seeds the
    per-file random stream and the held-out rule, so it must not depend on the machine.
    """
    for root in map(Path, paths):
        if root.is_file():
            yield root, root.name
        elif root.is_dir():
            for path in sorted(root.rglob("*.py")):
                rel = path.relative_to(root)
                if exclude_dir and any(exclude_dir(part) for part in rel.parts[:-1]):
                    continue
                if path.is_file():
                    yield path, rel.as_posix()
        else:
            why = "broken or looping symlink" if root.is_symlink() else "no such file or folder"
            raise FileNotFoundError(f"{root}: {why}")


def fim_records(files: Iterable[tuple[Path, str]], config: FimConfig, report: FimReport,
                progress: bool = True) -> Iterator[dict]:
    """Records of every file in turn; unusable files go to `report.skipped`."""
    files = list(files)
    for path, rel in tqdm(files, desc="fim", unit="file", disable=not progress or len(files) < 2):
        report.files_seen += 1
        try:
            text, tree = read_python(path, config.max_file_bytes)
        except SkipFile as e:
            report.skipped.append((str(path), str(e)))
            continue
        recs = fim_from_source(text, tree, rel, config)
        report.files_used += bool(recs)
        for rec in recs:
            report.records += 1
            report.kinds[rec["kind"]] += 1
            yield rec


def select_files(files: Iterable[tuple[Path, str]], config: FimConfig,
                 limit: int | None = None) -> list[tuple[Path, str]]:
    """The files of `config.split` (by the held-out rule), at most `limit` of them."""
    keep = [(p, rel) for p, rel in files
            if config.split == "all" or is_heldout(rel, config.heldout_percent) == (config.split == "eval")]
    return keep[:limit] if limit is not None else keep


def build_fim(paths: Iterable[str | Path], output: str | Path, config: FimConfig | None = None,
              append: bool = False, progress: bool = True,
              exclude_dir: Callable[[str], bool] | None = None, limit_files: int | None = None) -> FimReport:
    """Write FIM records for the `.py` files and folders in `paths` to JSONL `output`.

    `config.split` keeps the train or eval side of the held-out rule. Skipped files are listed
    in the returned report and in one UserWarning. A build that makes no record never changes an
    existing `output`.
    """
    config = config or FimConfig()
    report = FimReport()
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    files = select_files(iter_python_files(paths, exclude_dir), config, limit_files)
    # An append adds to the file in place (the tutorial calls it once per source file).
    with (open(output, "a", encoding="utf-8") if append else atomic_output(output)) as out:
        for rec in fim_records(files, config, report, progress):
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if report.skipped:
        warnings.warn(report.skipped_message(), stacklevel=2)
    return report


def convert_code_to_fim(code_file: str | Path, output_file: str | Path) -> int:
    """The tutorial's converter (step 5.1.2), with real middles: append FIM records of one file.

    Returns the number of records written. A file that cannot be used gives a warning and 0,
    where the tutorial returned silently.
    """
    report = build_fim([code_file], output_file, append=True, progress=False)
    return report.records
