"""Base features two ways: online (the frozen base inside each step) and an offline cache on disk.

Per token the cache keeps what the objective needs and nothing it can recompute cheaply:

    features  [S, 3H]  fused aux hidden states, in the base's dtype (bf16 for real models)
    hidden    [S, H]   the lm_head's input (final normed hidden state), same dtype
    argmax    [S]      int32, the base's greedy token over its full vocabulary

The target distribution over the draft vocabulary is recomputed at train time as
`hidden @ lm_head[t2d].T`: exact (the same input the base's own head sees), about 2 KB a token
instead of 64 KB for bf16 logits over a 32k draft vocabulary (or 300 KB over Qwen's full 152k), and
it costs one [N, H] x [H, Vd] matmul, small beside the draft's seven unrolled steps. Storing top-k
logits would be smaller still but approximate. The cache does not depend on the draft vocabulary, so
changing --draft_vocab_size reuses it.

Layout (one folder, reused when the base, aux layers, dtype and the tokenised data match):

    <cache>/manifest.json                    key per split, shard list
    <cache>/<split>-<key12>-r<rank>-<n>.safetensors   features, hidden, argmax, sample_ids, offsets

Each process caches its share of the samples (i = rank mod world), shards are written to a
temporary name and renamed, and the manifest is written last: a killed build is never read as it
is. Run again, it keeps the shards it finished (each is whole, since renamed) and computes the rest.

A split is rebuilt when its data changes, but not from nothing: each shard also holds a digest of
every sample's token ids, and a sample found in a split the folder already holds, for the same
base, aux layers and dtype, is copied from there instead of run through the base. So training on
more data (`--init_from` with `--cache_dir` shared by the runs) computes only the new records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from eagle.model.generate import fused_features
from eagle.train.dataset import Sample, pad_batch, sample_digest, samples_digest
from eagle.train.ttt import BaseBatch

CACHE_VERSION = 1
SHARD_BYTES = 256 << 20


def base_fingerprint(base) -> str:
    """Identity of a base model's architecture and weights, cheap to compute: the config plus a
    checksum of a few weight rows (a different checkpoint of the same architecture differs there)."""
    cfg = base.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation",
              "_attn_implementation_autoset", "use_cache", "architectures"):
        cfg.pop(k, None)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    emb = base.get_input_embeddings().weight
    h.update(emb[:: max(1, emb.shape[0] // 64)].float().cpu().numpy().tobytes())
    return h.hexdigest()


class BaseRunner:
    """Runs the frozen base on a padded batch: fused features, lm_head input and argmax."""

    def __init__(self, base, aux_layer_ids):
        self.base, self.aux = base, tuple(aux_layer_ids)
        self.device = next(base.parameters()).device

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor):
        captured = {}
        head = self.base.get_output_embeddings()
        hook = head.register_forward_pre_hook(lambda mod, args: captured.__setitem__("h", args[0]))
        try:
            ids = ids.to(self.device)
            attn = torch.arange(ids.shape[1], device=self.device)[None] < lengths.to(self.device)[:, None]
            out = self.base(input_ids=ids, attention_mask=attn.long(), output_hidden_states=True, use_cache=False)
        finally:
            hook.remove()
        if "h" not in captured or captured["h"].shape[:2] != ids.shape:
            raise RuntimeError("could not read the base's lm_head input; is get_output_embeddings() its head?")
        return fused_features(out.hidden_states, self.aux), captured["h"], out.logits.argmax(-1)


class FeatureSource:
    """Gives `BaseBatch`es for sample indices of a split ('train', 'test')."""

    samples: dict[str, list[Sample]]

    def batch(self, split: str, indices: list[int]) -> BaseBatch:
        raise NotImplementedError


class OnlineSource(FeatureSource):
    def __init__(self, runner: BaseRunner, samples: dict[str, list[Sample]]):
        self.runner, self.samples = runner, samples

    def batch(self, split, indices):
        ids, lm, lengths = pad_batch([self.samples[split][i] for i in indices])
        f, h, a = self.runner(ids, lengths)
        return BaseBatch(ids, lm, lengths, f, h, a)


class StoredSource(FeatureSource):
    """Per-sample features from a store: the disk cache, or a dict in memory (`train_draft`)."""

    def __init__(self, samples: dict[str, list[Sample]],
                 get: dict[str, Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]):
        self.samples, self.get = samples, get

    def batch(self, split, indices):
        ids, lm, lengths = pad_batch([self.samples[split][i] for i in indices])
        parts = [self.get[split](i) for i in indices]
        b, s = ids.shape
        f0, h0, _ = parts[0]
        feats = f0.new_zeros(b, s, f0.shape[-1])
        hid = h0.new_zeros(b, s, h0.shape[-1])
        arg = torch.zeros(b, s, dtype=torch.long)
        for r, (f, h, a) in enumerate(parts):
            n = f.shape[0]
            feats[r, :n], hid[r, :n], arg[r, :n] = f, h, a.long()
        return BaseBatch(ids, lm, lengths, feats, hid, arg)


def _by_length(indices: list[int], samples: list[Sample], batch_size: int) -> list[list[int]]:
    order = sorted(indices, key=lambda i: len(samples[i].input_ids))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def compute_in_memory(runner: BaseRunner, samples: list[Sample], batch_size: int = 4, progress=None):
    """Features of every sample, kept on the CPU: an in-memory cache for small in-process runs."""
    store = {}
    for chunk in _by_length(list(range(len(samples))), samples, batch_size):
        ids, _, lengths = pad_batch([samples[i] for i in chunk])
        f, h, a = runner(ids, lengths)
        for r, i in enumerate(chunk):
            n = int(lengths[r])
            store[i] = (f[r, :n].cpu(), h[r, :n].cpu(), a[r, :n].to(torch.int32).cpu())
        if progress:
            progress(int(lengths.sum()))
    return store


class FeatureCache:
    """The offline feature cache of one folder; see the module docstring."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.manifest_path = self.dir / "manifest.json"

    def _manifest(self) -> dict:
        try:
            m = json.loads(self.manifest_path.read_text())
            return m if m.get("version") == CACHE_VERSION else {"version": CACHE_VERSION, "splits": {}}
        except (FileNotFoundError, json.JSONDecodeError):
            return {"version": CACHE_VERSION, "splits": {}}

    @staticmethod
    def key(fingerprint: str, aux: tuple[int, ...], dtype: torch.dtype, samples: list[Sample]) -> str:
        text = json.dumps({"v": CACHE_VERSION, "base": fingerprint, "aux": list(aux), "dtype": str(dtype),
                           "data": samples_digest(samples)})
        return hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def context(fingerprint: str, aux: tuple[int, ...], dtype: torch.dtype) -> str:
        """What a sample's features depend on besides its tokens: splits that share it share samples."""
        text = json.dumps({"v": CACHE_VERSION, "base": fingerprint, "aux": list(aux), "dtype": str(dtype)})
        return hashlib.sha256(text.encode()).hexdigest()

    def _reusable(self, context: str | None) -> dict[bytes, tuple]:
        """digest -> (file, start, end) of every sample in the committed splits of this context.
        Splits written before shards held digests (or with no context recorded) offer none."""
        found: dict[bytes, tuple] = {}
        if context is None:
            return found
        for entry in self._manifest()["splits"].values():
            if entry.get("context") != context:
                continue
            for name in entry["shards"]:
                try:
                    fh = safe_open(str(self.dir / name), framework="pt")
                except (OSError, SafetensorError):  # unreadable: its samples are computed instead
                    continue
                if "digests" not in fh.keys():
                    continue
                digests, offs = fh.get_tensor("digests"), fh.get_tensor("offsets").tolist()
                for k in range(digests.shape[0]):
                    found[digests[k].numpy().tobytes()] = (fh, offs[k], offs[k + 1])
        return found

    def has(self, split: str, key: str) -> bool:
        entry = self._manifest()["splits"].get(split)
        return bool(entry and entry["key"] == key and all((self.dir / f).is_file() for f in entry["shards"]))

    def write_share(self, split: str, key: str, runner: BaseRunner, samples: list[Sample], rank: int,
                    world: int, batch_size: int, dtype: torch.dtype, progress=None,
                    context: str | None = None) -> int:
        """Compute and write this process's share (i = rank mod world) of a split's samples. Samples
        this folder already holds are not computed: those in shards an interrupted build of this very
        split left (kept as they are) and, for `context`, those of committed splits (copied). Returns
        how many samples were not computed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        done, shard = self._interrupted(split, key, rank)
        mine = [i for i in range(len(samples)) if i % world == rank]
        kept = [i for i in mine if i in done]
        mine = [i for i in mine if i not in done]
        digests = {i: sample_digest(samples[i]) for i in mine}
        held = self._reusable(context)
        buf: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        size = 0
        if progress and kept:
            progress(sum(len(samples[i].input_ids) for i in kept))

        def flush():
            nonlocal buf, size, shard
            if not buf:
                return
            lens = torch.tensor([f.shape[0] for _, f, _, _ in buf])
            tensors = {
                "features": torch.cat([f for _, f, _, _ in buf]).contiguous(),
                "hidden": torch.cat([h for _, _, h, _ in buf]).contiguous(),
                "argmax": torch.cat([a for _, _, _, a in buf]).contiguous(),
                "sample_ids": torch.tensor([i for i, _, _, _ in buf], dtype=torch.int64),
                "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]),
                "digests": torch.stack([torch.frombuffer(bytearray(digests[i]), dtype=torch.uint8)
                                        for i, _, _, _ in buf]),
            }
            name = f"{split}-{key[:12]}-r{rank:03d}-{shard:05d}.safetensors"
            tmp = self.dir / f".{name}.tmp{os.getpid()}"
            save_file(tensors, str(tmp))
            os.replace(tmp, self.dir / name)
            buf, size, shard = [], 0, shard + 1

        def add(item):
            nonlocal size
            buf.append(item)
            size += item[1].nbytes + item[2].nbytes
            if size >= SHARD_BYTES:
                flush()

        copied = [i for i in mine if digests[i] in held]
        for i in copied:
            fh, a, b = held[digests[i]]
            add((i, fh.get_slice("features")[a:b], fh.get_slice("hidden")[a:b], fh.get_slice("argmax")[a:b]))
            if progress:
                progress(b - a)
        for chunk in _by_length([i for i in mine if digests[i] not in held], samples, batch_size):
            ids, _, lengths = pad_batch([samples[i] for i in chunk])
            f, h, a = runner(ids, lengths)
            for r, i in enumerate(chunk):
                n = int(lengths[r])
                add((i, f[r, :n].to(dtype).cpu(), h[r, :n].to(dtype).cpu(), a[r, :n].to(torch.int32).cpu()))
            if progress:
                progress(int(lengths.sum()))
        flush()
        return len(kept) + len(copied)

    def _interrupted(self, split: str, key: str, rank: int) -> tuple[set[int], int]:
        """Sample ids already in this split's shards for `key` (a build that was killed: its manifest
        entry was never written), and the next free shard number of `rank`. Same key, same data, so
        the shards stand as they are; `commit` lists them with the new ones."""
        done, shard = set(), 0
        for p in sorted(self.dir.glob(f"{split}-{key[:12]}-r*.safetensors")):
            try:
                with safe_open(str(p), framework="pt") as fh:
                    done.update(fh.get_tensor("sample_ids").tolist())
            except (OSError, SafetensorError):  # not one of ours after all: drop it, it is recomputed
                p.unlink(missing_ok=True)
                continue
            r, n = p.stem.rsplit("-", 2)[-2:]
            if r == f"r{rank:03d}":
                shard = max(shard, int(n) + 1)
        return done, shard

    def commit(self, split: str, key: str, n_samples: int, context: str | None = None) -> None:
        """After every process wrote its share: record the split (rank 0 only) and drop stale shards."""
        shards = sorted(p.name for p in self.dir.glob(f"{split}-{key[:12]}-r*.safetensors"))
        m = self._manifest()
        m["splits"][split] = {"key": key, "samples": n_samples, "shards": shards, "context": context}
        tmp = self.dir / f".manifest.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(m, indent=1) + "\n")
        os.replace(tmp, self.manifest_path)
        for p in self.dir.glob(f"{split}-*.safetensors"):
            if p.name not in shards:
                p.unlink(missing_ok=True)
        for p in self.dir.glob(f".{split}-*.tmp*"):  # half-written shards of a killed build
            p.unlink(missing_ok=True)

    def reader(self, split: str) -> Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        entry = self._manifest()["splits"].get(split)
        if entry is None:
            raise RuntimeError(f"{self.manifest_path} lists no {split} set")
        handles, index = [], {}
        for name in entry["shards"]:
            fh = safe_open(str(self.dir / name), framework="pt")
            handles.append(fh)
            ids, offs = fh.get_tensor("sample_ids").tolist(), fh.get_tensor("offsets").tolist()
            for k, i in enumerate(ids):
                index[i] = (fh, offs[k], offs[k + 1])
        if len(index) != entry["samples"]:
            raise RuntimeError(f"{self.dir}: the {split} cache holds {len(index)} samples, expected "
                               f"{entry['samples']}; delete the folder to rebuild it")

        def get(i: int):
            fh, a, b = index[i]
            return fh.get_slice("features")[a:b], fh.get_slice("hidden")[a:b], fh.get_slice("argmax")[a:b]

        get.handles = handles  # keep the files open as long as the reader lives
        return get

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.safetensors"))
