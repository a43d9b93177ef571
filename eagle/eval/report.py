"""From timed runs to the benchmark's figures (BENCHMARK.md "Figures"), the table and the JSON.

- speedup = baseline s/token / method s/token, each over the whole prompt set (Σ tokens / Σ seconds)
- τ = tokens produced in decoding / base forwards in decoding; the prefill's first token is not a
  decoding step's, the bonus token of each step is: τ = Σ (new_i - 1) / Σ steps_i
- ceiling = τ · time(1-token forward) / time(tree verify): the speedup with zero-cost drafting;
  efficiency = speedup / ceiling
- identical share: greedy prompts whose output equals the reference's (naive, else hf) token for
  token, and for the others the first new-token index where they differ
"""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path

from eagle.eval.methods import Run
from eagle.model.config import DraftConfig


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # macOS reports bytes


def tau(runs: list[Run]) -> float | None:
    known = [r for r in runs if r.steps is not None]
    steps = sum(r.steps for r in known)
    if not known or steps == 0:
        return None
    return sum(max(len(r.ids) - 1, 0) for r in known) / steps


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first new token where a and b differ (None when identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 and math.isfinite(num / den) else None


def method_figures(runs: list[Run], prompt_ids: list[str]) -> dict:
    tokens, seconds = sum(len(r.ids) for r in runs), sum(r.seconds for r in runs)
    return {
        "prompts": len(runs),
        "tokens": tokens,
        "seconds": seconds,
        "tok_per_s": _ratio(tokens, seconds),
        "tau": tau(runs),
        "per_prompt": [{"id": pid, "new_tokens": len(r.ids), "seconds": round(r.seconds, 4), "steps": r.steps}
                       for pid, r in zip(prompt_ids, runs)],
    }


def compare(figs: dict[str, dict], runs: dict[str, list[Run]], prompt_ids: list[str], greedy: bool) -> None:
    """Add speedups against naive and hf, and greedy agreement with the reference, in place."""
    def s_per_token(m):
        f = figs.get(m)
        return _ratio(f["seconds"], f["tokens"]) if f else None

    base_naive, base_hf = s_per_token("naive"), s_per_token("hf")
    ref = "naive" if "naive" in runs else "hf" if "hf" in runs else None
    for m, f in figs.items():
        mine = s_per_token(m)
        f["speedup"] = _ratio(base_naive, mine) if base_naive and mine else None
        f["speedup_vs_hf"] = _ratio(base_hf, mine) if base_hf and mine else None
        if greedy and ref is not None and m != ref:
            div = [first_divergence(a.ids, b.ids) for a, b in zip(runs[m], runs[ref])]
            f["reference"] = ref
            f["identical_share"] = sum(d is None for d in div) / len(div) if div else None
            f["first_divergence"] = [{"id": pid, "index": d} for pid, d in zip(prompt_ids, div) if d is not None]


def eagle_figures(f: dict, runs: list[Run], one_token_s: float, verify_s: float, context: int,
                  tree_tokens: int) -> None:
    """Ceiling, efficiency and the draft's share of a cycle, in place."""
    f["context"] = context
    f["tree_tokens"] = tree_tokens
    f["one_token_ms"] = one_token_s * 1e3
    f["tree_verify_ms"] = verify_s * 1e3
    f["ceiling"] = f["tau"] * one_token_s / verify_s if f.get("tau") and verify_s > 0 else None
    f["efficiency"] = _ratio(f["speedup"], f["ceiling"]) if f.get("speedup") and f["ceiling"] else None
    phases = [r.phases for r in runs if r.phases]
    if phases:
        decode = sum(p["decode_s"] for p in phases)
        f["draft_time_share"] = _ratio(sum(p["draft_s"] for p in phases), decode)
        f["verify_time_share"] = _ratio(sum(p["verify_s"] for p in phases), decode)
        f["other_time_share"] = _ratio(sum(p["other_s"] for p in phases), decode)
        # of the whole generation: what no draft can shorten, and what weighs more the faster decoding gets
        prefill = sum(p["prefill_s"] for p in phases)
        f["prefill_time_share"] = _ratio(prefill, prefill + decode)
        each = sorted(t for p in phases for t in p["verify_each_s"])
        f["verify_ms_in_loop"] = each[len(each) // 2] * 1e3 if each else None
        cycles = sum(p["cycles"] for p in phases)
        f["cycle_ms"] = decode / cycles * 1e3 if cycles else None


# ---------------------------------------------------------------------------- the draft's recipe

def draft_recipe(ea_model_path: str | None, recipe_file: str | None = None, depth: int = 0) -> dict:
    """How the draft was made: --recipe JSON as given, else what the training run saved next to
    the checkpoint (train_config.json, trainer_state.json, metrics.json), and the recipe of the head
    it started from (--init_from; `depth` counts those links, so a folder trained from itself ends)."""
    if recipe_file:
        return {"source": str(recipe_file), **json.loads(Path(recipe_file).read_text())}
    if not ea_model_path:
        return {"untrained": True,
                "note": "no --ea-model-path: a randomly initialised head (eagle figures mean nothing)"}
    folder = Path(ea_model_path)
    out: dict = {"path": str(ea_model_path)}

    def read(name):
        try:
            return json.loads((folder / name).read_text())
        except (OSError, ValueError):
            return None

    cfg, state, metrics = read("train_config.json"), read("trainer_state.json"), read("metrics.json")
    try:  # the head's own shape, parsed as loading does (every config layout it accepts)
        shape = DraftConfig.load(folder)
        out["head"] = {"intermediate_size": shape.intermediate_size, "draft_vocab_size": shape.draft_vocab_size,
                       "aux_layers": list(shape.aux_layer_ids), "target_model_type": shape.target_model_type}
    except (OSError, ValueError):
        pass
    if cfg:
        out.update({"data": cfg.get("trainpath"), "data_format": cfg.get("data_format"),
                    "num_epochs": cfg.get("num_epochs"), "draft_vocab_size": cfg.get("draft_vocab_size"),
                    "ttt_length": cfg.get("ttt_length"), "lr": cfg.get("lr"), "features": cfg.get("features"),
                    "dtype": cfg.get("dtype"), "batch_size": cfg.get("batch_size"),
                    "max_length": cfg.get("max_length"),
                    # heads from before these flags trained as their defaults
                    "init_lm_head": cfg.get("init_lm_head", "random"),
                    "context_targets": cfg.get("context_targets", False),
                    "group_by_length": cfg.get("group_by_length", False),
                    "align_top_k": cfg.get("align_top_k", 0)})
        if cfg.get("init_from"):  # trained on from another head: that head's recipe is part of this one
            out["init_from"] = draft_recipe(cfg["init_from"], depth=depth + 1) if depth < 8 else cfg["init_from"]
    if state:
        hist = state.get("history") or []
        out.update({"epochs": len(hist) if hist else state.get("epoch"), "tokens_seen": state.get("tokens_seen"),
                    "steps": state.get("global_step"),
                    "minutes": round(state["seconds"] / 60, 2) if state.get("seconds") is not None else None})
    if metrics:
        out["metrics"] = metrics
    if not (cfg or state or metrics):
        out["note"] = "no train_config.json / trainer_state.json / metrics.json next to the checkpoint; pass --recipe"
    return out


# ---------------------------------------------------------------------------- output

def _fmt(x, spec: str, suffix: str = "") -> str:
    width = int(spec.split(".")[0] or 0) + len(suffix)
    return ("-" if x is None else f"{x:{spec}}{suffix}").rjust(width)


def table(result: dict) -> str:
    head = f"{'workload':<8} {'method':<9} {'tok/s':>7} {'vs naive':>9} {'vs hf':>7} {'tau':>5} {'identical':>9}"
    lines = [head, "-" * len(head)]
    for wname, methods in result["workloads"].items():
        for m, f in methods.items():
            lines.append(f"{wname:<8} {m:<9} {_fmt(f.get('tok_per_s'), '7.2f')} "
                         f"{_fmt(f.get('speedup'), '8.2f', 'x')} {_fmt(f.get('speedup_vs_hf'), '6.2f', 'x')} "
                         f"{_fmt(f.get('tau'), '5.2f')} {_fmt(f.get('identical_share'), '9.2f')}")
            if m == "eagle" and f.get("ceiling") is not None:
                lines.append(f"{'':<18} ceiling {f['ceiling']:.2f}x, efficiency {_fmt(f.get('efficiency'), '.2f')}, "
                             f"draft share {_fmt(f.get('draft_time_share'), '.0%')}, "
                             f"prefill {_fmt(f.get('prefill_time_share'), '.0%')}, "
                             f"verify {f['tree_verify_ms']:.0f} ms vs 1 token {f['one_token_ms']:.0f} ms "
                             f"at context {f['context']}")
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return path
