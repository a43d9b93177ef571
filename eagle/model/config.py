"""The draft head's config, read and written in the serving engines' EAGLE-3 format.

`config.json` is what SGLang and vLLM load for an EAGLE-3 draft (`LlamaForCausalLMEagle3`), so a
head trained here is served there unchanged, and heads trained by SpecForge load here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import LlamaConfig, PretrainedConfig

ARCHITECTURE = "LlamaForCausalLMEagle3"


def default_aux_layer_ids(num_hidden_layers: int) -> tuple[int, int, int]:
    """Low, mid and high feature depths as HF `hidden_states` indices (0 is the embedding output).

    EAGLE-3 fuses (2, N//2, N-3); clamped into [1, N-1] so tiny test models still get three layers.
    """
    n = num_hidden_layers
    return tuple(min(max(i, 1), max(n - 1, 1)) for i in (2, n // 2, n - 3))  # type: ignore[return-value]


@dataclass
class DraftConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int  # the base model's vocabulary
    draft_vocab_size: int
    target_hidden_size: int
    aux_layer_ids: tuple[int, ...]  # HF hidden_states indices of the fused base features
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    # Identity of the base the head was trained on; absent in foreign checkpoints.
    target_num_hidden_layers: int | None = None
    target_model_type: str | None = None
    torch_dtype: str | None = None  # of the saved weights; SGLang runs a draft without it in fp16
    extra: dict = field(default_factory=dict)  # foreign keys, written back unchanged

    def __post_init__(self):
        self.aux_layer_ids = tuple(int(i) for i in self.aux_layer_ids)
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if len(self.aux_layer_ids) != 3:
            raise ValueError(f"EAGLE-3 fuses exactly three base layers, got aux_layer_ids={self.aux_layer_ids}")
        if not 0 < self.draft_vocab_size <= self.vocab_size:
            raise ValueError(f"draft_vocab_size={self.draft_vocab_size} must be in [1, vocab_size={self.vocab_size}]")
        if self.target_hidden_size != self.hidden_size:
            # The draft reads the base's own token embedding, so its width is the base's.
            raise ValueError(f"draft hidden_size={self.hidden_size} differs from target_hidden_size="
                             f"{self.target_hidden_size}; an EAGLE-3 head here shares the base's embedding, "
                             "so both must be the base's hidden size")

    @classmethod
    def from_base(cls, base: PretrainedConfig, draft_vocab_size: int | None = None,
                  aux_layer_ids: tuple[int, ...] | None = None,
                  intermediate_size: int | None = None) -> "DraftConfig":
        """A draft shaped like one layer of `base` (the EAGLE-3 recipe); `intermediate_size` narrows
        its MLP, which on bandwidth-bound hardware is most of a draft call after the lm_head."""
        base = getattr(base, "text_config", None) or base  # multimodal wrappers (Gemma3)
        rope = _rope_of(base)
        n_layers = base.num_hidden_layers
        return cls(
            hidden_size=base.hidden_size,
            intermediate_size=intermediate_size or getattr(base, "intermediate_size", None) or 4 * base.hidden_size,
            num_attention_heads=base.num_attention_heads,
            num_key_value_heads=getattr(base, "num_key_value_heads", None) or base.num_attention_heads,
            head_dim=getattr(base, "head_dim", None) or base.hidden_size // base.num_attention_heads,
            vocab_size=base.vocab_size,
            draft_vocab_size=min(draft_vocab_size or base.vocab_size, base.vocab_size),
            target_hidden_size=base.hidden_size,
            aux_layer_ids=tuple(aux_layer_ids or default_aux_layer_ids(n_layers)),
            rms_norm_eps=float(getattr(base, "rms_norm_eps", None) or 1e-6),
            rope_theta=rope["rope_theta"],
            rope_scaling=rope["rope_scaling"],
            max_position_embeddings=getattr(base, "max_position_embeddings", 4096) or 4096,
            target_num_hidden_layers=n_layers,
            target_model_type=base.model_type,
        )

    # ---- the engines' format -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            **self.extra,
            "architectures": [ARCHITECTURE],
            "model_type": "llama",
            "num_hidden_layers": 1,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            # No target_hidden_size: it equals hidden_size, and EAGLE's own loader takes its presence to
            # mean "no base embedding", leaving the draft's random. The engines default it to hidden_size.
            "tie_word_embeddings": False,
            # vLLM reads HF hidden_states indices; SGLang adds 1 to its own list, so it gets index-1.
            "eagle_aux_hidden_state_layer_ids": list(self.aux_layer_ids),
            "eagle_config": {"eagle_aux_hidden_state_layer_ids": [i - 1 for i in self.aux_layer_ids]},
        }
        if self.target_num_hidden_layers is not None:
            d["target_num_hidden_layers"] = self.target_num_hidden_layers
        if self.target_model_type is not None:
            d["target_model_type"] = self.target_model_type
        if self.torch_dtype is not None:
            d["torch_dtype"] = self.torch_dtype  # the key every transformers version reads
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "DraftConfig":
        required = ["hidden_size", "num_attention_heads", "vocab_size"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: not an EAGLE-3 draft config, missing {missing}")
        if d.get("num_hidden_layers", 1) != 1:
            raise ValueError(f"{source}: an EAGLE-3 draft has one decoder layer, got num_hidden_layers={d['num_hidden_layers']}")
        if "eagle_aux_hidden_state_layer_ids" in d:
            aux = d["eagle_aux_hidden_state_layer_ids"]
        elif (d.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") is not None:
            aux = [i + 1 for i in d["eagle_config"]["eagle_aux_hidden_state_layer_ids"]]
        elif d.get("target_num_hidden_layers"):
            aux = default_aux_layer_ids(d["target_num_hidden_layers"])
        else:
            raise ValueError(
                f"{source}: the draft does not say which base layers it fuses (no "
                "eagle_aux_hidden_state_layer_ids); add it to config.json")
        rope = _rope_of(d)
        known = {f.name for f in dataclasses.fields(cls)} | {
            "architectures", "model_type", "num_hidden_layers", "tie_word_embeddings", "rope_parameters",
            "eagle_aux_hidden_state_layer_ids", "eagle_config", "dtype"}
        try:
            return cls(
                hidden_size=d["hidden_size"],
                intermediate_size=d.get("intermediate_size") or 4 * d["hidden_size"],
                num_attention_heads=d["num_attention_heads"],
                num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
                head_dim=d.get("head_dim"),
                vocab_size=d["vocab_size"],
                draft_vocab_size=d.get("draft_vocab_size") or d["vocab_size"],
                target_hidden_size=d.get("target_hidden_size") or d["hidden_size"],
                aux_layer_ids=tuple(aux),
                rms_norm_eps=d.get("rms_norm_eps", 1e-6),
                rope_theta=rope["rope_theta"],
                rope_scaling=rope["rope_scaling"],
                max_position_embeddings=d.get("max_position_embeddings", 4096),
                hidden_act=d.get("hidden_act", "silu"),
                target_num_hidden_layers=d.get("target_num_hidden_layers"),
                target_model_type=d.get("target_model_type"),
                torch_dtype=d.get("torch_dtype") or d.get("dtype"),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except ValueError as e:  # __post_init__'s checks, named by file
            raise ValueError(f"{source}: {e}") from None

    def save(self, directory: str | Path) -> None:
        Path(directory, "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "DraftConfig":
        path = Path(directory, "config.json")
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no config.json, so not a draft checkpoint folder")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))

    def llama_config(self) -> LlamaConfig:
        """The transformers config whose RoPE, norm and MLP classes the draft layer reuses."""
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope = {**rope, **self.rope_scaling}
            rope["rope_type"] = self.rope_scaling.get("rope_type") or self.rope_scaling.get("type", "default")
            rope.pop("type", None)
        return LlamaConfig(
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim, rms_norm_eps=self.rms_norm_eps, hidden_act=self.hidden_act,
            max_position_embeddings=max(self.max_position_embeddings,
                                        int(rope.get("original_max_position_embeddings", 0)) + 1),
            rope_parameters=rope, vocab_size=self.vocab_size, num_hidden_layers=1,
        )


def _rope_of(cfg: Any) -> dict:
    """RoPE theta and scaling from a transformers 5 config (`rope_parameters`) or a 4.x-style dict."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, default=None: getattr(cfg, k, default))
    params = get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:  # per-layer-type params (Gemma3)
        params = params["full_attention"]
    if isinstance(params, dict):
        theta = params.get("rope_theta", get("rope_theta") or 10000.0)
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") == "default":
            scaling = None
        return {"rope_theta": float(theta), "rope_scaling": scaling}
    return {"rope_theta": float(get("rope_theta") or 10000.0), "rope_scaling": get("rope_scaling")}
