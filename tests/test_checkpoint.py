"""Draft checkpoints: the engines' format, exact round trips, and refusal of wrong or foreign heads."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from eagle.model.checkpoint import check_compatible, load_draft
from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel
from tiny import tiny_base


def _draft(base, vocab=128, seed=0):
    torch.manual_seed(seed)
    d = Eagle3Draft(DraftConfig.from_base(base.config, draft_vocab_size=vocab))
    for p in d.parameters():
        torch.nn.init.normal_(p, std=0.05)
    d.set_vocab_mapping(torch.randperm(base.config.vocab_size)[:vocab])
    return d


def _draft_logits(draft, base):
    torch.manual_seed(1)
    feats = torch.randn(1, 9, 3 * base.config.hidden_size)
    embeds = base.get_input_embeddings()(torch.randint(0, 256, (1, 9)))
    out = draft(feats, embeds, torch.arange(9)[None])
    return draft.logits(out.hidden), draft.to_target(torch.arange(draft.config.draft_vocab_size))


def test_round_trip_exact_and_engine_format(tmp_path):
    base = tiny_base("llama")
    draft = _draft(base)
    draft.save_pretrained(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"] and cfg["num_hidden_layers"] == 1
    assert cfg["draft_vocab_size"] == 128 and cfg["vocab_size"] == 256 and cfg["hidden_size"] == 64
    # SGLang runs a draft whose config names no dtype in fp16; EAGLE's loader takes a
    # target_hidden_size to mean "no base embedding" and leaves the draft's random.
    assert cfg["torch_dtype"] == "float32" and "target_hidden_size" not in cfg
    aux = list(draft.config.aux_layer_ids)
    assert cfg["eagle_aux_hidden_state_layer_ids"] == aux
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [i - 1 for i in aux]
    weights = load_file(str(tmp_path / "d" / "model.safetensors"))
    assert weights["d2t"].dtype == torch.int64 and weights["t2d"].dtype == torch.bool
    assert {"fc.weight", "norm.weight", "lm_head.weight", "midlayer.hidden_norm.weight",
            "midlayer.self_attn.q_proj.weight", "midlayer.mlp.down_proj.weight"} <= weights.keys()
    assert weights["midlayer.self_attn.q_proj.weight"].shape[1] == 2 * 64

    loaded = load_draft(tmp_path / "d")
    a, ta = _draft_logits(draft, base)
    b, tb = _draft_logits(loaded, base)
    assert torch.equal(a, b) and torch.equal(ta, tb)


def test_loads_foreign_layouts(tmp_path):
    """SpecForge-style: `model.`-free keys plus a stored embedding; EAGLE-style: `layers.0.` naming and
    only the SGLang form of the aux ids; a legacy .bin read with weights_only."""
    base = tiny_base("llama")
    draft = _draft(base)
    ref, _ = _draft_logits(draft, base)
    state = {k: v for k, v in draft.state_dict().items() if "rotary" not in k}
    cfg = draft.config.to_dict()

    d1 = tmp_path / "specforge"
    d1.mkdir()
    (d1 / "config.json").write_text(json.dumps(cfg))
    save_file({**state, "embed_tokens.weight": torch.zeros(256, 64)}, str(d1 / "model.safetensors"))

    d2 = tmp_path / "eagle_bin"
    d2.mkdir()
    cfg2 = {k: v for k, v in cfg.items() if k != "eagle_aux_hidden_state_layer_ids"}
    (d2 / "config.json").write_text(json.dumps(cfg2))
    torch.save({k.replace("midlayer.", "layers.0."): v for k, v in state.items()}, d2 / "pytorch_model.bin")

    for d in (d1, d2):
        loaded = load_draft(d)
        assert loaded.config.aux_layer_ids == draft.config.aux_layer_ids
        assert torch.equal(_draft_logits(loaded, base)[0], ref)


def test_refuses_missing_or_bad_d2t(tmp_path):
    base = tiny_base("llama")
    draft = _draft(base)
    draft.save_pretrained(tmp_path / "d")
    w = load_file(str(tmp_path / "d" / "model.safetensors"))
    save_file({k: v for k, v in w.items() if k != "d2t"}, str(tmp_path / "d" / "model.safetensors"))
    with pytest.raises(ValueError, match="no `d2t`"):
        load_draft(tmp_path / "d")
    save_file({**w, "d2t": torch.full_like(w["d2t"], 10_000)}, str(tmp_path / "d" / "model.safetensors"))
    with pytest.raises(ValueError, match="d2t"):
        load_draft(tmp_path / "d")


def test_damaged_weights_are_named_and_files_are_readable_by_all(tmp_path):
    import os
    import stat

    draft = _draft(tiny_base("llama"))
    old = os.umask(0o022)
    try:
        draft.save_pretrained(tmp_path / "d")
    finally:
        os.umask(old)
    # safetensors writes 0600 and mkdtemp 0700: a server run as another user could not read them
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "model.safetensors").stat().st_mode) == 0o644
    weights = tmp_path / "d" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights}: the weights cannot be read"):
        load_draft(tmp_path / "d")


def test_full_vocab_head_needs_no_d2t(tmp_path):
    base = tiny_base("llama")
    draft = _draft(base, vocab=256)
    draft.save_pretrained(tmp_path / "d")
    w = load_file(str(tmp_path / "d" / "model.safetensors"))
    save_file({k: v for k, v in w.items() if k not in ("d2t", "t2d")}, str(tmp_path / "d" / "model.safetensors"))
    assert torch.equal(load_draft(tmp_path / "d").d2t, torch.zeros(256, dtype=torch.long))


@pytest.mark.parametrize("change, message", [
    (dict(hidden_size=32, intermediate_size=64), "hidden size"),
    (dict(vocab_size=300), "vocabulary"),
    (dict(num_hidden_layers=4), "layers"),
])
def test_refuses_head_for_another_base(tmp_path, change, message):
    import transformers as tf

    draft = _draft(tiny_base("llama"))
    draft.save_pretrained(tmp_path / "d")
    cfg = tiny_base("llama").config.to_dict()
    cfg.update(change)
    other = tf.LlamaForCausalLM(tf.LlamaConfig(**cfg))
    with pytest.raises(ValueError, match=f"another base model.*{message}"):
        check_compatible(load_draft(tmp_path / "d").config, other.config)
    with pytest.raises(ValueError, match="another base model"):
        EaModel(other, load_draft(tmp_path / "d"))


def test_refuses_what_no_engine_can_run():
    """Layer 0's input is the bare embedding, which vLLM cannot capture; a draft narrower than the
    base cannot share its embedding."""
    base = tiny_base("llama")
    with pytest.raises(ValueError, match=r"--aux_layers: aux layers \[0, 3, 5\] must lie in 1..5, the inputs"):
        check_compatible(DraftConfig.from_base(base.config, aux_layer_ids=(0, 3, 5)), base.config, "--aux_layers")
    d = DraftConfig.from_base(base.config).to_dict()
    with pytest.raises(ValueError, match="x/config.json: draft hidden_size=64 differs from target_hidden_size=128"):
        DraftConfig.from_dict({**d, "target_hidden_size": 128}, source="x/config.json")


def test_from_pretrained_folder_round_trip(tmp_path):
    """EaModel.from_pretrained as the tutorial calls it, on saved folders; kwargs reach the base loader."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    base = tiny_base("qwen2")
    base.save_pretrained(tmp_path / "base")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(256)}, unk_token="t0")))
    tok.save_pretrained(tmp_path / "base")
    _draft(base).save_pretrained(tmp_path / "draft")
    model = EaModel.from_pretrained(base_model_path=str(tmp_path / "base"), ea_model_path=str(tmp_path / "draft"),
                                    use_eagle3=True, total_token=12, depth=3, top_k=3, dtype=torch.float32)
    model.eval()
    assert model.ea_model is model.ea_layer and model.tokenizer is not None
    assert model.device.type == "cpu" and (model.tree.total_token, model.tree.depth, model.tree.top_k) == (12, 3, 3)
    ids = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(model.eagenerate(ids, max_new_tokens=12), model.naivegenerate(ids, max_new_tokens=12))
    # exporting as the tutorial does (5.4.3) writes loadable folders
    model.ea_model.save_pretrained(tmp_path / "export" / "eagle_model")
    assert torch.equal(load_draft(tmp_path / "export" / "eagle_model").lm_head.weight, model.ea_layer.lm_head.weight)


def test_rope_frequencies_stay_float32_in_a_bf16_draft(tmp_path):
    """Training keeps float32 master weights, so its RoPE angles are float32's; a draft cast to bf16
    for inference (EaModel, load_draft(dtype=), DeepSpeed) must turn positions by the same angles."""
    base = tiny_base("qwen2")
    draft = _draft(base)
    exact = draft.rotary_emb.inv_freq.clone()
    draft.save_pretrained(tmp_path / "d")
    for d in (draft.to(torch.bfloat16), load_draft(tmp_path / "d", dtype=torch.bfloat16),
              EaModel(base.to(torch.bfloat16), _draft(base)).ea_layer):
        assert d.lm_head.weight.dtype == torch.bfloat16
        assert d.rotary_emb.inv_freq.dtype == torch.float32 and torch.equal(d.rotary_emb.inv_freq, exact)
        x = torch.zeros(1, 1, base.config.hidden_size, dtype=torch.bfloat16)
        cos, _ = d.rotary_emb(x, torch.tensor([[3000]]))
        want = torch.cat([3000 * exact] * 2).cos()
        assert (cos[0, 0].float() - want).abs().max() < 0.01  # bf16 output rounding only


def test_a_base_split_over_devices_is_refused():
    base = tiny_base("qwen2")
    base.hf_device_map = {"model.embed_tokens": 0, "model.layers": 0, "lm_head": 1}  # as device_map="auto" sets it
    with pytest.raises(ValueError, match="split over devices 0, 1"):
        EaModel(base, _draft(base))
    base.hf_device_map = {"": 0}
    EaModel(base, _draft(base))
