"""Rewrite assistant turns and FIM middles with the base model itself.

A draft head is judged on whether it guesses what the *base* will write, so it learns best from
the base's own outputs rather than from human-written answers (EAGLE regenerates ShareGPT the
same way). Generation is plain `model.generate`, batched with left padding. The output is
appended record by record, each tagged with ``source_line`` (its input line), so an
interrupted run resumes where it stopped.

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
from .records import chat_messages, detect_format, iter_records


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


def generate_batch(model, tokenizer, prompts: list[list[int]], config: RegenConfig,
                   stop_ids: list[int]) -> list[tuple[list[int], bool]]:
    """Continue each prompt; returns (new ids without the stop token, finished) per prompt."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    width = max(len(p) for p in prompts)
    # left padding: every row's last prompt token sits at the same column, where generation starts
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # [B, L]
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p):] = torch.tensor(p)
        attention[row, width - len(p):] = 1
    sampling = config.temperature > 0
    # explicit settings: the checkpoint's generation_config (repetition penalty, top_k) must not
    # change what we record as the model's own prediction
    kwargs = dict(do_sample=sampling, max_new_tokens=config.max_new_tokens, eos_token_id=stop_ids,
                  pad_token_id=pad, repetition_penalty=1.0, num_beams=1)
    if sampling:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    results = []
    stops = set(stop_ids)
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        results.append((row if cut is None else row[:cut], cut is not None))
    return results


def regenerate(config: RegenConfig, model=None, tokenizer=None, progress: bool = True) -> RegenReport:
    """Regenerate `config.input` into `config.output` (appending, skipping records done)."""
    import torch

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
        detect_fim_sentinels(tokenizer)  # fail before any generation when the model has no FIM
    step = _regen_fim if fmt == "fim" else _regen_chat
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out, \
            tqdm(total=len(todo), desc=f"regen {fmt}", unit="rec", disable=not progress) as bar:
        for b in range(0, len(todo), config.batch_size):
            batch = todo[b:b + config.batch_size]
            for line, rec in step(batch, model, tokenizer, config, report):
                out.write(json.dumps({**rec, "source_line": line}, ensure_ascii=False) + "\n")
                report.regenerated += 1
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    return report


def _regen_fim(batch, model, tokenizer, config, report):
    s = detect_fim_sentinels(tokenizer)
    prompts = [fim_prompt_ids(tokenizer, r["prefix"], r["suffix"], config.fim_mode, config.max_prompt_tokens)
               for _, r in batch]
    results = generate_batch(model, tokenizer, prompts, config, _stop_ids(model, tokenizer, s.end_id))
    for (line, rec), (ids, finished) in zip(batch, results):
        new = {**rec, "middle": tokenizer.decode(ids)}
        new.pop("truncated", None)
        if not finished:
            new["truncated"] = True
            report.truncated += 1
        report.turns += 1
        yield line, new


def _messages_for_turns(messages: list[dict], max_turns: int | None) -> int:
    """How many leading messages hold at most `max_turns` assistant turns (all when None)."""
    if max_turns is None:
        return len(messages)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return answers[max_turns - 1] + 1 if len(answers) > max_turns else len(messages)


def _regen_chat(batch, model, tokenizer, config, report):
    stop_ids = _stop_ids(model, tokenizer)
    convos = [chat_messages(rec) for _, rec in batch]
    keep = [_messages_for_turns(c, config.max_turns) for c in convos]  # messages kept per record
    cut = [False] * len(batch)
    nxt = [0] * len(batch)  # next message index to look at
    while True:
        jobs = []
        for r, c in enumerate(convos):
            k = next((i for i in range(nxt[r], keep[r]) if c[i]["role"] == "assistant"), None)
            if k is None:
                continue
            prompt = chat_prompt_ids(tokenizer, c[:k])
            if len(prompt) > config.max_prompt_tokens:
                keep[r] = k  # the rest of the conversation would not fit in training anyway
                continue
            jobs.append((r, k, prompt))
        if not jobs:
            break
        results = generate_batch(model, tokenizer, [p for _, _, p in jobs], config, stop_ids)
        for (r, k, _), (ids, finished) in zip(jobs, results):
            convos[r][k]["content"] = tokenizer.decode(ids, skip_special_tokens=True)
            report.turns += 1
            nxt[r] = k + 1
            if not finished:
                keep[r], cut[r] = k + 1, True
                report.truncated += 1
    for (line, rec), c, n, was_cut in zip(batch, convos, keep, cut):
        if not any(m["role"] == "assistant" for m in c[:n]):
            report.dropped += 1
            continue
        key, text_key = ("conversations", "value") if "conversations" in rec else ("messages", "content")
        turns = [{**t, text_key: m["content"]} for t, m in zip(rec[key][:n], c[:n])]
        new = {**rec, key: turns}
        new.pop("truncated", None)
        if was_cut:
            new["truncated"] = True
        yield line, new
