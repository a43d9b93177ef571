"""`eagle bench`: the speed benchmark of BENCHMARK.md, every figure a ratio taken in one run.

    eagle bench --basepath qwen2.5-coder-0.5b --ea-model-path checkpoints/state_39 \
        --workloads code,fim --methods naive,hf,pld,eagle --num-prompts 20 --out benchmarks/run.json

The methods alternate prompt by prompt (the order rotating) on one model object, one dtype, one
thread count, the same prompts and `max_new_tokens`, after one untimed warm-up generation each,
so a noisy shared machine slows all of them alike. See docs/benchmark.md for every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import statistics
import sys
import time

METHOD_ORDER = ("naive", "hf", "pld", "assisted", "eagle")
SAMPLE_METHODS = ("naive", "hf", "eagle")  # sampled outputs differ by design: speed and τ, no identical share
WARMUP_TOKENS = 16


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), got {text!r}")
        return items
    return parse


def register(parser: argparse.ArgumentParser) -> None:
    from eagle.eval.workloads import NAMES

    p = parser
    p.add_argument("--basepath", required=True, help="base model: HF folder, .gguf file, hub id or zoo name")
    p.add_argument("--ea-model-path", default=None,
                   help="draft checkpoint folder (without it an untrained head stands in: baselines only)")
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float32", "float16"),
                   help="base dtype, one for every method (default: bfloat16 where the hardware computes it, "
                        "GPUs and CPUs with AVX512-BF16/AMX, else float32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--workloads", type=_csv(NAMES), default=["code", "chat", "fim", "sample"])
    p.add_argument("--methods", type=_csv(METHOD_ORDER), default=["naive", "hf", "pld", "assisted", "eagle"],
                   help="assisted runs only with --assistant or a known pair (Qwen2.5-Coder 0.5B for the 1.5B)")
    p.add_argument("--num-prompts", type=int, default=None, help="first K prompts of each workload (default: all 80)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override every workload's (256; fim 128)")
    p.add_argument("--total-token", type=int, default=None, help="tree nodes verified per step (default: per device and dtype)")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--lookup", type=int, default=None,
                   help="prompt-lookup branch grafted on the tree, in tokens (0 = off; default: per device and dtype)")
    p.add_argument("--expand-threshold", type=float, default=None,
                   help="stop drafting deeper when the summed path probability of the frontier nodes that could "
                        "still be kept is below this (0 = up to --depth; default: per device)")
    p.add_argument("--min-prob", type=float, default=None,
                   help="drop drafted nodes whose path probability is below this (0 = keep total_token; "
                        "default: per device and dtype)")
    p.add_argument("--assistant", default=None, help="assistant model for `assisted` (zoo name or folder)")
    p.add_argument("--data-dir", default=None,
                   help="eval question folder (default: $EAGLE_EVAL_DATA, else ../shared/data/eval)")
    p.add_argument("--fim-source", default=None,
                   help="Python folder for the fim workload (default: the installed stdlib)")
    p.add_argument("--fim-split", default="eval", choices=("eval", "all"),
                   help="eval: the held-out files of the source (training's rule); all: every file")
    p.add_argument("--tune", action="store_true",
                   help="measure base forward time for 1..64 tokens and pick total_token (unless --total-token)")
    p.add_argument("--tune-gain", type=float, default=0.5, help="τ gained per doubling of the tree in the tune rule")
    p.add_argument("--tune-context", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timings per forward-time median (ceiling, tune)")
    p.add_argument("--recipe", default=None,
                   help="JSON describing how the draft was trained (else read from its folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample workload")
    p.add_argument("--out", default=None, help="write the results JSON here (e.g. benchmarks/NAME.json)")
    p.set_defaults(func=main)


# ---------------------------------------------------------------------------- setup

def load_setup(args):
    from eagle.eval.methods import Setup, known_assistant
    from eagle.model.base import dtype_name, load_base, load_tokenizer, placement, resolve_dtype
    from eagle.model.config import DraftConfig
    from eagle.model.draft import Eagle3Draft
    from eagle.model.ea_model import EaModel
    from eagle.model.tree import TreeConfig

    dtype = resolve_dtype(args.dtype, args.device)
    args.dtype = dtype_name(dtype)  # the JSON and the header name the dtype that ran
    if args.ea_model_path:
        model = EaModel.from_pretrained(base_model_path=args.basepath, ea_model_path=args.ea_model_path, dtype=dtype,
                                        **placement(args.device))
    else:
        base, tok = load_base(args.basepath, dtype=dtype, **placement(args.device)), load_tokenizer(args.basepath)
        # a small untrained stand-in, so naive/hf/pld run on the same EaModel object
        draft = Eagle3Draft(DraftConfig.from_base(base.config, draft_vocab_size=min(1024, base.config.vocab_size)))
        model = EaModel(base, draft, tok)
    # one tree rule for both paths: the device's defaults, overridden flag by flag
    model.tree = TreeConfig.for_device(model.device, model.base_model.dtype).override(
        total_token=args.total_token, depth=args.depth, top_k=args.top_k, lookup=args.lookup,
        expand_threshold=args.expand_threshold, min_prob=args.min_prob)
    assistant_path = args.assistant or known_assistant(args.basepath)
    assistant = None
    if "assisted" in args.methods and assistant_path:
        assistant = load_base(assistant_path, dtype=dtype, **placement(args.device))
    return Setup(model, assistant), assistant_path


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- one workload

def run_workload(setup, wl, methods: list[str], repeats: int = 5, seed: int = 0) -> dict:
    """Timed runs of `methods` on every prompt of `wl`, alternating, and the figures."""
    import torch

    from eagle.eval import report
    from eagle.eval.methods import run_method, stop_tokens
    from eagle.eval.tune import forward_times
    from eagle.eval.workloads import Workload

    runs = {m: [] for m in methods}
    ids = [p.id for p in wl.prompts]
    with stop_tokens(setup, wl):
        warm = Workload(wl.name, wl.prompts[:1], min(WARMUP_TOKENS, wl.max_new_tokens), wl.temperature, wl.top_p,
                        wl.extra_eos)
        for m in methods:
            run_method(m, setup, warm.prompts[0], warm)
        for i, prompt in enumerate(wl.prompts):
            order = methods[i % len(methods):] + methods[: i % len(methods)]  # rotate: no method always first
            line = []
            for m in order:
                if not wl.greedy:
                    torch.manual_seed(seed * 100_003 + i)
                r = run_method(m, setup, prompt, wl)
                runs[m].append(r)
                line.append(f"{m} {len(r.ids)} tok {len(r.ids) / r.seconds:.1f}/s")
            _say(f"[{wl.name} {i + 1}/{len(wl.prompts)}] " + " | ".join(line))
    figs = {m: report.method_figures(runs[m], ids) for m in methods}
    report.compare(figs, runs, ids, wl.greedy)
    if "eagle" in figs and figs["eagle"]["tau"] is not None:
        # the verify and one-token times at the context the loop typically ran at
        ctx = int(statistics.median(len(p.input_ids) + len(r.ids) / 2 for p, r in zip(wl.prompts, runs["eagle"])))
        # the tree as verified: total_token, plus the prompt-lookup branch's nodes when that is on
        sizes = [n for r in runs["eagle"] if r.phases for n in r.phases["tree_sizes"] if n]
        t = int(statistics.median(sizes)) if sizes else setup.model.tree.total_token
        times = forward_times(setup.base, ctx, sizes=(1, t) if t > 1 else (1,), repeats=repeats)
        report.eagle_figures(figs["eagle"], runs["eagle"], times[1], times[t], ctx, t)
    return figs


# ---------------------------------------------------------------------------- the command

def main(args) -> int:
    import torch
    import transformers

    from eagle.eval import report
    from eagle.eval.tune import suggest_tree
    from eagle.eval.workloads import WorkloadError, build_workload
    from eagle.model.base import cpu_info
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.num_prompts is not None and args.num_prompts < 1:
        return _fail("--num-prompts must be >= 1")
    if "eagle" in args.methods and not args.ea_model_path:
        _say("warning: no --ea-model-path: eagle runs with an untrained draft head (its figures mean nothing)")
    from eagle.eval.methods import known_assistant
    if set(args.methods) == {"assisted"} and not (args.assistant or known_assistant(args.basepath)):
        return _fail("--methods assisted: no --assistant given and no known assistant for this base")
    t_start = time.perf_counter()
    try:
        setup, assistant_path = load_setup(args)
    except (OSError, ValueError) as e:
        return _fail(str(e))
    methods = [m for m in METHOD_ORDER if m in args.methods]
    if "assisted" in methods and setup.assistant is None:
        _say("note: skipping `assisted`: no --assistant given and no known assistant for this base")
        methods.remove("assisted")
    tok = setup.model.tokenizer
    cpu = cpu_info()

    result = {
        "model": args.basepath, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "draft": report.draft_recipe(args.ea_model_path, args.recipe),
        "tree": {},
        "assistant": assistant_path if "assisted" in methods else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu["model"], "cpu_bf16": cpu["bf16"],
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "device": str(setup.model.device)},
        "settings": {},
        "workloads": {},
    }
    try:  # every prompt set first: a missing file fails now, not after an hour of timing
        workloads = [build_workload(name, tok, args.num_prompts, args.max_new_tokens, args.data_dir,
                                    args.fim_source, args.fim_split) for name in args.workloads]
    except WorkloadError as e:
        return _fail(str(e))
    if args.tune:
        s = suggest_tree(setup.base, context=args.tune_context, depth=setup.model.tree.depth, gain=args.tune_gain,
                         repeats=args.repeats)
        print(s.format(), flush=True)
        result["tune"] = s.to_dict()
        if args.total_token is None:
            setup.model.tree = dataclasses.replace(setup.model.tree, total_token=s.total_token)
    tr = setup.model.tree
    result["tree"] = dataclasses.asdict(tr)

    for wl in workloads:
        name = wl.name
        ms = [m for m in methods if m in SAMPLE_METHODS] if not wl.greedy else methods
        if not ms:
            _say(f"note: skipping `{name}`: it runs only {', '.join(SAMPLE_METHODS)}")
            continue
        _say(f"{name}: {len(wl.prompts)} prompts, {wl.max_new_tokens} new tokens, methods {', '.join(ms)}")
        figs = run_workload(setup, wl, ms, args.repeats, args.seed)
        result["workloads"][name] = figs
        result["settings"][name] = {"prompts": len(wl.prompts), "max_new_tokens": wl.max_new_tokens,
                                    "temperature": wl.temperature, "top_p": wl.top_p, "methods": ms}
        result["peak_rss_mb"] = round(report.peak_rss_mb(), 1)
        result["minutes"] = round((time.perf_counter() - t_start) / 60, 2)
        if args.out:
            report.write_json(result, args.out)  # after every workload: a killed run keeps what it measured

    print(report.table(result), flush=True)
    print(f"peak RSS {result.get('peak_rss_mb', report.peak_rss_mb()):.0f} MB, threads {result['threads']}, "
          f"dtype {args.dtype}, tree {result['tree']}", flush=True)
    if args.out:
        print(f"wrote {report.write_json(result, args.out)}", flush=True)
    return 0


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2
