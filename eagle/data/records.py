"""JSONL training records: validation, loading, format detection.

Two formats exist:
- ``fim``:  ``{"prefix": str, "middle": str, "suffix": str}`` (extra keys such as ``file``,
  ``line``, ``kind`` are kept and ignored by training).
- ``chat``: ShareGPT ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}``
  or OpenAI ``{"messages": [{"role": "user"|"assistant"|"system", "content": str}]}``.

Every error names the file and the 1-based line, so a bad record in a 100k-line file is found
at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMATS = ("fim", "chat", "mixed")  # mixed: each record is fim or chat by its own keys
FIM_KEYS = ("prefix", "middle", "suffix")

# ShareGPT dumps use more speaker names than the documented human/gpt/system.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
}
OPENAI_ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A record or file that cannot be used; the message names file and line."""


def record_format(record: dict) -> str | None:
    """'fim' or 'chat' from the keys of one record, None when neither fits."""
    if any(k in record for k in FIM_KEYS):
        return "fim"
    if "conversations" in record or "messages" in record:
        return "chat"
    return None


def validate_record(record: object, data_format: str) -> None:
    """Raise ValueError (without location) when `record` is not a valid `data_format` record."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    if record.get("truncated") not in (None, True, False):  # "yes" would read as true in training
        raise ValueError(f"'truncated' must be true or false, got {type(record['truncated']).__name__}")
    if data_format == "mixed":  # one file of fim and chat records: each record says what it is
        data_format = record_format(record)
        if data_format is None:
            raise ValueError(f"neither a fim record (prefix/middle/suffix) nor a chat record "
                             f"(conversations/messages): keys {sorted(record)}")
    if data_format == "fim":
        for key in FIM_KEYS:
            if key not in record:
                found = record_format(record)
                hint = " (this looks like a chat record)" if found == "chat" else ""
                raise ValueError(f"missing key {key!r}: a fim record needs prefix, middle, suffix{hint}")
            if not isinstance(record[key], str):
                raise ValueError(f"{key!r} must be a string, got {type(record[key]).__name__}")
            check_text(record[key], repr(key))
    elif data_format == "chat":
        messages = chat_messages(record)
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("no assistant message: nothing for the model to learn")
    else:
        raise ValueError(f"unknown data format {data_format!r}: expected one of {FORMATS}")


def check_text(text: str, where: str) -> None:
    """Refuse a lone UTF-16 surrogate (JSON "\\ud800"): json accepts it, tokenizers crash on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} is not valid Unicode: lone surrogate {text[e.start]!a} at character "
                         f"{e.start}") from None


def chat_messages(record: dict) -> list[dict]:
    """The conversation of a chat record as OpenAI-style ``[{"role", "content"}]``.

    Accepts ShareGPT (``conversations``/``from``/``value``) and OpenAI (``messages``/``role``/
    ``content``). Raises ValueError on a missing key, wrong type or unknown speaker.
    """
    if "conversations" in record:
        key, role_key, text_key = "conversations", "from", "value"
    elif "messages" in record:
        key, role_key, text_key = "messages", "role", "content"
    else:
        found = "fim" if record_format(record) == "fim" else "neither"
        raise ValueError(f"missing key 'conversations' (ShareGPT) or 'messages' (OpenAI); "
                         f"found keys {sorted(record)} ({found})")
    turns = record[key]
    if not isinstance(turns, list):
        raise ValueError(f"{key!r} must be a list, got {type(turns).__name__}")
    if not turns:
        raise ValueError(f"{key!r} is empty")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"{key}[{i}] must be an object, got {type(turn).__name__}")
        for k in (role_key, text_key):
            if k not in turn:
                raise ValueError(f"{key}[{i}] is missing key {k!r}")
        speaker, text = turn[role_key], turn[text_key]
        if not isinstance(speaker, str):
            raise ValueError(f"{key}[{i}].{role_key} must be a string, got {type(speaker).__name__}")
        if not isinstance(text, str):
            raise ValueError(f"{key}[{i}].{text_key} must be a string, got {type(text).__name__}")
        check_text(text, f"{key}[{i}].{text_key}")
        if key == "conversations":
            role = SHAREGPT_ROLES.get(speaker.lower())
            if role is None:
                raise ValueError(f"{key}[{i}].from is {speaker!r}: expected human, gpt or system")
        else:
            role = speaker
            if role not in OPENAI_ROLES:
                raise ValueError(f"{key}[{i}].role is {speaker!r}: expected one of {OPENAI_ROLES}")
        messages.append({"role": role, "content": text})
    return messages


def messages_for_turns(messages: list[dict], max_turns: int | None) -> int:
    """How many leading messages to keep for the first `max_turns` assistant answers: up to and
    including the last of them, since a user turn after it has no answer to learn from. All of them
    when `max_turns` is None or the conversation has fewer answers."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if max_turns is None or len(answers) < max_turns:
        return len(messages)
    return answers[max_turns - 1] + 1


def first_turns(record: dict, max_turns: int) -> dict | None:
    """A chat record cut after its `max_turns`-th answer, in its own format (ShareGPT or OpenAI)
    and with its other keys; None when it has no answer to learn from."""
    messages = chat_messages(record)
    if not any(m["role"] == "assistant" for m in messages):
        return None
    key = "conversations" if "conversations" in record else "messages"
    return {**record, key: record[key][:messages_for_turns(messages, max_turns)]}


def open_data(path: Path):
    """`path` opened for reading bytes; DataError naming it when it is missing, a folder, unreadable."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: {(e.strerror or str(e)).lower()}") from None


@contextmanager
def atomic_output(output: str | Path, inputs: tuple = ()):
    """A text file to write `output` through: a temporary file beside it that replaces `output` only
    when the block ends without an error and wrote something, so a failed or empty run never
    truncates an earlier output. An output that is one of `inputs` is refused before anything runs."""
    output = Path(output)
    for i in inputs:
        if Path(i).resolve() == output.resolve():
            raise DataError(f"{output}: the output would overwrite its own input; write it elsewhere")
    part = output.with_name(f".{output.name}.part")
    try:
        with open(part, "w", encoding="utf-8") as f:
            yield f
        if part.stat().st_size:
            part.replace(output)
    finally:
        part.unlink(missing_ok=True)


def parse_line(raw: bytes) -> object:
    """One JSONL line as JSON; ValueError with the reason (no location) when it is not.

    utf-8-sig: files saved by some Windows editors start with a BOM, which is not JSON.
    """
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"bad JSON: {e.msg} (column {e.colno})") from None


def parsed_lines(path: Path) -> Iterator[tuple[int, object]]:
    """``(line_number, parsed JSON, or the ValueError saying why not)`` for each non-blank line."""
    with open_data(path) as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    yield lineno, parse_line(raw)
                except ValueError as e:
                    yield lineno, e


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """Yield ``(line_number, parsed_json)`` for each non-blank line; DataError on bad JSON."""
    path = Path(path)
    for lineno, record in parsed_lines(path):
        if isinstance(record, ValueError):
            raise DataError(f"{path}:{lineno}: {record}")
        yield lineno, record


def iter_records(path: str | Path, data_format: str = "auto") -> Iterator[tuple[int, dict]]:
    """Like `load_jsonl`, yielding ``(line_number, record)``."""
    path = Path(path)
    if data_format == "auto":
        data_format = detect_format(path)
    elif data_format not in FORMATS:
        raise ValueError(f"unknown data format {data_format!r}: expected one of {FORMATS}")
    n = 0
    for lineno, record in iter_jsonl(path):
        try:
            validate_record(record, data_format)
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
        n += 1
        yield lineno, record
    if n == 0:
        raise DataError(f"{path}: empty file: no records")


def load_jsonl(path: str | Path, data_format: str = "auto") -> Iterator[dict]:
    """Yield the records of a JSONL file, each validated as `data_format` (fim, chat, mixed, auto).

    'auto' takes the file's format ('mixed' when it holds both kinds). Blank lines are skipped.
    Raises DataError naming file and line for bad JSON, a missing key, a wrong type, and for a
    file with no records at all.
    """
    for _, record in iter_records(path, data_format):
        yield record


def detect_format(path: str | Path) -> str:
    """'fim', 'chat' or 'mixed' (both kinds of record), read from every record of a JSONL file.

    Lines that do not parse or have neither kind of keys are skipped here: loading reports them
    with their line numbers. A file where no line says its format raises DataError.
    """
    path = Path(path)
    found: set[str] = set()
    first = None  # (line, what it holds) of the first record without a format
    unparsed = None  # the first line that is not JSON
    for lineno, record in parsed_lines(path):
        if isinstance(record, ValueError):
            unparsed = unparsed or lineno
            continue
        fmt = record_format(record) if isinstance(record, dict) else None
        if fmt is None:
            first = first or (lineno, sorted(record) if isinstance(record, dict) else type(record).__name__)
        else:
            found.add(fmt)
    if len(found) == 2:
        return "mixed"
    if found:
        return found.pop()
    if unparsed:
        list(iter_jsonl(path))  # raises the loader's own error for that line
    if first is None:
        raise DataError(f"{path}: empty file: no records")
    raise DataError(f"{path}:{first[0]}: cannot tell the format: the record has {first[1]}; "
                    f"fim needs prefix/middle/suffix, chat needs conversations or messages")


def check_format(path: str | Path, data_format: str) -> str:
    """Refuse a file whose records are not `data_format`; return the format to load it as.

    For the trainer: ``--data-format fim`` on a chat file must stop before any work is done.
    """
    found = detect_format(path)
    if data_format in ("auto", found) or (data_format == "mixed" and found in ("fim", "chat")):
        return found if data_format == "auto" else data_format
    holds = {"fim": "fim records (prefix/middle/suffix)", "chat": "chat records (conversations/messages)",
             "mixed": "both fim and chat records"}[found]
    raise DataError(f"{path}: --data-format {data_format} given, but the file holds {holds}; "
                    f"use --data-format {found}")
