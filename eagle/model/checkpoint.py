"""Draft checkpoints: the engines' EAGLE-3 folder (config.json + model.safetensors), read and written.

Loading never runs code from the checkpoint: safetensors, or `torch.load(weights_only=True)` for a
legacy `pytorch_model.bin`. A head is checked against its base before use, since a wrong `d2t` or a
head made for another model does not crash: it silently drafts garbage and speed collapses.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft

WEIGHTS = "model.safetensors"
# Prefixes other trainers put in front of the engine key names.
_FOREIGN_PREFIXES = ("model.", "draft_model.", "ea_layer.")
_IGNORED = ("embed_tokens.weight",)  # SpecForge stores the (frozen) base embedding; we use the base's own


def save_draft(draft: Eagle3Draft, directory: str | Path) -> None:
    """Write atomically: a run killed mid-save leaves any previous checkpoint at `directory` intact."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        dtype = str(next(draft.parameters()).dtype).removeprefix("torch.")
        dataclasses.replace(draft.config, torch_dtype=dtype).save(tmp)
        state = {k: v.detach().contiguous().cpu() for k, v in draft.state_dict().items() if "rotary_emb" not in k}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        share_permissions(tmp)
        replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def share_permissions(root: Path) -> None:
    """Give `root` and all below it the modes a plain write would (umask applied): mkdtemp makes
    folders owner-only and safetensors writes 0600, which a server run as another user cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():  # chmod follows links, possibly out of the folder
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def replace_dir(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, replacing it; the old copy is removed only once the new one is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    st, legacy = directory / WEIGHTS, directory / "pytorch_model.bin"
    path = st if st.is_file() else legacy
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS} (or pytorch_model.bin) in the draft folder")
    try:
        state = load_file(str(path)) if path == st else torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: the weights cannot be read, corrupt or truncated? ({e})") from None
    out = {}
    for k, v in state.items():
        for p in _FOREIGN_PREFIXES:
            if k.startswith(p) and not k.startswith("midlayer"):
                k = k[len(p):]
        # EAGLE's original layout names the single decoder layer `layers.0`.
        k = k.replace("layers.0.", "midlayer.")
        if k not in _IGNORED:
            out[k] = v
    return out


def load_draft(directory: str | Path, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Eagle3Draft:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"draft checkpoint folder not found: {directory}")
    cfg = DraftConfig.load(directory)
    state = _read_weights(directory)
    if "d2t" not in state:
        if cfg.draft_vocab_size != cfg.vocab_size:
            raise ValueError(
                f"{directory}: the checkpoint has no `d2t` tensor, but its draft vocabulary "
                f"({cfg.draft_vocab_size}) is smaller than the base's ({cfg.vocab_size}); without the "
                "draft-to-target map every drafted token would be wrong. Re-export it with d2t.")
        state["d2t"] = torch.zeros(cfg.draft_vocab_size, dtype=torch.long)
    d2t = state["d2t"].long()
    target = torch.arange(d2t.numel()) + d2t
    if d2t.numel() != cfg.draft_vocab_size or target.min() < 0 or target.max() >= cfg.vocab_size \
            or target.unique().numel() != target.numel():
        raise ValueError(f"{directory}: `d2t` does not map {cfg.draft_vocab_size} draft ids to distinct base ids")
    state["d2t"] = d2t
    t2d = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    t2d[target] = True
    if "t2d" in state and not torch.equal(state["t2d"].bool(), t2d):
        raise ValueError(f"{directory}: `t2d` and `d2t` disagree")
    state["t2d"] = t2d

    draft = Eagle3Draft(cfg)
    expected = {k for k in draft.state_dict() if "rotary_emb" not in k}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match an EAGLE-3 draft "
                         f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    for k, v in state.items():
        want = draft.state_dict()[k].shape
        if v.shape != want:
            raise ValueError(f"{directory}: `{k}` has shape {tuple(v.shape)}, config says {tuple(want)}")
    draft.load_state_dict(state, strict=False)
    return draft.to(device=device, dtype=dtype) if dtype is not None else draft.to(device=device)


def check_compatible(cfg: DraftConfig, base_config, source: str = "draft") -> None:
    """Refuse a head made for another base: the features, vocabulary or depths would not line up."""
    base = getattr(base_config, "text_config", None) or base_config
    problems = []
    if cfg.target_hidden_size != base.hidden_size:
        problems.append(f"hidden size {cfg.target_hidden_size} vs the base's {base.hidden_size}")
    if cfg.vocab_size != base.vocab_size:
        problems.append(f"vocabulary {cfg.vocab_size} vs the base's {base.vocab_size}")
    n = base.num_hidden_layers
    if cfg.target_num_hidden_layers is not None and cfg.target_num_hidden_layers != n:
        problems.append(f"{cfg.target_num_hidden_layers} layers vs the base's {n}")
    if problems:
        raise ValueError(f"{source} was made for another base model: " + "; ".join(problems))
    if any(not 1 <= i <= n - 1 for i in cfg.aux_layer_ids):
        raise ValueError(f"{source}: aux layers {list(cfg.aux_layer_ids)} must lie in 1..{n - 1}, the inputs of "
                         "the base's decoder layers, which is what serving engines capture (0 is the bare "
                         "embedding); train with --aux_layers in that range")
