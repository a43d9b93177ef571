"""FIM rendering with the model family's own sentinel tokens, for training and for prompts.

PSM order is ``<pre>{prefix}<suf>{suffix}<mid>`` and the model writes the middle after the
middle sentinel, then its end-of-middle token. SPM puts the suffix first:
``<pre><suf>{suffix}<mid>{prefix}`` then the middle (the variant of Bavarian et al. 2022 that
StarCoder trains, which keeps one token order for both modes).

The tutorial's prompt ``<fim_prefix>{prefix}<fim_middle><fim_suffix>{suffix}`` is wrong: after
it the model would continue the *suffix*. The middle sentinel must come last.

Segments are tokenized apart, with special-token strings inside code read as plain text, and
joined with the sentinel ids: the ids are the same as tokenizing the prompt string, but a file
that happens to contain ``<|endoftext|>`` cannot inject a control token.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sample import Sample


@dataclass(frozen=True)
class FimFamily:
    name: str
    prefix: str
    suffix: str
    middle: str
    ends: tuple[str, ...]  # what the model emits after a middle, first found wins


# Order matters: CodeGemma shares Qwen's sentinel names but ends middles with <|file_separator|>.
FAMILIES = (
    FimFamily("codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|file_separator|>",)),
    FimFamily("qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|endoftext|>",)),
    FimFamily("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<|endoftext|>",)),
    FimFamily("codellama", "<PRE>", "<SUF>", "<MID>", ("<EOT>",)),
    FimFamily("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ("<｜end▁of▁sentence｜>",)),
)


@dataclass(frozen=True)
class FimSentinels:
    """The FIM tokens of one tokenizer: names for prompt strings, ids for training."""

    family: str
    prefix: str
    suffix: str
    middle: str
    end: str
    prefix_id: int
    suffix_id: int
    middle_id: int
    end_id: int
    bos_id: int | None  # prepended when the tokenizer adds BOS to plain text (CodeLlama, DeepSeek)


def _token_id(tokenizer, token: str) -> int | None:
    """Id of `token` when it is one token of the vocabulary (CodeLlama stores '▁<PRE>')."""
    for form in (token, "▁" + token):
        tid = tokenizer.convert_tokens_to_ids(form)
        # unknown strings map to unk, which may share its id with a real token: check the round trip
        if isinstance(tid, int) and tid >= 0 and tokenizer.convert_ids_to_tokens(tid) == form:
            return tid
    return None


def detect_fim_sentinels(tokenizer) -> FimSentinels:
    """Find the FIM sentinels and end-of-middle token of a tokenizer's model family.

    Raises ValueError naming the families tried when the tokenizer has none (a chat-only model
    such as SmolLM2 cannot be trained on FIM data).
    """
    cached = getattr(tokenizer, "_eagle_fim_sentinels", None)
    if cached is not None:
        return cached
    for fam in FAMILIES:
        ids = [_token_id(tokenizer, t) for t in (fam.prefix, fam.suffix, fam.middle)]
        if None in ids:
            continue
        end = next(((t, i) for t in fam.ends if (i := _token_id(tokenizer, t)) is not None), None)
        if end is None:
            if fam.name == "codegemma":
                continue
            if tokenizer.eos_token_id is None:
                raise ValueError(f"{fam.name} FIM sentinels found but no end-of-middle token nor EOS")
            end = (tokenizer.eos_token, tokenizer.eos_token_id)
        bos = tokenizer.bos_token_id
        if bos is not None and tokenizer("x").input_ids[:1] != [bos]:
            bos = None  # this tokenizer does not start plain text with BOS, so FIM prompts don't either
        found = FimSentinels(fam.name, fam.prefix, fam.suffix, fam.middle, end[0], *ids, end[1], bos)
        try:
            tokenizer._eagle_fim_sentinels = found
        except AttributeError:
            pass
        return found
    tried = "; ".join(f"{f.name} {f.prefix} {f.suffix} {f.middle}" for f in FAMILIES[1:])
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ValueError(f"tokenizer {name!r} has no FIM sentinel tokens (tried {tried}); "
                     f"use a code model with FIM training, or chat data")


def _encode_text(tokenizer, text: str) -> list[int]:
    if not text:
        return []
    try:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids
    except TypeError:  # tokenizers without split_special_tokens
        return tokenizer(text, add_special_tokens=False).input_ids


def _join(s: FimSentinels, pre: list[int], suf: list[int], mode: str) -> list[int]:
    """Prompt ids from encoded prefix and suffix; the middle sentinel always comes last."""
    ids = [s.bos_id] if s.bos_id is not None else []
    if mode == "psm":
        return ids + [s.prefix_id] + pre + [s.suffix_id] + suf + [s.middle_id]
    if mode == "spm":
        return ids + [s.prefix_id, s.suffix_id] + suf + [s.middle_id] + pre
    raise ValueError(f"FIM mode must be 'psm' or 'spm', got {mode!r}")


def fit_context(pre: list[int], suf: list[int], room: int) -> tuple[list[int], list[int]]:
    """Cut prefix ids on the left and suffix ids on the right to fit `room` tokens together.

    Both sides keep context (the suffix at least a third of the room when it has that much),
    and the tokens nearest the middle are the ones kept.
    """
    room = max(room, 0)
    if len(pre) + len(suf) <= room:
        return pre, suf
    keep_suf = min(len(suf), max(room // 3, room - len(pre)))
    keep_pre = min(len(pre), room - keep_suf)
    return pre[len(pre) - keep_pre:], suf[:keep_suf]


def fim_prompt(tokenizer, prefix: str, suffix: str, mode: str = "psm") -> str:
    """The FIM prompt string for generation: the middle sentinel comes last.

    Qwen2.5-Coder PSM: ``<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>``.
    Generate after it and stop at `detect_fim_sentinels(tokenizer).end_id`. Prefer
    `fim_prompt_ids` when the code may contain special-token strings.
    """
    s = detect_fim_sentinels(tokenizer)
    bos = tokenizer.bos_token if s.bos_id is not None else ""
    if mode == "psm":
        return f"{bos}{s.prefix}{prefix}{s.suffix}{suffix}{s.middle}"
    if mode == "spm":
        return f"{bos}{s.prefix}{s.suffix}{suffix}{s.middle}{prefix}"
    raise ValueError(f"FIM mode must be 'psm' or 'spm', got {mode!r}")


def fim_prompt_ids(tokenizer, prefix: str, suffix: str, mode: str = "psm",
                   max_tokens: int | None = None) -> list[int]:
    """Token ids of `fim_prompt`, with code never read as control tokens.

    With `max_tokens`, the context is cut around the cursor (`fit_context`) to fit.
    """
    s = detect_fim_sentinels(tokenizer)
    pre, suf = _encode_text(tokenizer, prefix), _encode_text(tokenizer, suffix)
    if max_tokens is not None:
        pre, suf = fit_context(pre, suf, max_tokens - len(_join(s, [], [], mode)))
    return _join(s, pre, suf, mode)


def encode_fim(record: dict, tokenizer, max_length: int, mode: str = "psm") -> Sample:
    """A FIM record as training ids; the loss covers the middle and the end-of-middle token.

    The middle never loses its start to truncation: when the sample is over `max_length`,
    the prefix is cut on its left and the suffix on its right first, then the middle's tail.
    A record marked ``"truncated": true`` (a regenerated middle that hit max_new_tokens) gets
    no end token, since the model did not end there.
    """
    s = detect_fim_sentinels(tokenizer)
    middle = _encode_text(tokenizer, record["middle"])
    if not record.get("truncated"):
        middle.append(s.end_id)
    pre, suf = _encode_text(tokenizer, record["prefix"]), _encode_text(tokenizer, record["suffix"])
    fixed = len(_join(s, [], [], mode))  # sentinels and BOS
    truncated = fixed + len(middle) + len(pre) + len(suf) > max_length
    pre, suf = fit_context(pre, suf, max_length - fixed - len(middle))
    ids = _join(s, pre, suf, mode)
    input_ids = ids + middle
    loss_mask = [0] * len(ids) + [1] * len(middle)
    if len(input_ids) > max_length:
        input_ids, loss_mask, truncated = input_ids[:max_length], loss_mask[:max_length], True
    return Sample(input_ids, loss_mask, truncated)
