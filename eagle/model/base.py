"""Loading the base (target) model: a local folder, a hub id, a GGUF file, or a name from the zoo."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eagle.model.cpu_linear import pack_linears, wants_packing


def resolve_path(name_or_path: str) -> str:
    """Zoo names (`qwen2.5-coder-0.5b`, ...) become their cached folder; anything else is returned as is."""
    try:
        from eagle import zoo
    except ImportError:
        return str(name_or_path)
    return str(zoo.resolve(str(name_or_path)))


def _locate(name_or_path: str, model: bool = True) -> tuple[str, dict]:
    """The path (and GGUF file) to hand to transformers, after refusing what cannot be a base,
    whose transformers error would mislead (a repo-id rule for a missing folder, a tokenizer
    backend for a draft head). `model=False`: a tokenizer folder, which needs no config.json."""
    path = resolve_path(name_or_path)
    p = Path(path).expanduser()
    if p.is_dir():
        cfg = p / "config.json"
        if model and not cfg.is_file():
            raise FileNotFoundError(f"{path}: no config.json, so not a model folder")
        if cfg.is_file() and "Eagle3" in str(_read_json(cfg).get("architectures")):
            raise ValueError(f"{path} is an EAGLE-3 draft head, not a base model: give it as the draft "
                             "(--ea-model-path) and the model it was trained on as the base")
    elif p.suffix == ".gguf" and p.is_file():
        return str(p.parent), {"gguf_file": p.name}
    elif not p.exists() and (path.startswith(("/", ".", "~")) or path.endswith(".gguf") or path.count("/") > 1):
        raise FileNotFoundError(f"base model not found: {path} (no such file or folder)")
    return (str(p) if p.exists() else path), {}


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
    return d if isinstance(d, dict) else {}


def default_device(device: str | None = None) -> str:
    """The device asked for, else cuda when the machine has one."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_info() -> dict:
    """The CPU's model name and the bf16 arithmetic it has in hardware ("amx_bf16", "avx512_bf16" or
    None), read from /proc/cpuinfo. Benchmarks record it: the same head and tree give different
    speedups on AMX, AVX512-BF16 and AVX2-only CPUs (docs/benchmark.md)."""
    try:
        text = CPUINFO.read_text()
    except OSError:  # not Linux: no flags to read, so do not count on bf16
        return {"model": None, "bf16": None}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), None)
    words = set(text.split())
    return {"model": model, "bf16": next((f for f in ("amx_bf16", "avx512_bf16") if f in words), None)}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16). Elsewhere PyTorch
    converts to fp32 inside every matmul: a one-token forward, bound by memory, still runs faster in
    bf16, but a forward over many tokens runs several times slower than in float32 (Qwen2.5-Coder-0.5B
    on an AVX2 EPYC: 64 tokens in 2.4 s against 0.94 s; docs/benchmark.md, "CPUs without bf16
    arithmetic")."""
    return cpu_info()["bf16"] is not None


def has_native_bf16(device: str | torch.device) -> bool:
    """Whether the device computes bf16 itself: GPUs from Ampere on (V100 and T4 only emulate it,
    without tensor cores), CPUs with AVX512-BF16 or AMX."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return dev.type == "cpu" and cpu_has_native_bf16()


def fast_dtype(device: str | None = None) -> torch.dtype:
    """The dtype that runs many-token forwards fastest (tree verification, batched regeneration,
    training): bf16 where the hardware computes it, else fp16 on GPUs and float32 elsewhere."""
    dev = torch.device(default_device(device))
    if has_native_bf16(dev):
        return torch.bfloat16
    return torch.float16 if dev.type == "cuda" else torch.float32


def resolve_dtype(name: str | None, device: str | None = None):
    """A --dtype flag's value -> what `from_pretrained` takes: None: the hardware's `fast_dtype`;
    "auto": as stored; else torch.<name>."""
    if name is None:
        return fast_dtype(device)
    return "auto" if name == "auto" else getattr(torch, name)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def placement(device: str | None = None) -> dict:
    """`from_pretrained` kwargs that load a model onto the device (the CPU needs none)."""
    dev = default_device(device)
    return {} if dev == "cpu" else {"device_map": dev}


def load_base(path: str, **kwargs):
    """The base model, eval mode, frozen. kwargs reach `from_pretrained` (dtype, device_map, ...)."""
    path, extra = _locate(path)
    kwargs.setdefault("attn_implementation", "sdpa")  # tree verification needs a mask-taking kernel
    model = AutoModelForCausalLM.from_pretrained(path, **extra, **kwargs)
    model.eval().requires_grad_(False)
    if model.device.type == "cpu" and model.dtype == torch.bfloat16 and not cpu_has_native_bf16():
        warnings.warn("bfloat16 on a CPU without AVX512-BF16 or AMX: PyTorch converts inside every matmul, so "
                      "tree verification, batched regeneration and training run several times slower than in "
                      "float32 (pass --dtype float32, or leave --dtype unset to get it)", stacklevel=2)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_standard_strides)
    if wants_packing(model):  # float32 on the CPU: oneDNN instead of MKL's sgemm (eagle.model.cpu_linear)
        pack_linears(model)
    return model


def _standard_strides(module, args):
    """`logits_to_keep=1` hands the lm_head a [1, 1, H] view whose batch stride is the whole
    sequence's; on torch 2.13 CPU, F.linear then goes through bmm with a copy of the [V, H] weight
    (0.45 s a prefill for Qwen's 152k vocabulary, against 16 ms for a plain row)."""
    x = args[0]
    if x.dim() == 3 and x.stride(0) != x.shape[1] * x.shape[2]:
        return (x.clone(memory_format=torch.contiguous_format), *args[1:])
    return None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    path, extra = _locate(path, model=False)
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
