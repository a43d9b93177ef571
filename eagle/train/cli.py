"""`eagle train` and the tutorial's `eagle/traineagle3/main.py`: the same flags, the same run."""

from __future__ import annotations

import argparse
import sys

from eagle.train.args import add_train_args, build_parser, config_from_args


def register(parser: argparse.ArgumentParser) -> None:
    add_train_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eagle.train.dataset import TrainError
    from eagle.train.trainer import train

    try:
        cfg = config_from_args(args)
        train(cfg)
    except (TrainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None, prog: str = "main.py") -> int:
    return run(build_parser(prog).parse_args(argv))
