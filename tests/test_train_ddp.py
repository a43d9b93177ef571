"""torchrun with two CPU processes (gloo) trains the same head as one process with the same global
batch: 2 processes x 2 samples = 1 process x 2 samples x 2 accumulation steps. The loss is a sum
over the global batch divided by its global counts, so only float summation order differs:
weights agree to 1e-5 (relative), metrics to 1e-6."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eagle.train.args import config_to_argv
from eagle.train.config import TrainConfig
from eagle.train.tiny import write_tiny
from eagle.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_torchrun_matches_one_process(tmp_path):
    tiny = write_tiny(tmp_path / "tiny", n_train=32, n_test=8)
    cfg = TrainConfig(basepath=str(tiny["base"]), trainpath=str(tiny["train"]), testpath=str(tiny["test"]),
                      data_format="fim", num_epochs=2, batch_size=2, max_length=64, draft_vocab_size=128,
                      dtype="fp32", lr=3e-3)
    one = cfg.replace(savedir=str(tmp_path / "one"), grad_accum=2)
    two = cfg.replace(savedir=str(tmp_path / "two"), grad_accum=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(ROOT / "eagle" / "traineagle3" / "main.py"), *config_to_argv(two)]
    p = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        train(one)  # meanwhile, in this process
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:  # a hung group must not outlive the test
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, err[-3000:]
    assert out.count("Saving checkpoint to") == 2  # printed once, by rank 0

    a, b = (load_file(str(tmp_path / d / "state_1" / "model.safetensors")) for d in ("one", "two"))
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k
    ma, mb = (json.loads((tmp_path / d / "state_1" / "metrics.json").read_text()) for d in ("one", "two"))
    assert mb["processes"] == 2 and ma["processes"] == 1
    for key in ("acc", "loss", "train_acc", "train_ploss", "test_acc", "test_ploss", "train_loss"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-6, abs=1e-9), key
    assert ma["tokens_seen"] == mb["tokens_seen"] and ma["global_step"] == mb["global_step"] == 2 * 32 // 4
