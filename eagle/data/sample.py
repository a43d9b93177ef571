"""The training sample every data format becomes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sample:
    """Token ids and the loss mask over them (same length).

    ``loss_mask[i] == 1`` when ``input_ids[i]`` is a token the draft must learn to predict
    (from the positions before it): assistant content and its end-of-turn token in chat, the
    middle and its end-of-middle token in FIM. Prompt, template and context tokens are 0.
    """

    input_ids: list[int]
    loss_mask: list[int]
    truncated: bool = False  # cut to max_length

    def __post_init__(self):
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and loss_mask ({len(self.loss_mask)}) differ in length")

    @property
    def num_targets(self) -> int:
        return sum(self.loss_mask)
