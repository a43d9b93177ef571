"""Float32 CPU linears through oneDNN (eagle.model.cpu_linear): same numbers as F.linear, never a
stale weight, autograd untouched, and a base loaded in float32 uses them end to end."""

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from eagle.model.base import load_base
from eagle.model.cpu_linear import PackedLinear, onednn_fp32_available, pack_linears
from eagle.model.ea_model import EaModel
from tiny import fit_draft, tiny_base

pytestmark = pytest.mark.skipif(not onednn_fp32_available(), reason="this PyTorch build lacks the oneDNN ops")


def _pair(bias=True):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(48, 96, bias=bias), nn.GELU(), nn.Linear(96, 32, bias=bias))
    packed = copy.deepcopy(plain)
    assert pack_linears(packed) == 2
    return plain, packed


@pytest.mark.parametrize("shape", [(1, 48), (2, 48), (17, 48), (1, 5, 48), (3, 7, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_same_numbers_as_f_linear(shape, bias):
    plain, packed = _pair(bias)
    assert all(type(m) is PackedLinear for m in packed if isinstance(m, nn.Linear))
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(packed(x), plain(x), atol=1e-5, rtol=1e-5)


def test_weight_changes_are_followed():
    plain, packed = _pair()
    x = torch.randn(4, 48)
    with torch.no_grad():
        packed(x)  # the first call makes the oneDNN copy
        for p, q in zip(plain.parameters(), packed.parameters()):
            p.mul_(-0.5)
            q.mul_(-0.5)  # in place: same storage, new version
        assert torch.allclose(packed(x), plain(x), atol=1e-5)
        new = {k: torch.randn_like(v) for k, v in plain.state_dict().items()}
        plain.load_state_dict(new)
        packed.load_state_dict(new)
        assert torch.allclose(packed(x), plain(x), atol=1e-5)
    packed.to(torch.float64)  # another dtype: plain F.linear
    assert torch.allclose(packed(x.double()), plain.double()(x.double()))


def test_autograd_and_copies_unchanged():
    plain, packed = _pair()
    x = torch.randn(6, 48)
    plain(x).square().sum().backward()
    packed(x).square().sum().backward()  # trainable weights: F.linear, so gradients are exact
    for p, q in zip(plain.parameters(), packed.parameters()):
        assert torch.equal(p.grad, q.grad)
    with torch.no_grad():
        y = packed(x)
        for clone in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
            assert torch.equal(clone(x), y)


def test_float32_base_and_draft_run_packed(tmp_path, monkeypatch):
    tiny_base("llama", predictable=True).save_pretrained(tmp_path / "b")
    base = load_base(str(tmp_path / "b"), dtype=torch.float32)
    assert all(type(m) is PackedLinear for m in base.modules() if isinstance(m, nn.Linear))
    plain = tiny_base("llama", predictable=True)
    ids = torch.randint(2, 200, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(base(ids).logits, plain(ids).logits, atol=1e-4)
    model = EaModel(base, fit_draft(plain))
    assert all(type(m) is PackedLinear for m in model.ea_layer.modules() if isinstance(m, nn.Linear))
    for prompt in (ids[:, :8], ids[:, 20:32]):
        spec, new, steps = model.eagenerate(prompt, max_new_tokens=48, log=True)
        assert torch.equal(spec, model.naivegenerate(prompt, max_new_tokens=48))
        assert new / steps > 1.5  # the packed draft still drafts what the base accepts
    monkeypatch.setenv("EAGLE_PACK_LINEARS", "0")  # the opt-out
    assert not any(type(m) is PackedLinear for m in load_base(str(tmp_path / "b"), dtype=torch.float32).modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without bf16 arithmetic warns: not the point here
        bf16 = load_base(str(tmp_path / "b"), dtype=torch.bfloat16)
    assert not any(type(m) is PackedLinear for m in bf16.modules())
