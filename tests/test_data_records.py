"""Loading, format detection, the format check and the split: corrupt input gives errors that
name the file and line; the split is the tutorial's, repeatable with a seed."""

from __future__ import annotations

import json
import os

import pytest

from eagle.data import DataError, check_file, check_format, detect_format, load_jsonl, split_dataset
from eagle.data.records import chat_messages, first_turns, messages_for_turns

FIM = {"prefix": "a", "middle": "b", "suffix": "c"}
CHAT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
OPENAI = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(path, *lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def test_load_good_files(tmp_path):
    fim = write(tmp_path / "f.jsonl", FIM, "", {**FIM, "file": "x.py", "line": 3})
    assert list(load_jsonl(fim, "fim")) == [FIM, {**FIM, "file": "x.py", "line": 3}]
    chat = write(tmp_path / "c.jsonl", CHAT, OPENAI)
    assert len(list(load_jsonl(chat))) == 2  # auto: the first record says chat
    assert detect_format(fim) == "fim" and detect_format(chat) == "chat"


@pytest.mark.parametrize("bad, fmt, message", [
    ('{"prefix": "a", "middle": "b"', "fim", r"bad\.jsonl:2: bad JSON"),
    ({"prefix": "a", "suffix": "c"}, "fim", r"bad\.jsonl:2: missing key 'middle'"),
    ({"prefix": "a", "middle": 3, "suffix": "c"}, "fim", r"bad\.jsonl:2: 'middle' must be a string, got int"),
    ([1, 2], "fim", r"bad\.jsonl:2: a record must be a JSON object, got list"),
    (CHAT, "fim", r"bad\.jsonl:2: missing key 'prefix'.*looks like a chat record"),
    ({"conversations": "hi"}, "chat", r"bad\.jsonl:2: 'conversations' must be a list, got str"),
    ({"conversations": [{"from": "human"}]}, "chat", r"bad\.jsonl:2: conversations\[0\] is missing key 'value'"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "chat", r"bad\.jsonl:2: .*'robot': expected human, gpt or system"),
    ({"messages": [{"role": "user", "content": None}]}, "chat", r"bad\.jsonl:2: messages\[0\]\.content must be a string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "chat", r"bad\.jsonl:2: no assistant message"),
    ({"text": "hi"}, "chat", r"bad\.jsonl:2: missing key 'conversations' \(ShareGPT\) or 'messages'"),
    # JSON "\ud800" parses, then crashes the tokenizer with no line: refused here instead
    ({**FIM, "middle": "x\ud800"}, "fim", r"bad\.jsonl:2: 'middle' is not valid Unicode: lone surrogate"),
    ({"messages": [{"role": "user", "content": "\udc00"}]}, "chat",
     r"bad\.jsonl:2: messages\[0\]\.content is not valid Unicode"),
    ({**FIM, "truncated": "yes"}, "fim", r"bad\.jsonl:2: 'truncated' must be true or false, got str"),
])
def test_corrupt_records_name_file_and_line(tmp_path, bad, fmt, message):
    good = FIM if fmt == "fim" else CHAT
    path = write(tmp_path / "bad.jsonl", good, bad, good)
    with pytest.raises(DataError, match=message):
        list(load_jsonl(path, fmt))


def test_empty_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty.jsonl: empty file"):
        list(load_jsonl(empty, "fim"))
    with pytest.raises(DataError, match="empty file"):
        detect_format(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(FIM).encode() + b"\n" + '{"prefix": "caf\xe9", "middle": "", "suffix": ""}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.jsonl:2: not UTF-8"):
        list(load_jsonl(latin, "fim"))


def test_a_bom_is_not_bad_json_and_a_folder_is_not_missing(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(FIM).encode() + b"\n")  # Windows editors write one
    assert list(load_jsonl(bom)) == [FIM] and detect_format(bom) == "fim"
    assert check_file(bom, echo=lambda line: None).ok
    for read in (load_jsonl, detect_format, lambda p: check_file(p, echo=print)):
        with pytest.raises(DataError, match=f"{tmp_path}: is a directory"):
            list(read(tmp_path))


def test_check_reports_bad_text_and_truncated(tmp_path):
    path = write(tmp_path / "d.jsonl", FIM, {**FIM, "prefix": "\ud800"}, {**FIM, "truncated": "yes"},
                 {**FIM, "truncated": True})
    report = check_file(path, echo=lambda line: None)
    assert [line for line, _ in report.errors] == [2, 3] and report.total == 4


def test_check_format_refuses_the_wrong_data_format(tmp_path):
    chat = write(tmp_path / "train.jsonl", CHAT)
    with pytest.raises(DataError, match="--data-format fim given, but the file holds chat records.*use --data-format chat"):
        check_format(chat, "fim")
    assert check_format(chat, "chat") == "chat" and check_format(chat, "auto") == "chat"
    with pytest.raises(DataError, match="x.jsonl:1: cannot tell the format"):
        detect_format(write(tmp_path / "x.jsonl", {"text": "hi"}))
    with pytest.raises(DataError, match="y.jsonl:1: bad JSON"):  # nothing parses: the loader's message
        detect_format(write(tmp_path / "y.jsonl", "{oops", {"text": "hi"}))


def test_a_file_of_both_kinds_is_mixed(tmp_path):
    """The quickstart's data: FIM records and chat records in one file. The format is read from
    every record, not the first, so 'auto' loads it and a wrong format is refused up front."""
    mixed = write(tmp_path / "train.jsonl", FIM, "{oops", {"text": "x"}, CHAT, OPENAI)
    assert detect_format(mixed) == "mixed"  # unreadable lines are the loader's to report
    assert check_format(mixed, "auto") == "mixed" and check_format(mixed, "mixed") == "mixed"
    with pytest.raises(DataError, match="given, but the file holds both fim and chat records; use --data-format mixed"):
        check_format(mixed, "fim")
    assert check_format(write(tmp_path / "f.jsonl", FIM), "mixed") == "mixed"
    good = write(tmp_path / "good.jsonl", FIM, CHAT, OPENAI)
    assert len(list(load_jsonl(good))) == 3
    report = check_file(good, "auto", echo=lambda line: None)
    assert report.ok and report.data_format == "mixed"
    report = check_file(mixed, "auto", echo=lambda line: None)
    assert [line for line, _ in report.errors] == [2, 3] and report.data_format == "mixed"


def test_check_reports_every_bad_record(tmp_path):
    path = write(tmp_path / "fim_data.jsonl", *[FIM] * 6, "{oops", {"prefix": "a"}, {**FIM, "middle": ""})
    out = []
    report = check_file(path, "fim", echo=out.append)
    assert [line for line in out if line.startswith("✓")] == [f"✓ Sample {i}: OK" for i in range(5)]
    assert [line for line, _ in report.errors] == [7, 8]
    assert any("fim_data.jsonl:7: bad JSON" in line for line in out)
    assert any("fim_data.jsonl:8: missing key 'middle'" in line for line in out)
    assert any("fim_data.jsonl:9: empty middle" in line for line in out)  # the tutorial's middle=""
    assert "Total samples: 9" in out and not report.ok
    ok = check_file(write(tmp_path / "chat.jsonl", CHAT, OPENAI), echo=out.append)
    assert ok.ok and ok.data_format == "chat" and ok.total == 2


def test_split_is_the_tutorials_and_repeatable(tmp_path, capsys):
    src = tmp_path / "fim_data.jsonl"
    lines = [json.dumps({**FIM, "middle": str(i)}) for i in range(40)]
    src.write_text("\n".join(lines) + "\n\n" + "\n")  # blank lines are not records
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = split_dataset("fim_data.jsonl")  # the tutorial's call: train.jsonl/test.jsonl here
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out.strip() == "Train: 38, Test: 2"
    train = (tmp_path / "train.jsonl").read_text().splitlines()
    test = (tmp_path / "test.jsonl").read_text().splitlines()
    assert (result.train, result.test) == (38, 2) and sorted(train + test) == sorted(lines)
    # seeded: same split twice; the last line had no newline in the tutorial's version and
    # would have been glued to the next one after shuffling
    src.write_text("\n".join(lines))
    a = split_dataset(src, 0.5, tmp_path / "a" / "tr.jsonl", tmp_path / "a" / "te.jsonl", seed=3)
    b = split_dataset(src, 0.5, tmp_path / "b" / "tr.jsonl", tmp_path / "b" / "te.jsonl", seed=3)
    assert a.train_file.read_text() == b.train_file.read_text()
    assert a.test_file.read_text() == b.test_file.read_text()
    assert len(list(load_jsonl(a.train_file, "fim"))) + len(list(load_jsonl(a.test_file, "fim"))) == 40
    c = split_dataset(src, 0.5, tmp_path / "c" / "tr.jsonl", tmp_path / "c" / "te.jsonl", seed=4)
    assert c.train_file.read_text() != a.train_file.read_text()


@pytest.mark.parametrize("content, message", [
    ([FIM, "{oops", FIM], r"in\.jsonl:2: bad JSON"),
    ([FIM, FIM, {"prefix": "a"}], r"in\.jsonl:3: missing key 'middle'"),
    ([FIM, {**FIM, "suffix": "\udfff"}], r"in\.jsonl:2: 'suffix' is not valid Unicode"),
    ([], r"in\.jsonl: empty file"),
])
def test_split_checks_records_as_the_trainer_does(tmp_path, content, message):
    """A bad line stops the split before anything is written, as it stops `eagle train`."""
    src = write(tmp_path / "in.jsonl", *content)
    with pytest.raises(DataError, match=message):
        split_dataset(src, 0.5, tmp_path / "out" / "train.jsonl", tmp_path / "out" / "test.jsonl", seed=0)
    assert not (tmp_path / "out").exists()


def test_split_refuses_to_overwrite_its_input_and_bad_ratios(tmp_path):
    src = write(tmp_path / "train.jsonl", *[FIM] * 12)
    before = src.read_text()
    with pytest.raises(ValueError, match="train.jsonl: the split would overwrite its own input"):
        split_dataset(src, 0.9, tmp_path / "train.jsonl", tmp_path / "test.jsonl")
    assert src.read_text() == before
    for ratio in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"train_ratio must be in \(0, 1\)"):
            split_dataset(src, ratio, tmp_path / "a.jsonl", tmp_path / "b.jsonl")


def test_split_warns_when_one_side_is_empty(tmp_path, capsys):
    src = write(tmp_path / "all.jsonl", FIM)
    assert split_dataset(src, 0.95, tmp_path / "a.jsonl", tmp_path / "b.jsonl").train == 0
    assert "1 records at train_ratio 0.95 leave one side empty" in capsys.readouterr().err


@pytest.mark.parametrize("max_turns, keep", [(None, 6), (1, 3), (2, 5), (3, 6)])
def test_messages_for_turns_ends_on_the_last_answer_kept(max_turns, keep):
    """`eagle data regen --max-turns` and the quickstart's ShareGPT first exchanges cut a conversation
    after its N-th answer: a user turn after it has nothing to learn from. With fewer answers than N
    the conversation stays whole."""
    turns = ["system", "human", "gpt", "human", "gpt", "human"]
    record = {"conversations": [{"from": who, "value": f"turn {i}"} for i, who in enumerate(turns)]}
    assert messages_for_turns(chat_messages(record), max_turns) == keep


def test_first_turns_keeps_the_format_and_other_keys():
    sharegpt = {"id": "x1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                                              {"from": "human", "value": "more"}, {"from": "gpt", "value": "no"}]}
    assert first_turns(sharegpt, 1) == {"id": "x1", "conversations": sharegpt["conversations"][:2]}
    assert first_turns(sharegpt, 5) == sharegpt
    openai = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}]}
    assert first_turns(openai, 1) == {"messages": openai["messages"][:3]}
    assert first_turns({"messages": openai["messages"][:2]}, 1) is None  # no answer: nothing to learn
    with pytest.raises(ValueError, match="from is 'bot'"):
        first_turns({"conversations": [{"from": "bot", "value": "?"}]}, 1)
