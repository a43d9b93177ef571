"""The decoding methods the benchmark puts side by side, each timed the same way on one prompt.

    naive     our `naivegenerate`: one token per base forward, our cache handling
    hf        transformers `generate(do_sample=False)`: what a user already has
    pld       transformers prompt-lookup decoding (`prompt_lookup_num_tokens=10`)
    assisted  transformers assisted generation with a smaller model of the same tokenizer
    eagle     our `eagenerate` with the draft head and tree under test

Every method returns a `Run`: the new token ids, the wall time of the call and the number of
base forwards after the prefill (counted with a forward hook for the transformers methods, so
τ comes cheaply for pld and assisted too).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig

from eagle.eval.workloads import Prompt, Workload
from eagle.model.base import eos_token_ids

METHODS = ("naive", "hf", "pld", "assisted", "eagle")
PLD_TOKENS = 10
# The 1.5B model's assistant: same tokenizer, a third of the size (DESIGN.md §5).
KNOWN_ASSISTANTS = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}


@dataclass
class Run:
    ids: list[int]  # new tokens only
    seconds: float
    steps: int | None  # base forwards after the prefill
    phases: dict | None = None  # eagle: seconds spent drafting, verifying and in between


@dataclass
class Setup:
    """What every method runs on: one EaModel (its base is also the transformers baseline)."""

    model: object  # EaModel
    assistant: object | None = None
    eos: frozenset[int] = field(default_factory=frozenset)

    @property
    def base(self):
        return self.model.base_model


@contextlib.contextmanager
def stop_tokens(setup: Setup, workload: Workload):
    """Make every method stop on the same ids: the model's EOS ids plus the workload's own (FIM's
    end-of-middle). EaModel reads them from the base's generation config, so set them there."""
    gen = setup.base.generation_config
    saved = gen.eos_token_id
    ids = eos_token_ids(setup.base, setup.model.tokenizer) | workload.extra_eos
    gen.eos_token_id = sorted(ids) or None
    setup.eos = frozenset(ids)
    try:
        yield
    finally:
        gen.eos_token_id = saved


@contextlib.contextmanager
def count_calls(module: torch.nn.Module):
    """Counts forward calls of `module` (the base's, not an assistant's): [n]."""
    n = [0]

    def hook(_m, _args):
        n[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield n
    finally:
        handle.remove()


class PhaseClock:
    """Timestamps every base and draft forward during one speculative generation, to split a
    cycle into draft (tree expansion + commit), base verify and the rest (accept, cache, Python).

    The loop runs prefill -> draft(prompt) -> [draft_tree (draft calls) -> verify (base) -> accept
    -> commit (one draft call)]*, so after each verify the first draft call is the commit and the
    time from a commit's end to the next verify's start is the tree expansion."""

    def __init__(self, base: torch.nn.Module, draft: torch.nn.Module):
        self.base, self.draft, self.events, self._handles = base, draft, [], []
        self._cuda = next(base.parameters()).device.type == "cuda"

    def _now(self):
        """Wall time on a CPU. A GPU runs a forward's kernels after the call returns, so there the
        stamp is an event in the stream, read when the run is over: the clock neither waits for
        the kernels (which would slow the timed run) nor misses them."""
        if not self._cuda:
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def __enter__(self):
        for kind, mod in (("base", self.base), ("draft", self.draft)):
            self._handles.append(mod.register_forward_pre_hook(self._start(kind), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._end))
        self.t0 = self._now()
        return self

    def __exit__(self, *exc):
        self.t_end = self._now()
        for h in self._handles:
            h.remove()

    def _start(self, kind):
        def hook(_m, _args, kwargs):
            ids = kwargs.get("input_ids")
            self.events.append([kind, self._now(), None, ids.shape[-1] if ids is not None else None])
        return hook

    def _end(self, _m, _args, _out):
        self.events[-1][2] = self._now()  # draft and base calls never nest

    def _seconds(self) -> tuple[list, float]:
        """The events with their stamps in seconds from the start of the generation, and the end."""
        if not self._cuda:
            return [[k, a - self.t0, b - self.t0, n] for k, a, b, n in self.events], self.t_end - self.t0
        self.t_end.synchronize()
        at = lambda e: self.t0.elapsed_time(e) / 1e3  # noqa: E731 - ms on the GPU's timeline
        return [[k, at(a), at(b), n] for k, a, b, n in self.events], at(self.t_end)

    def phases(self) -> dict | None:
        ev, t_end = self._seconds()
        if len(ev) < 3 or ev[0][0] != "base" or ev[1][0] != "draft":
            return None  # stopped at the first token: no cycle ran
        start, draft_s, verify_s, verify_each, sizes, cycles = ev[1][2], 0.0, 0.0, [], [], 0
        after_verify = False
        for kind, t0, t1, n in ev[2:]:
            if kind == "base":
                draft_s += t0 - start  # tree expansion and mask building
                verify_s += t1 - t0
                verify_each.append(t1 - t0)
                sizes.append(n)
                after_verify, cycles = True, cycles + 1
            elif after_verify:  # the commit of the accepted tokens
                draft_s += t1 - t0
                start, after_verify = t1, False
        decode_s = t_end - ev[1][2]
        # before decoding: the base's prefill, the first token, the draft's pass over the prompt
        prefill_s = ev[1][2]
        return {"draft_s": draft_s, "verify_s": verify_s, "other_s": max(decode_s - draft_s - verify_s, 0.0),
                "decode_s": decode_s, "prefill_s": prefill_s, "cycles": cycles, "verify_each_s": verify_each,
                "tree_sizes": sizes}


# ---------------------------------------------------------------------------- the methods

def _ours(setup: Setup, prompt: Prompt, wl: Workload, speculative: bool, timed_phases: bool) -> Run:
    m = setup.model
    ids = torch.tensor([prompt.input_ids], device=m.device)
    kw = dict(temperature=wl.temperature, top_p=wl.top_p, max_new_tokens=wl.max_new_tokens,
              max_length=ids.shape[1] + wl.max_new_tokens + 1, log=True)
    clock = PhaseClock(m.base_model, m.ea_layer) if speculative and timed_phases else contextlib.nullcontext()
    with clock:
        t = time.perf_counter()
        out, new, steps = (m.eagenerate if speculative else m.naivegenerate)(ids, **kw)
        seconds = time.perf_counter() - t
    phases = clock.phases() if isinstance(clock, PhaseClock) else None
    return Run(out[0, ids.shape[1]:].tolist(), seconds, steps, phases)


def _transformers(setup: Setup, prompt: Prompt, wl: Workload, **extra) -> Run:
    base = setup.base
    ids = torch.tensor([prompt.input_ids], device=base.device)
    pad = base.generation_config.pad_token_id
    pad = pad if pad is not None else min(setup.eos, default=0)
    sampling = dict(do_sample=True, temperature=wl.temperature, top_p=wl.top_p or 1.0, top_k=0) if not wl.greedy \
        else dict(do_sample=False)
    cfg = GenerationConfig(max_new_tokens=wl.max_new_tokens, eos_token_id=sorted(setup.eos) or None,
                           pad_token_id=pad, **sampling, **{k: v for k, v in extra.items() if k != "assistant_model"})
    with count_calls(base) as n:
        t = time.perf_counter()
        out = base.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                            assistant_model=extra.get("assistant_model"))
        seconds = time.perf_counter() - t
    new = out[0, ids.shape[1]:].tolist()
    # the first forward reads the prompt (and, for pld/assisted, already checks candidates)
    return Run(new, seconds, max(n[0] - 1, 0))


def run_method(name: str, setup: Setup, prompt: Prompt, wl: Workload, timed_phases: bool = True) -> Run:
    if name == "naive":
        return _ours(setup, prompt, wl, speculative=False, timed_phases=False)
    if name == "eagle":
        return _ours(setup, prompt, wl, speculative=True, timed_phases=timed_phases)
    if name == "hf":
        return _transformers(setup, prompt, wl)
    if name == "pld":
        return _transformers(setup, prompt, wl, prompt_lookup_num_tokens=PLD_TOKENS)
    if name == "assisted":
        if setup.assistant is None:
            raise ValueError("assisted decoding needs an assistant model (--assistant NAME_OR_PATH)")
        return _transformers(setup, prompt, wl, assistant_model=setup.assistant)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def known_assistant(basepath: str) -> str | None:
    """The zoo assistant for a zoo base, by name or by its cached folder's name."""
    from pathlib import Path

    key = str(basepath).lower().rstrip("/")
    for base, assistant in KNOWN_ASSISTANTS.items():
        if key == base or Path(key).name in (base, f"{base}-float32", f"{base}-float16"):
            return assistant
    return None
