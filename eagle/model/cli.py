"""`eagle generate`: stream a completion from a base model with its draft head."""

from __future__ import annotations

import itertools
import sys
import time


def register(parser) -> None:
    parser.add_argument("--basepath", required=True, help="base model: folder, hub id, .gguf file or zoo name")
    parser.add_argument("--ea-model-path", "--ea_model_path", dest="ea_model_path", required=True,
                        help="draft head folder (config.json + model.safetensors)")
    parser.add_argument("--prompt", required=True, help="text, or @FILE to read it from a file")
    parser.add_argument("--suffix", default=None,
                        help="fill in the middle: the code after the cursor (text, or @FILE), with --prompt the "
                             "code before it; written in the model's own FIM format, and the middle alone is printed")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt with the tokenizer's chat template")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="base dtype (default: bfloat16 where the hardware computes it, "
                             "GPUs and CPUs with AVX512-BF16/AMX, else float32)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="prompt + completion tokens at most (default: the model's context)")
    parser.add_argument("--total-token", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--tree-top-k", type=int)
    parser.add_argument("--naive", action="store_true", help="plain decoding (one token per forward), for comparison")
    parser.set_defaults(func=run)


def run(args) -> int:
    try:  # the user's input (flags, files, models, prompt length): one line, not a traceback
        tok, ids, stream, stop_ids = _start(args)
        start = time.perf_counter()
        first = next(stream, None)  # its first step checks the prompt against the context
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shown, steps, new = "", 0, []
    for out in itertools.chain([first] if first is not None else [], stream):
        new = out[0, ids.shape[1]:].tolist()
        cut = next((i for i, t in enumerate(new) if t in stop_ids), None)  # the end of a FIM middle
        text = tok.decode(new[:cut], skip_special_tokens=True)
        sys.stdout.write(text[len(shown):])
        sys.stdout.flush()
        shown, steps = text, steps + 1
        if cut is not None:
            new = new[:cut + 1]
            break
    stream.close()
    secs, n = time.perf_counter() - start, len(new)
    print(f"\n[{n} tokens in {secs:.2f}s, {n / secs:.1f} tok/s, {n / max(steps, 1):.2f} tokens per base forward]",
          file=sys.stderr)
    return 0


def _read(flag: str, value: str) -> str:
    """A text flag's value, or the contents of the file it names as @FILE."""
    if not value.startswith("@"):
        return value
    try:
        return open(value[1:], encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {value}: cannot read the file ({e})") from None


def _start(args):
    """Check the flags, load and tokenize: the tokenizer, the prompt ids, the (unstarted) stream and
    the token ids that end it besides the model's EOS."""
    import torch

    from eagle.model.base import placement, resolve_dtype
    from eagle.model.ea_model import EaModel
    from eagle.model.sampling import SamplingParams

    prompt = _read("--prompt", args.prompt)
    suffix = None if args.suffix is None else _read("--suffix", args.suffix)
    if suffix is not None and args.chat:
        raise ValueError("--suffix (fill in the middle) and --chat cannot be used together")
    if not prompt and not suffix:  # with a suffix, an empty prompt is a cursor at the file's start
        raise ValueError("--prompt is empty")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.max_length is not None and args.max_length < 1:
        raise ValueError(f"--max-length must be >= 1, got {args.max_length}")
    SamplingParams(args.temperature, args.top_p, args.top_k)  # bad values fail before the model loads
    model = EaModel.from_pretrained(base_model_path=args.basepath, ea_model_path=args.ea_model_path,
                                    total_token=args.total_token, depth=args.depth, top_k=args.tree_top_k,
                                    dtype=resolve_dtype(args.dtype, args.device), **placement(args.device))
    tok, stop_ids = model.tokenizer, frozenset()
    if suffix is not None:
        from eagle.data.fim_tokens import detect_fim_sentinels, fim_prompt_ids

        stop_ids = frozenset([detect_fim_sentinels(tok).end_id])  # ValueError names the families tried
        ids = torch.tensor([fim_prompt_ids(tok, prompt, suffix)])
    else:
        if args.chat:
            prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=not args.chat).input_ids
    gen = model.naive_generate if args.naive else model.ea_generate
    return tok, ids, gen(ids, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                         max_new_tokens=args.max_new_tokens, max_length=args.max_length or sys.maxsize), stop_ids
