"""The `eagle` command: one entry point, one subcommand per pipeline stage.

Each stage module owns its own arguments through a `register(subparsers)` function, so adding a
stage never touches the others. Modules are imported lazily: `eagle data check` must not pay for
importing torch-heavy training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with `register(subparsers)`, one-line help)
STAGES = {
    "models": ("eagle.zoo", "fetch and list the offline pretrained base models"),
    "data": ("eagle.data.cli", "build, check and split training data (FIM, chat)"),
    "train": ("eagle.train.cli", "train an EAGLE-3 draft head"),
    "generate": ("eagle.model.cli", "generate text with a base model and a draft head"),
    "bench": ("eagle.eval.bench", "benchmark eagle against naive, HF, prompt lookup and assisted decoding"),
    "eval": ("eagle.eval.cli", "evaluate checkpoints, plot curves, analyse errors"),
    "export": ("eagle.serve.export", "export a deployment folder (base, draft, tokenizer, config.json)"),
    "serve": ("eagle.serve.server", "serve an OpenAI-compatible HTTP API"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eagle", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in STAGES else None
    for name, (module, help_text) in STAGES.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if wanted is None and e.name and e.name.startswith("eagle"):
                continue  # stage not built yet: keep `eagle --help` working
            raise
        mod.register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
