"""The dtype a command runs in when none is given: bf16 only where the hardware computes it."""

import warnings

import pytest
import torch

import eagle.model.base as base_mod
from eagle.model.base import cpu_has_native_bf16, cpu_info, fast_dtype, load_base, resolve_dtype
from tiny import tiny_base

FLAGS = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni {extra}\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the flag reader at a file of ours; the answer is cached, so clear it around each case."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(base_mod, "CPUINFO", path)
    cpu_info.cache_clear()
    yield path
    cpu_info.cache_clear()


@pytest.mark.parametrize("extra,kind", [
    ("avx512_bf16 amx_bf16 amx_tile", "amx_bf16"),  # Sapphire Rapids (DESIGN.md §5's machine)
    ("avx512_bf16", "avx512_bf16"),  # Cooper Lake, Zen 4
    ("avx512_vp2intersect avx512_fp16", None),  # AVX-512 without bf16 arithmetic: emulated
    ("", None),
])
def test_native_bf16_read_from_the_cpu_flags(cpuinfo, extra, kind):
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert cpu_info() == {"model": "AMD EPYC 9B14", "bf16": kind}  # what benchmarks record
    native = kind is not None
    assert cpu_has_native_bf16() is native
    assert fast_dtype("cpu") == (torch.bfloat16 if native else torch.float32)


def test_no_cpuinfo_means_float32(cpuinfo):
    assert not cpuinfo.exists()  # macOS, Windows: nothing to read, so bf16 is not counted on
    assert cpu_info() == {"model": None, "bf16": None}
    assert fast_dtype("cpu") == torch.float32


def test_dtype_flags(monkeypatch):
    monkeypatch.setattr(base_mod, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype(None, "cpu") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == "auto"  # as stored
    assert resolve_dtype("float16") == torch.float16
    monkeypatch.setattr(base_mod, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype(None, "cpu") == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_loading_in_emulated_bf16_warns(tmp_path, monkeypatch, native):
    tiny_base("llama").save_pretrained(tmp_path / "b")
    monkeypatch.setattr(base_mod, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = load_base(str(tmp_path / "b"), dtype=torch.bfloat16)
        load_base(str(tmp_path / "b"), dtype=torch.float32)
    assert model.dtype == torch.bfloat16  # asked for: a warning, not a refusal
    ours = [w for w in seen if "AVX512-BF16" in str(w.message)]
    assert len(ours) == (0 if native else 1)
    assert native or "--dtype float32" in str(ours[0].message)
