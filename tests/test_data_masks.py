"""Loss masks token by token: chat on five template families, FIM on four sentinel families,
built in the test and on the real SmolLM2 / Qwen2.5-Coder tokenizers when `eagle.zoo` has them."""

from __future__ import annotations

import pytest
from test_data_helpers import CHAT_FAMILIES, FIM_FAMILIES, chat_tokenizer, fim_tokenizer, real_tokenizer  # noqa: F401

from eagle.data import detect_fim_sentinels, encode_record, fim_prompt, fim_prompt_ids
from eagle.data.chat_mask import chat_prompt_ids, template_messages

# "Hello" is both a user message and an answer: a mask found by searching the text would be wrong.
CONVERSATION = [
    ("system", "Be brief."),
    ("user", "Hello"),
    ("assistant", "Hello! How can I help?"),
    ("user", "What is 2+2?"),
    ("assistant", "The answer is 4."),
]


def sharegpt(turns):
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return {"conversations": [{"from": names[r], "value": c} for r, c in turns]}


def openai(turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def masked_runs(tok, sample):
    """Text of each run of consecutive target tokens, cut from the rendered text by offsets."""
    text = tok.decode(sample.input_ids)
    runs, cur = [], []
    for t, m in zip(sample.input_ids, sample.loss_mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return text, [tok.decode(r) for r in runs]


def check_chat_mask(tok, end_token, record, answers, sentencepiece=False):
    s = encode_record(record, tok, "chat", max_length=4096)
    assert len(s.input_ids) == len(s.loss_mask)
    _, runs = masked_runs(tok, s)
    # one run per answer: exactly the answer's tokens and the end-of-turn token, nothing before
    # (no header, no newline) and nothing after (no newline, no next header)
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers):
        if sentencepiece:  # the decoder drops the word-boundary marker of the first token
            run, answer = run.replace(" ", ""), answer.replace(" ", "")
        assert run == answer + end_token
    # the tokens just outside each run are template tokens: first masked id follows a non-target
    first = s.loss_mask.index(1)
    assert s.loss_mask[first - 1] == 0
    return s


@pytest.mark.parametrize("family", sorted(CHAT_FAMILIES))
@pytest.mark.parametrize("style", ["sharegpt", "openai"])
def test_chat_mask_every_template(family, style):
    tok = chat_tokenizer(family)
    end = CHAT_FAMILIES[family][3]
    record = (sharegpt if style == "sharegpt" else openai)(CONVERSATION)
    check_chat_mask(tok, end, record, ["Hello! How can I help?", "The answer is 4."], CHAT_FAMILIES[family][4])


def test_chat_mask_follows_template_trim():
    # Llama-3 trims content: the target is what the template renders, not the raw string
    tok = chat_tokenizer("llama3")
    check_chat_mask(tok, "<|eot_id|>", openai([("user", "Hi"), ("assistant", "  spaced out \n")]), ["spaced out"])
    # ChatML keeps it verbatim
    tok = chat_tokenizer("qwen2.5")
    check_chat_mask(tok, "<|im_end|>", openai([("user", "Hi"), ("assistant", " 4 ")]), [" 4 "])


def test_gemma_system_prompt_folded_into_first_user_turn():
    tok = chat_tokenizer("gemma")  # its template raises on a system message
    msgs = template_messages(tok, openai(CONVERSATION)["messages"])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "Be brief.\n\nHello"
    # a template that refuses the conversation for another reason is reported, not folded away
    with pytest.raises(ValueError, match="rejects this conversation.*alternate"):
        template_messages(tok, [{"role": "assistant", "content": "Hi"}])


def test_truncated_answer_has_no_end_token():
    tok = chat_tokenizer("qwen2.5")
    record = {**openai(CONVERSATION), "truncated": True}
    _, runs = masked_runs(tok, encode_record(record, tok, "chat", 4096))
    assert runs == ["Hello! How can I help?<|im_end|>", "The answer is 4."]


def test_chat_max_length_cuts_ids_and_mask_together():
    tok = chat_tokenizer("qwen2.5")
    full = encode_record(openai(CONVERSATION), tok, "chat", 4096)
    cut = encode_record(openai(CONVERSATION), tok, "chat", 40)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:40] and cut.loss_mask == full.loss_mask[:40]


def test_chat_without_template_is_a_clear_error():
    tok = fim_tokenizer("starcoder")
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        encode_record(openai(CONVERSATION), tok, "chat", 100)


def test_chat_prompt_ends_with_assistant_header():
    tok = chat_tokenizer("qwen2.5")
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "Hello"}])
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


# ---------------------------------------------------------------------------- FIM

@pytest.mark.parametrize("family", sorted(FIM_FAMILIES))
def test_fim_sentinels_detected(family):
    tok = fim_tokenizer(family)
    sentinels, end, _, bos = FIM_FAMILIES[family]
    s = detect_fim_sentinels(tok)
    assert s.family == family
    assert (s.prefix, s.suffix, s.middle, s.end) == (*sentinels[:3], end)
    assert s.end_id == tok.convert_tokens_to_ids(end)
    assert (s.bos_id is not None) == (bos is not None)


@pytest.mark.parametrize("family", sorted(FIM_FAMILIES))
def test_fim_psm_order_and_mask(family):
    tok = fim_tokenizer(family)
    s = detect_fim_sentinels(tok)
    rec = {"prefix": "def add(a, b):\n", "middle": "    return a + b\n", "suffix": "\nprint(add(1, 2))\n"}
    sample = encode_record(rec, tok, "fim", 512)
    ids = sample.input_ids
    # the middle sentinel comes last in the prompt: <pre> prefix <suf> suffix <mid> | middle <end>
    i_pre, i_suf, i_mid = ids.index(s.prefix_id), ids.index(s.suffix_id), ids.index(s.middle_id)
    assert i_pre < i_suf < i_mid
    assert tok.decode(ids[i_pre + 1:i_suf]) == rec["prefix"]
    assert tok.decode(ids[i_suf + 1:i_mid]) == rec["suffix"]
    assert sample.loss_mask == [0] * (i_mid + 1) + [1] * (len(ids) - i_mid - 1)
    assert tok.decode(ids[i_mid + 1:-1]) == rec["middle"] and ids[-1] == s.end_id
    assert ids[:i_pre] == ([s.bos_id] if s.bos_id is not None else [])
    # the prompt string tokenizes to the prompt ids (add_special_tokens=False: BOS is in the string)
    prompt = fim_prompt(tok, rec["prefix"], rec["suffix"])
    assert tok(prompt, add_special_tokens=False).input_ids == ids[:i_mid + 1]
    assert fim_prompt_ids(tok, rec["prefix"], rec["suffix"]) == ids[:i_mid + 1]


def test_fim_spm_order():
    tok = fim_tokenizer("starcoder")
    s = detect_fim_sentinels(tok)
    sample = encode_record({"prefix": "a = 1\n", "middle": "b = 2\n", "suffix": "c = 3\n"}, tok, "fim", 512, fim_mode="spm")
    ids = sample.input_ids
    assert ids[:2] == [s.prefix_id, s.suffix_id]
    i_mid = ids.index(s.middle_id)
    assert tok.decode(ids[2:i_mid]) == "c = 3\n"
    assert tok.decode(ids[i_mid + 1:]) == "a = 1\nb = 2\n<|endoftext|>"
    assert tok.decode([t for t, m in zip(ids, sample.loss_mask) if m]) == "b = 2\n<|endoftext|>"
    assert fim_prompt(tok, "a", "c", mode="spm") == "<fim_prefix><fim_suffix>c<fim_middle>a"


def test_tutorial_prompt_order_is_not_ours():
    tok = fim_tokenizer("starcoder")
    prompt = fim_prompt(tok, "x = ", "\n")
    assert prompt.endswith("<fim_middle>")  # generation starts after the middle sentinel
    assert prompt.index("<fim_suffix>") < prompt.index("<fim_middle>")


def test_fim_code_cannot_inject_control_tokens():
    tok = fim_tokenizer("qwen2.5-coder")
    s = detect_fim_sentinels(tok)
    sample = encode_record({"prefix": "s = '<|endoftext|>'\n", "middle": "t = '<|fim_middle|>'\n", "suffix": ""},
                           tok, "fim", 512)
    assert sample.input_ids.count(s.end_id) == 1 and sample.input_ids[-1] == s.end_id
    assert sample.input_ids.count(s.middle_id) == 1


def test_fim_truncation_keeps_middle_and_context_near_it():
    tok = fim_tokenizer("starcoder")
    s = detect_fim_sentinels(tok)
    rec = {"prefix": "".join(f"x{i} = {i}\n" for i in range(200)), "middle": "y = 1\n",
           "suffix": "".join(f"z{i} = {i}\n" for i in range(200))}
    sample = encode_record(rec, tok, "fim", 64)
    ids = sample.input_ids
    assert sample.truncated and len(ids) == 64
    assert tok.decode([t for t, m in zip(ids, sample.loss_mask) if m]) == "y = 1\n<|endoftext|>"
    i_suf, i_mid = ids.index(s.suffix_id), ids.index(s.middle_id)
    assert tok.decode(ids[1:i_suf]).endswith("x199 = 199\n")  # prefix kept next to the cursor
    assert tok.decode(ids[i_suf + 1:i_mid]).startswith("z0 = 0\n")
    # a middle longer than max_length keeps its start
    long = encode_record({**rec, "middle": "w = 2\n" * 100}, tok, "fim", 32)
    assert len(long.input_ids) == 32 and long.loss_mask[-1] == 1


def test_fim_truncated_middle_gets_no_end_token():
    tok = fim_tokenizer("qwen2.5-coder")
    s = detect_fim_sentinels(tok)
    sample = encode_record({"prefix": "a", "middle": "b", "suffix": "c", "truncated": True}, tok, "fim", 64)
    assert s.end_id not in sample.input_ids and sample.loss_mask[-1] == 1


def test_tokenizer_without_fim_sentinels_is_a_clear_error():
    tok = chat_tokenizer("llama3")
    with pytest.raises(ValueError, match="no FIM sentinel tokens"):
        encode_record({"prefix": "a", "middle": "b", "suffix": "c"}, tok, "fim", 64)
    with pytest.raises(ValueError, match="no FIM sentinel tokens"):
        fim_prompt(tok, "a", "c")


def test_wrong_format_for_record():
    tok = fim_tokenizer("qwen2.5-coder")
    with pytest.raises(ValueError, match="missing key 'prefix'.*chat record"):
        encode_record(openai(CONVERSATION), tok, "fim", 64)


# ---------------------------------------------------------------------------- real tokenizers

def test_real_smollm2_chat_mask(real_tokenizer):
    tok = real_tokenizer("smollm2-135m")
    check_chat_mask(tok, "<|im_end|>", sharegpt(CONVERSATION), ["Hello! How can I help?", "The answer is 4."])
    with pytest.raises(ValueError, match="no FIM sentinel tokens"):
        detect_fim_sentinels(tok)  # SmolLM2 is a chat model: FIM data must be refused


def test_real_qwen_chat_mask_and_default_system(real_tokenizer):
    tok = real_tokenizer("qwen2.5-coder-0.5b")
    s = check_chat_mask(tok, "<|im_end|>", openai(CONVERSATION[1:]), ["Hello! How can I help?", "The answer is 4."])
    assert "You are Qwen" in tok.decode(s.input_ids)  # the template's default system turn is context
    ids, mask = s.input_ids, s.loss_mask
    # token by token around the first answer: "assistant" "\n" | "Hello" ... "<|im_end|>" | "\n"
    first = mask.index(1)
    assert tok.decode(ids[first - 2:first]) == "assistant\n"
    end = first + mask[first:].index(0)
    assert tok.convert_ids_to_tokens(ids[end - 1]) == "<|im_end|>" and tok.decode(ids[end]) == "\n"


def test_real_qwen_fim(real_tokenizer):
    tok = real_tokenizer("qwen2.5-coder-0.5b")
    s = detect_fim_sentinels(tok)
    assert (s.family, s.end) == ("qwen2.5-coder", "<|endoftext|>")
    assert (s.prefix_id, s.suffix_id, s.middle_id, s.end_id) == (151659, 151661, 151660, 151643)
    rec = {"prefix": "def fib(n):\n", "middle": "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n", "suffix": "\nprint(fib(10))\n"}
    sample = encode_record(rec, tok, "fim", 256)
    assert tok.decode(sample.input_ids) == ("<|fim_prefix|>def fib(n):\n<|fim_suffix|>\nprint(fib(10))\n<|fim_middle|>"
                                            + rec["middle"] + "<|endoftext|>")
    targets = [t for t, m in zip(sample.input_ids, sample.loss_mask) if m]
    assert tok.decode(targets) == rec["middle"] + "<|endoftext|>"
    assert tok(fim_prompt(tok, rec["prefix"], rec["suffix"])).input_ids == sample.input_ids[:len(sample.input_ids) - len(targets)]
