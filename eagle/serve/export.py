"""`eagle export`: a deployment folder (tutorial step 5.4.3).

    eagle export --basepath qwen2.5-coder-0.5b --ea-model-path checkpoints/state_39 -o deployment/

writes

    deployment/base_model/    the base, `save_pretrained` (plain safetensors; a GGUF-loaded base is
                              saved dequantised), with its tokenizer beside it for vLLM / SGLang
    deployment/eagle_model/   the draft head in the engines' EAGLE-3 format (config.json, model.safetensors)
    deployment/tokenizer/     the tokenizer
    deployment/config.json    the tutorial's deployment config; `eagle serve --config` starts from it

The tutorial's own `export_for_deployment` works as written (it uses only `EaModel`); this one
also writes the config.json, takes the base model as an argument (or from the checkpoint's
`train_config.json`), and checks the folder loads back before saying it is done.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from eagle.model.checkpoint import share_permissions
from eagle.serve.config import DeployConfig, relative_path


def _plain_weights(base) -> None:
    """transformers refuses `save_pretrained` on a GGUF-loaded model, whose weights are already
    dequantised; drop the quantizer so they are written as the plain tensors they are."""
    if getattr(base, "hf_quantizer", None) is not None:
        quant = getattr(base.config, "quantization_config", None)
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
        method = str(getattr(method, "value", method)).lower()
        if "gguf" not in method:
            raise ValueError(f"the base is quantised ({method}); export it from unquantised weights")
        base.hf_quantizer = None
    if hasattr(base.config, "quantization_config"):
        del base.config.quantization_config


def _base_from_checkpoint(checkpoint_path: str | Path) -> str | None:
    f = Path(checkpoint_path) / "train_config.json"
    if f.is_file():
        try:
            return json.loads(f.read_text()).get("basepath")
        except json.JSONDecodeError:
            return None
    return None


def export_for_deployment(checkpoint_path: str | Path, output_dir: str | Path, base_model: str | None = None,
                          *, model=None, dtype="auto", temperature: float = 0.7, top_p: float = 0.9,
                          max_new_tokens: int = 512, verify: bool = True) -> Path:
    """Export base, draft and tokenizer of `checkpoint_path` to `output_dir`; returns the config path.

    `base_model` defaults to the training run's basepath (state_N/train_config.json). Pass a loaded
    `model` (EaModel) to skip loading."""
    from eagle.model.ea_model import EaModel

    output_dir = Path(output_dir)
    if model is None:
        base_model = base_model or _base_from_checkpoint(checkpoint_path)
        if not base_model:
            raise ValueError(f"which base model? {checkpoint_path} has no train_config.json naming one; pass --basepath")
        model = EaModel.from_pretrained(base_model_path=str(base_model), ea_model_path=str(checkpoint_path),
                                        use_eagle3=True, dtype=dtype)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in ("base_model", "eagle_model", "tokenizer"):
        shutil.rmtree(output_dir / name, ignore_errors=True)  # no stale shards from an earlier export

    _plain_weights(model.base_model)
    model.base_model.save_pretrained(output_dir / "base_model")
    model.ea_model.save_pretrained(output_dir / "eagle_model")
    model.tokenizer.save_pretrained(output_dir / "tokenizer")
    model.tokenizer.save_pretrained(output_dir / "base_model")

    cfg = DeployConfig(base_model_path=relative_path(output_dir, "base_model"),
                       eagle_model_path=relative_path(output_dir, "eagle_model"),
                       tokenizer_path=relative_path(output_dir, "tokenizer"),
                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, use_eagle3=True)
    path = cfg.save(output_dir / "config.json")
    for name in ("base_model", "eagle_model", "tokenizer", "config.json"):  # only what the export wrote
        share_permissions(output_dir / name)  # the engines' server may run as another user
    if verify:
        _verify(path)
    print(f"✓ Exported to {output_dir}")
    return path


def _verify(config_path: Path) -> None:
    """The exported draft must load and match the exported base (vocabulary, hidden size, depths)."""
    from eagle.model.checkpoint import check_compatible, load_draft
    from transformers import AutoConfig

    cfg = DeployConfig.load(config_path)
    draft = load_draft(cfg.resolve("eagle_model_path"))
    check_compatible(draft.config, AutoConfig.from_pretrained(cfg.resolve("base_model_path")),
                     source=cfg.resolve("eagle_model_path"))


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--basepath", default=None,
                        help="base model: HF folder, hub id, .gguf file or zoo name (default: the run's, "
                             "from the checkpoint's train_config.json)")
    parser.add_argument("--ea-model-path", "--ea_model_path", dest="ea_model_path", required=True,
                        help="draft checkpoint folder, e.g. checkpoints/state_39")
    parser.add_argument("-o", "--output", default="deployment", help="deployment folder (default: ./deployment)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                        help="dtype of the exported base (auto: as stored)")
    parser.add_argument("--temperature", type=float, default=0.7, help="config.json default temperature")
    parser.add_argument("--top-p", type=float, default=0.9, help="config.json default top_p")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="config.json default max_new_tokens")
    parser.set_defaults(func=main)


def main(args) -> int:
    import torch

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    try:
        path = export_for_deployment(args.ea_model_path, args.output, args.basepath, dtype=dtype,
                                     temperature=args.temperature, top_p=args.top_p,
                                     max_new_tokens=args.max_new_tokens)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Serve it with: eagle serve --config {path}")
    return 0
