"""Kill a training run with SIGKILL in the middle of an epoch, resume it, and reach the same weights
and metrics as a run that was never interrupted (bit-exact on CPU in fp32: same data order, same
optimizer state, same per-epoch sums)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eagle.eval.report import draft_recipe
from eagle.train.args import config_to_argv
from eagle.train.config import TrainConfig
from eagle.train.dataset import TrainError
from eagle.train.state import TrainerState
from eagle.train.tiny import write_tiny
from eagle.train.trainer import epoch_order, train

ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    tiny = write_tiny(tmp_path / "tiny", n_train=48, n_test=8)
    cfg = TrainConfig(basepath=str(tiny["base"]), trainpath=str(tiny["train"]), testpath=str(tiny["test"]),
                      savedir=str(tmp_path / "A"), data_format="fim", num_epochs=2, batch_size=2, grad_accum=1,
                      max_length=64, draft_vocab_size=128, dtype="fp32", lr=3e-3, save_steps=3,
                      group_by_length=True,  # the batch order is derived, not stored: a resume must rebuild it
                      align_top_k=4)  # and the chains it trains are the draft's own choice
    steps_per_epoch = 48 // 2
    train(cfg)  # uninterrupted

    save = tmp_path / "B"
    flags = config_to_argv(cfg.replace(savedir=str(save)))
    proc = subprocess.Popen([sys.executable, str(ROOT / "eagle" / "traineagle3" / "main.py"), *flags],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state_file = save / "resume" / "trainer_state.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if json.loads(state_file.read_text())["global_step"] >= 3:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = TrainerState.load(save / "resume")
    assert 0 < killed.global_step < 2 * steps_per_epoch
    print(f"killed after the state of step {killed.global_step} (epoch {killed.epoch}, step {killed.step_in_epoch})")

    # as if killed inside the final rename: only the previous copy remains, beside a half-written one
    os.replace(save / "resume", save / ".resume.old")
    (save / ".tmp-resume-partial" / "ckpt").mkdir(parents=True)
    train(cfg.replace(savedir=str(save), resume="yes"))

    a, b = load_file(str(tmp_path / "A/state_1/model.safetensors")), load_file(str(save / "state_1/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = (json.loads((d / "state_1/metrics.json").read_text()) for d in (tmp_path / "A", save))
    for k in ("acc", "loss", "train_acc", "train_ploss", "test_acc", "test_ploss", "tokens_seen", "global_step", "lr"):
        assert ma[k] == mb[k], k
    recipe = draft_recipe(str(save / "state_1"))  # the benchmark's JSON says how it was batched and masked
    assert recipe["group_by_length"] is True and recipe["align_top_k"] == 4
    assert (save / "resume" / "trainer_state.json").is_file() and not (save / ".resume.old").exists()
    assert not list(save.glob(".tmp-*"))
    shutil.rmtree(tmp_path / "tiny")


@pytest.mark.parametrize("batch", [4, 3, 40])
def test_length_grouped_order(batch):
    """--group_by_length: every sample once, the same order for the same seed and epoch, full batches
    first (the trainer drops the partial one), and much less padding than random batches."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(20, 512, (1002,), generator=g).tolist()
    n, steps = len(lengths), len(lengths) // batch

    def padding(order):  # tokens a step computes (batch x its longest) over the real ones
        batches = [order[k * batch:(k + 1) * batch] for k in range(steps)]
        return sum(batch * max(lengths[i] for i in b) for b in batches) / sum(lengths[i] for b in batches for i in b)

    plain = epoch_order(n, 0, 0)
    grouped = epoch_order(n, 0, 0, lengths, batch)
    assert sorted(grouped) == list(range(n)) and grouped == epoch_order(n, 0, 0, lengths, batch)
    assert grouped != epoch_order(n, 0, 1, lengths, batch) and grouped != epoch_order(n, 1, 0, lengths, batch)
    assert padding(grouped) < 1.15 < 1.3 < padding(plain)
    # the batches are shuffled: not one long climb from short to long samples
    first = [max(lengths[i] for i in grouped[k * batch:(k + 1) * batch]) for k in range(steps)]
    assert first != sorted(first)


def test_raising_num_epochs_trains_a_finished_run_on(tmp_path):
    """A finished run given a larger --num_epochs continues from resume/ (the documented way to
    train a head longer) and ends on the longer schedule's last rate, at the step count of a run
    that had asked for all epochs from the start; asking again does nothing."""
    tiny = write_tiny(tmp_path / "tiny", n_train=16, n_test=4)
    cfg = TrainConfig(basepath=str(tiny["base"]), trainpath=str(tiny["train"]), testpath=str(tiny["test"]),
                      savedir=str(tmp_path / "A"), data_format="fim", num_epochs=2, batch_size=2, grad_accum=1,
                      max_length=64, draft_vocab_size=128, dtype="fp32", lr=3e-3, save_steps=100)
    train(cfg)  # all epochs from the start
    on = tmp_path / "B"
    train(cfg.replace(savedir=str(on), num_epochs=1))
    assert not (on / "state_1").exists()
    train(cfg.replace(savedir=str(on)))

    ma, mb = (json.loads((d / "state_1/metrics.json").read_text()) for d in (tmp_path / "A", on))
    assert mb["global_step"] == ma["global_step"] == 2 * (16 // 2)
    assert mb["tokens_seen"] == ma["tokens_seen"]
    assert mb["lr"] == ma["lr"]
    # the first epoch ran on the 1-epoch schedule, so the weights differ from the straight run's
    a, b = load_file(str(tmp_path / "A/state_1/model.safetensors")), load_file(str(on / "state_1/model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)

    before = (on / "state_1/model.safetensors").read_bytes()
    again = train(cfg.replace(savedir=str(on)))  # "Nothing to do"
    assert again.finished and again.state.global_step == mb["global_step"]
    assert (on / "state_1/model.safetensors").read_bytes() == before


def test_shared_cache_dir_computes_only_new_records(tmp_path):
    """Two runs on overlapping data with one --cache_dir: the second runs only its new records
    through the base (the rest are copied, the log says how many) and reads them back right."""
    tiny = write_tiny(tmp_path / "tiny", n_train=16, n_test=4)
    common = dict(basepath=str(tiny["base"]), testpath=str(tiny["test"]), num_epochs=1, batch_size=2, grad_accum=1,
                  max_length=64, draft_vocab_size=128, dtype="fp32", save_steps=100, data_format="fim", lr=3e-3,
                  cache_dir=str(tmp_path / "features"))
    train(TrainConfig(trainpath=str(tiny["train"]), savedir=str(tmp_path / "A"), **common))
    lines = Path(tiny["train"]).read_text().splitlines(keepends=True)
    fresh = [json.dumps({**json.loads(line), "prefix": "# another file\n" + json.loads(line)["prefix"]}) + "\n"
             for line in lines[:4]]
    more = tmp_path / "more.jsonl"  # 12 records of the first run, 4 new ones
    more.write_text("".join(lines[4:] + fresh))
    train(TrainConfig(trainpath=str(more), savedir=str(tmp_path / "B"), **common))
    log = (tmp_path / "B" / "training.log").read_text()
    assert "Using cached base features for the test set" in log
    assert "Cached train:" in log and "12 of this process's 16 samples already in the folder" in log, log


def test_init_from_starts_from_a_trained_head_on_other_data(tmp_path):
    """--init_from takes a head's weights and vocabulary into a new run on other data (here chat
    records after FIM): at a vanishing learning rate the new run's head is the old one, and its
    vocabulary is the old head's, not the one the new data would have built. A head of another
    shape is refused with the mismatch named."""
    tiny = write_tiny(tmp_path / "tiny", n_train=16, n_test=4)
    common = dict(basepath=str(tiny["base"]), num_epochs=1, batch_size=2, grad_accum=1, max_length=64,
                  draft_vocab_size=128, dtype="fp32", save_steps=100)
    train(TrainConfig(trainpath=str(tiny["train"]), testpath=str(tiny["test"]), savedir=str(tmp_path / "A"),
                      data_format="fim", lr=3e-3, **common))
    chat = dict(trainpath=str(tiny["chat_train"]), testpath=str(tiny["chat_test"]), data_format="chat", **common)
    train(TrainConfig(savedir=str(tmp_path / "B"), init_from=str(tmp_path / "A/state_0"), lr=1e-12, **chat))
    train(TrainConfig(savedir=str(tmp_path / "C"), lr=3e-3, **chat))  # the same data from scratch

    a, b, c = (load_file(str(tmp_path / d / "state_0/model.safetensors")) for d in "ABC")
    assert torch.equal(b["d2t"], a["d2t"])
    assert not torch.equal(c["d2t"], a["d2t"]), "the chat data builds another vocabulary"
    for k in a:
        assert torch.allclose(b[k].float(), a[k].float(), atol=1e-7), k
    # the benchmark's recipe of B names A's, data and all
    recipe = draft_recipe(str(tmp_path / "B/state_0"))
    assert recipe["data"] == str(tiny["chat_train"]) and recipe["epochs"] == 1
    assert recipe["init_from"]["path"] == str(tmp_path / "A/state_0") and recipe["init_from"]["data"] == str(tiny["train"])
    assert "init_from" not in recipe["init_from"]

    with pytest.raises(TrainError, match=r"--init_from .*draft_vocab_size: 128 then, 96 now"):
        train(TrainConfig(savedir=str(tmp_path / "D"), init_from=str(tmp_path / "A/state_0"), lr=1e-3,
                          **{**chat, "draft_vocab_size": 96}))
    with pytest.raises(ValueError, match="--init_lm_head base"):
        TrainConfig(savedir=str(tmp_path / "E"), init_from=str(tmp_path / "A/state_0"), init_lm_head="base", **chat)
