"""The on-disk activation store: its format, its memory-mapped reader, and its shuffled order.

    acts/shard-*.npy        float32 [rows, d], each written atomically when full
    acts/shard-*.npy.json   the images of that shard's rows, in order (written before the shard)
    acts/meta.json          model, layer, d, count, shards in order, images in row order

meta.json is written last: a store without it is incomplete and is refused by the reader. The
sidecars let an interrupted or appended extraction know which images it already holds.

Reading never keeps a shard mapped between calls: a mapped page counts towards the process's
resident memory until it is unmapped, so a reader that kept every shard open would grow to the
size of the store. Pages stay in the OS page cache, which the kernel reclaims under pressure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import atomic_path, read_json, write_json
from .errors import Vs2Error

META_FILE = "meta.json"
LAYER = "visual.transformer.resblocks[-1] output, CLS token, before ln_post"


@dataclass(frozen=True)
class StoreMeta:
    """What meta.json says about an activation store."""

    model_id: str
    """open_clip architecture name (or vs2-demo)."""
    model_source: str
    """pretrained tag, checkpoint path, 'none' or 'demo'."""
    d: int
    """Activation width."""
    count: int
    """Rows in all shards."""
    shards: tuple[tuple[str, int], ...]
    """(file name, rows) per shard, in order."""


def write_shard(folder: Path, name: str, block: np.ndarray, images: list[str] | None = None,
                model: tuple[str, str] = ("", "")) -> tuple[str, int]:
    """Write block [rows, d] as folder/name, atomically; first its sidecar name.json with the
    images of its rows and the (model_id, source) that made them, when images are given."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    if images is not None:
        if len(images) != len(block):
            raise Vs2Error(f"shard {name}: expected one image per row ({len(block)}), "
                           f"got {len(images)}")
        write_json(folder / f"{name}.json", {"count": len(images), "images": list(images),
                                             "model_id": model[0], "model_source": model[1]})
    with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
        np.save(fh, block)
    return name, int(block.shape[0])


def write_meta(folder: Path, model_id: str, source: str, d: int,
               shards: list[tuple[str, int]], extra: dict) -> None:
    """meta.json, written last: it marks the store complete."""
    write_json(folder / META_FILE, {
        "format": "vs2-activations", "model_id": model_id, "model_source": source,
        "layer": LAYER, "d": d, "count": sum(n for _, n in shards), "dtype": "float32",
        "shards": [{"file": f, "count": n} for f, n in shards], **extra})


def store_array(folder: Path, h: np.ndarray, model_id: str, source: str,
                shard_size: int = 16384, images: list[str] | None = None) -> Path:
    """Write activations h [N, d] computed elsewhere as a store (tests, imports). `images` [N]
    (relative paths, e.g. 'cat/001.png') records where each row came from (PASS labels)."""
    folder = Path(folder)
    shards = [write_shard(folder, f"shard-{i:05d}.npy", h[s:s + shard_size],
                          None if images is None else list(images[s:s + shard_size]),
                          (model_id, source))
              for i, s in enumerate(range(0, len(h), shard_size))]
    write_meta(folder, model_id, source, int(h.shape[1]), shards,
               {} if images is None else {"images": list(images)})
    return folder


def epoch_order(counts: list[int], seed: int, epoch: int, buffer: int) -> np.ndarray:
    """Row order of one epoch [N] int64: shards in random order, then each window of `buffer`
    consecutive rows permuted. A pure function of (seed, epoch), so a resumed run and every
    data-parallel rank compute the same order; reads of one batch stay within a few shards."""
    rng = np.random.default_rng([seed, epoch])
    offsets = np.cumsum([0] + list(counts))
    stream = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in
                             rng.permutation(len(counts))] or [np.zeros(0, np.int64)])
    for start in range(0, len(stream), buffer):
        stream[start:start + buffer] = rng.permutation(stream[start:start + buffer])
    return stream.astype(np.int64)


class ActivationStore:
    """Memory-mapped reader of an activation store: rows h [d] float32, never all in RAM."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        raw = read_json(self.folder / META_FILE, "activation store")
        if raw.get("format") != "vs2-activations":
            raise Vs2Error(f"activation store {folder}: expected format 'vs2-activations' in "
                           f"meta.json, got {raw.get('format')!r}")
        shards = tuple((s["file"], int(s["count"])) for s in raw["shards"])
        self.meta = StoreMeta(raw["model_id"], raw["model_source"], int(raw["d"]),
                              int(raw["count"]), shards)
        self.images: list[str] | None = raw.get("images")
        """Relative image path of every row, when the store records them."""
        for s in range(len(shards)):
            self._map(s)                                  # validate every shard up front
        self.offsets = np.cumsum([0] + [rows for _, rows in shards])

    def _map(self, s: int) -> np.ndarray:
        name, rows = self.meta.shards[s]
        path = self.folder / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise Vs2Error(f"activation store: cannot read {path} ({exc})") from None
        if array.shape != (rows, self.meta.d) or array.dtype != np.float32:
            raise Vs2Error(f"activation store: {path} expected float32 [{rows}, {self.meta.d}], "
                           f"got {array.dtype} {list(array.shape)}")
        return array

    def __len__(self) -> int:
        return self.meta.count

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Rows in store order, [<=batch_size, d] each (a batch never spans two shards). A batch
        is a view of a map that is dropped once its shard is done: copy what you keep."""
        for s in range(len(self.meta.shards)):
            array = self._map(s)
            for start in range(0, len(array), batch_size):
                yield array[start:start + batch_size]
            del array

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global index [m] -> [m, d] float32 (sorted reads, original order kept)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.meta.d), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, rows[order], side="right") - 1
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[order[mask]] = self._map(int(s))[rows[order][mask] - self.offsets[s]]
        return out

    def mean(self) -> np.ndarray:
        """Mean activation [d], float64 accumulation."""
        total = np.zeros(self.meta.d, dtype=np.float64)
        for batch in self.iter_batches(8192):
            total += batch.sum(axis=0, dtype=np.float64)
        return total / max(len(self), 1)
