"""`eagle train` and the tutorial's `eagle/traineagle3/main.py`: the same flags, the same run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eagle.train.args import add_train_args, build_parser, config_from_args


def register(parser: argparse.ArgumentParser) -> None:
    add_train_args(parser)
    parser.set_defaults(func=run)


def link_log(savedir: str | Path, name: str = "training.log") -> None:
    """The tutorial runs main.py, then `tail -f training.log` in the same folder (5.1.5): point
    ./training.log at <savedir>/training.log. A file of that name that is not our link stays."""
    link, target = Path(name), Path(savedir).resolve() / name
    if os.environ.get("RANK", "0") != "0" or link.resolve() == target:
        return
    try:
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            return
        link.symlink_to(target)
    except OSError:  # a filesystem without links: the log is still in the save folder
        pass


def run(args: argparse.Namespace, log_link: bool = False) -> int:
    from eagle.train.dataset import TrainError
    from eagle.train.trainer import train

    try:
        cfg = config_from_args(args)
        if log_link:
            link_log(cfg.savedir)
        train(cfg)
    except (TrainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None, prog: str = "main.py", log_link: bool = False) -> int:
    return run(build_parser(prog).parse_args(argv), log_link)
