"""`eagle models check`: the tutorial's step 5.2 (edit a model for a KV cache, then test it) as one
command that checks what decoding needs, and that notices a model that breaks it."""

import pytest
import torch

from eagle.cli import main as eagle_main
from eagle.model.check import check_base
from tiny import ARCHS, tiny_base


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "gpt2"])
def test_every_check_passes_on_an_unmodified_model(arch):
    results = check_base(tiny_base(arch), new_tokens=24, echo=lambda line: None)
    assert [r.name for r in results] == ["kv cache", "tree verify", "cache compaction", "greedy decoding"]
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_a_model_that_ignores_position_ids_fails_tree_verify():
    """Such a model numbers a tree's nodes 0..T-1 after the cache instead of by depth: siblings get
    different positions, so verification is wrong. The check must say so, not pass."""
    base = tiny_base("llama")
    forward = base.forward

    def no_positions(*args, position_ids=None, **kwargs):
        return forward(*args, **kwargs)

    base.forward = no_positions
    lines = []
    results = {r.name: r for r in check_base(base, new_tokens=24, echo=lines.append)}
    assert results["kv cache"].ok  # a plain cache works
    assert not results["tree verify"].ok and "wrong at nodes" in results["tree verify"].detail
    assert any(line.startswith("✗ tree verify") for line in lines)


def test_models_check_command(tmp_path, capsys):
    tiny_base("qwen2").save_pretrained(tmp_path / "base")
    assert eagle_main(["models", "check", str(tmp_path / "base"), "--new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert "✓ tree verify" in out and "all checks passed" in out
    assert eagle_main(["models", "check", str(tmp_path / "missing")]) == 1
    assert "eagle models check: error" in capsys.readouterr().err
