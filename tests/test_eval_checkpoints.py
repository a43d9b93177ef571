"""Monitoring and evaluation (tutorial 5.3) on a real two-epoch training run of a tiny model:
every checkpoint evaluated (accuracy identical to the trainer's own test figure, τ from real
generation), the three training-curve panels from local metrics, and the error analysis."""

import json
from pathlib import Path

import pytest
import torch

from eagle.cli import main as eagle_main
from eagle.eval.checkpoints import evaluate_all_checkpoints, find_checkpoints
from eagle.eval.curves import load_history
from eagle.eval.errors import analyze_errors
from eagle.eval.quality import complete
from eagle.model.ea_model import EaModel
from eagle.train.tiny import write_tiny


TUTORIAL_ANALYZE_ERRORS = '''
def analyze_errors(model, test_data, num_samples=10):
    """分析预测错误的样本"""
    errors = []

    for sample in test_data[:num_samples]:
        inputs = tokenizer(sample['text'], return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=50)

        predicted = tokenizer.decode(outputs[0], skip_special_tokens=True)
        target = sample['expected']

        if predicted != target:
            errors.append({
                'input': sample['text'],
                'predicted': predicted,
                'target': target
            })

    # 打印错误
    for i, error in enumerate(errors):
        print(f"\\n=== Error {i+1} ===")
        print(f"Input: {error['input']}")
        print(f"Predicted: {error['predicted']}")
        print(f"Target: {error['target']}")

    return errors
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    tiny = write_tiny(root, n_train=24, n_test=6, layers=2)
    save = root / "checkpoints"
    rc = eagle_main(["train", "--basepath", str(tiny["base"]), "--trainpath", str(tiny["train"]),
                     "--testpath", str(tiny["test"]), "--savedir", str(save), "--data-format", "fim",
                     "--num_epochs", "2", "--draft_vocab_size", "128", "--max_length", "64", "--dtype", "fp32",
                     "--lr", "3e-3", "--ttt_length", "3"])
    assert rc == 0
    return tiny, save


def test_evaluate_checkpoints_command(run, tmp_path):
    tiny, save = run
    out = tmp_path / "evaluation_results.json"
    # --basepath and --testpath default to the run's own (state_N/train_config.json)
    rc = eagle_main(["eval", "checkpoints", "--savedir", str(save), "--dtype", "float32", "--device", "cpu",
                     "--num-prompts", "2", "--max-new-tokens", "12", "-o", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())
    assert [r["epoch"] for r in results] == [0, 1]
    for r in results:
        trained = json.loads((save / f"state_{r['epoch']}" / "metrics.json").read_text())
        # the trainer's own test computation on the same records: the same figures
        assert r["accuracy"] == pytest.approx(trained["acc"], abs=1e-6)
        assert r["acc"] == pytest.approx(trained["test_acc"], abs=1e-6)
        assert r["ploss"] == pytest.approx(trained["test_ploss"], rel=1e-4)
        assert 1.0 <= r["tau"] <= 7 and r["decoding_steps"] > 0


def test_a_damaged_checkpoint_is_skipped_not_fatal(run, tmp_path, capsys):
    """A truncated state_N/model.safetensors is named and skipped; the other epochs are still scored
    and written, and the exit status is 1."""
    import shutil

    tiny, save = run
    copy = tmp_path / "ck"
    shutil.copytree(save, copy)
    weights = copy / "state_0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "results.json"
    rc = eagle_main(["eval", "checkpoints", "--savedir", str(copy), "--basepath", str(tiny["base"]),
                     "--testpath", str(tiny["test"]), "--dtype", "float32", "--device", "cpu",
                     "--num-prompts", "1", "--max-new-tokens", "4", "-o", str(out)])
    assert rc == 1  # the results are written, and the status says one is missing
    assert f"Epoch 0: skipped, {weights}: the weights cannot be read" in capsys.readouterr().err
    assert [r["epoch"] for r in json.loads(out.read_text())] == [1]


def test_a_mixed_test_file_is_read_as_mixed(run, tmp_path):
    """The quickstart trains on FIM and chat records in one file (--data-format mixed); evaluating
    its checkpoints on such a file must read each record by its own keys."""
    tiny, save = run
    mixed = tmp_path / "mixed.jsonl"
    chat = {"messages": [{"role": "user", "content": "def f(x):"}, {"role": "assistant", "content": "return x"}]}
    mixed.write_text(Path(tiny["test"]).read_text() + json.dumps(chat) + "\n")
    out = tmp_path / "evaluation_results.json"
    rc = eagle_main(["eval", "checkpoints", "--savedir", str(save), "--testpath", str(mixed), "--every", "5",
                     "--num-samples", "0", "--dtype", "float32", "--device", "cpu", "--num-prompts", "1",
                     "--max-new-tokens", "4", "-o", str(out)])
    assert rc == 0 and [r["epoch"] for r in json.loads(out.read_text())] == [0, 1]


def test_every_keeps_the_last_epoch(tmp_path):
    for e in range(12):
        (tmp_path / f"state_{e}").mkdir()
        (tmp_path / f"state_{e}" / "config.json").write_text("{}")
    (tmp_path / "resume").mkdir()
    assert [e for e, _ in find_checkpoints(tmp_path, every=5)] == [0, 5, 10, 11]
    assert [e for e, _ in find_checkpoints(tmp_path)] == list(range(12))


def test_evaluate_all_checkpoints_library_call(run, capsys):
    """The tutorial's evaluate_all_checkpoints(checkpoint_dir, test_data), base given by the caller."""
    tiny, save = run
    records = [json.loads(line) for line in Path(tiny["test"]).read_text().splitlines()]
    results = evaluate_all_checkpoints(str(save), records, str(tiny["base"]), every=5, num_prompts=1,
                                       max_new_tokens=8, dtype=torch.float32, output=None)
    assert [r["epoch"] for r in results] == [0, 1]
    assert "Epoch 0: Acc=" in capsys.readouterr().out


def test_training_curves(run, tmp_path):
    pytest.importorskip("matplotlib", reason="pip install 'eagle-spec[eval]'")
    _, save = run
    history = load_history(save)
    assert [m["epoch"] for m in history] == [0, 1] and len(history[0]["train_acc"]) == 3
    out = tmp_path / "plots" / "training_curves.png"
    assert eagle_main(["eval", "curves", "--savedir", str(save), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert eagle_main(["eval", "curves", "--savedir", str(tmp_path), "-o", str(out)]) == 2  # no metrics there


def test_error_analysis(run, tmp_path, capsys):
    tiny, save = run
    model = EaModel.from_pretrained(base_model_path=str(tiny["base"]), ea_model_path=str(save / "state_1"),
                                    dtype=torch.float32)
    own = complete(model, model.tokenizer("def f(x):").input_ids, 10).text
    # the tutorial's record shape: one whose expected text is what the model writes is no error
    samples = [{"text": "def f(x):", "expected": own}, {"text": "def f(x):", "expected": "return x"}]
    errors = analyze_errors(model, samples, max_new_tokens=10)
    assert [e["index"] for e in errors] == [1]
    assert errors[0]["predicted"] == own and errors[0]["target"] == "return x"
    assert "=== Error 1 ===" in capsys.readouterr().out

    out = tmp_path / "errors.json"
    rc = eagle_main(["eval", "errors", "--basepath", str(tiny["base"]), "--ea-model-path", str(save / "state_1"),
                     "--testpath", str(tiny["test"]), "--num-samples", "3", "--max-new-tokens", "8",
                     "--dtype", "float32", "--device", "cpu", "--quiet", "-o", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["samples"] == 3 and report["errors"] == len(report["mismatches"])
    assert {"input", "predicted", "target"} <= set(report["mismatches"][0])


def test_tutorial_analyze_errors_snippet(run, capsys):
    """The tutorial's snippet calls transformers' generate: it runs on the EaModel's base."""
    tiny, save = run
    model = EaModel.from_pretrained(base_model_path=str(tiny["base"]), ea_model_path=str(save / "state_1"),
                                    dtype=torch.float32)
    scope = {"tokenizer": model.tokenizer}
    exec(TUTORIAL_ANALYZE_ERRORS, scope)
    errors = scope["analyze_errors"](model.base_model, [{"text": "def f(x):", "expected": "return x"}])
    assert len(errors) == 1 and errors[0]["predicted"].startswith("def f(x):")  # its decode keeps the prompt
    assert "=== Error 1 ===" in capsys.readouterr().out
