"""Regeneration with a tiny base model built in the test: continuously batched output equals
one-prompt-at-a-time greedy decoding, runs resume, FIM middles and chat turns are rewritten."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from test_data_helpers import fim_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from eagle.data import detect_fim_sentinels, fim_prompt_ids, load_jsonl
from eagle.data.chat_mask import chat_prompt_ids
from eagle.data.regen import RegenConfig, regenerate
from eagle.model.batch_decode import ContinuousBatch, decode_all

MAX_NEW = 8

FIM_RECORDS = [
    {"prefix": "def add(a, b):\n", "middle": "    return a + b\n", "suffix": "\nprint(add(1, 2))\n", "file": "a.py"},
    {"prefix": "x = 1\n", "middle": "y = 2\n", "suffix": "", "file": "b.py"},
    {"prefix": "class Point:\n    def __init__(self, x, y):\n", "middle": "        self.x = x\n", "suffix": "", "file": "c.py"},
    {"prefix": "", "middle": "import os\n", "suffix": "print(os.sep)\n", "file": "d.py"},
    {"prefix": "for i in range(10):\n", "middle": "    print(i)\n", "suffix": "# done\n", "file": "e.py"},
]
CHAT_RECORDS = [
    {"id": "a", "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"},
                                  {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a joke"},
                  {"role": "assistant", "content": "No."}]},
    {"conversations": [{"from": "human", "value": "def add(a, b):"}, {"from": "gpt", "value": "return a + b"},
                       {"from": "human", "value": "Thanks"}, {"from": "gpt", "value": "You are welcome"},
                       {"from": "human", "value": "Bye"}]},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random Llama with a Qwen-style tokenizer (chat template + FIM sentinels), saved as a
    model folder. Its generation config lists a second EOS id, one the model emits often, so some
    generations finish and some hit max_new_tokens."""
    tok = fim_tokenizer("qwen2.5-coder")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    stops = [tok.eos_token_id]
    for prompts in ([fim_prompt_ids(tok, r["prefix"], r["suffix"]) for r in FIM_RECORDS],
                    [chat_prompt_ids(tok, [{"role": "user", "content": c}]) for c in ("Hello", "Tell me a joke")]):
        counts = Counter()
        for p in prompts:
            out = model.generate(torch.tensor([p]), max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
            counts.update(out[0, len(p):].tolist()[1:4])  # not the first token: answers must not be empty
        stops.append(counts.most_common(1)[0][0])
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tok.eos_token_id
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load(path):
    from transformers import AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def greedy_one(model, prompt, stops):
    """Reference: one prompt, no padding."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_NEW, do_sample=False,
                         eos_token_id=stops, pad_token_id=stops[0])[0, len(prompt):].tolist()
    cut = next((i for i, t in enumerate(out) if t in stops), None)
    return (out, False) if cut is None else (out[:cut], True)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_batched_left_padding_equals_one_at_a_time(base):
    model, tok = load(base)
    stops = list(model.generation_config.eos_token_id)
    prompts = [fim_prompt_ids(tok, r["prefix"], r["suffix"]) for r in FIM_RECORDS]
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    cfg = RegenConfig(basepath=str(base), input="", output="", max_new_tokens=MAX_NEW)
    batched = decode_all(model, prompts, cfg.batch_size, cfg.max_new_tokens, stops)  # regen's default batch
    assert batched == [greedy_one(model, p, stops) for p in prompts]
    assert {finished for _, finished in batched} == {True, False}


@pytest.mark.parametrize("batch_size,prefill_tokens", [(1, 8192), (2, 8192), (3, 8192), (4, 60)])
def test_continuous_batch_equals_one_at_a_time(base, batch_size, prefill_tokens):
    """More prompts than rows: rows end at a stop token or the budget and leave, waiting prompts
    take their places (prefilled in groups of similar length), and columns no running row uses
    are dropped; every prompt's output is still its own one-at-a-time greedy decoding. A small
    prefill budget splits the groups further."""
    model, tok = load(base)
    stops = list(model.generation_config.eos_token_id)
    g = torch.Generator().manual_seed(0)
    lengths = [3, 40, 9, 25, 1, 17, 33, 6]  # groups split where a prompt is under 3/4 of the longest
    prompts = [torch.randint(10, len(tok), (n,), generator=g).tolist() for n in lengths]
    prompts += [fim_prompt_ids(tok, r["prefix"], r["suffix"]) for r in FIM_RECORDS]
    batch = ContinuousBatch(model, batch_size, MAX_NEW, stops, prefill_tokens=prefill_tokens)
    admitted = []
    batch._admit = lambda group, admit=batch._admit: (admitted.append([len(item[3]) for item in group]),
                                                      admit(group))
    for i, p in enumerate(prompts):
        batch.submit(i, p)
    got, widths = {}, []
    while batch.busy:
        for i, ids, ended in batch.step():
            assert i not in got
            got[i] = (ids, ended)
        if batch._cache is not None:
            widths.append((batch._cache.get_seq_length(), max(len(prompts[k]) + len(batch._out[j])
                                                              for j, k in enumerate(batch._keys))))
    assert [got[i] for i in range(len(prompts))] == [greedy_one(model, p, stops) for p in prompts]
    assert {ended for _, ended in got.values()} == {True, False}
    assert all(w == need - 1 for w, need in widths)  # no column is kept that no running row needs
    assert all(len(g) == 1 or len(g) * g[0] <= prefill_tokens for g in admitted)
    assert any(len(g) > 1 for g in admitted) == (batch_size > 1)


def test_fim_regen_rewrites_middles_and_resumes(base, tmp_path):
    model, tok = load(base)
    stops = sorted(set(model.generation_config.eos_token_id) | {detect_fim_sentinels(tok).end_id})
    src = write_jsonl(tmp_path / "in.jsonl", FIM_RECORDS)
    out = tmp_path / "out.jsonl"
    # float32 as the reference: unset, the dtype follows the CPU (bf16 on AMX and AVX512-BF16)
    cfg = RegenConfig(basepath=str(base), input=str(src), output=str(out), max_new_tokens=MAX_NEW, batch_size=2,
                      dtype="float32")
    first = regenerate(RegenConfig(**{**cfg.__dict__, "limit": 2}), progress=False)
    assert (first.regenerated, first.done_before) == (2, 0)
    with open(out, "a") as f:
        f.write('{"prefix": "half a li')  # a run killed mid-write
    second = regenerate(cfg, progress=False)
    assert (second.regenerated, second.done_before) == (3, 2)
    again = regenerate(cfg, progress=False)
    assert again.regenerated == 0  # nothing left to do

    got = list(load_jsonl(out, "fim"))
    assert [r["source_line"] for r in got] == [1, 2, 3, 4, 5]
    for rec, new in zip(FIM_RECORDS, got):
        ids, finished = greedy_one(model, fim_prompt_ids(tok, rec["prefix"], rec["suffix"]), stops)
        assert new["middle"] == tok.decode(ids)
        assert new.get("truncated", False) == (not finished)
        assert (new["prefix"], new["suffix"], new["file"]) == (rec["prefix"], rec["suffix"], rec["file"])
    assert any(r.get("truncated") for r in got) and not all(r.get("truncated") for r in got)
    # an uninterrupted run writes the same file
    fresh = tmp_path / "fresh.jsonl"
    regenerate(RegenConfig(**{**cfg.__dict__, "output": str(fresh), "batch_size": 3}), progress=False)
    assert fresh.read_text() == out.read_text()


def test_chat_regen_rewrites_every_answer_in_turn(base, tmp_path):
    model, tok = load(base)
    stops = sorted(set(model.generation_config.eos_token_id))
    src = write_jsonl(tmp_path / "chat.jsonl", CHAT_RECORDS)
    out = tmp_path / "out.jsonl"
    report = regenerate(RegenConfig(basepath=str(base), input=str(src), output=str(out),
                                    max_new_tokens=MAX_NEW, batch_size=3, dtype="float32"), progress=False)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 3 and report.turns > 3  # a second answer was generated after a first one

    for rec, new in zip(CHAT_RECORDS, got):
        # reference: answer by answer, each prompt holding the earlier *regenerated* answers
        key, role_key, text_key = ("conversations", "from", "value") if "conversations" in rec else ("messages", "role", "content")
        msgs = [{"role": {"human": "user", "gpt": "assistant"}.get(t[role_key], t[role_key]), "content": t[text_key]}
                for t in rec[key]]
        cut = False
        for k, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            ids, finished = greedy_one(model, chat_prompt_ids(tok, msgs[:k]), stops)
            m["content"] = tok.decode(ids, skip_special_tokens=True)
            if not finished:
                msgs, cut = msgs[:k + 1], True
                break
        assert [t[text_key] for t in new[key]] == [m["content"] for m in msgs]
        assert [t[role_key] for t in new[key]] == [t[role_key] for t in rec[key][:len(msgs)]]  # format kept
        assert new.get("truncated", False) == cut
    assert got[0]["id"] == "a"
    assert {bool(r.get("truncated")) for r in got} == {True, False}  # both endings are covered
    assert list(load_jsonl(out, "chat"))  # still valid chat data


def test_chat_regen_max_turns_keeps_first_answers_only(base, tmp_path):
    src = write_jsonl(tmp_path / "chat.jsonl", CHAT_RECORDS)
    out = tmp_path / "out.jsonl"
    report = regenerate(RegenConfig(basepath=str(base), input=str(src), output=str(out), max_new_tokens=MAX_NEW,
                                    batch_size=3, max_turns=1), progress=False)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.turns == 3  # one answer per conversation, no second round
    for rec, new in zip(CHAT_RECORDS, got):
        key, role_key = ("conversations", "from") if "conversations" in rec else ("messages", "role")
        roles = [t[role_key] for t in new[key]]
        assert roles[-1] in ("gpt", "assistant") and sum(r in ("gpt", "assistant") for r in roles) == 1


def test_sampling_is_repeatable_with_a_seed(base, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", FIM_RECORDS[:3])
    texts = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / f"{name}.jsonl"
        regenerate(RegenConfig(basepath=str(base), input=str(src), output=str(out), max_new_tokens=MAX_NEW,
                               temperature=1.0, seed=seed), progress=False)
        texts.append(out.read_text())
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_fim_regen_refuses_a_model_without_sentinels(base, tmp_path):
    from test_data_helpers import chat_tokenizer
    model, _ = load(base)
    src = write_jsonl(tmp_path / "in.jsonl", FIM_RECORDS[:1])
    with pytest.raises(ValueError, match="no FIM sentinel tokens"):
        regenerate(RegenConfig(basepath=str(base), input=str(src), output=str(tmp_path / "o.jsonl")),
                   model=model, tokenizer=chat_tokenizer("llama3"), progress=False)
