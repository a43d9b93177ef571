"""Training data: FIM from Python code, chat with loss masks, check, split, regenerate.

The trainer needs three calls::

    from eagle.data import check_format, load_jsonl, encode_record
    fmt = check_format(path, "fim")                 # refuses a chat file given as fim
    for record in load_jsonl(path, fmt):            # errors name file and line
        sample = encode_record(record, tokenizer, fmt, max_length=2048)
        sample.input_ids, sample.loss_mask          # same length; 1 = token to learn

The tutorial's helpers keep their signatures: ``convert_code_to_fim(code_file, output_file)``
and ``split_dataset(input_file, train_ratio=0.95)``.
"""

from .check import CheckReport, check_file
from .encode import encode_record
from .fim_source import FimConfig, FimReport, build_fim, convert_code_to_fim, is_heldout
from .fim_tokens import FimSentinels, detect_fim_sentinels, fim_prompt, fim_prompt_ids
from .records import DataError, check_format, chat_messages, detect_format, iter_records, load_jsonl
from .sample import Sample
from .split import split_dataset

__all__ = [
    "CheckReport", "DataError", "FimConfig", "FimReport", "FimSentinels", "Sample",
    "build_fim", "chat_messages", "check_file", "check_format", "convert_code_to_fim",
    "detect_fim_sentinels", "detect_format", "encode_record", "fim_prompt", "fim_prompt_ids",
    "is_heldout", "iter_records", "load_jsonl", "split_dataset",
]
