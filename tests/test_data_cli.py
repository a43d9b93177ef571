"""`eagle data ...` end to end through the real command parser."""

from __future__ import annotations

import json
import textwrap

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
