"""Plain decoding of many prompts at once, with continuous batching (`eagle data regen`).

`model.generate` on a left-padded batch computes much that it throws away: every prompt is
prefilled at the width of the longest one, and a row that has finished goes on decoding until
the last row does. On 2 CPU cores, where both prefill and a batch of 16 decoding rows are
compute-bound, that was most of the time of regenerating ShareGPT answers (docs/data.md). Here a
row leaves the batch as soon as it ends and a waiting prompt takes its place; prompts wait in
order of length, and are prefilled in groups of similar length, so little padding is computed.

All rows share one transformers `DynamicCache`, left-padded (eagle.model.kv_cache): a row's
tokens fill the last columns, the attention mask hides the columns before them, and the position
ids count only the row's own tokens, so each row computes what it would alone (up to the float
rounding of a different batch shape).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Sequence

import torch

from .kv_cache import append_rows, drop_columns, new_base_cache, pad_left, select_rows
from .sampling import SamplingParams

# a prefill group ends where a prompt is shorter than this share of the group's longest
_GROUP_MIN_SHARE = 0.75
# and before it holds more tokens than this, padding included: 64 prompts of 2,048 tokens in one
# forward would need 15 GB for float32 attention scores alone; 8,192 keeps a prefill under 1 GB
PREFILL_TOKENS = 8192


class ContinuousBatch:
    """Submit prompts, call `step()` until `busy` is False; each step returns the rows that
    finished in it as (key, new token ids without the stop token, ended at a stop token)."""

    def __init__(self, model, batch_size: int, max_new_tokens: int, stop_ids: Sequence[int],
                 sampling: SamplingParams = SamplingParams(), generator: torch.Generator | None = None,
                 prefill_tokens: int = PREFILL_TOKENS):
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be at least 1, got {batch_size} and "
                             f"{max_new_tokens}")
        self.model, self.batch_size, self.max_new_tokens = model, batch_size, max_new_tokens
        self.stop_ids, self.sampling, self.generator = frozenset(stop_ids), sampling, generator
        self.prefill_tokens = prefill_tokens
        self.device = next(model.parameters()).device
        self._waiting: list[tuple[int, int, Hashable, torch.Tensor]] = []  # heap: longest first
        self._order = itertools.count()
        self._keys: list[Hashable] = []  # the running rows
        self._out: list[list[int]] = []
        self._cache = None
        self._mask = self._last = None  # [B, W] (1: a row's token, its position = count before it), [B]

    def submit(self, key: Hashable, prompt: Sequence[int]) -> None:
        if len(prompt) == 0:
            raise ValueError(f"empty prompt for {key!r}")
        heapq.heappush(self._waiting, (-len(prompt), next(self._order), key, torch.as_tensor(prompt)))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._keys)

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, list[int], bool]]:
        """Prefill waiting prompts into free rows if there are both, else decode one token for
        every running row; then retire the rows that are done."""
        free = self.batch_size - len(self._keys)
        if free and self._waiting:
            for group in self._groups(free):
                self._admit(group)
        elif self._keys:
            self._decode()
        return self._retire()

    def _groups(self, n: int):
        taken = [heapq.heappop(self._waiting) for _ in range(min(n, len(self._waiting)))]
        group = []
        for item in taken:  # longest first
            longest = len(group[0][3]) if group else 0
            if group and (len(item[3]) < _GROUP_MIN_SHARE * longest
                          or (len(group) + 1) * longest > self.prefill_tokens):
                yield group
                group = []
            group.append(item)
        yield group

    def _admit(self, group) -> None:
        width = len(group[0][3])
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (_, _, _, prompt) in enumerate(group):
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = new_base_cache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = self.sampling.sample(out.logits[:, -1], self.generator)  # [g]
        if self._cache is None:
            self._cache, self._mask, self._last = cache, mask, token
        else:
            append_rows(self._cache, cache)
            w = self._cache.get_seq_length()
            self._mask = torch.cat([pad_left(self._mask, w, 1), pad_left(mask, w, 1)])
            self._last = torch.cat([self._last, token])
        self._keys += [key for _, _, key, _ in group]
        self._out += [[t] for t in token.tolist()]

    def _decode(self) -> None:
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._keys), 1))], 1)
        out = self.model(input_ids=self._last[:, None], attention_mask=self._mask,
                         position_ids=self._mask.sum(-1, keepdim=True) - 1, past_key_values=self._cache, use_cache=True)
        self._last = self.sampling.sample(out.logits[:, -1], self.generator)
        for ids, t in zip(self._out, self._last.tolist()):
            ids.append(t)

    def _retire(self) -> list[tuple[Hashable, list[int], bool]]:
        done, keep = [], []
        for row, (key, ids) in enumerate(zip(self._keys, self._out)):
            if ids[-1] in self.stop_ids:
                done.append((key, ids[:-1], True))
            elif len(ids) >= self.max_new_tokens:
                done.append((key, ids, False))
            else:
                keep.append(row)
        if not done:
            return done
        if not keep:
            self._cache = self._mask = self._last = None
            self._keys, self._out = [], []
            return done
        rows = torch.tensor(keep, device=self.device)
        select_rows(self._cache, rows)
        self._mask, self._last = self._mask[rows], self._last[rows]
        self._keys = [self._keys[r] for r in keep]
        self._out = [self._out[r] for r in keep]
        first = int(self._mask.any(0).int().argmax())  # leading columns no running row uses
        if first:
            drop_columns(self._cache, first)
            self._mask = self._mask[:, first:]
        return done


def decode_all(model, prompts: Sequence[Sequence[int]], batch_size: int, max_new_tokens: int,
               stop_ids: Sequence[int], sampling: SamplingParams = SamplingParams(),
               generator: torch.Generator | None = None) -> list[tuple[list[int], bool]]:
    """(new ids without the stop token, ended at a stop token) for each prompt, in order."""
    batch = ContinuousBatch(model, batch_size, max_new_tokens, stop_ids, sampling, generator)
    for i, p in enumerate(prompts):
        batch.submit(i, p)
    results: dict[int, tuple[list[int], bool]] = {}
    while batch.busy:
        for i, ids, ended in batch.step():
            results[i] = (ids, ended)
    return [results[i] for i in range(len(prompts))]
