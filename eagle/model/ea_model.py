"""EaModel: a base causal LM plus its EAGLE-3 draft head, with EAGLE's generation API.

    model = EaModel.from_pretrained(base_model_path=..., ea_model_path=..., use_eagle3=True)
    ids = model.eagenerate(input_ids, temperature=0.0, max_new_tokens=256)

Any transformers `AutoModelForCausalLM` works unmodified: the tree is verified through the
model's own forward with a 4-D mask and explicit positions.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from eagle.model.base import eos_token_ids, load_base, load_tokenizer, resolve_path
from eagle.model.checkpoint import check_compatible, load_draft
from eagle.model.cpu_linear import pack_linears, wants_packing
from eagle.model.draft import Eagle3Draft
from eagle.model.generate import Limits, naive_decode, speculative_decode
from eagle.model.sampling import SamplingParams
from eagle.model.tree import TreeConfig


class EaModel(nn.Module):
    def __init__(self, base_model, ea_layer: Eagle3Draft, tokenizer=None, tree: TreeConfig | None = None):
        super().__init__()
        check_compatible(ea_layer.config, base_model.config)
        spread = sorted({str(d) for d in (getattr(base_model, "hf_device_map", None) or {}).values()})
        if len(spread) > 1:  # the loop indexes caches, features and logits on one device
            raise ValueError(f"the base is split over devices {', '.join(spread)} (device_map); speculative "
                             "decoding needs it on one: load it with device_map='cuda:0' (or another single device)")
        self.base_model = base_model
        self.ea_layer = ea_layer.to(device=base_model.device, dtype=base_model.dtype).eval()
        if wants_packing(self.ea_layer):  # its tree calls are 1-10 rows: the case oneDNN serves fastest
            pack_linears(self.ea_layer)
        self.tokenizer = tokenizer
        self.tree = tree or TreeConfig.for_device(base_model.device, base_model.dtype)

    @property
    def ea_model(self) -> Eagle3Draft:
        """The tutorial's name for the draft head (`model.ea_model.save_pretrained(...)`)."""
        return self.ea_layer

    @property
    def device(self) -> torch.device:
        return self.base_model.device

    @classmethod
    def from_pretrained(cls, base_model_path: str, ea_model_path: str, use_eagle3: bool = True,
                        total_token: int | None = None, depth: int | None = None, top_k: int | None = None,
                        lookup: int | None = None, expand_threshold: float | None = None,
                        min_prob: float | None = None,
                        tokenizer_path: str | None = None, trust_remote_code: bool = False, **kwargs) -> "EaModel":
        """kwargs reach the base loader (dtype, device_map, attn_implementation, ...). Tree settings
        left as None take the device's defaults (TreeConfig.for_device); lookup=0 turns off the
        prompt-lookup branch, expand_threshold=0 always drafts the full depth, min_prob=0 keeps
        `total_token` nodes however unlikely."""
        if not use_eagle3:
            raise ValueError("only EAGLE-3 draft heads are supported (use_eagle3=True)")
        base = load_base(base_model_path, trust_remote_code=trust_remote_code, **kwargs)
        draft = load_draft(resolve_path(ea_model_path))
        check_compatible(draft.config, base.config, source=str(ea_model_path))
        tok = load_tokenizer(tokenizer_path or base_model_path, trust_remote_code=trust_remote_code)
        tree = TreeConfig.for_device(base.device, base.dtype).override(
            total_token=total_token, depth=depth, top_k=top_k, lookup=lookup,
            expand_threshold=expand_threshold, min_prob=min_prob)
        return cls(base, draft, tok, tree)

    def get_tokenizer(self):
        return self.tokenizer

    # ---- generation ----------------------------------------------------------------------
    def context_limit(self, max_length: int, prompt_tokens: int = 0) -> int:
        """The most prompt + new tokens a generation may hold: max_length, within the model's
        context less room for one draft tree past the last token. ValueError when a prompt of
        `prompt_tokens` already fills it."""
        cfg = getattr(self.base_model.config, "text_config", None) or self.base_model.config
        max_pos = getattr(cfg, "max_position_embeddings", None)
        limit = min(max_length, max_pos - self.tree.depth - 1) if max_pos else max_length
        if prompt_tokens and prompt_tokens >= limit:
            raise ValueError(f"prompt has {prompt_tokens} tokens, at or past max_length={limit} "
                             "(the model's context, less room for the draft tree); shorten it or raise max_length")
        return limit

    def _prepare(self, input_ids, temperature, top_p, top_k, max_new_tokens, max_length, generator=None):
        sp = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {self.device}: "
                             f"use torch.Generator({str(self.device)!r})")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be [1, seq_len] (batch size 1), got shape {tuple(input_ids.shape)}")
        n = input_ids.shape[1]
        if n == 0:
            raise ValueError("empty prompt: input_ids has no tokens")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        max_length = self.context_limit(max_length, n)
        limits = Limits(max_new_tokens=min(max_new_tokens, max_length - n),
                        eos_ids=eos_token_ids(self.base_model, self.tokenizer))
        return input_ids.to(self.device), sp, limits

    @staticmethod
    def _stream(decode, input_ids):
        out = input_ids
        for step in decode:
            out = torch.cat([out, torch.tensor([step], dtype=out.dtype, device=out.device)], 1)
            yield out

    def ea_generate(self, input_ids, temperature: float = 0.0, top_p: float = 0.0, top_k: int = 0,
                    max_new_tokens: int = 512, max_length: int = 2048, log: bool = False, *,
                    generator: torch.Generator | None = None, on_phase=None) -> Iterator[torch.Tensor]:
        """Yields prompt+output ids after every base forward (streaming). generator: the random
        draws of sampling (default torch's global one); on_phase: see `speculative_decode`."""
        input_ids, sp, limits = self._prepare(input_ids, temperature, top_p, top_k, max_new_tokens, max_length,
                                              generator)
        if limits.max_new_tokens == 0:
            yield input_ids
            return
        yield from self._stream(speculative_decode(self.base_model, self.ea_layer, input_ids, sp, self.tree, limits,
                                                   generator=generator, on_phase=on_phase), input_ids)

    def naive_generate(self, input_ids, temperature: float = 0.0, top_p: float = 0.0, top_k: int = 0,
                       max_new_tokens: int = 512, max_length: int = 2048, log: bool = False, *,
                       generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        input_ids, sp, limits = self._prepare(input_ids, temperature, top_p, top_k, max_new_tokens, max_length,
                                              generator)
        if limits.max_new_tokens == 0:
            yield input_ids
            return
        yield from self._stream(naive_decode(self.base_model, input_ids, sp, limits, generator), input_ids)

    def _run(self, stream, input_ids, log: bool):
        out, steps = None, 0
        for out in stream:
            steps += 1
        n_prompt = torch.as_tensor(input_ids).shape[-1]
        if not log:
            return out
        # steps counts base forwards: the prefill plus one per decoding step (verify or single token)
        return out, out.shape[1] - n_prompt, max(steps - 1, 0)

    def eagenerate(self, input_ids, temperature: float = 0.0, top_p: float = 0.0, top_k: int = 0,
                   max_new_tokens: int = 512, max_length: int = 2048, log: bool = False, *,
                   generator: torch.Generator | None = None, on_phase=None):
        """prompt+output ids [1, L]; with log=True, (ids, new_tokens, decoding_steps)."""
        return self._run(self.ea_generate(input_ids, temperature, top_p, top_k, max_new_tokens, max_length,
                                          generator=generator, on_phase=on_phase), input_ids, log)

    def naivegenerate(self, input_ids, temperature: float = 0.0, top_p: float = 0.0, top_k: int = 0,
                      max_new_tokens: int = 512, max_length: int = 2048, log: bool = False, *,
                      generator: torch.Generator | None = None):
        return self._run(self.naive_generate(input_ids, temperature, top_p, top_k, max_new_tokens, max_length,
                                             generator=generator), input_ids, log)

    def generate(self, input_ids=None, attention_mask=None, max_new_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 0.0, top_k: int = 0, max_length: int = 2048, **unused):
        """`model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=50)` as the tutorial
        calls it (5.3.3): speculative generation of one unpadded prompt."""
        if attention_mask is not None and not bool(torch.as_tensor(attention_mask).all()):
            raise ValueError("padded prompts are not supported: pass one unpadded prompt (batch size 1)")
        return self.eagenerate(input_ids, temperature, top_p, top_k, max_new_tokens, max_length)
