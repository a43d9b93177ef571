"""The training flags, built from TrainConfig's fields: one definition for `main.py` and `eagle train`.

Every field `foo_bar` is `--foo_bar` and `--foo-bar` (the tutorial mixes `--data-format` with
`--deepspeed_config`, so both spellings are accepted for every flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from eagle.train.config import TrainConfig, parse_int_list


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return parse_int_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kw: dict = {"dest": f.name, "help": meta.pop("help", None)}
        if meta.pop("required", False):
            kw["required"] = True
        hint = hints[f.name]
        if hint is bool:
            kw["action"] = "store_true"
        else:
            kw["default"] = f.default
            base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            if f.name == "aux_layers":
                kw["type"] = _int_list
            elif base in (int, float):
                kw["type"] = base
            kw.update(meta)
        if kw.get("default") is not None and "help" in kw and kw["help"] and "default" not in kw["help"]:
            kw["help"] += f" (default: {kw['default']})"
        parser.add_argument(*names, **kw)
    return parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train an EAGLE-3 draft head on a frozen base model.")
    return add_train_args(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def config_to_argv(cfg: TrainConfig) -> list[str]:
    """The command-line flags that reproduce `cfg` (for relaunching a run, e.g. under torchrun)."""
    argv = []
    for k, v in cfg.to_dict().items():
        if v is None or v is False:
            continue
        if v is True:
            argv.append(f"--{k}")
        elif isinstance(v, list):
            argv += [f"--{k}", ",".join(str(i) for i in v)]
        else:
            argv += [f"--{k}", str(v)]
    return argv
