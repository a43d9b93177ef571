"""The EAGLE-3 draft head (arXiv 2503.01840 §3): one decoder layer over fused base features.

    h_0   = fc(cat(f_low, f_mid, f_high))                    # 3H -> H, step 0 only
    x     = cat(input_layernorm(embed(token)), hidden_norm(h))  # 2H
    h'    = h + o_proj(attn(q/k/v_proj(x)))                     # residual on h, not on x
    h_out = h' + mlp(post_attention_layernorm(h'))
    logits over the draft vocabulary = lm_head(norm(h_out)); target id = i + d2t[i]

`h_out` (pre-norm) is the next step's `h`: the draft feeds itself. The token embedding is the
base's own, frozen, and is passed in by the caller, so it is never stored in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from eagle.model.config import DraftConfig


@dataclass
class DraftOutput:
    hidden: torch.Tensor  # [B, S, H] pre-norm output, the next step's h
    key: torch.Tensor  # [B, n_kv, S, hd] this call's keys (RoPE applied), for the caller's cache
    value: torch.Tensor  # [B, n_kv, S, hd]


class DraftAttention(nn.Module):
    def __init__(self, cfg: DraftConfig):
        super().__init__()
        h, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = nn.Linear(2 * h, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(2 * h, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(2 * h, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, h, bias=False)

    def forward(self, x, cos, sin, past_kv, mask):
        # x: [B, S, 2H]; past_kv: ([B, n_kv, P, hd], same) or None; mask: [B|1, 1, S, P+S] bool or None
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k_all, v_all = (k, v) if past_kv is None else (torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2))
        gqa = self.n_kv != self.n_heads
        if gqa and mask is not None and q.is_cuda:  # no fused CUDA kernel takes a mask with GQA: share heads here
            k_all, v_all = (t.repeat_interleave(self.n_heads // self.n_kv, 1) for t in (k_all, v_all))
            gqa = False
        out = F.scaled_dot_product_attention(
            q, k_all, v_all, attn_mask=mask, is_causal=mask is None and past_kv is None and s > 1, enable_gqa=gqa,
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), k, v


class DraftDecoderLayer(nn.Module):
    def __init__(self, cfg: DraftConfig):
        super().__init__()
        lc = cfg.llama_config()
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.hidden_norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = DraftAttention(cfg)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(lc)

    def forward(self, embeds, hidden, cos, sin, past_kv, mask):
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        attn, k, v = self.self_attn(x, cos, sin, past_kv, mask)
        h = hidden + attn
        return h + self.mlp(self.post_attention_layernorm(h)), k, v


class Eagle3Draft(nn.Module):
    def __init__(self, cfg: DraftConfig):
        super().__init__()
        self.config = cfg
        self.fc = nn.Linear(3 * cfg.target_hidden_size, cfg.hidden_size, bias=False)
        self.midlayer = DraftDecoderLayer(cfg)
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.draft_vocab_size, bias=False)
        self.rotary_emb = LlamaRotaryEmbedding(cfg.llama_config())
        self._inv_freq = self.rotary_emb.inv_freq.clone()  # float32, not a buffer: .to(dtype) leaves it
        # d2t[i] = target_id(i) - i; t2d[t] marks target ids that the draft vocabulary holds.
        # Until set_vocab_mapping, the draft vocabulary is the first draft_vocab_size base ids.
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.arange(cfg.vocab_size) < cfg.draft_vocab_size)

    def _apply(self, fn, recurse=True):
        # RoPE frequencies stay float32 through .to(bfloat16), .half() and DeepSpeed's casts:
        # rounded to bf16 they are off by up to 0.4%, which turns a position 2,000 tokens in by over
        # a radian, and training with float32 master weights never saw those angles.
        super()._apply(fn, recurse)
        rot = self.rotary_emb
        self._inv_freq = self._inv_freq.to(rot.inv_freq.device)
        rot.inv_freq, rot.original_inv_freq = self._inv_freq, self._inv_freq.clone()
        return self

    def forward(self, hidden: torch.Tensor, embeds: torch.Tensor, position_ids: torch.Tensor,
                past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> DraftOutput:
        """hidden: [B, S, 3H'] base features (fused by fc) or [B, S, H] the draft's own output;
        embeds: [B, S, H] base embeddings of the *next* tokens; position_ids: [B, S].
        mask: bool [B|1, 1, S, P+S], True = attend; None means causal (with no past)."""
        if hidden.shape[-1] == self.fc.in_features:
            hidden = self.fc(hidden)
        cos, sin = self.rotary_emb(hidden, position_ids)
        h, k, v = self.midlayer(embeds.to(hidden.dtype), hidden, cos, sin, past_kv, mask)
        return DraftOutput(h, k, v)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., draft_vocab] logits over the draft vocabulary."""
        return self.lm_head(self.norm(hidden))

    def to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary ids -> base-vocabulary ids."""
        return draft_ids + self.d2t[draft_ids]

    def set_vocab_mapping(self, target_ids: torch.Tensor) -> None:
        """Install the draft vocabulary: `target_ids[i]` is the base id of draft id i (sorted, unique)."""
        target_ids = torch.as_tensor(target_ids, dtype=torch.long).sort().values
        if target_ids.numel() != self.config.draft_vocab_size or target_ids.unique().numel() != target_ids.numel():
            raise ValueError(f"need {self.config.draft_vocab_size} distinct target ids, got {target_ids.numel()}")
        self.d2t.copy_(target_ids - torch.arange(target_ids.numel()))
        self.t2d.zero_()
        self.t2d[target_ids] = True

    def save_pretrained(self, directory: str | Path) -> None:
        from eagle.model.checkpoint import save_draft

        save_draft(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> "Eagle3Draft":
        from eagle.model.checkpoint import load_draft

        return load_draft(directory, **kwargs)
