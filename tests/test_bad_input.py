"""Bad generation arguments fail early with a clear message, never deep inside torch."""

import subprocess
from pathlib import Path

import pytest
import torch

from eagle.model.config import DraftConfig
from eagle.model.draft import Eagle3Draft
from eagle.model.ea_model import EaModel
from eagle.model.tree import TreeConfig
from tiny import tiny_base


@pytest.fixture(scope="module")
def model():
    base = tiny_base("llama")
    return EaModel(base, Eagle3Draft(DraftConfig.from_base(base.config)), tree=TreeConfig(8, 3, 2))


@pytest.mark.parametrize("gen", ["eagenerate", "naivegenerate"])
@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "empty prompt"),
    (dict(input_ids=torch.ones(1, 50, dtype=torch.long), max_length=50), "at or past max_length"),
    (dict(input_ids=torch.ones(1, 600, dtype=torch.long)), "at or past max_length"),
    (dict(input_ids=torch.ones(2, 5, dtype=torch.long)), "batch size 1"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), temperature=-1.0), "temperature"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_p=1.5), "top_p"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_p=-0.5), "top_p"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), top_k=-2), "top_k"),
    (dict(input_ids=torch.ones(1, 5, dtype=torch.long), max_new_tokens=-1), "max_new_tokens"),
])
def test_clear_errors(model, gen, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(model, gen)(**kwargs)


def test_defined_results(model):
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(model.eagenerate(ids, max_new_tokens=0), ids)
    out, new, steps = model.eagenerate(ids, max_new_tokens=0, log=True)
    assert (new, steps) == (0, 0)
    assert model.eagenerate([3, 4, 5], max_new_tokens=4).shape == (1, 7)  # a plain list is accepted
    # top_p = 1 and top_k larger than the vocabulary mean "off", not an error
    assert model.eagenerate(ids, temperature=0.5, top_p=1.0, top_k=10_000, max_new_tokens=4).shape == (1, 7)


def test_tree_config_validation():
    for bad in (dict(total_token=0), dict(depth=0), dict(top_k=-1), dict(expand_threshold=1.5),
                dict(expand_threshold=-0.1), dict(min_prob=1.0), dict(min_prob=-0.01)):
        with pytest.raises(ValueError):
            TreeConfig(**bad)
    # a flag left unset (None) keeps the default; a set one is validated like the constructor's
    base = TreeConfig(total_token=24, depth=6, top_k=6, lookup=32)
    assert base.override(total_token=None, depth=4, lookup=0) == TreeConfig(total_token=24, depth=4, top_k=6, lookup=0)
    with pytest.raises(ValueError, match="top_k"):
        base.override(top_k=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from eagle.model.checkpoint import save_draft
    from eagle.train.tiny import tiny_base as saved_tiny_base, write_tiny

    root = tmp_path_factory.mktemp("cli")
    tiny = write_tiny(root, n_train=1, n_test=1, layers=2)
    save_draft(Eagle3Draft(DraftConfig.from_base(saved_tiny_base(layers=2).config)), root / "head")
    (root / "empty").mkdir()
    return tiny["base"], root / "head", root


@pytest.mark.parametrize("args, message", [
    (["--prompt", "t1 " * 40, "--max-length", "20"], "tokens, at or past max_length=20"),
    (["--prompt", "t1", "--temperature", "-1"], "temperature must be >= 0"),
    (["--prompt", "t1", "--top-p", "2"], "top_p must be in [0, 1]"),
    (["--prompt", "t1", "--max-new-tokens", "-5"], "--max-new-tokens must be >= 0"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "@/nonexistent/prompt.txt"], "--prompt @/nonexistent/prompt.txt: cannot read the file"),
    (["--prompt", "t1", "--suffix", "@/nonexistent/after.py"], "--suffix @/nonexistent/after.py: cannot read the file"),
    (["--prompt", "t1", "--suffix", "t2", "--chat"], "--suffix (fill in the middle) and --chat cannot be used together"),
    (["--prompt", "t1", "--depth", "0"], "depth must be a positive int"),
    (["--prompt", "t1", "--basepath", "/nonexistent/base"], "base model not found: /nonexistent/base"),
    (["--prompt", "t1", "--basepath", "{root}/empty"], "empty: no config.json, so not a model folder"),
    (["--prompt", "t1", "--basepath", "{root}/head"], "is an EAGLE-3 draft head, not a base model"),
    (["--prompt", "t1", "--ea-model-path", "{root}/empty"], "empty: no config.json, so not a draft"),
])
def test_generate_command_errors_are_one_line(folders, capsys, args, message):
    """`eagle generate` answers bad input with `error: ...` and status 2, never a traceback."""
    from eagle.cli import main

    base, head, root = folders
    argv = ["generate", "--basepath", str(base), "--ea-model-path", str(head), "--dtype", "float32", *args]
    assert main([a.replace("{root}", str(root)) for a in argv]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the base's loading bar, where the base got that far
    assert last.startswith("error: ") and message in last and "Traceback" not in err, err


def test_generate_command_max_length_defaults_to_the_context(folders, capsys):
    """Without --max-length the limit is the model's context (512 here), as in the server."""
    from eagle.cli import main

    base, head, _ = folders
    argv = ["generate", "--basepath", str(base), "--ea-model-path", str(head), "--dtype", "float32",
            "--max-new-tokens", "3", "--prompt", "t1 " * 100]
    assert main(argv) == 0
    assert "[3 tokens in" in capsys.readouterr().err
    assert main([*argv[:-1], "t1 " * 200]) == 2
    assert "tokens, at or past max_length=505" in capsys.readouterr().err


def test_generate_command_fills_in_the_middle(folders, capsys, tmp_path):
    """`--suffix` (text or @FILE): the model's FIM prompt, and the middle alone is printed, cut at
    the end-of-middle token; the same text as the base's own greedy decoding of that prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eagle.cli import main
    from eagle.data.fim_tokens import detect_fim_sentinels, fim_prompt_ids

    base, head, _ = folders
    prefix, suffix = "x = ", "\n"  # this tiny base writes 22 tokens of middle, then its end token
    (tmp_path / "after.py").write_text(suffix)
    tok = AutoTokenizer.from_pretrained(base)
    ids = fim_prompt_ids(tok, prefix, suffix)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    new = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40, eos_token_id=None,
                         pad_token_id=0)[0, len(ids):].tolist()
    end = detect_fim_sentinels(tok).end_id
    assert 0 < new.index(end) < 40
    expect = tok.decode(new[:new.index(end)], skip_special_tokens=True)
    argv = ["generate", "--basepath", str(base), "--ea-model-path", str(head), "--dtype", "float32",
            "--max-new-tokens", "40", "--prompt", prefix]
    for given in (suffix, f"@{tmp_path / 'after.py'}"):
        assert main([*argv, "--suffix", given]) == 0
        out = capsys.readouterr()
        assert out.out == expect and f"[{new.index(end) + 1} tokens in" in out.err


@pytest.mark.parametrize("args, match", [
    (["--epochs"], "--epochs needs a number"),
    (["--full", "--epochs", "x"], "positive integer, not 'x'"),
    (["--epochs=0"], "positive integer, not '0'"),
    (["--fast"], "unknown argument: --fast"),
])
def test_quickstart_arguments(tmp_path, args, match):
    """The quickstart refuses a bad argument before it fetches, builds or trains anything."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "quickstart.sh"
    run = tmp_path / "run"
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "EAGLE_RUN": str(run)})
    assert r.returncode == 2 and match in r.stderr and "usage:" in r.stderr
    assert not run.exists()
