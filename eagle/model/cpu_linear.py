"""Float32 linear layers on the CPU through oneDNN, with each weight reordered once.

PyTorch sends a float32 `F.linear` on the CPU to MKL's sgemm. On the 2-vCPU AVX2 AMD EPYC measured
(docs/benchmark.md, "oneDNN weight prepacking") that made a forward over 2 tokens cost twice
one token and a 16-token tree verify 2.9 times, a cost that erased most of what a draft tree
earns. oneDNN, the library PyTorch already uses for bf16, with the weight reordered once into its
blocked layout (what inductor's freezing pass does for CPU linears), ran Qwen2.5-Coder-0.5B's
one-token forward 1.33x faster and its 8-token forward 1.9x faster there.

`pack_linears(model)` turns the model's `nn.Linear` layers into `PackedLinear`, which computes with
the reordered copy when it can and with `F.linear` otherwise: other dtypes or devices, and
anything autograd must see, so training through the module is unchanged. The copy is made on the
first call and again whenever the weight changes (moved, reloaded, modified in place), so a stale
copy can never be used. It costs a second copy of every weight.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's blocking depends on the expected row count; 16 suits tree verifies (2-60 tokens)
# and ran one-token forwards as fast as MKL's own kernel on the EPYC measured.
_ROWS_HINT = 16


@functools.cache
def onednn_fp32_available() -> bool:
    """Whether this PyTorch build has the oneDNN ops and they agree with F.linear."""
    try:
        w, b, x = torch.randn(24, 16), torch.randn(24), torch.randn(3, 16)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, _ROWS_HINT)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return torch.allclose(y, F.linear(x, w, b), atol=1e-4, rtol=1e-4)


_PACKABLE = (torch.float32, torch.bfloat16)


class PackedLinear(nn.Linear):
    """An nn.Linear that computes CPU forwards with a oneDNN-reordered weight (float32, or bf16 where
    oneDNN has it: `scripts/probe_prepack.py` compares; bf16 gained nothing there, so only float32
    bases are packed on load)."""

    _packed: torch.Tensor | None = None
    _packed_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (x.dtype != w.dtype or w.dtype not in _PACKABLE or w.device.type != "cpu"
                or x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
            return F.linear(x, w, self.bias)
        key = (w.data_ptr(), w._version, tuple(w.shape))
        if key != self._packed_key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), _ROWS_HINT)
            self._packed_key = key
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")

    def __getstate__(self):  # deepcopy and pickle: the opaque oneDNN copy cannot be, and is remade
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state


def pack_linears(model: nn.Module) -> int:
    """Make every plain nn.Linear of `model` a PackedLinear, in place; returns how many. A no-op
    (0) where the oneDNN ops are missing. Only worth it for float32 on the CPU; harmless elsewhere."""
    if not onednn_fp32_available():
        return 0
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PackedLinear
            n += 1
    return n


def wants_packing(model: nn.Module) -> bool:
    """float32 weights on the CPU, the case MKL's sgemm serves slowly, unless EAGLE_PACK_LINEARS=0
    (to save the second copy's memory, or to compare)."""
    if os.environ.get("EAGLE_PACK_LINEARS", "1") == "0":
        return False
    p = next(model.parameters(), None)
    return p is not None and p.device.type == "cpu" and p.dtype == torch.float32
