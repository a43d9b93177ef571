"""Where training runs: processes (torchrun / deepspeed launcher / one process), device, dtype,
and how a DeepSpeed config is honoured with or without DeepSpeed."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from eagle.model.base import dtype_name, has_native_bf16
from eagle.train.config import TrainConfig
from eagle.train.dataset import TrainError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    dtype: torch.dtype  # base, features, autocast
    batch_size: int  # per process micro-batch
    grad_accum: int
    max_grad_norm: float
    use_deepspeed: bool
    ds_config: dict | None
    notices: list[str] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @property
    def _collective_device(self) -> torch.device:
        """NCCL reduces CUDA tensors, gloo CPU ones."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes (in place on a copy on the process's device)."""
        if self.world == 1:
            return t
        t = t.to(self._collective_device).clone()
        dist.all_reduce(t)
        return t

    def all_equal(self, value: int) -> bool:
        """Whether every process holds the same `value` (the same answer in every process)."""
        if self.world == 1:
            return True
        t = torch.tensor([value, -value], device=self._collective_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t[0]) == -int(t[1])  # the largest equals the smallest

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds in every process (each process takes the same branch after it)."""
        return self.all_equal(int(flag)) and flag


def read_ds_config(path: str | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"--deepspeed_config {path}: file not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TrainError(f"--deepspeed_config {path}: invalid JSON ({e})") from None


def _ds_precision(ds: dict | None) -> str | None:
    if not ds:
        return None
    if (ds.get("fp16") or {}).get("enabled"):
        return "fp16"
    if (ds.get("bf16") or ds.get("bfloat16") or {}).get("enabled"):
        return "bf16"
    return "fp32"


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def setup(cfg: TrainConfig) -> Runtime:
    """Start the process group when launched by torchrun or deepspeed, pick device, dtype, engine."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", cfg.local_rank if cfg.local_rank >= 0 else 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    notices: list[str] = []
    ds = read_ds_config(cfg.deepspeed_config)
    ds_prec = _ds_precision(ds)

    # engine: DeepSpeed only where it can run this config (its fp16 optimizer needs a GPU)
    use_ds = False
    if cfg.engine == "deepspeed" or (cfg.engine == "auto" and ds is not None):
        if ds is None:
            raise TrainError("--engine deepspeed needs --deepspeed_config")
        if not deepspeed_available():
            if cfg.engine == "deepspeed":
                raise TrainError("--engine deepspeed: DeepSpeed is not installed (pip install deepspeed==0.19.8)")
            notices.append(f"DeepSpeed is not installed: training with plain PyTorch, taking batch size, "
                           f"gradient accumulation and clipping from {cfg.deepspeed_config}")
        elif not cuda and ds_prec == "fp16":
            if cfg.engine == "deepspeed":
                raise TrainError(f"{cfg.deepspeed_config} asks for fp16, which DeepSpeed cannot train on a CPU; "
                                 "use eagle/traineagle3/ds_config_cpu.json (bf16)")
            notices.append(f"no GPU: training with plain PyTorch, taking batch size, gradient accumulation "
                           f"and clipping from {cfg.deepspeed_config} (use ds_config_cpu.json for DeepSpeed on CPU)")
        else:
            use_ds = True

    bf16_native = has_native_bf16(device)
    dtype = base_dtype(cfg.dtype, ds_prec if use_ds else None, cuda, bf16_native, notices)

    ds = ds or {}
    batch = cfg.batch_size or int(ds.get("train_micro_batch_size_per_gpu") or 2)
    accum = cfg.grad_accum or int(ds.get("gradient_accumulation_steps") or 1)
    clip = cfg.max_grad_norm if cfg.max_grad_norm is not None else float(ds.get("gradient_clipping", 0.5))
    tb = ds.get("train_batch_size")
    if tb is not None and int(tb) != batch * accum * world:
        notices.append(f"train_batch_size {tb} in the DeepSpeed config does not match {batch} per process x "
                       f"{accum} accumulation x {world} processes: using {batch * accum * world}")

    if use_ds and not dist.is_initialized():
        import deepspeed

        if world == 1:  # plain `python main.py`: a group of one, else DeepSpeed looks for MPI
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", str(local_rank))
            os.environ.setdefault("WORLD_SIZE", "1")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    elif world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=60))
    return Runtime(rank, world, local_rank, device, dtype, batch, accum, clip, use_ds,
                   (ds or None) if use_ds else None, notices)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_dtype(asked: str, ds_prec: str | None, cuda: bool, bf16_native: bool, notices: list[str]) -> torch.dtype:
    """The base's dtype (and the draft's without DeepSpeed): --dtype, else the hardware's best.
    ds_prec: the precision DeepSpeed trains the draft in, when it runs. A base runs in bf16 where
    the GPU has it even under an fp16 DeepSpeed config (the tutorial's): fp16's range is too small
    for the activations inside many bases, and only the draft's training needs a loss scale."""
    if asked != "auto":
        dtype = DTYPES[asked]
    elif not cuda:  # AMX/AVX512-BF16 CPUs (DESIGN §5) run bf16 fastest, the others fp32 (matmuls ~5x faster)
        dtype = torch.bfloat16 if bf16_native else torch.float32
    else:
        dtype = torch.bfloat16 if bf16_native else torch.float16
    if dtype == torch.float16 and not cuda:
        fallback = torch.bfloat16 if bf16_native else torch.float32
        notices.append(f"fp16 is not supported for training on CPU: using {dtype_name(fallback)} instead")
        dtype = fallback
    if ds_prec in ("fp16", "bf16") and DTYPES[ds_prec] != dtype:
        notices.append(f"the draft trains in {ds_prec} (the DeepSpeed config), the base runs in "
                       f"{dtype_name(dtype)}" + ("" if asked == "auto" else f" (--dtype {asked})"))
    return dtype


def deepspeed_config_for(rt: Runtime) -> dict:
    """The user's DeepSpeed config with our batch arithmetic (DeepSpeed checks it strictly)."""
    cfg = dict(rt.ds_config or {})
    cfg["train_micro_batch_size_per_gpu"] = rt.batch_size
    cfg["gradient_accumulation_steps"] = rt.grad_accum
    cfg["train_batch_size"] = rt.global_batch
    cfg["gradient_clipping"] = rt.max_grad_norm
    cfg.setdefault("steps_per_print", 10 ** 9)
    return cfg


def teardown(rt: Runtime | None = None) -> None:
    # DeepSpeed keeps its own handles on the group in module globals and cannot rebuild them
    # within one process, so its group stays for a later run in the same process (tests, notebooks).
    if dist.is_initialized() and not (rt is not None and rt.use_deepspeed):
        dist.destroy_process_group()
