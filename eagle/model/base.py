"""Loading the base (target) model: a local folder, a hub id, a GGUF file, or a name from the zoo."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer


def resolve_path(name_or_path: str) -> str:
    """Zoo names (`qwen2.5-coder-0.5b`, ...) become their cached folder; anything else is returned as is."""
    try:
        from eagle import zoo
    except ImportError:
        return str(name_or_path)
    return str(zoo.resolve(str(name_or_path)))


def _split_gguf(path: str) -> tuple[str, dict]:
    p = Path(path)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), {"gguf_file": p.name}
    return path, {}


def load_base(path: str, **kwargs):
    """The base model, eval mode, frozen. kwargs reach `from_pretrained` (dtype, device_map, ...)."""
    path, extra = _split_gguf(resolve_path(path))
    kwargs.setdefault("attn_implementation", "sdpa")  # tree verification needs a mask-taking kernel
    model = AutoModelForCausalLM.from_pretrained(path, **extra, **kwargs)
    model.eval().requires_grad_(False)
    return model


def load_tokenizer(path: str, trust_remote_code: bool = False):
    path, extra = _split_gguf(resolve_path(path))
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)


def eos_token_ids(model, tokenizer=None) -> frozenset[int]:
    """Every id that ends generation: the generation config's (often several, e.g. Qwen's
    <|im_end|> and <|endoftext|>), else the model config's, else the tokenizer's."""
    ids = None
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        ids = gen.eos_token_id
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)
