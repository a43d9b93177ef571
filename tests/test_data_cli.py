"""`eagle data ...` end to end through the real command parser."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from test_data_helpers import chat_tokenizer

from eagle.cli import main
from eagle.data import load_jsonl


def test_fim_check_split(tmp_path, capsys):
    src = tmp_path / "proj"
    src.mkdir()
    (src / "a.py").write_text(textwrap.dedent("""\
        def f(x):
            y = x * 2
            return y + 1


        def g():
            for i in range(3):
                print(i)
        """) * 5)
    (src / "bad.py").write_text("def (:\n")
    out = tmp_path / "fim.jsonl"
    assert main(["data", "fim", str(src), "-o", str(out), "--seed", "3", "--mix", "body=1,line=1",
                 "--lines-per-record", "3"]) == 0
    captured = capsys.readouterr()
    assert "FIM records" in captured.out and "bad.py (does not parse" in captured.err
    recs = list(load_jsonl(out, "fim"))
    assert {r["kind"] for r in recs} == {"body", "line"}

    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "✓ Sample 0: OK" in text and f"Total samples: {len(recs)}" in text
    assert main(["data", "check", str(out), "--format", "chat"]) == 1  # every record is reported
    assert f"fim.jsonl:{len(recs)}: missing key 'conversations'" in capsys.readouterr().out

    assert main(["data", "split", str(out), "--train-ratio", "0.8", "--out-dir", str(tmp_path / "s")]) == 0
    n_train = int(len(recs) * 0.8)
    assert capsys.readouterr().out.strip() == f"Train: {n_train}, Test: {len(recs) - n_train}"
    first = (tmp_path / "s" / "train.jsonl").read_text()
    main(["data", "split", str(out), "--train-ratio", "0.8", "--out-dir", str(tmp_path / "s")])
    assert (tmp_path / "s" / "train.jsonl").read_text() == first  # seeded by default


def test_show_and_stats_mark_targets(tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    chat_tokenizer("qwen2.5").save_pretrained(tok_dir)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hello"},
                                                  {"from": "gpt", "value": "Hi there!"}]}) + "\n")
    assert main(["data", "show", str(data), "--tokenizer", str(tok_dir)]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>assistant\n⟦Hi there!<|im_end|>⟧\n" in out
    assert main(["data", "stats", str(data), "--tokenizer", str(tok_dir)]) == 0
    assert "records: 1," in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["data", "fim", str(tmp_path / "missing"), "-o", str(tmp_path / "o.jsonl")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["data", "check", str(empty)]) == 1
    assert "empty file" in capsys.readouterr().out
    assert main(["data"]) == 2  # usage


FIM = {"prefix": "a", "middle": "b", "suffix": "c"}


def test_split_errors_are_messages_and_lose_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps(FIM) + "\n{oops\n")
    (tmp_path / "latin.jsonl").write_bytes(b'{"prefix": "caf\xe9", "middle": "", "suffix": ""}\n')
    (tmp_path / "empty.jsonl").write_text("")
    for args, message in [(["bad.jsonl"], "error: bad.jsonl:2: bad JSON"),
                          (["latin.jsonl"], "error: latin.jsonl:1: not UTF-8"),
                          (["empty.jsonl"], "error: empty.jsonl: empty file"),
                          (["missing.jsonl"], "error: missing.jsonl: no such file"),
                          ([str(tmp_path)], f"error: {tmp_path}: is a directory")]:
        assert main(["data", "split", *args]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "train.jsonl").exists() and not (tmp_path / "test.jsonl").exists()

    data = tmp_path / "train.jsonl"  # split in its own folder: would overwrite the input
    data.write_text("".join(json.dumps({**FIM, "middle": str(i)}) + "\n" for i in range(12)))
    before = data.read_text()
    assert main(["data", "split", "train.jsonl"]) == 1
    assert "train.jsonl: the split would overwrite its own input" in capsys.readouterr().err
    assert data.read_text() == before
    with pytest.raises(SystemExit) as e:
        main(["data", "split", "train.jsonl", "--train-ratio", "1.5", "--out-dir", "s"])
    assert e.value.code == 2 and "argument --train-ratio: must be in (0, 1), got 1.5" in capsys.readouterr().err


def test_fim_failure_leaves_the_output_and_says_why(tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    out.write_text(json.dumps(FIM) + "\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "empty.py").write_text("")
    for name, why in [("broken.py", "every file was skipped"), ("empty.py", "no code to cut a middle from")]:
        assert main(["data", "fim", str(tmp_path / name), "-o", str(out)]) == 1
        assert why in capsys.readouterr().err
        assert out.read_text() == json.dumps(FIM) + "\n"
    assert sorted(os.listdir(tmp_path)) == ["broken.py", "empty.py", "x.jsonl"]  # no temp file left
    assert main(["data", "fim", str(tmp_path / "empty.py"), "-o", str(tmp_path)]) == 1
    assert f"error: -o {tmp_path}: is a directory" in capsys.readouterr().err
    (tmp_path / "self.py").symlink_to("self.py")
    assert main(["data", "fim", str(tmp_path / "self.py"), "-o", str(out)]) == 1
    assert "self.py: broken or looping symlink" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "fim", str(tmp_path), "-o", str(out), "--heldout-percent", "200"])
    assert e.value.code == 2 and "argument --heldout-percent: must be in [0, 100]" in capsys.readouterr().err


def test_chat_never_truncates_an_output_or_its_input(tmp_path, capsys):
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]})
    out, data = tmp_path / "out.jsonl", tmp_path / "in.jsonl"
    out.write_text(chat + "\n")
    data.write_text(chat + "\n")
    assert main(["data", "chat", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 1
    assert "missing.jsonl: no such file" in capsys.readouterr().err and out.read_text() == chat + "\n"
    assert main(["data", "chat", str(data), "-o", str(data)]) == 1
    assert "would overwrite its own input" in capsys.readouterr().err and data.read_text() == chat + "\n"
    assert main(["data", "chat", str(data), "-o", str(out), "--to", "openai"]) == 0
    assert json.loads(out.read_text())["messages"][1]["content"] == "ok"
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]  # no temp file left


def test_check_and_show_name_the_line_of_bad_text(tmp_path, capsys):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\ud800"}]}
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(chat) + "\n" + json.dumps(bad) + "\n")
    assert main(["data", "check", str(data)]) == 1
    assert "d.jsonl:2: messages[1].content is not valid Unicode" in capsys.readouterr().out
    tok_dir = tmp_path / "tok"
    chat_tokenizer("qwen2.5").save_pretrained(tok_dir)
    assert main(["data", "show", str(data), "--tokenizer", str(tok_dir), "-n", "5"]) == 1
    assert f"error: {data}:2: messages[1].content is not valid Unicode" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path)]) == 1
    assert f"error: {tmp_path}: is a directory" in capsys.readouterr().err
