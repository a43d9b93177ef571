"""TrainConfig: every training setting, one field per command-line flag, saved next to each checkpoint.

`eagle/train/args.py` builds the flags from these fields (their `metadata`), so the tutorial's
`main.py` and `eagle train` share one definition. `train_config.json` in each state folder is
`TrainConfig.to_dict()`; loading refuses unknown keys instead of guessing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FEATURE_MODES = ("offline", "online")
DTYPES = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "torch", "deepspeed")
RESUME = ("auto", "yes", "no")
LM_HEAD_INITS = ("base", "random")


def _f(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    # ---- the tutorial's flags -------------------------------------------------------------
    basepath: str = _f(None, "base model: local HF folder, hub id, .gguf file or zoo name (qwen2.5-coder-0.5b)",
                       required=True)
    trainpath: str = _f(None, "training JSONL (fim or chat records)", required=True)
    testpath: str = _f(None, "test JSONL, same format", required=True)
    savedir: str = _f("checkpoints", "output folder: state_<epoch>/, training.log, resume/")
    data_format: str = _f("auto", "record format of both files (mixed: fim and chat records in one file)",
                          choices=("auto", "fim", "chat", "mixed"))
    deepspeed_config: str | None = _f(None, "DeepSpeed JSON config; without DeepSpeed (or on CPU for fp16) "
                                            "its batch, accumulation and clipping drive plain PyTorch")
    local_rank: int = _f(-1, "set by the deepspeed launcher; LOCAL_RANK from torchrun wins")
    # ---- optimisation ------------------------------------------------------------------------
    num_epochs: int = _f(40, "epochs over the training set")
    lr: float = _f(1e-4, "peak learning rate (AdamW)")
    warmup_ratio: float = _f(0.02, "share of all steps spent warming the learning rate up linearly")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int | None = _f(None, "samples per micro-batch per process (default: the DeepSpeed "
                                      "config's train_micro_batch_size_per_gpu, else 2)")
    grad_accum: int | None = _f(None, "micro-batches per optimizer step (default: the config's "
                                      "gradient_accumulation_steps, else 1)")
    max_grad_norm: float | None = _f(None, "gradient clipping (default: the config's gradient_clipping, else 0.5; "
                                           "0 = off)")
    max_steps: int | None = _f(None, "stop after this many optimizer steps in all (a budget; resumable)")
    seed: int = _f(0, "seed for the draft's initial weights and the data order")
    group_by_length: bool = _f(False, "batch samples of similar length together (shuffled runs of 16 batches "
                                      "sorted by length): less padding, faster steps (docs/training.md)")
    # ---- the EAGLE-3 objective -----------------------------------------------------------
    max_length: int = _f(2048, "tokens per sample; longer ones are cut (FIM keeps the middle)")
    ttt_length: int = _f(7, "training-time-test steps: the draft is unrolled on its own outputs this many times")
    ttt_decay: float = _f(0.8, "weight of step j is ttt_decay**j")
    align_top_k: int = _f(0, "token-alignable training (GRIFFIN): train a chain at TTT step j only while each "
                             "earlier step ranked the token fed next among its top k (0 = every chain)")
    draft_vocab_size: int = _f(32000, "draft vocabulary: the most frequent target tokens of the training data")
    draft_intermediate_size: int | None = _f(None, "width of the draft's MLP (default: the base's); narrower "
                                                   "drafts cost less per call on CPUs")
    init_lm_head: str = _f("random", "the draft's lm_head at the start: random, or base = the base's own rows "
                                     "for the draft vocabulary (its final norm folded in): higher τ, larger "
                                     "trees (docs/training.md)", choices=LM_HEAD_INITS)
    init_from: str | None = _f(None, "a trained head (state_<epoch> or an export) to start from: its weights and "
                                     "vocabulary, with a new optimizer and schedule, e.g. to train on more "
                                     "data; the draft flags must match it (docs/training.md)")
    context_targets: bool = _f(False, "also learn the base's distribution where the loss mask is off (prompts, "
                                      "FIM prefix and suffix): more targets from the same features, longer "
                                      "steps (docs/training.md)")
    aux_layers: tuple[int, ...] | None = _f(None, "three HF hidden_states indices fused as features, e.g. 2,12,21 "
                                                  "(default: 2, N//2, N-3)")
    dtype: str = _f("auto", "base and feature dtype, autocast dtype of the draft (auto: on CPU bf16 "
                            "with AVX512-BF16/AMX, else fp32; on GPU the DeepSpeed config's fp16/bf16, else "
                            "bf16 where supported, else fp16)",
                    choices=DTYPES)
    # ---- base features -------------------------------------------------------------------
    features: str = _f("offline", "offline: run the base once, cache its features, later epochs cost only the "
                                  "draft; online: run the frozen base inside every step", choices=FEATURE_MODES)
    cache_dir: str | None = _f(None, "feature cache folder (default: <savedir>/feature_cache)")
    # ---- runtime -------------------------------------------------------------------------
    engine: str = _f("auto", "auto: DeepSpeed when --deepspeed_config is given, DeepSpeed is installed and "
                             "the config can run on this device; else plain PyTorch (DDP under torchrun)",
                     choices=ENGINES)
    resume: str = _f("auto", "auto: continue from the newest state in savedir if there is one; yes: "
                             "require one; no: start afresh (overwrites)", choices=RESUME, nargs="?", const="yes")
    save_steps: int = _f(200, "write a resumable state (resume/) every this many optimizer steps")
    wandb: bool = _f(False, "log to Weights & Biases (also after `wandb login` or with EAGLE_WANDB=1; "
                            "EAGLE_WANDB=0: never); needs `pip install wandb`")
    wandb_project: str = _f("eagle-training", "wandb project")
    tensorboard: bool = _f(False, "also write TensorBoard events to <savedir>/tensorboard")
    trust_remote_code: bool = _f(False, "allow the base's own modeling code from its folder")

    def __post_init__(self):
        if isinstance(self.aux_layers, str):
            self.aux_layers = parse_int_list(self.aux_layers)
        if self.aux_layers is not None:
            self.aux_layers = tuple(int(i) for i in self.aux_layers)
            if len(self.aux_layers) != 3:
                raise ValueError(f"--aux_layers needs three layer indices, got {list(self.aux_layers)}")
        positive = {"num_epochs": self.num_epochs, "max_length": self.max_length, "ttt_length": self.ttt_length,
                    "draft_vocab_size": self.draft_vocab_size, "save_steps": self.save_steps}
        for name in ("batch_size", "grad_accum", "max_steps", "draft_intermediate_size"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        bad = [f"--{k} {v}" for k, v in positive.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"must be positive integers: {', '.join(bad)}")
        if not isinstance(self.align_top_k, int) or self.align_top_k < 0:
            raise ValueError(f"--align_top_k must be an integer >= 0, got {self.align_top_k!r}")
        if self.max_length < 3:
            raise ValueError("--max_length must be at least 3 (a token, its successor and one target)")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.init_from is not None and self.init_lm_head != "random":
            raise ValueError("--init_from starts from that head's lm_head; it cannot be combined with "
                             f"--init_lm_head {self.init_lm_head}")
        for name, allowed in (("features", FEATURE_MODES), ("dtype", DTYPES), ("engine", ENGINES),
                              ("resume", RESUME), ("init_lm_head", LM_HEAD_INITS),
                              ("data_format", ("auto", "fim", "chat", "mixed"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aux_layers"] = list(self.aux_layers) if self.aux_layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "train config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown settings {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
