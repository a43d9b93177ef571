"""FIM records from Python source: real middles, every shape, bad files skipped, determinism."""

from __future__ import annotations

import ast
import json
import textwrap
import warnings

import pytest

from eagle.data import FimConfig, build_fim, convert_code_to_fim, is_heldout, load_jsonl
from eagle.data.fim_source import KINDS, fim_from_source, parse_mix

CODE = textwrap.dedent('''\
    """A module."""
    import math


    def area(r):
        """Area of a circle."""
        # pi r squared
        return math.pi * r ** 2


    async def fetch(url):
        async with session(url) as s:
            return await s.read()


    class Shape:
        def __init__(self, name):
            self.name = name

        def describe(self, verbose=False):
            if verbose:
                text = f"{self.name}: a shape"
            else:
                text = self.name
            for _ in range(2):
                text = text.strip()
            return text


    def stub():
        pass


    def café(x): return x + 1  # one-liner, non-ASCII name
    ''')


def records(text=CODE, **kw):
    cfg = FimConfig(**{"lines_per_record": 1, "max_prefix_chars": 0, "max_suffix_chars": 0, **kw})
    return fim_from_source(text, ast.parse(text), "pkg/mod.py", cfg)


def test_every_record_is_a_window_of_the_file():
    recs = records()
    assert recs
    for r in recs:
        assert r["middle"].strip(), r
        assert r["prefix"] + r["middle"] + r["suffix"] == CODE  # no context limit: the whole file
        assert r["prefix"].count("\n") + 1 == r["line"]  # the line where the middle starts
        assert r["file"] == "pkg/mod.py" and r["kind"] in KINDS


def test_function_bodies_are_real_middles():
    bodies = {r["middle"] for r in records(mix={"body": 1.0})}
    # after the docstring, with indentation and trailing newline; `pass` teaches nothing
    assert "        # pi r squared\n        return math.pi * r ** 2\n" not in bodies  # comment is not a statement
    assert "    return math.pi * r ** 2\n" in bodies
    assert "    async with session(url) as s:\n        return await s.read()\n" in bodies
    assert "        self.name = name\n" in bodies
    assert "return x + 1  # one-liner, non-ASCII name\n" in bodies  # byte columns -> characters
    assert not any(b.strip() == "pass" for b in bodies)


def test_blocks_lines_and_spans():
    blocks = {r["middle"] for r in records(mix={"block": 1.0})}
    assert '            text = f"{self.name}: a shape"\n' in blocks  # if body
    assert "            text = self.name\n" in blocks  # else body
    lines = [r["middle"] for r in records(mix={"line": 1.0})]
    assert lines and all(m.endswith("\n") and m.count("\n") == 1 for m in lines)
    spans = records(mix={"span": 1.0}, max_middle_lines=3)
    assert spans and all(r["middle"].count("\n") <= 3 for r in spans)
    assert any(not r["prefix"].endswith("\n") for r in spans)  # spans start mid-line too


def test_mix_and_limits():
    recs = records(mix={"body": 1, "line": 1}, seed=1)
    assert {r["kind"] for r in recs} == {"body", "line"}
    assert all(r["middle"].count("\n") <= 2 for r in records(mix={"body": 1.0}, max_middle_lines=2))
    with pytest.raises(ValueError, match="unknown FIM kinds"):
        FimConfig(mix={"bodies": 1.0})
    assert parse_mix("body=0.5, span=0.5") == {"body": 0.5, "span": 0.5}
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        parse_mix("body")


def test_context_is_cut_on_line_boundaries():
    text = "".join(f"x{i} = {i}\n" for i in range(300)) + "def f():\n    return 1\n" + "".join(f"y{i} = {i}\n" for i in range(300))
    for r in fim_from_source(text, ast.parse(text), "m.py", FimConfig(mix={"body": 1.0}, max_prefix_chars=100, max_suffix_chars=50)):
        assert r["middle"] == "    return 1\n"
        assert len(r["prefix"]) <= 100 and r["prefix"].endswith("def f():\n") and r["prefix"].startswith("x")
        assert len(r["suffix"]) <= 50 and r["suffix"].startswith("y0 = 0\n") and r["suffix"].endswith("\n")
        assert r["prefix"] + r["middle"] + r["suffix"] in text


def test_same_seed_same_output_other_seed_differs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"m{i}.py").write_text(CODE.replace("area", f"area{i}"))
    outs = []
    for seed in (7, 7, 8):
        out = tmp_path / f"out{len(outs)}.jsonl"
        build_fim([src], out, FimConfig(seed=seed, lines_per_record=5), progress=False)
        outs.append(out.read_text())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    # a file's records do not depend on which other files are included
    alone = tmp_path / "alone.jsonl"
    build_fim([src / "m2.py"], alone, FimConfig(seed=7, lines_per_record=5), progress=False)
    assert [r for r in map(json.loads, outs[0].splitlines()) if r["file"] == "m2.py"] == \
        [json.loads(line) for line in alone.read_text().splitlines()]


def test_bad_files_are_skipped_counted_and_named(tmp_path):
    (tmp_path / "good.py").write_text(CODE)
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    (tmp_path / "latin.py").write_bytes("# coding: latin-1\nname = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "huge.py").write_text("x = 1\n" * 2000)
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    (tmp_path / "empty.py").write_text("")
    out = tmp_path / "fim.jsonl"
    with pytest.warns(UserWarning, match="skipped 4 of 6 files") as w:
        report = build_fim([tmp_path], out, FimConfig(max_file_bytes=5000), progress=False)
    reasons = dict((p.rsplit("/", 1)[-1], why) for p, why in report.skipped)
    assert set(reasons) == {"broken.py", "latin.py", "huge.py", "nul.py"}
    assert reasons["broken.py"].startswith("does not parse") and "line 1" in reasons["broken.py"]
    assert reasons["latin.py"].startswith("not UTF-8")
    assert "over the 5000-byte limit" in reasons["huge.py"]
    assert all(name in str(w[0].message) for name in reasons)
    assert report.files_used == 1 and report.records == len(list(load_jsonl(out, "fim"))) > 0


def test_heldout_rule_is_stable_and_disjoint(tmp_path):
    names = [f"pkg{i // 10}/mod{i}.py" for i in range(400)]
    held = [n for n in names if is_heldout(n, 10)]
    assert 15 < len(held) < 70  # about 10 %
    assert held == [n for n in names if is_heldout(n, 10)]  # same answer every time
    assert set(held) <= {n for n in names if is_heldout(n, 20)}  # buckets nest
    for i in range(40):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    files = {}
    for split in ("train", "eval", "all"):
        out = tmp_path / f"{split}.jsonl"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_fim([tmp_path], out, FimConfig(split=split, heldout_percent=25), progress=False)
        files[split] = {r["file"] for r in load_jsonl(out, "fim")}
    assert files["train"] and files["eval"] and not files["train"] & files["eval"]
    assert files["train"] | files["eval"] == files["all"]
    assert all(is_heldout(f, 25) for f in files["eval"])


def test_tutorial_convert_code_to_fim_appends_real_middles(tmp_path):
    code = tmp_path / "my_project.py"
    code.write_text(CODE)
    out = tmp_path / "fim_data.jsonl"
    n1 = convert_code_to_fim(str(code), str(out))
    n2 = convert_code_to_fim(code, out)  # the tutorial's writer appends
    recs = list(load_jsonl(out, "fim"))
    assert n1 == n2 > 0 and len(recs) == n1 + n2
    assert all(r["middle"] for r in recs)  # the tutorial wrote middle="" here
    bad = tmp_path / "bad.py"
    bad.write_text("def (")
    with pytest.warns(UserWarning, match="does not parse"):
        assert convert_code_to_fim(bad, out) == 0
