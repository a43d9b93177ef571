"""Widen a trained head's MLP without changing what it drafts, to test whether width limits it.

The new units get fresh gate/up rows and zero down_proj columns, so the wider head computes the
same function as the narrow one (checked here on random inputs) and training grows them from there:

    python scripts/widen_head.py runs/large-regen/ckpt/state_0 runs/cap/wide-init --intermediate-size 4864
    eagle train ... --draft_intermediate_size 4864 --init_from runs/cap/wide-init

The Dec 7 answer (benchmarks/README.md): 2432 -> 4864 leaves chat τ and accuracy where they were.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from eagle.model.checkpoint import load_draft, save_draft
from eagle.model.draft import Eagle3Draft


def widen(narrow: Eagle3Draft, width: int) -> Eagle3Draft:
    old = narrow.config.intermediate_size
    if width <= old:
        raise SystemExit(f"--intermediate-size {width} must exceed the head's {old}")
    with torch.random.fork_rng():  # the same fresh units every time, and the caller's RNG untouched
        torch.manual_seed(0)
        wide = Eagle3Draft(dataclasses.replace(narrow.config, intermediate_size=width)).to(torch.float32)
    state = wide.state_dict()
    for name, tensor in narrow.state_dict().items():
        tensor = tensor.to(state[name].dtype) if tensor.is_floating_point() else tensor
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            state[name][:old] = tensor  # rows past `old` keep their fresh init
        elif name.endswith("down_proj.weight"):
            state[name][:, :old] = tensor
            state[name][:, old:] = 0  # the new units add nothing until trained
        else:
            state[name] = tensor
    wide.load_state_dict(state)
    return wide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="a head folder (config.json + model.safetensors)")
    ap.add_argument("dst", help="where to write the wider head")
    ap.add_argument("--intermediate-size", type=int, required=True, help="the new MLP width")
    args = ap.parse_args()
    narrow = load_draft(args.src, dtype=torch.float32)  # written back in float32: a start for training
    wide = widen(narrow, args.intermediate_size)
    cfg, seq = narrow.config, 8
    hidden = torch.randn(1, seq, 3 * cfg.target_hidden_size)
    embeds, pos = torch.randn(1, seq, cfg.hidden_size), torch.arange(seq)[None]
    with torch.no_grad():
        diff = (narrow(hidden, embeds, pos).hidden - wide(hidden, embeds, pos).hidden).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"the wider head computes something else (max diff {diff:.2e})")
    save_draft(wide, args.dst)
    print(f"{args.dst}: MLP {cfg.intermediate_size} -> {args.intermediate_size}, same outputs (max diff {diff:.1e})")


if __name__ == "__main__":
    main()
