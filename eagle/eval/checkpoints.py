"""Evaluate every saved epoch of a training run (tutorial step 5.3.2, `evaluate_all_checkpoints`).

    eagle eval checkpoints --basepath B --savedir checkpoints --testpath test.jsonl --every 5

For each `state_N` (N a multiple of --every, and the last one), on the test set:

- `acc`, `ploss`: per TTT position j, the draft's top-1 agreement with the base's greedy token
  (percent) and its soft cross-entropy, teacher-forced on the base's features: the same
  computation as the trainer's `Test Epoch [...] position j` lines (it runs the trainer's own
  `Stepper.evaluate`), so the numbers line up with training.log. `accuracy` is position 0's.
- `tau`: what the acceptance really is: greedy EAGLE generation on the first --num-prompts test
  prompts, new tokens per decoding forward (the bonus token counted, the prefill's not). The
  tree is the device's default without the n-gram lookup branch, so τ is the draft's alone.

The base is loaded once; each checkpoint only swaps the draft. Results go to
`evaluation_results.json` as a list of `{epoch, accuracy, tau, ...}`, as in the tutorial.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from eagle.eval.curves import state_dirs
from eagle.eval.quality import case_from_record, complete, load_records, prompt_room


def find_checkpoints(savedir: str | Path, every: int = 1) -> list[tuple[int, Path]]:
    """state_N folders with N % every == 0, plus the last epoch (the tutorial's range(0, 40, 5)
    would skip state_39, the one usually deployed)."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    found = [(e, p) for e, p in state_dirs(savedir) if (p / "config.json").is_file()]
    if not found:
        raise FileNotFoundError(f"no state_N checkpoint folders (with config.json) under {savedir}")
    last = found[-1][0]
    return [(e, p) for e, p in found if e % every == 0 or e == last]


def _train_config(folder: Path) -> dict:
    f = folder / "train_config.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


@torch.no_grad()
def draft_accuracy(model, samples, ttt_length: int = 7, batch_size: int = 4) -> tuple[list[float], list[float]]:
    """Per-position test accuracy (%) and pLoss of `model.ea_layer`, computed as the trainer does."""
    from eagle.train.features import BaseRunner, OnlineSource
    from eagle.train.loop import Stepper
    from eagle.train.ttt import TargetHead, TTTObjective

    draft, base, device = model.ea_layer, model.base_model, model.device
    samples = [s for s in samples if s.num_targets > 0]
    if not samples:
        raise ValueError("no test sample has a target token (loss-masked token after the second position)")
    target_ids = draft.to_target(torch.arange(draft.config.draft_vocab_size, device=draft.d2t.device))
    objective = TTTObjective(draft, ttt_length)
    stepper = Stepper(objective=objective, model=objective, optimizer=None, scheduler=None,
                      head=TargetHead.from_base(base, target_ids).to(device),
                      embed_weight=base.get_input_embeddings().weight.detach(), device=device)
    source = OnlineSource(BaseRunner(base, draft.config.aux_layer_ids), {"test": samples})
    try:
        sums = stepper.evaluate(source, "test", list(range(len(samples))), batch_size)
    finally:
        draft.eval()  # Stepper.evaluate leaves the draft in training mode
    return sums.acc(), sums.ploss_mean()


def draft_tau(model, cases, max_new_tokens: int = 64) -> dict:
    """Greedy EAGLE on each case: τ over all of them, and the tokens and forwards it came from."""
    new = forwards = skipped = 0
    for case in cases:
        try:
            c = complete(model, case.prompt_ids, max_new_tokens, case.stop_ids)
        except ValueError:  # a chat prompt longer than the context
            skipped += 1
            continue
        if c.forwards:
            new, forwards = new + c.generated - 1, forwards + c.forwards
    return {"tau": new / forwards if forwards else None, "new_tokens": new, "decoding_steps": forwards,
            "skipped_prompts": skipped}


def _load_base(base_model, tokenizer, dtype, device):
    """(base, tokenizer) from a path / zoo name, a loaded HF model, or an EaModel."""
    from eagle.model.base import load_base, load_tokenizer

    if hasattr(base_model, "base_model") and hasattr(base_model, "ea_layer"):  # an EaModel
        return base_model.base_model, tokenizer or base_model.tokenizer
    if isinstance(base_model, (str, Path)):
        kw = {"dtype": dtype} if dtype is not None else {}
        if device is not None:
            kw["device_map"] = str(device)
        return load_base(str(base_model), **kw), tokenizer or load_tokenizer(str(base_model))
    if tokenizer is None:
        tokenizer = load_tokenizer(base_model.config._name_or_path)
    return base_model, tokenizer


def evaluate_all_checkpoints(checkpoint_dir: str | Path, test_data, base_model=None, *, every: int = 1,
                             tokenizer=None, data_format: str = "auto", num_samples: int | None = 64,
                             num_prompts: int = 8, max_new_tokens: int = 64, max_length: int | None = None,
                             ttt_length: int | None = None, batch_size: int = 4, dtype=None, device=None,
                             tree=None, output: str | Path | None = "evaluation_results.json") -> list[dict]:
    """Evaluate each checkpoint of `checkpoint_dir` on `test_data` (a JSONL path or records).

    `base_model`: a path, hub id or zoo name (default: the run's `basepath` from
    state_N/train_config.json), a loaded transformers model, or an EaModel (its base is reused).
    Prints `Epoch N: Acc=…, tau=…` lines and writes `output` (None: don't write).
    """
    from eagle.model.checkpoint import load_draft
    from eagle.model.ea_model import EaModel
    from eagle.model.tree import TreeConfig
    from eagle.data.records import record_format
    from eagle.train.dataset import encode

    ckpts = find_checkpoints(checkpoint_dir, every)
    run_cfg = _train_config(ckpts[-1][1])
    if base_model is None:
        base_model = run_cfg.get("basepath")
        if not base_model:
            raise ValueError(f"no base model given and {ckpts[-1][1]}/train_config.json names none: pass base_model")
    max_length = max_length or run_cfg.get("max_length") or 2048
    ttt_length = ttt_length or run_cfg.get("ttt_length") or 7
    base, tok = _load_base(base_model, tokenizer, dtype, device)
    if tree is None:  # the draft's own merit: no n-gram lookup branch beside it
        tree = dataclasses.replace(TreeConfig.for_device(base.device, base.dtype), lookup=0)

    fmt = data_format
    if isinstance(test_data, (str, Path)) and fmt == "auto":
        from eagle.data import detect_format
        fmt = detect_format(test_data)
    records = load_records(test_data, fmt)
    if not records:
        raise ValueError("the test set is empty")
    scored = records if num_samples is None else records[:num_samples]
    samples = [encode(rec, tok, fmt if fmt != "auto" else record_format(rec), max_length) for rec in scored]

    results, cases, broken = [], None, []
    for epoch, folder in ckpts:
        start = time.perf_counter()
        try:
            model = EaModel(base, load_draft(folder), tok, tree=tree)
        except (ValueError, OSError) as e:  # one damaged folder must not cost the others' results
            print(f"Epoch {epoch}: skipped, {e}", file=sys.stderr, flush=True)
            broken.append(folder)
            continue
        model.eval()
        if cases is None:
            room = prompt_room(model, max_new_tokens)
            cases = [case_from_record(tok, r, room) for r in records[:num_prompts]]
        acc, ploss = draft_accuracy(model, samples, ttt_length, batch_size)
        gen = draft_tau(model, cases, max_new_tokens)
        row = {"epoch": epoch, "accuracy": acc[0], "tau": gen["tau"], "checkpoint": str(folder),
               "acc": acc, "ploss": ploss, "samples": len(samples), "prompts": len(cases),
               "new_tokens": gen["new_tokens"], "decoding_steps": gen["decoding_steps"],
               "skipped_prompts": gen["skipped_prompts"],
               "seconds": round(time.perf_counter() - start, 3)}
        trained = folder / "metrics.json"
        if trained.is_file():
            try:
                row["train_metrics_acc"] = json.loads(trained.read_text()).get("acc")
            except json.JSONDecodeError:
                pass
        results.append(row)
        tau = f"{row['tau']:.2f}" if row["tau"] is not None else "n/a"
        print(f"Epoch {epoch}: Acc={acc[0]:.2f}, tau={tau}", flush=True)
        del model

    if not results:
        raise ValueError(f"no checkpoint under {checkpoint_dir} could be loaded: " + ", ".join(map(str, broken)))
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
        print(f"Saved {output}")
    best = max(results, key=lambda r: (r["tau"] or 0.0, r["accuracy"]))
    print(f"Best: state_{best['epoch']} (tau {best['tau'] or 0:.2f}, Acc {best['accuracy']:.2f})")
    return results
