"""Rewrite assistant turns and FIM middles with the base model itself.

A draft head is judged on whether it guesses what the *base* will write, so it learns best from
the base's own outputs rather than from human-written answers (EAGLE regenerates ShareGPT the
same way). Generation is plain decoding, greedy by default, many prompts at once in one
continuous batch (eagle.model.batch_decode). The output is appended record by record as each
is done, tagged with ``source_line`` (its input line), so an interrupted run resumes where it
stopped.

An answer cut by ``max_new_tokens`` is kept with ``"truncated": true``: training then does not
teach an end token the model never wrote there. Conversations keep the turns up to that one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .chat_mask import chat_prompt_ids
from .fim_tokens import detect_fim_sentinels, fim_prompt_ids
from .records import chat_messages, detect_format, iter_records, messages_for_turns


@dataclass
class RegenConfig:
    """One regeneration run; the CLI flags map to these fields one to one."""

    basepath: str
    input: str
    output: str
    data_format: str = "auto"
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0  # 0: greedy, what a greedy eagenerate will verify against
    top_p: float = 1.0
    seed: int = 0
    max_prompt_tokens: int = 2048  # FIM context is cut around the cursor; longer chats stop there
    fim_mode: str = "psm"
    dtype: str | None = None  # None: the hardware's fastest (eagle.model.base.fast_dtype); "auto": as stored
    limit: int | None = None  # stop after this many input records (counting those done before)
    max_turns: int | None = None  # chat: keep only the first N assistant turns (N=1: single-turn prompts)

    def __post_init__(self):
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"--max-turns must be at least 1, got {self.max_turns}")


@dataclass
class RegenReport:
    done_before: int = 0  # records found in the output when the run started
    regenerated: int = 0  # records written by this run
    turns: int = 0  # answers or middles generated
    truncated: int = 0  # of those, cut by max_new_tokens
    dropped: int = 0  # chat records whose first prompt was already too long
    data_format: str = ""
    notes: list[str] = field(default_factory=list)


def _load_base(path: str, dtype: str | None = None):
    """The base model and its tokenizer, as everywhere else (zoo names, GGUF files, clear errors)."""
    from eagle.model.base import load_base, load_tokenizer, resolve_dtype

    model = load_base(path, dtype=resolve_dtype(dtype))
    return model, load_tokenizer(path)


def _resume(output: Path) -> set[int]:
    """Input lines already done; a half-written last line (killed run) is cut off."""
    done: set[int] = set()
    if not output.exists():
        return done
    good_end = 0
    with open(output, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(int(json.loads(raw)["source_line"]))
            except (ValueError, KeyError, TypeError):
                break
            good_end += len(raw)
    if good_end < output.stat().st_size:
        with open(output, "r+b") as f:
            f.truncate(good_end)
    return done


def _stop_ids(model, tokenizer, extra: int | None = None) -> list[int]:
    ids = set() if extra is None else {extra}
    for eos in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(eos)
    return sorted(ids)


def _sampling(config: RegenConfig):
    from eagle.model.sampling import SamplingParams

    # top_p 1 is "off" for both; no top_k and no repetition penalty: a checkpoint's
    # generation_config must not change what we record as the model's own prediction
    return SamplingParams(temperature=config.temperature, top_p=config.top_p)


def regenerate(config: RegenConfig, model=None, tokenizer=None, progress: bool = True) -> RegenReport:
    """Regenerate `config.input` into `config.output` (appending, skipping records done).

    Every record is a coroutine that yields the prompts it needs answered, one at a time (a chat
    turn's prompt holds the answers before it), and returns the rewritten record or None. The
    prompts of the records in flight share one continuous batch. Records are taken in windows of
    four batches, so that the batch can group prompts of similar length and no prompt waits for
    more than its window; they are written in input order as soon as those before them are."""
    import torch

    from eagle.model.batch_decode import ContinuousBatch

    if model is None or tokenizer is None:
        model, tokenizer = _load_base(config.basepath, config.dtype)
    torch.manual_seed(config.seed)
    output = Path(config.output)
    done = _resume(output)
    report = RegenReport(done_before=len(done))
    fmt = detect_format(config.input) if config.data_format == "auto" else config.data_format
    numbered = list(iter_records(config.input, fmt))
    report.data_format = fmt
    if config.limit is not None:
        numbered = numbered[:config.limit]
    todo = [(line, rec) for line, rec in numbered if line not in done]
    if fmt == "fim":
        end_id = detect_fim_sentinels(tokenizer).end_id  # fail before any generation when the model has no FIM
        record_job, stops = _fim_record, _stop_ids(model, tokenizer, end_id)
    else:
        record_job, stops = _chat_record, _stop_ids(model, tokenizer)
    batch = ContinuousBatch(model, config.batch_size, config.max_new_tokens, stops, _sampling(config))
    jobs = {}  # index in todo -> the record's coroutine
    finished = {}  # index in todo -> rewritten record (None: dropped), until those before it are written
    written = started = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out, \
            tqdm(total=len(todo), desc=f"regen {fmt}", unit="rec", disable=not progress) as bar:

        def advance(i, reply):
            """Send record i its answer; submit its next prompt, or hold it for writing."""
            try:
                batch.submit(i, jobs[i].send(reply))
            except StopIteration as stop:
                finished[i] = stop.value
                del jobs[i]
                bar.update(1)

        while started < len(todo) or batch.busy:
            if not batch.waiting:
                for i in range(started, min(started + 4 * config.batch_size, len(todo))):
                    jobs[i] = record_job(todo[i][1], tokenizer, config, report)
                    advance(i, None)
                    started += 1
            for i, ids, ended in batch.step():
                advance(i, (ids, ended))
            if written not in finished:
                continue
            while written in finished:  # the records done in input order so far
                new = finished.pop(written)
                if new is not None:
                    out.write(json.dumps({**new, "source_line": todo[written][0]}, ensure_ascii=False) + "\n")
                    report.regenerated += 1
                written += 1
            out.flush()
            os.fsync(out.fileno())
    return report


def _fim_record(rec, tokenizer, config, report):
    prompt = fim_prompt_ids(tokenizer, rec["prefix"], rec["suffix"], config.fim_mode, config.max_prompt_tokens)
    ids, finished = yield prompt
    new = {**rec, "middle": tokenizer.decode(ids)}
    new.pop("truncated", None)
    if not finished:
        new["truncated"] = True
        report.truncated += 1
    report.turns += 1
    return new


def _chat_record(rec, tokenizer, config, report):
    messages = chat_messages(rec)
    keep = messages_for_turns(messages, config.max_turns)  # messages kept
    cut = False
    for k in range(keep):
        if messages[k]["role"] != "assistant":
            continue
        prompt = chat_prompt_ids(tokenizer, messages[:k])
        if len(prompt) > config.max_prompt_tokens:
            keep = k  # the rest of the conversation would not fit in training anyway
            break
        ids, finished = yield prompt
        messages[k]["content"] = tokenizer.decode(ids, skip_special_tokens=True)
        report.turns += 1
        if not finished:
            keep, cut = k + 1, True
            report.truncated += 1
            break
    if not any(m["role"] == "assistant" for m in messages[:keep]):
        report.dropped += 1
        return None
    key, text_key = ("conversations", "value") if "conversations" in rec else ("messages", "content")
    new = {**rec, key: [{**t, text_key: m["content"]} for t, m in zip(rec[key][:keep], messages[:keep])]}
    new.pop("truncated", None)
    if cut:
        new["truncated"] = True
    return new
