"""Deployment (tutorial 5.4.3): `eagle export` and the tutorial's export snippet write a folder
the OpenAI-compatible server starts from; a real uvicorn server on loopback, called over HTTP with
httpx, returns exactly the base's greedy text, streams the same text, and refuses bad requests."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from eagle.cli import main as eagle_main
from eagle.model.ea_model import EaModel
from eagle.serve.config import ConfigError, DeployConfig
from eagle.serve.server import build_app, load_engine
from eagle.train.tiny import tiny_base, tiny_tokenizer
from tiny import fit_draft

pytest.importorskip("fastapi", reason="pip install 'eagle-spec[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="pip install 'eagle-spec[serve]'")
httpx = pytest.importorskip("httpx", reason="pip install 'eagle-spec[serve]'")
ROOT = Path(__file__).resolve().parents[1]

TUTORIAL_EXPORT = '''
def export_for_deployment(checkpoint_path, output_dir):
    """导出模型用于部署"""
    from transformers import AutoModelForCausalLM

    # 加载EAGLE模型
    eagle_model = EaModel.from_pretrained(
        base_model_path=base_model,
        ea_model_path=checkpoint_path,
        use_eagle3=True
    )

    # 保存为标准transformers格式
    eagle_model.base_model.save_pretrained(f"{output_dir}/base_model")
    eagle_model.ea_model.save_pretrained(f"{output_dir}/eagle_model")
    eagle_model.tokenizer.save_pretrained(f"{output_dir}/tokenizer")

    print(f"✓ Exported to {output_dir}")
'''


def build_tiny(root: Path) -> tuple[Path, Path]:
    """A near-bigram base (long accepted paths) with a byte tokenizer that has FIM and ChatML tokens."""
    base = tiny_base()
    with torch.no_grad():
        for name, p in base.named_parameters():
            if ".layers." in name and p.dim() == 2:
                p.mul_(0.1)
    base.save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    fit_draft(base, steps=20).save_pretrained(root / "draft")
    return root / "base", root / "draft"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base, draft = build_tiny(root)
    cwd = os.getcwd()
    os.chdir(root)  # the tutorial's layout: config.json names ./deployment/... from the export's folder
    try:
        rc = eagle_main(["export", "--basepath", str(base), "--ea-model-path", str(draft), "-o", "deployment/",
                         "--dtype", "float32"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return root / "deployment"


@pytest.fixture(scope="module")
def server(deployment):
    cfg = DeployConfig.load(deployment / "config.json")  # found from another working directory
    cfg.dtype = "float32"
    engine = load_engine(cfg, device="cpu")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "server did not start"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, engine
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def reference(deployment):
    """A second, independent model from the exported folder: the greedy text to expect."""
    d = deployment
    return EaModel.from_pretrained(base_model_path=str(d / "base_model"), ea_model_path=str(d / "eagle_model"),
                                   tokenizer_path=str(d / "tokenizer"), dtype=torch.float32)


def naive_ids(model, ids, n):
    return model.naivegenerate(torch.tensor([ids]), max_new_tokens=n)[0, len(ids):].tolist()


def naive_text(model, ids, n):
    return model.tokenizer.decode(naive_ids(model, ids, n), skip_special_tokens=True)


@pytest.fixture
def generations(server, monkeypatch):
    """How many generations the engine starts: [n]."""
    _, engine = server
    n, real = [0], engine.model.ea_generate

    def counted(*args, **kwargs):
        n[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "ea_generate", counted)
    return n


def sse(client, path, body):
    chunks, done = [], False
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunks.append(json.loads(line[6:]))
    assert done, "stream did not end with [DONE]"
    return chunks


# ---------------------------------------------------------------------------- export

def test_export_writes_the_tutorial_layout(deployment):
    for name in ("base_model", "eagle_model", "tokenizer"):
        assert (deployment / name).is_dir()
    assert (deployment / "eagle_model" / "model.safetensors").is_file()
    assert json.loads((deployment / "config.json").read_text()) == {
        "base_model_path": "./deployment/base_model", "eagle_model_path": "./deployment/eagle_model",
        "tokenizer_path": "./deployment/tokenizer", "max_new_tokens": 512, "temperature": 0.7, "top_p": 0.9,
        "use_eagle3": True}


def test_tutorial_export_snippet(deployment, reference, tmp_path):
    scope = {"EaModel": EaModel, "base_model": str(deployment / "base_model")}
    exec(TUTORIAL_EXPORT, scope)
    scope["export_for_deployment"](str(deployment / "eagle_model"), str(tmp_path / "deployment"))
    again = EaModel.from_pretrained(base_model_path=str(tmp_path / "deployment" / "base_model"),
                                    ea_model_path=str(tmp_path / "deployment" / "eagle_model"),
                                    tokenizer_path=str(tmp_path / "deployment" / "tokenizer"), dtype=torch.float32)
    ids = torch.tensor([again.tokenizer("def add(a, b):").input_ids])
    assert torch.equal(again.eagenerate(ids, max_new_tokens=16), reference.naivegenerate(ids, max_new_tokens=16))


def test_config_errors_name_the_problem(deployment, tmp_path):
    cfg = json.loads((deployment / "config.json").read_text())
    (tmp_path / "typo.json").write_text(json.dumps({**cfg, "temprature": 0.2}))
    with pytest.raises(ConfigError, match="unknown key.*temprature"):
        DeployConfig.load(tmp_path / "typo.json")
    (tmp_path / "moved.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="base_model_path './deployment/base_model' not found; tried"):
        DeployConfig.load(tmp_path / "moved.json").resolve("base_model_path")


# ---------------------------------------------------------------------------- the server

def test_health_and_models(server):
    client, engine = server
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == engine.name == "deployment"


def test_completion_is_the_greedy_text_and_streams_the_same(server, reference):
    client, _ = server
    prompt = "def add(a, b):\n    return"
    ids = reference.tokenizer(prompt).input_ids
    body = {"model": "deployment", "prompt": prompt, "max_tokens": 40, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    text = out["choices"][0]["text"]
    assert text == naive_text(reference, ids, 40)
    assert out["object"] == "text_completion" and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 40, "total_tokens": len(ids) + 40}
    tau = out["eagle"]["tau"]
    assert 1.0 < tau <= reference.tree.depth + 1, "the fitted draft should get paths accepted"

    chunks = sse(client, "/v1/completions", body)
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert len(chunks) > 2 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 40 and chunks[-1]["eagle"]["tau"] == tau


def test_completion_with_a_suffix_fills_in_the_middle(server, reference):
    """OpenAI's insertion (`suffix`): the prompt is the model's own FIM prompt, the answer the
    middle alone, ended by the end-of-middle token; streamed the same."""
    from eagle.data.fim_tokens import detect_fim_sentinels, fim_prompt_ids

    client, _ = server
    tok = reference.tokenizer
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    ids = fim_prompt_ids(tok, prefix, suffix)
    assert ids[-1] == detect_fim_sentinels(tok).middle_id  # the middle sentinel comes last
    new = naive_ids(reference, ids, 32)
    end = detect_fim_sentinels(tok).end_id
    cut = new.index(end) if end in new else None
    body = {"prompt": prefix, "suffix": suffix, "max_tokens": 32, "temperature": 0}
    out = client.post("/v1/completions", json=body).json()
    assert out["choices"][0]["text"] == tok.decode(new[:cut], skip_special_tokens=True)
    assert out["choices"][0]["finish_reason"] == ("length" if cut is None else "stop")
    assert out["usage"]["prompt_tokens"] == len(ids)
    chunks = sse(client, "/v1/completions", body)
    assert "".join(c["choices"][0]["text"] for c in chunks) == out["choices"][0]["text"]
    # an empty prompt is a cursor at the start of the file
    ids = fim_prompt_ids(tok, "", suffix)
    out = client.post("/v1/completions", json={**body, "prompt": ""}).json()
    assert out["usage"]["prompt_tokens"] == len(ids)


def test_a_jobs_own_stop_ids_end_it(server, reference):
    """A FIM request ends at its end-of-middle token, which need not be an EOS id (CodeLlama's
    <EOT>): the engine stops at a job's own stop ids, and counts that token as it counts EOS."""
    from eagle.serve.server import Done, Job

    _, engine = server
    ids = reference.tokenizer("class A:\n").input_ids
    new = naive_ids(reference, ids, 16)
    k = next(i for i in range(1, len(new)) if new[i] not in new[:i] and new[i] not in engine.stop_ids)
    job = Job(prompt_ids=tuple(ids), max_tokens=16, temperature=0.0, top_p=1.0, top_k=0, stop=(), seed=None,
              stop_ids=frozenset([new[k]]))
    done = [ev for ev in engine.run(job) if isinstance(ev, Done)][-1]
    assert done.text == reference.tokenizer.decode(new[:k], skip_special_tokens=True)
    assert (done.finish_reason, done.completion_tokens) == ("stop", k + 1)


def test_suffix_needs_a_fim_model():
    """A tokenizer without FIM sentinels has no format to insert with: a 400 that says so."""
    from types import SimpleNamespace

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from eagle.serve.server import Engine, RequestError

    raw = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                               merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    with pytest.raises(RequestError, match="suffix \\(insertion\\) needs a model trained for fill-in-the-middle"):
        Engine.fim_ids(SimpleNamespace(tok=tok), "x", "y")


def test_chat_completion_uses_the_template(server, reference):
    client, _ = server
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sum a list"}]
    tok = reference.tokenizer
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False).input_ids
    body = {"model": "deployment", "messages": messages, "max_tokens": 24, "temperature": 0}
    out = client.post("/v1/chat/completions", json=body).json()
    msg = out["choices"][0]["message"]
    assert out["object"] == "chat.completion" and msg["role"] == "assistant"
    assert msg["content"] == naive_text(reference, ids, 24)
    assert out["usage"]["prompt_tokens"] == len(ids)
    chunks = sse(client, "/v1/chat/completions", body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == msg["content"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_the_official_openai_client(server, reference):
    """docs/deploy.md's client snippets: the `openai` package parses our answers and streams."""
    from openai import OpenAI

    from eagle.data.fim_tokens import fim_prompt_ids

    client, _ = server
    oa = OpenAI(base_url=str(client.base_url.join("/v1")), api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Sort a list in Python"}]
    tok = reference.tokenizer
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False).input_ids
    r = oa.chat.completions.create(model="deployment", messages=messages, max_tokens=16, temperature=0)
    assert r.choices[0].message.content == naive_text(reference, ids, 16)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    assert 1.0 <= r.model_extra["eagle"]["tau"] <= reference.tree.depth + 1
    stream = oa.completions.create(model="deployment", prompt="def add(a, b):", max_tokens=12, temperature=0,
                                   stream=True)
    text = "".join(c.choices[0].text for c in stream)
    assert text == naive_text(reference, tok("def add(a, b):").input_ids, 12)
    # insertion, with the client's own `suffix` argument
    r = oa.completions.create(model="deployment", prompt="x = ", suffix="\n", max_tokens=12, temperature=0)
    assert r.choices[0].text == naive_text(reference, fim_prompt_ids(tok, "x = ", "\n"), 12)


def test_stop_string_cuts_the_text(server, reference):
    client, _ = server
    prompt = "def add(a, b):\n    return"
    full = naive_text(reference, reference.tokenizer(prompt).input_ids, 40)
    stop = next(full[i:i + 2] for i in range(1, len(full) - 2) if "\ufffd" not in full[i:i + 2])
    body = {"prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": [stop]}
    out = client.post("/v1/completions", json=body).json()
    assert out["choices"][0]["text"] == full[:full.index(stop)]
    assert out["choices"][0]["finish_reason"] == "stop"
    # usage counts the tokens up to the one that completes the stop string, as OpenAI and vLLM do
    ids = naive_ids(reference, reference.tokenizer(prompt).input_ids, 40)
    used = next(k for k in range(1, 41) if stop in reference.tokenizer.decode(ids[:k], skip_special_tokens=True))
    assert out["usage"]["completion_tokens"] == used
    assert "".join(c["choices"][0]["text"] for c in sse(client, "/v1/completions", body)) == full[:full.index(stop)]


def test_requests_are_served_one_at_a_time(server):
    client, _ = server
    body = {"prompt": "class A:\n", "max_tokens": 24, "temperature": 0}
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: client.post("/v1/completions", json=body).json()["choices"][0]["text"],
                              range(3)))
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("path,body,status,needle", [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature must be >= 0"),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, 400, "top_p must be in (0.0, 1.0]"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p must be in (0.0, 1.0]"),
    ("/v1/completions", {"prompt": "x", "temperature": float("nan")}, 400, "temperature must be a finite number"),
    ("/v1/completions", {"prompt": "x", "seed": 2**70}, 400, "seed must be in"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 10**9}, 400, "context holds"),
    ("/v1/completions", {"prompt": [1, 2], "suffix": "y"}, 400, "with a suffix, prompt must be text"),
    ("/v1/completions", {"prompt": "x", "suffix": 5}, 400, "suffix must be a string"),
    ("/v1/completions", {"prompt": "x", "suffix": "y", "echo": True}, 400, "echo and suffix cannot be used together"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     400, "tool calling is not supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_object"}}, 400, "response_format is not supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "must be an object with a role and content"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4o"}, 404, "does not exist"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens must be an integer"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens must be >= 1"),
    ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n must be 1"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "one prompt per request"),
    ("/v1/completions", {"prompt": [1, 99999]}, 400, "outside the vocabulary"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt is required"),
    ("/v1/completions", {"prompt": "a" * 600}, 400, "prompt has 600 tokens"),
    ("/v1/completions", {"prompt": "a" * 600, "stream": True}, 400, "prompt has 600 tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role is 'robot'"),
    ("/v1/chat/completions", {"messages": []}, 400, "non-empty list"),
    ("/v1/completions", {"prompt": "a\ud800b"}, 400, "prompt is not valid Unicode: lone surrogate"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, 400, "not valid Unicode"),
    ("/v1/completions", {"prompt": "x", "echo": "no"}, 400, "echo must be true or false"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream must be true or false"),
])
def test_bad_requests_are_400_with_the_reason(server, generations, path, body, status, needle):
    client, _ = server
    # as a client that escapes non-ASCII sends it (httpx's json= cannot encode a lone surrogate)
    r = client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] in ("invalid_request_error", "model_not_found")
    assert generations[0] == 0, "refused only after generating"


@pytest.mark.parametrize("body,tokens", [
    ({"stop": "", "max_tokens": 5}, 5),  # an empty stop string is no stop string
    ({"n": None, "max_tokens": 4}, 4),  # null is the default
    ({"max_completion_tokens": None, "max_tokens": 3}, 3),  # null does not hide max_tokens
    ({"top_k": -1, "max_tokens": 3}, 3),  # vLLM's "off"
    ({"response_format": {"type": "text"}, "tools": [], "max_tokens": 2}, 2),
])
def test_what_openai_clients_send_is_understood(server, body, tokens):
    client, _ = server
    r = client.post("/v1/completions", json={"prompt": "def f(x):", "temperature": 0, **body})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == tokens


def test_a_seed_repeats_a_sample_and_leaves_other_requests_random(server):
    client, _ = server
    body = {"prompt": "def f(x):", "max_tokens": 16, "temperature": 1.0, "top_p": 1.0, "seed": 7}
    state = torch.random.get_rng_state()  # the server runs in this process
    texts = [client.post("/v1/completions", json=body).json()["choices"][0]["text"] for _ in range(2)]
    assert texts[0] == texts[1]
    assert torch.equal(torch.random.get_rng_state(), state), "a request's seed reseeded the whole process"


def test_include_usage_sends_a_last_usage_chunk(server):
    client, _ = server
    chunks = sse(client, "/v1/completions", {"prompt": "def f(x):", "max_tokens": 6, "temperature": 0,
                                             "stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_a_request_whose_client_left_while_queued_never_runs(server, generations):
    client, engine = server
    engine.lock.acquire()  # another generation holds the engine
    try:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 8, "temperature": 0},
                        timeout=0.5)
        time.sleep(1.5)  # the server looks for its client every 0.5 s
    finally:
        engine.lock.release()
    out = client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 2, "temperature": 0})
    assert out.status_code == 200
    assert generations[0] == 1, "the abandoned request still ran"


def test_body_must_be_json(server):
    client, _ = server
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_serve_command_line(deployment, tmp_path):
    import argparse

    from eagle.serve.server import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser)
    cfg = config_from_args(parser.parse_args(["--config", str(deployment / "config.json"), "--temperature", "0",
                                              "--dtype", "float32"]))
    assert (cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.dtype) == (0.0, 0.9, 512, "float32")
    assert Path(cfg.resolve("eagle_model_path")) == (deployment / "eagle_model").resolve()
    cfg = config_from_args(parser.parse_args(["--basepath", "b", "--ea-model-path", "d", "--max-new-tokens", "64"]))
    assert (cfg.base_model_path, cfg.eagle_model_path, cfg.max_new_tokens, cfg.temperature) == ("b", "d", 64, 0.7)
    for argv in (["--config", "c.json", "--basepath", "b"], ["--basepath", "b"]):
        with pytest.raises(ConfigError):
            config_from_args(parser.parse_args(argv))
    assert eagle_main(["serve", "--config", str(tmp_path / "missing.json")]) == 2


@pytest.mark.slow
def test_eagle_serve_command(deployment, reference):
    """`eagle serve --config` as a user runs it: a separate process on a loopback port."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "eagle", "serve", "--config", str(deployment / "config.json"),
                             "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--device", "cpu",
                             "--log-level", "warning"], cwd=deployment.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"eagle serve exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        out = httpx.post(url + "/v1/completions", json={"prompt": "def f(x):", "max_tokens": 12, "temperature": 0},
                         timeout=60).json()
        assert out["choices"][0]["text"] == naive_text(reference, reference.tokenizer("def f(x):").input_ids, 12)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
