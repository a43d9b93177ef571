"""Tiny randomly initialised models of several architectures transformers ships, built in-process.

Weights are drawn with a large std so the logits are peaked: greedy decoding then has no near
ties, and token-for-token comparisons test the algorithm rather than float rounding.
"""

from __future__ import annotations

import re

import torch
import transformers as tf

VOCAB = 256
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
              num_attention_heads=4, max_position_embeddings=512, initializer_range=0.1,
              bos_token_id=1, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)

ARCHS = {
    "llama": lambda: tf.LlamaConfig(**COMMON, num_key_value_heads=2),
    "mistral": lambda: tf.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=24),
    "qwen2": lambda: tf.Qwen2Config(**COMMON, num_key_value_heads=2),
    "qwen3": lambda: tf.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=16),
    "gemma2": lambda: tf.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=16, sliding_window=24,
                                      attn_implementation="eager"),
    "gemma3": lambda: tf.Gemma3TextConfig(**COMMON, num_key_value_heads=2, head_dim=16, sliding_window=24),
    "phi3": lambda: tf.Phi3Config(**COMMON, num_key_value_heads=2),
    "gpt_neox": lambda: tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=6, num_attention_heads=4, max_position_embeddings=512,
                                         initializer_range=0.1, bos_token_id=1, eos_token_id=None,
                                         tie_word_embeddings=False),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=6, n_head=4, n_positions=512,
                                  initializer_range=0.1, bos_token_id=1, eos_token_id=None),
}


def tiny_base(arch: str = "llama", seed: int = 0, dtype=torch.float32, predictable: bool = False):
    """predictable=True shrinks the decoder layers' matrices, so the next token depends mostly on
    the current one (a near-bigram model): a draft head learns it in seconds and long tree paths
    get accepted, while context still matters enough for wrong caches or masks to show."""
    torch.manual_seed(seed)
    cfg = ARCHS[arch]()
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval().requires_grad_(False)
    if predictable:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if re.search(r"\.(layers|h)\.\d+\.", name) and p.dim() == 2:
                    p.mul_(0.1)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def base_sequences(base, n: int = 16, prompt_len: int = 8, new: int = 56, seed: int = 0) -> torch.Tensor:
    """The base's own greedy continuations of random prompts: what a draft must learn to predict."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, VOCAB, (n, prompt_len), generator=g)
    return base.generate(prompts, do_sample=False, max_new_tokens=new, min_new_tokens=new)


def fit_draft(base, steps: int = 60, seed: int = 0, draft_vocab_size: int | None = None):
    """Fit a draft head to a tiny base in seconds (step-0 EAGLE-3 objective with hard targets),
    enough for the tree to accept multi-token paths. The full TTT trainer lives in eagle.train."""
    from eagle.model.config import DraftConfig
    from eagle.model.draft import Eagle3Draft
    from eagle.model.generate import fused_features

    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(2, VOCAB, (64, 64), generator=g)  # random text covers every transition
    with torch.no_grad():
        out = base(seqs, output_hidden_states=True)
    torch.manual_seed(seed)
    draft = Eagle3Draft(DraftConfig.from_base(base.config, draft_vocab_size=draft_vocab_size))
    if draft_vocab_size:
        counts = torch.bincount(seqs.flatten(), minlength=base.config.vocab_size)
        draft.set_vocab_mapping(counts.topk(draft_vocab_size).indices)
    feats = fused_features(out.hidden_states, draft.config.aux_layer_ids)[:, :-1]  # f_t
    embeds = base.get_input_embeddings()(seqs[:, 1:])  # x_{t+1}
    target = out.logits[:, 1:].argmax(-1)  # base's choice for x_{t+2}
    t2d = torch.full((base.config.vocab_size,), -100, dtype=torch.long)
    t2d[draft.to_target(torch.arange(draft.config.draft_vocab_size))] = torch.arange(draft.config.draft_vocab_size)
    labels = t2d[target]
    pos = torch.arange(feats.shape[1])[None].expand(feats.shape[0], -1)
    opt = torch.optim.AdamW(draft.parameters(), lr=1e-2)
    for _ in range(steps):
        h = draft(feats, embeds, pos).hidden
        loss = torch.nn.functional.cross_entropy(draft.logits(h).flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return draft.eval().requires_grad_(False)
