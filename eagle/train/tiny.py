"""A tiny base model, tokenizer and FIM/chat data built locally in seconds, with no download.

For tests and for trying the training pipeline on any machine:

    python -m eagle.train.tiny /tmp/tiny        # writes /tmp/tiny/{base,train.jsonl,test.jsonl,chat_*.jsonl}

The tokenizer is byte-level (256 bytes) plus Qwen2.5-Coder's FIM sentinels and ChatML tokens, so
`eagle.data` renders FIM and chat records for it exactly as for the real model. The base is a
randomly initialised Llama whose head is scaled up so its next-token distribution is peaked:
there is then something definite for a draft to learn.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    t.chat_template = CHATML
    return t


def tiny_base(layers: int = 4, hidden: int = 64, vocab: int = 264, seed: int = 0, head_scale: float = 30.0,
              arch: str = "llama"):
    """A random base (Llama, or Mistral/Qwen2 with arch=...) with a peaked output distribution."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(arch, vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                               num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=512, tie_word_embeddings=False, eos_token_id=0,
                               bos_token_id=None, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(head_scale)
    return model.eval().requires_grad_(False)


def _python_text() -> str:
    import inspect
    import json as j
    import textwrap as t

    return inspect.getsource(t) + inspect.getsource(j.encoder)


def fim_records(n: int, seed: int = 0, width: tuple[int, int, int] = (24, 16, 12)) -> list[dict]:
    """FIM records cut from real Python text: prefix, a middle of ~`width[1]` characters, suffix."""
    text, rng = _python_text(), random.Random(seed)
    out = []
    for _ in range(n):
        p, m, s = (max(1, w + rng.randint(-w // 3, w // 3)) for w in width)
        a = rng.randrange(0, len(text) - p - m - s)
        out.append({"prefix": text[a:a + p], "middle": text[a + p:a + p + m], "suffix": text[a + p + m:a + p + m + s]})
    return out


def chat_records(n: int, seed: int = 0) -> list[dict]:
    text, rng = _python_text(), random.Random(seed)
    out = []
    for _ in range(n):
        a = rng.randrange(0, len(text) - 60)
        out.append({"messages": [{"role": "user", "content": text[a:a + 12]},
                                 {"role": "assistant", "content": text[a + 12:a + 36]}]})
    return out


def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_tiny(root: str | Path, n_train: int = 64, n_test: int = 16, layers: int = 4) -> dict[str, Path]:
    """Base folder (model + tokenizer) and FIM and chat train/test files under `root`."""
    root = Path(root)
    (root / "base").mkdir(parents=True, exist_ok=True)
    tiny_base(layers=layers).save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    return {
        "base": root / "base",
        "train": write_jsonl(root / "train.jsonl", fim_records(n_train, seed=1)),
        "test": write_jsonl(root / "test.jsonl", fim_records(n_test, seed=2)),
        "chat_train": write_jsonl(root / "chat_train.jsonl", chat_records(n_train, seed=3)),
        "chat_test": write_jsonl(root / "chat_test.jsonl", chat_records(n_test, seed=4)),
    }


if __name__ == "__main__":
    for k, v in write_tiny(sys.argv[1] if len(sys.argv) > 1 else "tiny").items():
        print(f"{k}: {v}")
