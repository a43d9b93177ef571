"""The deployment `config.json` of tutorial step 5.4.3, read and written.

    {
        "base_model_path": "./deployment/base_model",
        "eagle_model_path": "./deployment/eagle_model",
        "tokenizer_path": "./deployment/tokenizer",
        "max_new_tokens": 512,
        "temperature": 0.7,
        "top_p": 0.9,
        "use_eagle3": true
    }

`eagle export` writes exactly these keys. The server also takes a few optional ones (`dtype`,
`total_token`, `depth`, `top_k`, `max_length`, `model_name`); any other key is an error, so a
typo does not silently fall back to a default.

A relative path is looked up, in order, against the current folder (the tutorial writes paths as
seen from where it ran the export), the config file's folder, and that folder's parent (the
tutorial's config sits inside `deployment/` and names `./deployment/...`): the same file then works
from any working directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

TUTORIAL_KEYS = ("base_model_path", "eagle_model_path", "tokenizer_path", "max_new_tokens", "temperature",
                 "top_p", "use_eagle3")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class ConfigError(ValueError):
    """A deployment config that cannot be used; the message names the file and the key."""


@dataclass
class DeployConfig:
    base_model_path: str
    eagle_model_path: str
    tokenizer_path: str | None = None  # default: the base model's folder
    max_new_tokens: int = 512  # default max_tokens of a request
    temperature: float = 0.7  # default temperature of a request (0 = greedy)
    top_p: float = 0.9  # default top_p of a request
    use_eagle3: bool = True
    # optional server settings (not in the tutorial's file)
    dtype: str | None = None  # base dtype; None: the hardware's fastest (eagle.model.base.fast_dtype)
    total_token: int | None = None  # tree settings; None: the device's and dtype's defaults
    depth: int | None = None
    top_k: int | None = None
    max_length: int | None = None  # prompt + completion tokens; None: the model's context
    model_name: str | None = None  # the id in /v1/models; None: from the folder names
    source: Path | None = field(default=None, repr=False, compare=False)  # the file it was read from

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        where = f"{self.source}: " if self.source else ""

        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ConfigError(f"{where}{key!r} must be {what}, got {getattr(self, key)!r}")

        for key in ("base_model_path", "eagle_model_path"):
            need(isinstance(getattr(self, key), str) and getattr(self, key), key, "a non-empty path")
        need(self.tokenizer_path is None or isinstance(self.tokenizer_path, str), "tokenizer_path", "a path")
        need(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens", "an int >= 1")
        need(_is_num(self.temperature) and self.temperature >= 0, "temperature", "a number >= 0")
        need(_is_num(self.top_p) and 0 <= self.top_p <= 1, "top_p", "a number in [0, 1]")
        need(self.use_eagle3 is True, "use_eagle3", "true (only EAGLE-3 draft heads are served)")
        need(self.dtype is None or self.dtype in DTYPES, "dtype", f"one of {DTYPES}")
        for key in ("total_token", "depth", "top_k", "max_length"):
            need(getattr(self, key) is None or (_is_int(getattr(self, key)) and getattr(self, key) >= 1), key,
                 "an int >= 1")
        need(self.model_name is None or isinstance(self.model_name, str), "model_name", "a string")

    # ---- files -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeployConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"deployment config not found: {path} (write one with `eagle export`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: bad JSON: {e.msg} (line {e.lineno})") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict, source: Path | None = None) -> "DeployConfig":
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}the config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}unknown key(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("base_model_path", "eagle_model_path") if k not in data]
        if missing:
            raise ConfigError(f"{where}missing key(s) {missing}")
        return cls(**data, source=source)

    def to_dict(self) -> dict:
        """The tutorial's keys, then any optional key that is set."""
        d = {k: getattr(self, k) for k in TUTORIAL_KEYS}
        for f in dataclasses.fields(self):
            if f.name not in d and f.name != "source" and getattr(self, f.name) is not None:
                d[f.name] = getattr(self, f.name)
        return d

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=4) + "\n")
        return path

    # ---- paths -------------------------------------------------------------------------------
    def resolve(self, key: str) -> str | None:
        """The path under `key`, found as the module docstring says. A name that is not a path
        (a hub id, a zoo name) is returned as it is."""
        value = getattr(self, key)
        if value is None:
            return None
        p = Path(value).expanduser()
        if p.is_absolute():
            if not p.exists():
                raise ConfigError(f"{self.source or 'config'}: {key} {value!r} does not exist")
            return str(p)
        tried = [Path.cwd() / p]
        if self.source is not None:
            here = self.source.resolve().parent
            tried += [here / p, here.parent / p]
        for candidate in tried:
            if candidate.exists():
                return str(candidate.resolve())
        if value.startswith(("./", "../", ".\\", "..\\")) or len(p.parts) > 2:
            raise ConfigError(f"{self.source or 'config'}: {key} {value!r} not found; tried "
                              + ", ".join(str(t) for t in dict.fromkeys(tried)))
        return value  # e.g. "qwen2.5-coder-0.5b" or "Qwen/Qwen2.5-Coder-0.5B-Instruct"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def relative_path(folder: str | os.PathLike, name: str) -> str:
    """`folder/name` written the tutorial's way: './deployment/base_model' for a relative folder."""
    p = (Path(folder) / name).as_posix()
    if Path(folder).is_absolute() or p.startswith(("./", "../")):
        return p
    return "./" + p
