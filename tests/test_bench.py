"""`eagle bench` end to end on a tiny model built here: shape of the results, exactness, τ.

No timing is asserted: only that the figures exist, are finite and mean what they say.
"""

import json
import math
import re

import pytest
import torch

from eagle.eval import report
from eagle.eval.tune import forward_times, suggest_tree
from eagle.eval.workloads import WorkloadError, build_workload, find_data_dir
from tiny import fit_draft

CODE_Q = ["Complete the code I provided.\n\ndef add(a, b):\n", "Complete the code I provided.\n\ndef is_even(n):\n",
          "Complete the code I provided.\n\ndef fib(n):\n"]
CHAT_Q = ["Write a haiku about the sea.", "What is a hash table?", "Name three prime numbers."]
SOURCE = '''import os


def walk(top):
    """Yield every file under top."""
    for root, dirs, files in os.walk(top):
        for name in files:
            yield os.path.join(root, name)


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        if k < 0:
            raise ValueError("negative")
        self.n += k
        return self.n
'''
TREE = ["--total-token", "8", "--depth", "3", "--top-k", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from eagle.model.checkpoint import save_draft
    from eagle.train.tiny import tiny_base, tiny_tokenizer

    root = tmp_path_factory.mktemp("bench")
    tok = tiny_tokenizer()
    base = tiny_base(vocab=264)
    with torch.no_grad():  # near-bigram base: the fitted draft gets multi-token paths accepted
        for name, p in base.named_parameters():
            if re.search(r"\.layers\.\d+\.", name) and p.dim() == 2:
                p.mul_(0.1)
    base.config.eos_token_id = base.generation_config.eos_token_id = tok.eos_token_id
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    save_draft(fit_draft(base), root / "draft")
    (root / "draft" / "metrics.json").write_text(json.dumps({"acc": [0.5], "loss": [1.0]}))
    data = root / "data"
    data.mkdir()
    for fname, qs in (("humaneval.jsonl", CODE_Q), ("mt_bench.jsonl", CHAT_Q)):
        lines = [json.dumps({"question_id": i, "turns": [q]}) + "\n" for i, q in enumerate(qs)]
        (data / fname).write_text("".join(lines))
    src = root / "src"
    src.mkdir()
    (src / "walker.py").write_text(SOURCE)
    (src / "other.py").write_text(SOURCE.replace("walk", "scan"))
    return root, tok


def _bench(root, *extra, dtype="float32"):
    from eagle.cli import main

    out = root / "out.json"
    rc = main(["bench", "--basepath", str(root / "base"), "--ea-model-path", str(root / "draft"),
               *(["--dtype", dtype] if dtype else []), "--threads", "1", "--num-prompts", "2", "--max-new-tokens", "12",
               "--data-dir", str(root / "data"), "--fim-source", str(root / "src"), "--fim-split", "all",
               "--repeats", "1", "--out", str(out), *TREE, *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_bench_end_to_end(files, capsys):
    root, tok = files
    res = _bench(root, "--assistant", str(root / "base"), "--tune", "--tune-context", "16", "--lookup", "4",
                 "--min-prob", "0")
    assert res["tree"] == {"total_token": 8, "depth": 3, "top_k": 2, "lookup": 4,  # --total-token beats --tune
                           "expand_threshold": 0.2, "min_prob": 0.0}  # the CPU's expand threshold
    assert res["dtype"] == "float32" and res["threads"] == 1 and res["draft"]["metrics"]["acc"] == [0.5]
    assert res["draft"]["head"]["aux_layers"] and res["draft"]["head"]["intermediate_size"] > 0
    assert set(res["workloads"]) == {"code", "chat", "fim", "sample"}
    assert res["peak_rss_mb"] > 0 and res["tune"]["table"][0]["tokens"] == 1
    for w in ("code", "chat", "fim"):
        methods = res["workloads"][w]
        assert set(methods) == {"naive", "hf", "pld", "assisted", "eagle"}
        for m, f in methods.items():
            assert f["prompts"] == 2 and f["tokens"] > 0
            for key in ("tok_per_s", "speedup", "speedup_vs_hf"):
                assert f[key] > 0 and math.isfinite(f[key]), (w, m, key)
        assert methods["naive"]["speedup"] == pytest.approx(1.0)
        assert methods["hf"]["speedup_vs_hf"] == pytest.approx(1.0)
        assert methods["naive"]["tau"] == pytest.approx(1.0) and methods["hf"]["tau"] == pytest.approx(1.0)
        e = methods["eagle"]
        assert e["identical_share"] == 1.0 and e["first_divergence"] == []  # fp32 greedy: exact
        assert 1.0 <= e["tau"] <= max(3, 4) + 1  # the longest draft: depth 3, or the 4-token lookup branch
        assert e["tree_tokens"] >= 8  # every one of total_token (min_prob 0), and the lookup branch
        for key in ("ceiling", "efficiency", "draft_time_share", "prefill_time_share", "one_token_ms",
                    "tree_verify_ms"):
            assert e[key] > 0 and math.isfinite(e[key]), key
        assert 0 < e["draft_time_share"] < 1 and 0 < e["prefill_time_share"] < 1
        # τ is the per-prompt new tokens (less the prefill's) over the decoding steps
        pp = e["per_prompt"]
        assert e["tau"] == pytest.approx(sum(p["new_tokens"] - 1 for p in pp) / sum(p["steps"] for p in pp))
    sample = res["workloads"]["sample"]  # sampling: speed and τ; outputs differ by design, so no identical share
    assert set(sample) == {"naive", "hf", "eagle"} and sample["eagle"]["tau"] >= 1
    assert sample["naive"]["speedup"] == pytest.approx(1.0) and sample["eagle"]["speedup"] > 0
    assert "identical_share" not in sample["eagle"]
    printed = capsys.readouterr().out
    assert "vs naive" in printed and "<- total_token" in printed


@pytest.mark.parametrize("native", [True, False])
def test_dtype_defaults_to_the_hardwares(files, monkeypatch, native):
    """Without --dtype: bf16 where the CPU computes it (AMX, AVX512-BF16), else float32, which verifies a
    tree several times faster there; the JSON names the dtype that ran."""
    import eagle.model.base

    monkeypatch.setattr(eagle.model.base, "cpu_has_native_bf16", lambda: native)
    res = _bench(files[0], "--workloads", "code", "--methods", "naive,eagle", dtype=None)
    assert res["dtype"] == ("bfloat16" if native else "float32")
    assert res["workloads"]["code"]["eagle"]["tokens"] > 0


@pytest.mark.parametrize("lookup", [0, 4])
def test_tau_matches_an_independent_count(files, lookup):
    """Re-run the eagle generations with the streaming API, counting base forwards ourselves."""
    from eagle.model.ea_model import EaModel
    from eagle.model.tree import TreeConfig

    root, tok = files
    res = _bench(root, "--workloads", "code,fim", "--methods", "naive,eagle", "--lookup", str(lookup))
    model = EaModel.from_pretrained(str(root / "base"), str(root / "draft"), dtype=torch.float32)
    model.tree = TreeConfig(total_token=8, depth=3, top_k=2, lookup=lookup)
    for w in ("code", "fim"):
        wl = build_workload(w, tok, 2, 12, root / "data", root / "src", "all")
        new = steps = 0
        for p, rec in zip(wl.prompts, res["workloads"][w]["eagle"]["per_prompt"]):
            ids = torch.tensor([p.input_ids])
            yields = list(model.ea_generate(ids, max_new_tokens=12, max_length=ids.shape[1] + 13))
            n_new = yields[-1].shape[1] - ids.shape[1]
            assert (rec["new_tokens"], rec["steps"]) == (n_new, len(yields) - 1)
            new, steps = new + n_new - 1, steps + len(yields) - 1
        assert res["workloads"][w]["eagle"]["tau"] == pytest.approx(new / steps)


def test_fim_prompts_use_the_model_sentinels(files):
    root, tok = files
    wl = build_workload("fim", tok, 5, None, None, root / "src", "all")
    assert wl.max_new_tokens == 128 and len(wl.prompts) == 2  # one record per short file
    pre, suf, mid = (tok.convert_tokens_to_ids(t) for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    for p in wl.prompts:
        assert p.input_ids[0] == pre and p.input_ids[-1] == mid and suf in p.input_ids
    assert tok.eos_token_id in wl.extra_eos


def test_stdlib_fim_workload_uses_only_heldout_files(files):
    from eagle.data.fim_source import is_heldout

    _, tok = files
    wl = build_workload("fim", tok, 4)
    assert len(wl.prompts) == 4
    assert all(is_heldout(p.id.rsplit(":", 1)[0]) for p in wl.prompts)


def test_data_dir_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("EAGLE_EVAL_DATA", str(tmp_path))
    with pytest.raises(WorkloadError, match="--data-dir"):
        find_data_dir()
    (tmp_path / "humaneval.jsonl").write_text('{"question_id": 1, "turns": ["hi"]}\n')
    assert find_data_dir() == tmp_path


def test_suggest_tree_rule():
    bf16 = {1: 91, 2: 94, 4: 102, 8: 101, 16: 107, 32: 120, 64: 152}  # DESIGN.md §5, ms
    fp32 = {1: 110, 2: 119, 4: 201, 8: 242, 16: 244, 32: 284, 64: 425}
    s = suggest_tree(None, times={k: v / 1e3 for k, v in bf16.items()}, gain=0.5)
    assert s.total_token == 32 and len(s.table) == 7 and "<- total_token" in s.format()
    assert suggest_tree(None, times={k: v / 1e3 for k, v in fp32.items()}, gain=0.5).total_token == 2
    flat = suggest_tree(None, times={1: 1.0, 2: 3.0, 4: 9.0}, gain=0.5)
    assert flat.note  # nothing pays: say so


def test_forward_times_and_tutorial_benchmark(files, capsys):
    from eagle.eval import benchmark_speed
    from eagle.model.ea_model import EaModel

    root, tok = files
    model = EaModel.from_pretrained(str(root / "base"), str(root / "draft"), total_token=8, depth=3, top_k=2,
                                    dtype=torch.float32)
    t = forward_times(model.base_model, context=20, sizes=(1, 4), repeats=2)
    assert set(t) == {1, 4} and all(v > 0 for v in t.values())
    speedup = benchmark_speed(model, tok, "def add(a, b):", max_tokens=10)
    out = capsys.readouterr().out
    assert speedup > 0 and re.search(r"EAGLE: \d+ tokens in", out) and "Baseline:" in out and "Speedup:" in out


def test_first_divergence():
    assert report.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert report.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert report.first_divergence([1, 2], [1, 2, 3]) == 2


def test_phase_clock_splits_a_generation():
    """The phase accounting on a known timeline: prefill (base prefill and the draft's pass over the
    prompt), then per cycle the tree expansion up to the verify, the verify, and the commit."""
    from eagle.eval.methods import PhaseClock

    clock = PhaseClock(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
    clock.t0, clock.t_end = 10.0, 12.9
    clock.events = [[k, 10 + a, 10 + b, n] for k, a, b, n in (
        ("base", 0.0, 1.0, 30), ("draft", 1.0, 1.2, None),  # prefill, the draft over the prompt
        ("draft", 1.25, 1.3, None), ("base", 1.35, 2.0, 5),  # an expansion call, the verify of 5 nodes
        ("draft", 2.05, 2.1, None), ("draft", 2.1, 2.15, None), ("base", 2.2, 2.8, 7))]  # commit, expansion, verify
    p = clock.phases()
    assert p["prefill_s"] == pytest.approx(1.2) and p["decode_s"] == pytest.approx(1.7)
    assert p["draft_s"] == pytest.approx(0.15 + 0.05 + 0.10)  # to the first verify; the commit; to the second
    assert p["verify_s"] == pytest.approx(0.65 + 0.6) and p["other_s"] == pytest.approx(0.15)
    assert p["cycles"] == 2 and p["tree_sizes"] == [5, 7]
    f = {"tau": 2.0, "speedup": 1.5}
    report.eagle_figures(f, [type("Run", (), {"phases": p})()], 0.1, 0.12, 40, 6)
    assert f["prefill_time_share"] == pytest.approx(1.2 / 2.9) and f["draft_time_share"] == pytest.approx(0.3 / 1.7)
