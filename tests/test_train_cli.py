"""The tutorial's command lines (steps 5.1.4, 5.1.5, 5.2.6) on a tiny model: main.py as a script with
the tutorial's ds_config.json, `eagle train` with chat data, the flags, and bad input stopped early."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eagle.cli import main as eagle_main
from eagle.model.ea_model import EaModel
from eagle.train.args import build_parser, config_from_args
from eagle.train.cli import main as train_main
from eagle.train.config import TrainConfig
from eagle.train.tiny import tiny_base, write_jsonl, write_tiny

ROOT = Path(__file__).resolve().parents[1]
MAIN_DIR = ROOT / "eagle" / "traineagle3"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"), n_train=32, n_test=8)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_tutorial_main_py(tiny, tmp_path):
    run_dir = tmp_path / "traineagle3"  # `cd eagle/traineagle3`, in a copy: main.py links training.log here
    run_dir.mkdir()
    for name in ("main.py", "ds_config.json"):
        shutil.copy(MAIN_DIR / name, run_dir / name)
    save = tmp_path / "checkpoints"
    cmd = [sys.executable, "main.py", "--basepath", str(tiny["base"]), "--trainpath", str(tiny["train"]),
           "--testpath", str(tiny["test"]), "--savedir", str(save), "--data-format", "fim",
           "--deepspeed_config", "ds_config.json", "--local_rank", "-1",
           "--num_epochs", "2", "--draft_vocab_size", "128", "--max_length", "64", "--dtype", "fp32", "--lr", "3e-3"]
    p = subprocess.run(cmd, cwd=run_dir, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    # the tutorial's config is honoured without DeepSpeed on a GPU: micro 2 x accumulation 4
    assert "plain PyTorch" in out and "ds_config.json" in out
    lines = out.splitlines()
    assert lines.index("Now training epoch 0") < lines.index("Data format: fim") < lines.index("Now training epoch 1")
    for e in (1, 2):
        for j in range(7):
            assert re.search(rf"^Train Epoch \[{e}/2\], position {j}, Acc: \d+\.\d\d$", out, re.M)
            assert re.search(rf"^Train Epoch \[{e}/2\], position {j}, pLoss: \d+\.\d\d$", out, re.M)
            assert re.search(rf"^Test Epoch \[{e}/2\], position {j}, Acc: \d+\.\d\d$", out, re.M)
            assert re.search(rf"^Test Epoch \[{e}/2\], position {j}, pLoss: \d+\.\d\d$", out, re.M)
    assert f"Saving checkpoint to {save}/state_0" in lines and f"Saving checkpoint to {save}/state_1" in lines
    assert "4/4" in p.stderr  # the progress bar: 32 samples / global batch 8
    log = (save / "training.log").read_text()
    assert all(line in log for line in lines if "Epoch [" in line or line.startswith("Saving"))
    # tutorial 5.1.5: `tail -f training.log` from the folder main.py ran in
    assert (run_dir / "training.log").is_symlink() and (run_dir / "training.log").read_text() == log

    # tutorial 5.1.5: metrics.json per epoch
    for e in (0, 1):
        m = json.loads((save / f"state_{e}" / "metrics.json").read_text())
        assert isinstance(m["acc"], float) and isinstance(m["loss"], float) and m["epoch"] == e
        assert len(m["train_acc"]) == len(m["test_acc"]) == len(m["test_ploss"]) == 7
        assert m["acc"] == m["test_acc"][0] and m["tokens_seen"] > 0 and m["lr"] > 0
    cfg = TrainConfig.load(save / "state_1" / "train_config.json")
    assert cfg.data_format == "fim" and cfg.deepspeed_config == "ds_config.json"

    # tutorial 5.1.6: the epoch folder is a draft EaModel loads directly
    model = EaModel.from_pretrained(base_model_path=str(tiny["base"]), ea_model_path=str(save / "state_1"),
                                    use_eagle3=True)
    ids = model.tokenizer("def f(x):", return_tensors="pt").input_ids
    out_ids = model.eagenerate(ids, max_new_tokens=8, temperature=0.0)
    assert out_ids.shape[1] == ids.shape[1] + 8


def test_eagle_train_chat(tiny, tmp_path):
    save = tmp_path / "chat"
    rc = eagle_main(["train", "--basepath", str(tiny["base"]), "--trainpath", str(tiny["chat_train"]),
                     "--testpath", str(tiny["chat_test"]), "--savedir", str(save), "--data-format", "chat",
                     "--num_epochs", "1", "--batch_size", "4", "--draft_vocab_size", "64", "--max_length", "64",
                     "--dtype", "fp32", "--features", "online", "--ttt_length", "3",
                     "--draft_intermediate_size", "24"])
    assert rc == 0
    log = (save / "training.log").read_text()
    assert "Data format: chat" in log and "Test Epoch [1/1], position 2, pLoss:" in log
    m = re.search(r"covering (\d+\.\d\d)% of the training targets and (\d+\.\d\d)% of the test targets", log)
    assert m and float(m[1]) == 100.0 and 0.0 < float(m[2]) <= 100.0
    assert "position 3" not in log
    m = json.loads((save / "state_0" / "metrics.json").read_text())
    assert m["features"] == "online" and len(m["test_acc"]) == 3
    assert not (save / "feature_cache").exists()
    # a narrowed MLP is the checkpoint's own shape, and what loads back
    draft = EaModel.from_pretrained(base_model_path=str(tiny["base"]), ea_model_path=str(save / "state_0")).ea_layer
    assert draft.config.intermediate_size == 24
    assert json.loads((save / "state_0" / "config.json").read_text())["intermediate_size"] == 24
    assert draft.midlayer.mlp.down_proj.weight.shape[1] == 24


def test_flags_map_one_to_one_to_the_config():
    parser = build_parser()
    args = parser.parse_args(["--basepath", "b", "--trainpath", "t", "--testpath", "v", "--savedir", "s",
                              "--data-format", "fim", "--deepspeed_config", "ds_config.json", "--local_rank", "-1",
                              "--aux-layers", "2,3,4", "--num_epochs", "3", "--resume"])
    cfg = config_from_args(args)
    assert set(vars(args)) == set(cfg.to_dict())
    assert cfg.aux_layers == (2, 3, 4) and cfg.resume == "yes" and cfg.num_epochs == 3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown settings"):
        TrainConfig.from_dict({**cfg.to_dict(), "lr_typo": 1})
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(basepath="b", trainpath="t", testpath="v", ttt_length=0)


def _run_bad(capsys, tiny, save, **overrides):
    args = {"basepath": tiny["base"], "trainpath": tiny["train"], "testpath": tiny["test"], "savedir": save,
            "max_length": 64, "draft_vocab_size": 64, "dtype": "fp32", "num_epochs": 1, **overrides}
    argv = [x for k, v in args.items() for x in (f"--{k}", str(v))]
    rc = train_main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not (Path(save) / "feature_cache").exists()  # stopped before the base was run
    return err


def test_bad_input_is_refused_early(tiny, tmp_path, capsys):
    root = tmp_path
    err = _run_bad(capsys, tiny, root / "a", trainpath=tiny["chat_train"], data_format="fim")
    assert "--data-format fim" in err and "chat" in err
    empty = root / "empty.jsonl"
    empty.write_text("\n")
    assert "empty" in _run_bad(capsys, tiny, root / "b", testpath=empty)
    err = _run_bad(capsys, tiny, root / "c", max_length=6)
    assert "longer than --max_length 6" in err
    empty_middle = {"prefix": "abc", "middle": "", "suffix": "d", "truncated": True}  # no target, no end token
    nothing = write_jsonl(root / "nothing.jsonl", [empty_middle] * 4)
    assert "no trainable tokens" in _run_bad(capsys, tiny, root / "d", trainpath=nothing)
    blocker = root / "file"
    blocker.write_text("x")
    assert "not writable" in _run_bad(capsys, tiny, blocker / "sub")
    assert "missing.jsonl: no such file" in _run_bad(capsys, tiny, root / "e", trainpath=root / "missing.jsonl")
    assert f"{root}: is a directory" in _run_bad(capsys, tiny, root / "e", trainpath=root)
    bad_line = write_jsonl(root / "bad.jsonl", [{"prefix": "a", "middle": "b", "suffix": "c"}, {"prefix": "a"}])
    assert "bad.jsonl:2" in _run_bad(capsys, tiny, root / "f", trainpath=bad_line)


def test_resume_refuses_another_base_or_draft(tiny, tmp_path, capsys):
    save = tmp_path / "run"
    common = ["--trainpath", str(tiny["train"]), "--testpath", str(tiny["test"]), "--savedir", str(save),
              "--max_length", "64", "--dtype", "fp32", "--num_epochs", "1", "--batch_size", "4"]
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "64", "--max_steps", "2", *common]) == 0
    assert (save / "resume" / "trainer_state.json").is_file()
    capsys.readouterr()

    other = tmp_path / "other_base"
    tiny_base(layers=4, seed=5).save_pretrained(other)
    (other / "tokenizer.json").write_bytes((Path(tiny["base"]) / "tokenizer.json").read_bytes())
    (other / "tokenizer_config.json").write_bytes((Path(tiny["base"]) / "tokenizer_config.json").read_bytes())
    assert train_main(["--basepath", str(other), "--draft_vocab_size", "64", *common]) == 2
    assert "base model differs" in capsys.readouterr().err
    tiny_base(layers=6, seed=0).save_pretrained(other)
    assert train_main(["--basepath", str(other), "--draft_vocab_size", "64", *common]) == 2
    assert "target_num_hidden_layers" in capsys.readouterr().err
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "100", *common]) == 2
    assert "draft_vocab_size: 64 then, 100 now" in capsys.readouterr().err
    # mid-epoch, another batch order would train other steps than the ones resume/ continues
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "64", "--group_by_length", *common]) == 2
    assert "group_by_length: False then, True now" in capsys.readouterr().err
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "64", "--ttt_length", "3", *common]) == 2
    assert "ttt_length: 7 then, 3 now" in capsys.readouterr().err
    # the same settings continue, and --resume no starts afresh
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "64", *common]) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "100", "--resume", "no", *common]) == 0
    capsys.readouterr()
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "100", *common]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    # between epochs the order and the loss of the next one are free to change, as the learning rate is
    assert train_main(["--basepath", str(tiny["base"]), "--draft_vocab_size", "100", "--group_by_length", *common,
                       "--ttt_length", "3", "--num_epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "group_by_length False -> True, ttt_length 7 -> 3" in out and (save / "state_1").is_dir(), out


def test_a_damaged_resume_state_is_named(tiny, tmp_path, capsys):
    """Each file of resume/ cut short or missing: a one-line error naming it, not a traceback after
    the feature pass."""
    save = tmp_path / "run"
    common = ["--basepath", str(tiny["base"]), "--trainpath", str(tiny["train"]), "--testpath", str(tiny["test"]),
              "--savedir", str(save), "--max_length", "64", "--dtype", "fp32", "--num_epochs", "1",
              "--batch_size", "4", "--draft_vocab_size", "64"]
    assert train_main([*common, "--max_steps", "2"]) == 0
    good = tmp_path / "good"
    shutil.copytree(save / "resume", good)
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json", "train_config.json", "config.json"):
        shutil.rmtree(save / "resume")
        shutil.copytree(good, save / "resume")
        f = save / "resume" / name
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        capsys.readouterr()
        assert train_main(common) == 2, name
        err = capsys.readouterr().err
        assert f"cannot resume from {save / 'resume'}: {name} cannot be read" in err, err
        assert "--resume no" in err and "Traceback" not in err
    (save / "resume" / "config.json").unlink()
    assert train_main(common) == 2 and "config.json cannot be read (FileNotFoundError" in capsys.readouterr().err


def test_wandb_gets_the_tutorials_metrics(tiny, tmp_path, monkeypatch):
    """Tutorial 5.1.5 / 5.3.1: a run with wandb (offline here: nothing leaves the machine) records
    the per-position accuracy and loss of every epoch, train and test, and the learning rate."""
    wandb = pytest.importorskip("wandb", reason="pip install -e '.[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged, real_init = {}, wandb.init

    def init(*args, **kwargs):  # the real run, whose log calls we read as they pass
        run = real_init(*args, **kwargs)
        real_log = run.log

        def log(values, *a, **kw):
            logged.update(values)
            return real_log(values, *a, **kw)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", init)
    save = tmp_path / "ckpt"
    assert train_main(["--basepath", str(tiny["base"]), "--trainpath", str(tiny["train"]), "--testpath",
                       str(tiny["test"]), "--savedir", str(save), "--draft_vocab_size", "64", "--max_length", "64",
                       "--num_epochs", "1", "--dtype", "fp32", "--wandb", "--wandb_project", "tiny"]) == 0
    assert list(save.glob("wandb/offline-run-*/run-*.wandb")), "no offline run was written"
    metrics = json.loads((save / "state_0" / "metrics.json").read_text())
    for j, acc in enumerate(metrics["test_acc"]):
        assert logged[f"test/epochacc_{j}"] == pytest.approx(acc)
        assert {f"train/epochacc_{j}", f"train/epochploss_{j}", f"test/epochploss_{j}"} <= logged.keys()
    assert "train/lr" in logged


def test_wandb_follows_wandb_login(tmp_path, monkeypatch, capsys):
    """Tutorial 5.1.5: after `wandb login` (a key in ~/.netrc) training logs to wandb unasked;
    EAGLE_WANDB=0 keeps it local."""
    from eagle.train.report import Reporter, wandb_logged_in

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # should wandb be installed: nothing leaves the machine
    assert not wandb_logged_in()
    assert Reporter(tmp_path, True, run_config={}).wandb is None and "wandb" not in capsys.readouterr().out
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert wandb_logged_in()
    assert Reporter(tmp_path, True, run_config={}).wandb is None  # EAGLE_WANDB=0 (conftest)
    monkeypatch.delenv("EAGLE_WANDB")
    rep = Reporter(tmp_path, True, run_config={})
    try:
        import wandb  # noqa: F401
    except ImportError:
        assert rep.wandb is None and "wandb is not installed" in capsys.readouterr().out
    else:
        assert rep.wandb is not None
    rep.close()
