"""KV caches of the two models and their named operations.

The base keeps transformers' own `DynamicCache` (so any HF model works unmodified); after a tree
verify we move the accepted path's entries into contiguous slots and drop the rest. The draft's
cache is a pair of tensors that grows only by committed positions: tree nodes live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


def new_base_cache() -> DynamicCache:
    # No config on purpose: every layer then keeps all positions (no sliding-window eviction), so
    # slots stay addressable by position; windows are applied through the attention mask instead.
    return DynamicCache()


def _layer_kv(cache: DynamicCache):
    for layer in cache.layers:
        for name in ("keys", "values"):
            yield layer, name, getattr(layer, name)  # [B, n_kv, L, hd]


def keep_path(cache: DynamicCache, start: int, path: torch.Tensor) -> None:
    """After verifying a tree written at slots start.., keep only `path` (tree indices, ascending,
    path[0] = 0) in slots start..start+len(path)-1, and drop everything after."""
    slots = start + path
    end = start + path.numel()
    for layer, name, t in _layer_kv(cache):
        t[:, :, start:end] = t[:, :, slots]
        setattr(layer, name, t[:, :, :end])


@dataclass
class DraftKV:
    k: torch.Tensor  # [1, n_kv, n, hd], committed positions 0..n-1
    v: torch.Tensor

    @property
    def length(self) -> int:
        return self.k.shape[2]

    @property
    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)


# --- batches of left-padded rows (eagle.model.batch_decode) ----------------------------------
# Every row's tokens sit in the last columns of the cache; the columns before them are padding
# that the attention mask hides, so rows of any length share one set of tensors.

def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim)


def select_rows(cache: DynamicCache, rows: torch.Tensor) -> None:
    """Keep only the batch rows `rows` (in that order)."""
    for layer, name, t in _layer_kv(cache):
        setattr(layer, name, t[rows])


def append_rows(cache: DynamicCache, other: DynamicCache) -> None:
    """Put `other`'s rows after `cache`'s, padding the narrower of the two on the left."""
    width = max(cache.get_seq_length(), other.get_seq_length())
    for (layer, name, t), (_, _, u) in zip(_layer_kv(cache), _layer_kv(other)):
        setattr(layer, name, torch.cat([pad_left(t, width, 2), pad_left(u, width, 2)]))


def drop_columns(cache: DynamicCache, n: int) -> None:
    """Drop the first `n` columns: padding in every row once the rows that needed them are gone."""
    for layer, name, t in _layer_kv(cache):
        setattr(layer, name, t[:, :, n:])
