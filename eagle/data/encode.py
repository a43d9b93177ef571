"""One record of either format -> one `Sample`: the single entry point the trainer calls."""

from __future__ import annotations

from .chat_mask import encode_chat
from .fim_tokens import encode_fim
from .records import record_format, validate_record
from .sample import Sample


def encode_record(record: dict, tokenizer, data_format: str, max_length: int = 2048,
                  fim_mode: str = "psm") -> Sample:
    """Tokenize one validated record ('fim' or 'chat') into ids and a loss mask of equal length.

    FIM samples use the tokenizer's own sentinels (`fim_mode` 'psm' or 'spm') and keep the middle
    when cutting to `max_length`; chat samples use the tokenizer's chat template and are cut at
    the end. Raises ValueError for a record of the wrong format, a tokenizer without FIM
    sentinels or without a chat template. After truncation a sample may hold no target at all
    (a long question cut before its answer): skip it when ``sample.num_targets == 0``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    validate_record(record, data_format)
    if data_format == "mixed":
        data_format = record_format(record)
    if data_format == "fim":
        return encode_fim(record, tokenizer, max_length, fim_mode)
    return encode_chat(record, tokenizer, max_length)
