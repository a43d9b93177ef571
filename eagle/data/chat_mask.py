"""Chat records rendered with the tokenizer's own template; loss on assistant tokens only.

No separator is hard-coded. For each assistant message the conversation is rendered twice
more with that message's content replaced by two different one-character markers: the two
renders agree everywhere except at the message, so their common prefix and common suffix give
exactly where the template puts the content, whatever it adds around it (headers, a default
system prompt, ``trim``). This holds for templates that move the system prompt into the last
user turn (Mistral v0.3), where rendering prefixes of the conversation and diffing would not.
The end-of-turn token is the first special token after the content (``<|im_end|>``,
``<|eot_id|>``, ``<end_of_turn>``, ``</s>``), taken only if nothing but whitespace lies between.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import chat_messages
from .sample import Sample

# Private-use characters: no template treats them specially and no trim removes them.
_MARKERS = ("\ue000", "\ue001")


@dataclass
class AssistantSpan:
    """Character span of one assistant message in the rendered text."""

    start: int  # first character of the content
    end: int  # one past the content
    turn_end: int | None  # end of this turn's render, when the template renders prefixes stably


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def template_messages(tokenizer, messages: list[dict]) -> list[dict]:
    """`messages` as the template accepts them.

    Templates without a system role (Gemma, older Mistral) raise on one: then the system text is
    folded into the first user message, as those models' own cards advise.
    """
    if tokenizer.chat_template is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"tokenizer {name!r} has no chat template: chat data needs one")
    try:
        _render(tokenizer, messages)
        return messages
    except Exception as first:
        system = [m for m in messages if m["role"] == "system"]
        rest = [dict(m) for m in messages if m["role"] != "system"]
        users = [m for m in rest if m["role"] == "user"]
        if system and users:
            users[0]["content"] = "\n\n".join(m["content"] for m in system) + "\n\n" + users[0]["content"]
            try:
                _render(tokenizer, rest)
                return rest
            except Exception:
                pass
        raise ValueError(f"the chat template rejects this conversation: {first}") from None


def _common_prefix(a: str, b: str) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on slice equality: C-speed compares instead of a char loop
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[AssistantSpan]]:
    """The rendered conversation and the span of every assistant message's content in it."""
    full = _render(tokenizer, messages)
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        a, b = (_render(tokenizer, messages[:k] + [{**msg, "content": m}] + messages[k + 1:]) for m in _MARKERS)
        head = _common_prefix(a, b)
        tail = _common_prefix(a[::-1], b[::-1])
        head, tail = min(head, len(a) - 1), min(tail, len(a) - head - 1)
        start, end = head, len(full) - tail
        if not (full[:head] == a[:head] and full[end:] == a[len(a) - tail:] and start <= end):
            raise ValueError(f"cannot locate assistant message {k} in the rendered template: "
                             f"the template renders the rest of the conversation differently around it")
        turn_end = None
        try:
            upto = _render(tokenizer, messages[:k + 1])
            if full.startswith(upto) and len(upto) >= end:
                turn_end = len(upto)
        except Exception:
            pass  # templates may refuse a conversation ending with the assistant; scan instead
        spans.append(AssistantSpan(start, end, turn_end))
    return full, spans


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for tid, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(tid)
    return ids


def encode_chat(record: dict, tokenizer, max_length: int) -> Sample:
    """A chat record as training ids; the loss covers each assistant message and its end token.

    A record marked ``"truncated": true`` gets no end token on its last assistant message.
    """
    messages = template_messages(tokenizer, chat_messages(record))
    text, spans = assistant_spans(tokenizer, messages)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ValueError("chat loss masks need a fast (Rust) tokenizer: it gives character offsets") from None
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    special = _special_ids(tokenizer)
    mask = [0] * len(ids)
    i = 0
    # a regenerated last answer cut at max_new_tokens: the model did not end the turn there
    open_last = bool(record.get("truncated"))
    for n, span in enumerate(spans):
        while i < len(ids) and offsets[i][1] <= span.start:
            i += 1
        while i < len(ids) and offsets[i][0] < span.end:
            if offsets[i][1] > span.start or offsets[i][0] >= span.start:
                mask[i] = 1  # a token straddling the content start carries content: the model writes it
            i += 1
        if open_last and n == len(spans) - 1:
            break
        # the end-of-turn token: first special token, past whitespace only, inside this turn
        j = i
        limit = span.turn_end if span.turn_end is not None else len(text)
        while j < len(ids) and offsets[j][0] < limit and ids[j] not in special and not text[offsets[j][0]:offsets[j][1]].strip():
            j += 1
        if j < len(ids) and offsets[j][0] < limit and ids[j] in special:
            for t in range(i, j + 1):
                mask[t] = 1
            i = j + 1
    truncated = len(ids) > max_length
    return Sample(ids[:max_length], mask[:max_length], truncated)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of a conversation followed by the template's assistant header, ready to generate."""
    text = _render(tokenizer, template_messages(tokenizer, messages), generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
