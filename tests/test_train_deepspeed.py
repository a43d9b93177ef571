"""DeepSpeed on CPU (bf16 ZeRO-1 config): trains, writes its own checkpoint into resume/, and resumes
bit-exactly; the tutorial's fp16 config falls back to plain PyTorch with one line saying why.
Skipped when DeepSpeed is not installed (it is optional: `pip install deepspeed==0.19.8`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eagle.model.base import cpu_has_native_bf16
from eagle.train.config import TrainConfig
from eagle.train.runtime import setup
from eagle.train.tiny import write_tiny

MAIN_DIR = Path(__file__).resolve().parents[1] / "eagle" / "traineagle3"


@pytest.mark.parametrize("asked,ds_prec,cuda,bf16_native,want,notice", [
    ("auto", "fp16", True, True, torch.bfloat16, "the draft trains in fp16"),  # the tutorial's config on an A100
    ("auto", "fp16", True, False, torch.float16, None),  # V100 / T4: emulated bf16 is no use
    ("auto", None, True, False, torch.float16, None),
    ("auto", "bf16", True, True, torch.bfloat16, None),
    ("auto", None, False, True, torch.bfloat16, None),  # a CPU with AMX or AVX512-BF16
    ("auto", None, False, False, torch.float32, None),  # an AVX2 CPU: emulated bf16 is several times slower
    ("fp16", None, False, True, torch.bfloat16, "fp16 is not supported for training on CPU: using bfloat16"),
    ("fp16", None, False, False, torch.float32, "fp16 is not supported for training on CPU: using float32"),
    ("fp32", "bf16", True, True, torch.float32, "(--dtype fp32)"),
])
def test_the_base_dtype_for_the_hardware(asked, ds_prec, cuda, bf16_native, want, notice):
    from eagle.train.runtime import base_dtype

    notices = []
    assert base_dtype(asked, ds_prec, cuda, bf16_native, notices) == want
    assert (notice is None and not notices) or (notice is not None and any(notice in n for n in notices))


def test_tutorial_config_without_gpu_reads_batch_from_it(monkeypatch):
    cfg = TrainConfig(basepath="b", trainpath="t", testpath="v", deepspeed_config=str(MAIN_DIR / "ds_config.json"))
    if torch.cuda.is_available():
        pytest.skip("on a GPU the tutorial's config runs DeepSpeed itself")
    rt = setup(cfg)
    assert (rt.batch_size, rt.grad_accum, rt.max_grad_norm, rt.use_deepspeed) == (2, 4, 0.5, False)
    # fp16 on a CPU falls back to the CPU's own: bf16 where it computes it, else fp32
    assert rt.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert any("plain PyTorch" in n for n in rt.notices)
    assert any("train_batch_size 16" in n for n in rt.notices)  # 2 x 4 x 1 process = 8


_RUNS = """
import sys, torch
from eagle.train.config import TrainConfig
from eagle.train.trainer import train
torch.set_num_threads(1)
cfg = TrainConfig.load(sys.argv[1])
assert train(cfg.replace(savedir=sys.argv[2] + "/full")).finished
assert not train(cfg.replace(savedir=sys.argv[2] + "/part", max_steps=5)).finished
train(cfg.replace(savedir=sys.argv[2] + "/part", resume="yes"))
"""


def test_deepspeed_cpu_trains_and_resumes(tmp_path):
    pytest.importorskip("deepspeed")
    tiny = write_tiny(tmp_path / "tiny", n_train=32, n_test=8)
    cfg = TrainConfig(basepath=str(tiny["base"]), trainpath=str(tiny["train"]), testpath=str(tiny["test"]),
                      data_format="fim", deepspeed_config=str(MAIN_DIR / "ds_config_cpu.json"), num_epochs=2,
                      batch_size=2, grad_accum=2, max_length=64, draft_vocab_size=128, lr=3e-3, save_steps=3,
                      dtype="bf16")  # the config's precision on every CPU (auto picks fp32 on one without bf16)
    cfg.save(tmp_path / "cfg.json")
    # a child process: DeepSpeed keeps process-group state in module globals for the process's life
    p = subprocess.run([sys.executable, "-c", _RUNS, str(tmp_path / "cfg.json"), str(tmp_path)],
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "plain PyTorch" not in p.stdout  # DeepSpeed's engine ran
    assert (tmp_path / "part" / "resume" / "deepspeed").is_dir()
    a, b = (load_file(str(tmp_path / d / "state_1" / "model.safetensors")) for d in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["fc.weight"].dtype == torch.bfloat16  # saved in the training dtype
    ma, mb = (json.loads((tmp_path / d / "state_1" / "metrics.json").read_text()) for d in ("full", "part"))
    assert ma["test_acc"] == mb["test_acc"] and ma["loss"] == mb["loss"]
    assert ma["train_acc"][0] > 100 / 128
