"""The training run behind `main.py` and `eagle train`: check inputs, build features, train, save.

Order matters: everything that can be wrong with the user's input (paths, data format, save
folder, sample lengths, a resume that does not match) is found before the base model's features
are computed, since that is the long part.
"""

from __future__ import annotations

import gc
import os
import pickle
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eagle.model.base import load_base, load_tokenizer, placement
from eagle.model.checkpoint import check_compatible, load_draft
from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.train.config import TrainConfig
from eagle.train.dataset import (TrainError, build_vocab, check_samples, load_samples, resolve_format,
                                 vocab_coverage)
from eagle.train.features import BaseRunner, FeatureCache, OnlineSource, StoredSource, base_fingerprint
from eagle.train.loop import Stepper, Sums, lr_lambda, micro_batches
from eagle.train.report import Reporter, progress_bar
from eagle.train.runtime import Runtime, deepspeed_config_for, setup, teardown
from eagle.train.state import (OPTIMIZER, TRAINER_STATE, TrainerState, check_writable, clean_stale, find_resume,
                               load_training, save_epoch, save_resume, set_rng_state)
from eagle.train.ttt import TargetHead, TTTObjective, base_lm_head_rows

# Settings that change what a resumed run would compute; the rest (lr, epochs, logging) may change.
_RESUME_FIXED = ("data_format", "max_length", "draft_vocab_size", "aux_layers", "seed")
# Fixed only inside an epoch: they decide its order or its loss, which the steps already taken in it
# followed; between epochs they may change, as the learning rate may.
_EPOCH_FIXED = ("group_by_length", "ttt_length", "ttt_decay", "align_top_k")


@dataclass
class TrainResult:
    savedir: Path
    state: TrainerState
    finished: bool  # all epochs done (False when stopped by --max_steps)


def epoch_order(n: int, seed: int, epoch: int, lengths: list[int] | None = None, batch: int = 1) -> list[int]:
    """The samples of an epoch, in the order their global batches of `batch` take them.

    With `lengths` (--group_by_length), samples of similar length share a batch: a batch runs at its
    longest sample's length, so random ones pad (1.44x the real tokens on the --full data). Runs of
    the shuffled order, 16 batches and at least 64 samples long, are sorted by length and cut into
    batches, and the batches are shuffled, so steps do not climb from short to long and which
    samples meet stays random. Full batches come first: the trainer drops the last partial one."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is None:
        return order
    run = batch * max(16, -(-64 // batch))  # a multiple of batch: only the last run can end in a partial one
    batches = []
    for i in range(0, n, run):
        part = sorted(order[i:i + run], key=lambda j: (lengths[j], j))
        batches += [part[k:k + batch] for k in range(0, len(part), batch)]
    full = [b for b in batches if len(b) == batch]
    rest = [j for b in batches if len(b) < batch for j in b]
    return [j for p in torch.randperm(len(full), generator=g).tolist() for j in full[p]] + rest


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(cfg: TrainConfig) -> TrainResult:
    # Cheap checks first, before processes, models or data are touched.
    savedir = check_writable(cfg.savedir)
    fmt = resolve_format(cfg.trainpath, cfg.data_format)
    resolve_format(cfg.testpath, fmt)
    rt = setup(cfg)
    rep = Reporter(savedir, rt.is_main, cfg.wandb, cfg.wandb_project, cfg.tensorboard, cfg.to_dict())
    try:
        return _train(cfg, rt, rep, savedir, fmt)
    finally:
        rep.close()
        teardown(rt)


@dataclass
class Resume:
    """A resume folder, read once."""
    path: Path
    config: TrainConfig
    state: TrainerState
    draft: Eagle3Draft


def _check_resume(cfg: TrainConfig, rt: Runtime, savedir: Path, rep: Reporter) -> Resume | None:
    if cfg.resume == "no":
        return None
    folder = find_resume(savedir)
    if folder is None:
        if cfg.resume == "yes":
            raise TrainError(f"--resume: no resumable state in {savedir} (expected {savedir}/resume/)")
        if any(savedir.glob("state_*")):
            rep.line(f"{savedir} holds state_* folders but no resume/ state: starting afresh (they will be overwritten)")
        return None
    resume = _read_resume(folder)
    saved, state = resume.config, resume.state
    fixed = _RESUME_FIXED + (_EPOCH_FIXED if state.step_in_epoch else ())
    diffs = [f"{k}: {getattr(saved, k)!r} then, {getattr(cfg, k)!r} now" for k in fixed
             if getattr(saved, k) != getattr(cfg, k)]
    if state.global_batch != rt.global_batch:
        diffs.append(f"global batch: {state.global_batch} then, {rt.global_batch} now "
                     f"({rt.batch_size} per process x {rt.grad_accum} accumulation x {rt.world} processes)")
    if diffs:
        raise TrainError(f"cannot resume from {resume.path}: the run was made with other settings ("
                         + "; ".join(diffs) + "). Use the same settings, or --resume no to start afresh.")
    changed = [f"{k} {getattr(saved, k)!r} -> {getattr(cfg, k)!r}"
               for k in ("lr", "num_epochs", "warmup_ratio", "weight_decay", "max_grad_norm") + _EPOCH_FIXED
               if getattr(saved, k) != getattr(cfg, k)]
    rep.line(f"Resuming from {resume.path} (epoch {state.epoch}, step {state.step_in_epoch}, "
             f"global step {state.global_step})" + (f"; changed: {', '.join(changed)}" if changed else ""))
    return resume


def _read_resume(resume: Path) -> Resume:
    """Read every file of a resume folder now, so that a damaged one is named before the long
    feature pass rather than after it. The optimizer state is only checked here and read again at
    the end: held through the feature pass it would sit beside the base for nothing."""
    parts = {"train_config.json": lambda: TrainConfig.load(resume / "train_config.json"),
             TRAINER_STATE: lambda: TrainerState.load(resume),
             "config.json": lambda: DraftConfig.load(resume),
             "model.safetensors": lambda: load_draft(resume),
             OPTIMIZER: lambda: load_training(resume)}
    loaded = {}
    for name, read in parts.items():
        try:
            loaded[name] = read()
        except (OSError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError, RuntimeError) as e:
            raise TrainError(f"cannot resume from {resume}: {name} cannot be read ({type(e).__name__}: {e}). "
                             f"Move {resume} aside to keep it, and use --resume no to start afresh.") from None
    return Resume(resume, loaded["train_config.json"], loaded[TRAINER_STATE], loaded["model.safetensors"])


def _draft_diffs(saved: DraftConfig, dcfg: DraftConfig) -> list[str]:
    a, b = saved.to_dict(), dcfg.to_dict()
    return [f"draft {k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k != "torch_dtype"]  # the dtype is the weights', not the shape's


def _check_resume_model(resume: Resume, dcfg: DraftConfig, fingerprint: str) -> None:
    problems = []
    if resume.state.base_fingerprint != fingerprint:
        problems.append("the base model differs (config or weights)")
    problems += _draft_diffs(resume.draft.config, dcfg)
    if problems:
        raise TrainError(f"cannot resume from {resume.path}: " + "; ".join(problems)
                         + ". Point --basepath at the model it was trained on, or use --resume no.")


def _read_init(path: str, dcfg: DraftConfig, base_config, fingerprint: str) -> Eagle3Draft:
    """--init_from: a trained head to train on, checked against this base and these draft flags."""
    folder = Path(path)
    try:
        draft = load_draft(folder)
        check_compatible(draft.config, base_config, source=f"--init_from {path}")
        # a training state folder knows its base's weights; an export knows only its shapes (checked above)
        state = TrainerState.load(folder) if (folder / TRAINER_STATE).is_file() else None
    except (OSError, ValueError, TypeError) as e:
        raise TrainError(f"--init_from {path}: {e}") from None
    problems = _draft_diffs(draft.config, dcfg)
    if state is not None and state.base_fingerprint != fingerprint:
        problems.insert(0, "it was trained on another base model (config or weights)")
    if problems:
        raise TrainError(f"--init_from {path} does not fit this run: " + "; ".join(problems)
                         + ". Pass the draft flags it was trained with (its train_config.json), "
                         "and the --basepath it was trained on.")
    return draft


def _load_base(cfg: TrainConfig, rt: Runtime):
    try:
        # straight onto this process's GPU: through host memory, n processes would hold n copies there
        base = load_base(cfg.basepath, dtype=rt.dtype, trust_remote_code=cfg.trust_remote_code,
                         **placement(str(rt.device)))
    except (OSError, ValueError) as e:
        raise TrainError(f"--basepath {cfg.basepath}: cannot load the base model: {e}") from None
    return base.to(rt.device)


def _build_features(cfg, rt, rep, savedir, base, aux, samples, fingerprint):
    runner = BaseRunner(base, aux)
    if cfg.features == "online":
        return OnlineSource(runner, samples)
    cache = FeatureCache(cfg.cache_dir or savedir / "feature_cache")
    context = FeatureCache.context(fingerprint, aux, rt.dtype)
    readers = {}
    for split, data in samples.items():
        key = FeatureCache.key(fingerprint, aux, rt.dtype, data)
        rt.barrier()
        # every process must take the same branch: the writing one has barriers
        if rt.all_true(cache.has(split, key)):
            rep.line(f"Using cached base features for the {split} set ({len(data)} samples) in {cache.dir}")
        else:
            rep.line(f"Caching base features for the {split} set ({len(data)} samples) in {cache.dir}")
            t0 = time.time()
            total = sum(len(data[i].input_ids) for i in range(len(data)) if i % rt.world == rt.rank)
            bar = progress_bar(total, 0, rt.is_main, desc=f"cache {split} (tokens)")
            reused = cache.write_share(split, key, runner, data, rt.rank, rt.world, rt.batch_size, rt.dtype,
                                       bar.update, context)
            bar.close()
            rt.barrier()
            if rt.is_main:
                cache.commit(split, key, len(data), context)
            n_tok, dt = sum(len(s.input_ids) for s in data), time.time() - t0
            mine = sum(1 for i in range(len(data)) if i % rt.world == rt.rank)
            rep.line(f"Cached {split}: {n_tok} tokens in {dt:.1f} s ({n_tok / max(dt, 1e-9):.0f} tokens/s), "
                     f"{reused} of this process's {mine} samples already in the folder (an interrupted "
                     f"build's shards, or a split of the same base), "
                     f"{cache.size_bytes() / 2 ** 20:.0f} MiB on disk")
        rt.barrier()
        # Each process wrote its own shards and rank 0 the manifest: every process must see them all.
        # On machines without a shared filesystem this is where it shows, before any training.
        try:
            readers[split] = cache.reader(split)
            problem = ""
        except (RuntimeError, OSError) as e:
            problem = str(e)
        if not rt.all_true(not problem):
            raise TrainError(
                f"the feature cache in {cache.dir} is not complete in every process"
                f"{f' (here: {problem})' if problem else ''}. Processes write their own shards and rank 0 "
                "the manifest, so on several machines --cache_dir must be a folder they all share; "
                "otherwise use --features online")
    return StoredSource(samples, readers)


def _train(cfg: TrainConfig, rt: Runtime, rep: Reporter, savedir: Path, fmt: str) -> TrainResult:
    for n in rt.notices:
        rep.notice(n)
    if rt.is_main:
        clean_stale(savedir)
    resume = _check_resume(cfg, rt, savedir, rep)
    # rank 0 writes the checkpoints: a process that sees another state would train other steps
    if not rt.all_equal(resume.state.global_step if resume else -1):
        here = f"global step {resume.state.global_step} in {resume.path}" if resume else "none"
        raise TrainError(f"the processes found different resume states in {savedir} (this one: {here}). "
                         "Checkpoints are written by rank 0, so on several machines --savedir must be a "
                         "folder they all share (or use --resume no on all of them)")
    if resume is not None:
        done = resume.state
        if done.epoch >= cfg.num_epochs:
            rep.line(f"Nothing to do: {savedir} already holds all {cfg.num_epochs} epochs "
                     "(raise --num_epochs to train on, or --resume no to start afresh)")
            return TrainResult(savedir, done, True)

    try:
        tokenizer = load_tokenizer(cfg.basepath, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise TrainError(f"--basepath {cfg.basepath}: cannot load the tokenizer: {e}") from None
    train_s = load_samples(cfg.trainpath, tokenizer, fmt, cfg.max_length)
    check_samples(train_s, cfg.trainpath, cfg.max_length, "train")
    test_s = load_samples(cfg.testpath, tokenizer, fmt, cfg.max_length)
    check_samples(test_s, cfg.testpath, cfg.max_length, "test")
    steps_per_epoch = len(train_s) // rt.global_batch
    if steps_per_epoch == 0:
        raise TrainError(f"{cfg.trainpath}: {len(train_s)} training samples, fewer than one global batch of "
                         f"{rt.global_batch} ({rt.batch_size} per process x {rt.grad_accum} accumulation x "
                         f"{rt.world} processes); lower --batch_size / --grad_accum")
    n_cut = sum(s.truncated for s in train_s)
    if n_cut:
        rep.line(f"{n_cut} of {len(train_s)} training samples were cut to --max_length {cfg.max_length}")

    base = _load_base(cfg, rt)
    try:
        dcfg = DraftConfig.from_base(base.config, cfg.draft_vocab_size, cfg.aux_layers, cfg.draft_intermediate_size)
        check_compatible(dcfg, base.config, source="--aux_layers")
    except ValueError as e:
        raise TrainError(str(e)) from None
    fingerprint = base_fingerprint(base)
    start = None  # a trained head to go on from: resume/, else --init_from
    if resume is not None:
        _check_resume_model(resume, dcfg, fingerprint)
        start = resume.draft
    elif cfg.init_from is not None:
        start = _read_init(cfg.init_from, dcfg, base.config, fingerprint)
        rep.line(f"Starting from the head in {cfg.init_from} (--init_from): its weights and vocabulary, "
                 "a new optimizer and learning-rate schedule")
    # a trained head keeps its vocabulary: its lm_head rows are those tokens' rows
    target_ids = (torch.arange(dcfg.draft_vocab_size) + start.d2t if start is not None
                  else build_vocab(train_s, dcfg.vocab_size, dcfg.draft_vocab_size))
    # Built from the training targets, the vocabulary covers them (one kept from --init_from may not);
    # the test share is the one that shows what it misses: a held-out target outside it can never be drafted.
    rep.line(f"Draft vocabulary: {dcfg.draft_vocab_size} of {dcfg.vocab_size} tokens, covering "
             f"{100 * vocab_coverage(train_s, target_ids):.2f}% of the training targets and "
             f"{100 * vocab_coverage(test_s, target_ids):.2f}% of the test targets; "
             f"features from layers {list(dcfg.aux_layer_ids)}")

    if cfg.context_targets:
        rep.line(f"--context_targets: {sum(s.num_positions for s in train_s)} training positions are targets "
                 f"instead of the loss mask's {sum(s.num_targets for s in train_s)} (test figures keep the loss mask)")

    head = TargetHead.from_base(base, target_ids)
    if start is not None:
        draft = Eagle3Draft(dcfg)
        draft.load_state_dict(start.state_dict())
    else:
        draft = initial_draft(cfg, dcfg, target_ids, base, head)
        if cfg.init_lm_head == "base":
            rep.line("The draft's lm_head starts from the base's rows (--init_lm_head base)")
    draft = draft.float().to(rt.device)
    embed_weight = base.get_input_embeddings().weight.detach()
    samples = {"train": train_s, "test": test_s}
    source = _build_features(cfg, rt, rep, savedir, base, dcfg.aux_layer_ids, samples, fingerprint)
    if cfg.features == "offline":
        del base  # the cache replaces it; only the embedding and the head rows stay
        gc.collect()

    total_steps = steps_per_epoch * cfg.num_epochs
    stepper = _make_stepper(cfg, rt, draft, head.to(rt.device), embed_weight, total_steps)

    state = TrainerState(global_batch=rt.global_batch, base_fingerprint=fingerprint)
    if resume is not None:
        state = resume.state
        _load_training(stepper, rt, resume.path)
    return _loop(cfg, rt, rep, savedir, fmt, source, stepper, state, steps_per_epoch)


def initial_draft(cfg: TrainConfig, dcfg: DraftConfig, target_ids: torch.Tensor, base,
                  head: TargetHead) -> Eagle3Draft:
    """A fresh draft: seeded weights, the draft vocabulary, and (--init_lm_head base) the base's lm_head rows."""
    torch.manual_seed(cfg.seed)
    draft = Eagle3Draft(dcfg)
    draft.set_vocab_mapping(target_ids)
    if cfg.init_lm_head == "base":
        draft.lm_head.weight.data.copy_(base_lm_head_rows(base, head))
    return draft


def _make_stepper(cfg, rt: Runtime, draft: Eagle3Draft, head, embed_weight, total_steps) -> Stepper:
    autocast = None if rt.dtype == torch.float32 or rt.use_deepspeed else rt.dtype
    objective = TTTObjective(draft, cfg.ttt_length, cfg.ttt_decay, autocast_dtype=autocast,
                             align_top_k=cfg.align_top_k)
    # the fused kernel is about 5x faster than the per-tensor loop on CPUs (same update)
    optimizer = torch.optim.AdamW(draft.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                                  fused=rt.device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup_ratio))
    common = dict(head=head, embed_weight=embed_weight, device=rt.device, world=rt.world,
                  max_grad_norm=rt.max_grad_norm, all_sum=rt.all_sum, context=cfg.context_targets)
    if rt.use_deepspeed:
        import deepspeed

        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=objective, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config_for(rt))
        return Stepper(objective=objective, model=engine, optimizer=None, scheduler=scheduler, deepspeed=True, **common)
    model = objective
    if rt.world > 1:
        # d2t/t2d are the same on every process: no buffer traffic in forward
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, forward_sync_buffers=False)
    scaler = torch.amp.GradScaler("cuda") if rt.dtype == torch.float16 and rt.device.type == "cuda" else None
    return Stepper(objective=objective, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, **common)


def _training_dict(stepper: Stepper) -> dict:
    if stepper.deepspeed:
        return {}
    d = {"optimizer": stepper.optimizer.state_dict(), "scheduler": stepper.scheduler.state_dict()}
    if stepper.scaler is not None:
        d["scaler"] = stepper.scaler.state_dict()
    return d


def _load_training(stepper: Stepper, rt: Runtime, resume: Path) -> None:
    training = load_training(resume)
    if stepper.deepspeed:
        stepper.model.load_checkpoint(str(resume / "deepspeed"), tag="ds", load_module_strict=False)
    else:
        stepper.optimizer.load_state_dict(training["optimizer"])
        stepper.scheduler.load_state_dict(training["scheduler"])
        if stepper.scaler is not None and "scaler" in training:
            stepper.scaler.load_state_dict(training["scaler"])
    set_rng_state(training["rng"])


def _save_resume(cfg, rt: Runtime, savedir: Path, stepper: Stepper, state: TrainerState) -> None:
    if stepper.deepspeed:
        # every process writes its ZeRO partition into one temporary folder that rank 0 then renames
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix=".tmp-ds-", dir=savedir)) if rt.is_main else None
        holder = [str(tmp) if tmp else None]
        if rt.world > 1:
            torch.distributed.broadcast_object_list(holder, src=0)
        stepper.model.save_checkpoint(holder[0], tag="ds")
        rt.barrier()
        if rt.is_main:
            import shutil

            def move(folder: Path) -> None:
                shutil.move(holder[0], folder / "deepspeed")

            save_resume(savedir, stepper.draft, {}, cfg, state, write_extra=move)
        rt.barrier()
        return
    if rt.is_main:
        save_resume(savedir, stepper.draft, _training_dict(stepper), cfg, state)
    rt.barrier()


def _reduce(rt: Runtime, sums: Sums) -> Sums:
    t = torch.cat([sums.ploss, sums.correct.double(), sums.count.double(), torch.tensor([float(sums.tokens)],
                                                                                       dtype=torch.float64)])
    t = rt.all_sum(t).cpu()
    k = sums.ploss.numel()
    return Sums(t[:k], t[k:2 * k].round().long(), t[2 * k:3 * k].round().long(), int(t[-1].round()))


def _loop(cfg: TrainConfig, rt: Runtime, rep: Reporter, savedir: Path, fmt: str, source, stepper: Stepper,
          state: TrainerState, steps_per_epoch: int) -> TrainResult:
    k, epochs = cfg.ttt_length, cfg.num_epochs
    train_n = len(source.samples["train"])
    lengths = [len(s.input_ids) for s in source.samples["train"]]
    test_mine = [i for i in range(len(source.samples["test"])) if i % rt.world == rt.rank]
    printed_format = False
    start = (state.global_step, state.tokens_seen, state.seconds)

    def out_of_budget() -> bool:
        return cfg.max_steps is not None and state.global_step >= cfg.max_steps

    while state.epoch < epochs:
        if out_of_budget():
            break
        e = state.epoch
        rep.line(f"Now training epoch {e}")
        if not printed_format:
            rep.line(f"Data format: {fmt}")
            printed_format = True
        order = epoch_order(train_n, cfg.seed, e, lengths if cfg.group_by_length else None, rt.global_batch)
        sums = Sums.from_dict(state.train_sums) if state.train_sums else Sums.zeros(k)
        bar = progress_bar(steps_per_epoch, state.step_in_epoch, rt.is_main)
        while state.step_in_epoch < steps_per_epoch:
            if out_of_budget():
                break
            t0 = time.time()
            s = state.step_in_epoch
            chunks = micro_batches(order[s * rt.global_batch:(s + 1) * rt.global_batch], lengths, rt.batch_size,
                                   rt.grad_accum, rt.world, rt.rank)
            result = stepper.step(source, chunks)
            step_sums = result.sums
            sums.add(step_sums.ploss, step_sums.correct, step_sums.count, step_sums.tokens)
            state.step_in_epoch += 1
            state.global_step += 1
            state.tokens_seen += result.global_tokens
            dt = time.time() - t0
            state.seconds += dt
            state.epoch_seconds += dt
            state.train_sums = sums.to_dict()
            bar.update(1)
            if rt.is_main:
                acc0 = step_sums.acc()[0]
                bar.set_postfix_str(f"acc0 {acc0:.1f} ploss0 {step_sums.ploss_mean()[0]:.3f}", refresh=False)
                rep.scalars({"train/lr": stepper.current_lr(), "train/ploss_0": step_sums.ploss_mean()[0],
                             "train/acc_0": acc0}, state.global_step)
            if state.global_step % cfg.save_steps == 0 or out_of_budget():
                _save_resume(cfg, rt, savedir, stepper, state)
        bar.close()
        if state.step_in_epoch < steps_per_epoch:
            break  # budget spent mid-epoch; resume/ holds the position

        # ---- epoch end: metrics over all processes, test, checkpoint ----------------------------
        train_sums = _reduce(rt, sums)
        test_sums = _reduce(rt, stepper.evaluate(source, "test", test_mine, rt.batch_size))
        for name, su in (("Train", train_sums), ("Test", test_sums)):
            for j, (acc, pl) in enumerate(zip(su.acc(), su.ploss_mean())):
                rep.line(f"{name} Epoch [{e + 1}/{epochs}], position {j}, Acc: {acc:.2f}")
                rep.line(f"{name} Epoch [{e + 1}/{epochs}], position {j}, pLoss: {pl:.2f}")
        metrics = {
            "acc": test_sums.acc()[0], "loss": test_sums.weighted_loss(cfg.ttt_decay), "epoch": e,
            "train_acc": train_sums.acc(), "train_ploss": train_sums.ploss_mean(),
            "test_acc": test_sums.acc(), "test_ploss": test_sums.ploss_mean(),
            "train_loss": train_sums.weighted_loss(cfg.ttt_decay), "lr": stepper.current_lr(),
            "global_step": state.global_step, "tokens_seen": state.tokens_seen, "seconds": round(state.seconds, 3),
            "epoch_seconds": round(state.epoch_seconds, 3),
            "train_tokens_per_s": round(train_sums.tokens / max(state.epoch_seconds, 1e-9), 1),
            "peak_memory_mb": round(peak_memory_mb(rt.device), 1), "features": cfg.features,
            "processes": rt.world,
        }
        rep.scalars({**{f"train/epochacc_{j}": a for j, a in enumerate(metrics["train_acc"])},
                     **{f"train/epochploss_{j}": p for j, p in enumerate(metrics["train_ploss"])},
                     **{f"test/epochacc_{j}": a for j, a in enumerate(metrics["test_acc"])},
                     **{f"test/epochploss_{j}": p for j, p in enumerate(metrics["test_ploss"])},
                     "epoch": e}, state.global_step)
        rep.line(f"Epoch {e + 1} took {metrics['epoch_seconds']:.1f} s of training, "
                 f"{metrics['train_tokens_per_s']:.0f} tokens/s, peak memory {metrics['peak_memory_mb']:.0f} MiB")
        state.history.append(metrics)
        state.epoch, state.step_in_epoch, state.train_sums, state.epoch_seconds = e + 1, 0, None, 0.0
        path = os.path.join(cfg.savedir, f"state_{e}")
        rep.line(f"Saving checkpoint to {path}")
        if rt.is_main:
            save_epoch(savedir, e, stepper.draft, rt.dtype, metrics, cfg, state)
        _save_resume(cfg, rt, savedir, stepper, state)
    finished = state.epoch >= epochs
    run_steps, run_tokens, run_seconds = (state.global_step - start[0], state.tokens_seen - start[1],
                                          state.seconds - start[2])
    if run_steps:
        rep.line(f"This run: {run_steps} steps, {run_tokens} tokens in {run_seconds:.1f} s of training "
                 f"({run_tokens / max(run_seconds, 1e-9):.0f} tokens/s, {cfg.features} features), "
                 f"peak memory {peak_memory_mb(rt.device):.0f} MiB")
    if not finished:
        rep.line(f"Stopped after {state.global_step} steps (--max_steps {cfg.max_steps}); "
                 f"run again with a larger budget to continue from {savedir / 'resume'}")
    return TrainResult(savedir, state, finished)
