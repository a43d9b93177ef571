"""`eagle serve`: an OpenAI-compatible HTTP server over EAGLE generation.

    eagle serve --config deployment/config.json                 # from `eagle export`
    eagle serve --basepath B --ea-model-path D --port 8000      # or straight from a checkpoint

Endpoints: `POST /v1/completions` (with `suffix`: fill in the middle, in the model's own FIM
format), `POST /v1/chat/completions` (the tokenizer's chat template),
`GET /v1/models`, `GET /health`. Requests take `model`, `max_tokens`, `temperature`, `top_p`,
`top_k`, `stop`, `seed` (this request's own generator), `stream` (server-sent events, one chunk per
base forward), `stream_options`; unset values come from the config (`max_new_tokens`,
`temperature`, `top_p`). Every response carries `usage` and an `eagle` object: `tau` (tokens per
decoding forward of the base, the bonus token counted), `decoding_steps`, `seconds`.

Batch size 1: one worker thread runs one generation at a time (under `Engine.lock`); other
requests wait their turn, and one whose client leaves is stopped (or never started). A bad
parameter, a prompt too long for the context, or a feature this server lacks (tools, penalties,
logprobs ...) is a 400 with the reason, in OpenAI's error shape, before any token is generated.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' `Request` annotation at runtime.
import argparse
import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from eagle.data.records import check_text
from eagle.serve.config import ConfigError, DeployConfig

CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class RequestError(ValueError):
    """A request the server cannot serve; becomes a 400 with this message."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------------------- the engine

@dataclass(frozen=True)
class Job:
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage alone
    stop_ids: frozenset[int] = frozenset()  # ends it besides the model's EOS (a FIM end-of-middle token)


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    text: str  # the whole completion
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    decoding_steps: int  # base forwards after the prefill
    generated: int  # tokens the model produced (a stop string may cut some)
    seconds: float

    @property
    def tau(self) -> float | None:
        return (self.generated - 1) / self.decoding_steps if self.decoding_steps else None

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def stats(self) -> dict:
        return {"tau": self.tau, "decoding_steps": self.decoding_steps, "generated_tokens": self.generated,
                "seconds": round(self.seconds, 4),
                "tokens_per_second": round(self.completion_tokens / self.seconds, 2) if self.seconds > 0 else None}


class Engine:
    """An EaModel and its tokenizer, generating one request at a time."""

    def __init__(self, model, cfg: DeployConfig, name: str):
        from eagle.eval.quality import stop_token_ids

        self.model, self.tok, self.cfg, self.name = model, model.tokenizer, cfg, name
        self.lock = threading.Lock()
        self.stop_ids = stop_token_ids(model)
        base_cfg = getattr(model.base_model.config, "text_config", None) or model.base_model.config
        self.max_length = cfg.max_length or getattr(base_cfg, "max_position_embeddings", None) or 2048
        self.context = model.context_limit(self.max_length)  # prompt + completion tokens a request may hold

    # ---- prompts -------------------------------------------------------------------------------
    def prompt_ids(self, prompt) -> tuple[int, ...]:
        """A completion prompt: a string, a list of one string, token ids, or a list of one id list."""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            if not prompt:
                raise RequestError("prompt is empty", "prompt")
            return tuple(self.tok(_unicode(prompt, "prompt")).input_ids)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = self.model.base_model.get_input_embeddings().weight.shape[0]
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise RequestError(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})", "prompt")
            return tuple(prompt)
        if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
            raise RequestError("one prompt per request: this server generates with batch size 1", "prompt")
        raise RequestError("prompt must be a non-empty string or a list of token ids", "prompt")

    def fim_ids(self, prompt, suffix) -> tuple[tuple[int, ...], int]:
        """A completion with a `suffix` (insertion): the model's FIM prompt for the code before
        (`prompt`) and after (`suffix`) the cursor, and the token that ends the middle."""
        from eagle.data.fim_tokens import detect_fim_sentinels, fim_prompt_ids

        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError("with a suffix, prompt must be text: the code before the insertion point", "prompt")
        if not isinstance(suffix, str):
            raise RequestError("suffix must be a string: the code after the insertion point", "suffix")
        try:
            end = detect_fim_sentinels(self.tok).end_id
        except ValueError as e:  # a tokenizer without FIM sentinels: no format to insert with
            raise RequestError(f"suffix (insertion) needs a model trained for fill-in-the-middle: {e}",
                               "suffix") from None
        return tuple(fim_prompt_ids(self.tok, _unicode(prompt, "prompt"), _unicode(suffix, "suffix"))), end

    def chat_ids(self, messages) -> tuple[int, ...]:
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of {role, content}", "messages")
        msgs = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or ("content" not in m and m["role"] != "assistant"):
                raise RequestError(f"messages[{i}] must be an object with a role and content", "messages")
            role = CHAT_ROLES.get(m["role"]) if isinstance(m["role"], str) else None
            if role is None:
                raise RequestError(f"messages[{i}].role is {m['role']!r}; expected one of {sorted(CHAT_ROLES)}",
                                   "messages")
            msgs.append({"role": role, "content": _content_text(m.get("content"), i)})
        if not getattr(self.tok, "chat_template", None):
            raise RequestError("this model's tokenizer has no chat template; use /v1/completions", "messages")
        try:
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # the template's own checks (e.g. roles must alternate)
            raise RequestError(f"the chat template rejected the messages: {e}", "messages") from None
        return tuple(self.tok(text, add_special_tokens=False).input_ids)

    # ---- generation ------------------------------------------------------------------------------
    def run(self, job: Job, cancelled: threading.Event | None = None) -> Iterator[Delta | Done]:
        """Yield text deltas as the base accepts tokens, then Done. Raises ValueError (bad sampling
        values, a prompt too long) before the first yield."""
        import torch

        with self.lock:
            if cancelled is not None and cancelled.is_set():  # its client left while it waited
                return
            # a seed makes this request's draws repeatable without touching anyone else's
            rng = torch.Generator(self.model.device).manual_seed(job.seed) if job.seed is not None else None
            n = len(job.prompt_ids)
            ids = torch.tensor([job.prompt_ids], dtype=torch.long)
            hold = max((len(s) for s in job.stop), default=1) - 1  # a stop string may still be forming
            gen = self.model.ea_generate(ids, temperature=job.temperature, top_p=job.top_p, top_k=job.top_k,
                                         max_new_tokens=job.max_tokens, max_length=self.max_length, generator=rng)
            start, steps, new, text, sent, finish, generated = time.perf_counter(), 0, [], "", "", "length", 0
            used = 0  # completion tokens as OpenAI counts them: up to the EOS or the stop string, included
            try:
                for out in gen:
                    steps += 1
                    generated = out.shape[1] - n
                    before, new = len(new), out[0, n:].tolist()
                    cut = next((i for i, t in enumerate(new) if t in self.stop_ids or t in job.stop_ids), None)
                    if cut is not None:
                        new, finish = new[:cut], "stop"
                    used = len(new) + (cut is not None)
                    text = self.tok.decode(new, skip_special_tokens=True)
                    hit = _find_stop(text, job.stop)
                    if hit is not None:
                        text, finish = text[:hit], "stop"
                        # the stop string ends within this step's tokens: count up to where it does
                        used = next(k for k in range(max(before, 1), len(new) + 1)
                                    if _find_stop(self.tok.decode(new[:k], skip_special_tokens=True), job.stop)
                                    is not None)
                    if finish == "stop" or (cancelled is not None and cancelled.is_set()):
                        break
                    safe = len(text) - hold
                    while safe > len(sent) and text[safe - 1] == "\ufffd":  # a character still incomplete
                        safe -= 1
                    if safe > len(sent) and text.startswith(sent):
                        yield Delta(text[len(sent):safe])
                        sent = text[:safe]
            finally:
                gen.close()
            if text.startswith(sent) and len(text) > len(sent):  # what was held back
                yield Delta(text[len(sent):])
            yield Done(text, finish, n, used, max(steps - 1, 0), generated, time.perf_counter() - start)


def _content_text(content, i: int) -> str:
    """OpenAI message content: a string, or a list of parts of which only text is supported."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _unicode(content, "messages")
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(_unicode(part["text"], "messages"))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(f"messages[{i}].content: only text parts are supported, got {kind!r}", "messages")
        return "".join(texts)
    raise RequestError(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _unicode(text: str, param: str) -> str:
    try:
        check_text(text, param)
    except ValueError as e:
        raise RequestError(str(e), param) from None
    return text


def _flag(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {value!r}", key)
    return bool(value)


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


# ---------------------------------------------------------------------------- request parsing

INT64 = (-(2**63), 2**63 - 1)


def _number(body: dict, key: str, default, kind=float, low=None, high=None, above=None):
    """body[key] checked: a finite number (an int for kind=int) in [low, high] and > above."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
            or not math.isfinite(value):  # the JSON parser lets NaN and Infinity through
        raise RequestError(f"{key} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}", key)
    if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
        lower = f"({above}" if above is not None else f"[{low}"
        rng = f"in {lower}, {high}]" if high is not None else f"> {above}" if above is not None else f">= {low}"
        raise RequestError(f"{key} must be {rng}, got {value!r}", key)
    return kind(value)


# Request fields that would change the output's meaning if silently ignored.
UNSUPPORTED = {"tools": "tool calling", "functions": "function calling",
               "response_format": "response_format", "best_of": "best_of", "logit_bias": "logit_bias"}


def _unsupported(body: dict) -> None:
    for key, what in UNSUPPORTED.items():
        value = body.get(key)
        harmless = value is None or value in ([], {}, "") or (key == "best_of" and value == 1) \
            or (key == "response_format" and isinstance(value, dict) and value.get("type") == "text")
        if not harmless:
            raise RequestError(f"{what} is not supported by this server", key)
    if body.get("tool_choice") not in (None, "none"):
        raise RequestError("tool calling is not supported by this server", "tool_choice")


def parse_job(body: dict, prompt_ids: tuple[int, ...], cfg: DeployConfig, context: int | None = None,
              stop_ids: frozenset[int] = frozenset()) -> Job:
    """Sampling settings of a request, checked; unset ones from the config. `context`: the most
    prompt + completion tokens the engine holds, so an explicit max_tokens past it is refused."""
    _unsupported(body)
    if body.get("n") not in (None, 1):
        raise RequestError("n must be 1: this server generates one completion per request", "n")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise RequestError(f"{key} is not supported (penalties would change the distribution that speculative "
                               "decoding reproduces)", key)
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        raise RequestError("logprobs are not supported", "logprobs")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, None, int, 1)
    if max_tokens is not None and context is not None and len(prompt_ids) + max_tokens > context:
        raise RequestError(f"this model's context holds {context} tokens; the prompt has {len(prompt_ids)} and "
                           f"{key} asks for {max_tokens} more: lower {key}", key)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stop = tuple(s for s in stop if s)
    else:
        raise RequestError("stop must be a string or a list of up to 4 strings", "stop")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("stream_options must be an object", "stream_options")
    # OpenAI's top_p lies in (0, 1]: 0 would mean "no token" there, and "off" in EAGLE's convention
    # that the library keeps, so a request must say temperature 0 for greedy (as vLLM requires).
    # top_k -1 is vLLM's "off", 0 ours.
    top_k = _number(body, "top_k", 0, int, -1)
    return Job(prompt_ids=prompt_ids, max_tokens=cfg.max_new_tokens if max_tokens is None else max_tokens,
               temperature=_number(body, "temperature", cfg.temperature, float, 0.0),
               top_p=_number(body, "top_p", cfg.top_p, float, high=1.0, above=0.0),
               top_k=max(top_k, 0), stop=stop, seed=_number(body, "seed", None, int, *INT64),
               stream=_flag(body, "stream"), include_usage=_flag(options or {}, "include_usage"), stop_ids=stop_ids)


# ---------------------------------------------------------------------------- the app

def build_app(engine: Engine):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eagle-generate")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="EAGLE-3 OpenAI-compatible server", lifespan=lifespan)
    app.state.engine = engine
    created = int(time.time())

    def error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                                   "param": param, "code": None}})

    async def read_body(request: Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError("the request body must be JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def start(job: Job):
        """Run the job on the worker; an async iterator of its events (exceptions included)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def work():
            try:
                for ev in engine.run(job, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, ev)
            except BaseException as e:  # noqa: BLE001 - handed to the request's coroutine
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker.submit(work)
        return queue, cancelled

    async def next_event(queue: asyncio.Queue, request: Request, cancelled: threading.Event):
        """The worker's next event. A client that has gone while its request waited or generated
        stops it, so that the requests queued behind it are not kept waiting."""
        while True:
            try:
                return await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    cancelled.set()
                    raise ClientGone from None

    async def respond(request: Request, body: dict, prompt_ids: tuple[int, ...], chat: bool, echo_text: str = "",
                      stop_ids: frozenset[int] = frozenset()):
        model = body.get("model")
        if model is not None and model != engine.name:
            return error(404, f"the model {model!r} does not exist; this server serves {engine.name!r}", "model",
                         kind="model_not_found")
        try:  # refused now, not when its turn comes
            engine.model.context_limit(engine.max_length, len(prompt_ids))
        except ValueError as e:
            raise RequestError(str(e), "prompt") from None
        job = parse_job(body, prompt_ids, engine.cfg, engine.context, stop_ids)
        queue, cancelled = start(job)
        first = await next_event(queue, request, cancelled)
        if first is None:  # cancelled before it started: its client has gone
            raise ClientGone
        if isinstance(first, ValueError):  # from EaModel's checks, before any token: the request's fault
            cancelled.set()
            word = str(first).split(" ", 1)[0]
            return error(400, str(first), word if word in ("prompt", "temperature", "top_p", "top_k") else None)
        if isinstance(first, BaseException):
            cancelled.set()
            return error(500, f"generation failed: {type(first).__name__}: {first}", kind="server_error")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": engine.name}

        if not job.stream:
            ev = first
            while not isinstance(ev, Done):
                ev = await next_event(queue, request, cancelled)
                if isinstance(ev, BaseException) or ev is None:
                    return error(500, f"generation failed: {ev!r}", kind="server_error")
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": ev.text},
                          "logprobs": None, "finish_reason": ev.finish_reason}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": echo_text + ev.text, "logprobs": None, "finish_reason": ev.finish_reason}
                obj = "text_completion"
            return JSONResponse({**head, "object": obj, "choices": [choice], "usage": ev.usage(), "eagle": ev.stats()})

        def chunk(text: str | None = None, finish: str | None = None, role: bool = False, **extra) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            return "data: " + json.dumps({**head, "choices": [choice], **extra}) + "\n\n"

        async def events():
            try:
                if chat:
                    yield chunk(role=True)
                elif echo_text:
                    yield chunk(echo_text)
                ev = first
                while ev is not None:
                    if isinstance(ev, Delta) and ev.text:
                        yield chunk(ev.text)
                    elif isinstance(ev, Done):
                        yield chunk(None, ev.finish_reason, usage=ev.usage(), eagle=ev.stats())
                        if job.include_usage:  # OpenAI's form: a last chunk with no choices
                            yield "data: " + json.dumps({**head, "choices": [], "usage": ev.usage()}) + "\n\n"
                    elif isinstance(ev, BaseException):
                        msg = {"error": {"message": f"generation failed: {type(ev).__name__}: {ev}",
                                         "type": "server_error", "param": None, "code": None}}
                        yield "data: " + json.dumps(msg) + "\n\n"
                    ev = await queue.get()
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()  # the client went away: stop generating at the next step

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.exception_handler(RequestError)
    async def on_request_error(_request, exc: RequestError):
        return error(400, str(exc), exc.param)

    @app.exception_handler(ClientGone)
    async def on_client_gone(_request, _exc):
        return error(499, "the client closed the connection", kind="client_closed_request")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "busy": engine.lock.locked()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": created,
                                            "owned_by": "eagle"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        if "prompt" not in body:
            raise RequestError("prompt is required", "prompt")
        if body.get("suffix") not in (None, ""):  # fill in the middle; the answer is the middle alone
            if _flag(body, "echo"):
                raise RequestError("echo and suffix cannot be used together", "echo")
            ids, end = engine.fim_ids(body["prompt"], body["suffix"])
            return await respond(request, body, ids, chat=False, stop_ids=frozenset([end]))
        ids = engine.prompt_ids(body["prompt"])
        echo = ""
        if _flag(body, "echo"):
            echo = body["prompt"] if isinstance(body["prompt"], str) else engine.tok.decode(list(ids))
        return await respond(request, body, ids, chat=False, echo_text=echo)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        if "messages" not in body:
            raise RequestError("messages is required", "messages")
        return await respond(request, body, engine.chat_ids(body["messages"]), chat=True)

    return app


# ---------------------------------------------------------------------------- loading and the CLI

def default_name(cfg: DeployConfig) -> str:
    if cfg.model_name:
        return cfg.model_name
    p = Path(cfg.base_model_path.rstrip("/\\"))
    # `eagle export` names the folder base_model: the deployment folder says more
    return p.parent.name if p.name == "base_model" and p.parent.name not in ("", ".") else p.name or "eagle"


def load_engine(cfg: DeployConfig, device: str | None = None) -> Engine:
    from eagle.model.base import placement, resolve_dtype
    from eagle.model.ea_model import EaModel

    kw = {"dtype": resolve_dtype(cfg.dtype, device)}
    kw.update(placement(device))
    model = EaModel.from_pretrained(base_model_path=cfg.resolve("base_model_path"),
                                    ea_model_path=cfg.resolve("eagle_model_path"), use_eagle3=cfg.use_eagle3,
                                    total_token=cfg.total_token, depth=cfg.depth, top_k=cfg.top_k,
                                    tokenizer_path=cfg.resolve("tokenizer_path"), **kw)
    return Engine(model.eval(), cfg, default_name(cfg))


def config_from_args(args) -> DeployConfig:
    overrides = {k: v for k, v in {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                                   "top_p": args.top_p, "dtype": args.dtype, "total_token": args.total_token,
                                   "depth": args.depth, "top_k": args.tree_top_k, "max_length": args.max_length,
                                   "model_name": args.model_name}.items() if v is not None}
    if args.config:
        if args.basepath or args.ea_model_path:
            raise ConfigError("give either --config or --basepath/--ea-model-path, not both")
        cfg = DeployConfig.load(args.config)
        data = {**cfg.to_dict(), **overrides}
        return DeployConfig.from_dict(data, source=cfg.source)
    if not (args.basepath and args.ea_model_path):
        raise ConfigError("give --config deployment/config.json, or --basepath and --ea-model-path")
    return DeployConfig(base_model_path=args.basepath, eagle_model_path=args.ea_model_path,
                        tokenizer_path=args.tokenizer_path, **overrides)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="deployment config.json written by `eagle export`")
    parser.add_argument("--basepath", default=None, help="base model (instead of --config)")
    parser.add_argument("--ea-model-path", "--ea_model_path", dest="ea_model_path", default=None,
                        help="draft head folder (instead of --config)")
    parser.add_argument("--tokenizer-path", default=None, help="tokenizer folder (default: the base's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=None, help="model id reported by /v1/models")
    parser.add_argument("--dtype", default=None, choices=("auto", "bfloat16", "float16", "float32"),
                        help="base dtype (default: the config's, else bfloat16 where the hardware computes it, "
                             "else float32)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default max_tokens (config: max_new_tokens)")
    parser.add_argument("--temperature", type=float, default=None, help="default temperature")
    parser.add_argument("--top-p", type=float, default=None, help="default top_p")
    parser.add_argument("--max-length", type=int, default=None, help="prompt + completion tokens (default: the model's context)")
    parser.add_argument("--total-token", type=int, default=None, help="tree nodes verified per step")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--tree-top-k", type=int, default=None)
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        cfg = config_from_args(args)
        engine = load_engine(cfg, args.device)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print("error: serving needs fastapi and uvicorn: pip install 'eagle-spec[serve]'", file=sys.stderr)
        return 2
    app = build_app(engine)
    print(f"Serving {engine.name} on http://{args.host}:{args.port}/v1 (one request at a time)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
