"""The on-disk activation store: its format, its memory-mapped reader, and its shuffled order.

    acts/shard-*.npy        float32 [rows, d], each written atomically when full
    acts/shard-*.npy.json   the images of that shard's rows, in order (written before the shard)
    acts/meta.json          model, layer, d, count, shards in order, images in row order

meta.json is written last: a store without it is incomplete and is refused by the reader. The
sidecars let an interrupted or appended extraction know which images it already holds.

Every shard is checked against the SHA-256 meta.json lists for it the first time this process
reads it (a shard edited in place, e.g. its rows reordered, keeps its shape and would otherwise
train and calibrate silently); the hash is taken from the very file that is then mapped.

Reading never keeps a shard mapped between calls: a mapped page counts towards the process's
resident memory until it is unmapped, so a reader that kept every shard open would grow to the
size of the store. Pages stay in the OS page cache, which the kernel reclaims under pressure.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .artifacts import atomic_path, read_json, sha256_file, write_json
from .errors import Vs2Error

META_FILE = "meta.json"
LAYER = "visual.transformer.resblocks[-1] output, CLS token, before ln_post"
SHARD_NAME = re.compile(r"^shard-[A-Za-z0-9_-]{1,64}\.npy$")
"""A shard is a plain file name in the store folder: no path, so meta.json cannot point a read
anywhere else."""
MAX_D = 1 << 16
"""Activation width bound (ViT-G is 1664): a hostile meta.json cannot ask for absurd shapes."""


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
    weights_sha256: str | None = None
    """Checksum of the CLIP weights that produced the activations (clip.weights_sha256); None
    for stores written without one (arrays from elsewhere, older versions)."""
    images_root: str | None = None
    """Absolute folder the images were read from (the rows' images are relative to it)."""
    store_id: str = ""
    """SHA-256 of meta.json, which lists every shard with its own SHA-256: the store's content
    identity (resume and calibration compare it, not the path; the reader holds every shard to
    its listed SHA-256, so the identity covers the rows too)."""
    shard_sha256: tuple[str | None, ...] = ()
    """SHA-256 of each shard file as meta.json lists it; None for stores written before shards
    carried one (read unchecked)."""


def write_shard(folder: Path, name: str, block: np.ndarray, images: list[str] | None = None,
                model: tuple[str, ...] = ("", "")) -> tuple[str, int]:
    """Write block [rows, d] as folder/name, atomically; first its sidecar name.json with the
    images of its rows and the (model_id, source[, weights_sha256]) that made them, when images
    are given."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    if images is not None:
        if len(images) != len(block):
            raise Vs2Error(f"shard {name}: expected one image per row ({len(block)}), "
                           f"got {len(images)}")
        write_json(folder / f"{name}.json", {
            "count": len(images), "images": list(images), "model_id": model[0],
            "model_source": model[1], "model_weights_sha256": (list(model) + [None])[2]})
    with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
        np.save(fh, block)
    return name, int(block.shape[0])


def write_meta(folder: Path, model_id: str, source: str, d: int,
               shards: list[tuple[str, int]], extra: dict, weights_sha256: str | None = None) -> None:
    """meta.json, written last: it marks the store complete. Each shard is listed with its
    SHA-256, so meta.json's own checksum identifies the store's content (StoreMeta.store_id)."""
    write_json(folder / META_FILE, {
        "format": "vs2-activations", "model_id": model_id, "model_source": source,
        "model_weights_sha256": weights_sha256,
        "layer": LAYER, "d": d, "count": sum(n for _, n in shards), "dtype": "float32",
        "shards": [{"file": f, "count": n, "sha256": sha256_file(Path(folder) / f)}
                   for f, n in shards], **extra})


def store_array(folder: Path, h: np.ndarray, model_id: str, source: str,
                shard_size: int = 16384, images: list[str] | None = None,
                weights_sha256: str | None = None) -> Path:
    """Write activations h [N, d] computed elsewhere as a store (tests, imports). `images` [N]
    (relative paths, e.g. 'cat/001.png') records where each row came from (PASS labels);
    weights_sha256: the checksum of the CLIP that made them, when known."""
    folder = Path(folder)
    shards = [write_shard(folder, f"shard-{i:05d}.npy", h[s:s + shard_size],
                          None if images is None else list(images[s:s + shard_size]),
                          (model_id, source, weights_sha256))
              for i, s in enumerate(range(0, len(h), shard_size))]
    write_meta(folder, model_id, source, int(h.shape[1]), shards,
               {} if images is None else {"images": list(images)}, weights_sha256)
    return folder


def spread(paths: list[Path], limit: int) -> list[Path]:
    """At most `limit` of `paths`, evenly spread (a class-per-folder tree is not cut to its
    first classes), in order: the same list always gives the same choice."""
    if len(paths) <= limit:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, num=limit).round()]


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


def parse_meta(raw: dict, folder: Path) -> StoreMeta:
    """meta.json (parsed) -> StoreMeta; any missing, mistyped or out-of-range field is a
    Vs2Error naming it (a hostile meta.json must not reach numpy or the file system)."""
    where = f"activation store {folder}: meta.json"
    if raw.get("format") != "vs2-activations":
        raise Vs2Error(f"{where}: expected format 'vs2-activations', got {raw.get('format')!r}")
    for key, kind in (("model_id", str), ("model_source", str), ("d", int), ("count", int),
                      ("shards", list)):
        if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
            raise Vs2Error(f"{where}: expected {key!r} of type {kind.__name__}, got {raw.get(key)!r:.80}")
    if not 1 <= raw["d"] <= MAX_D:
        raise Vs2Error(f"{where}: expected d in [1, {MAX_D}], got {raw['d']}")
    shards, digests = [], []
    for entry in raw["shards"]:
        name = entry.get("file") if isinstance(entry, dict) else None
        rows = entry.get("count") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and SHARD_NAME.match(name)) or not isinstance(rows, int) \
                or isinstance(rows, bool) or rows < 0:
            raise Vs2Error(f"{where}: expected shards as {{file: 'shard-*.npy', count: rows >= 0}}, "
                           f"got {entry!r:.80}")
        digest = entry.get("sha256")
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise Vs2Error(f"{where}: expected shard {name} sha256 to be 64 hex digits, got {digest!r:.80}")
        shards.append((name, rows))
        digests.append(digest)
    if sum(rows for _, rows in shards) != raw["count"]:
        raise Vs2Error(f"{where}: count {raw['count']} is not the sum of the shard rows")
    weights, root = raw.get("model_weights_sha256"), raw.get("images_root")
    if weights is not None and not (isinstance(weights, str) and re.fullmatch(r"[0-9a-f]{64}", weights)):
        raise Vs2Error(f"{where}: expected model_weights_sha256 to be 64 hex digits or null")
    if root is not None and not isinstance(root, str):
        raise Vs2Error(f"{where}: expected images_root to be a path or null")
    store_id = hashlib.sha256((Path(folder) / META_FILE).read_bytes()).hexdigest()
    return StoreMeta(raw["model_id"], raw["model_source"], raw["d"], raw["count"], tuple(shards),
                     weights, root, store_id, tuple(digests))


_VERIFIED: set[tuple[int, int, int, int, str]] = set()
"""(device, inode, size, mtime_ns, sha256) of the shard files this process has hashed and found
as listed: each epoch maps every shard again, and re-hashing would read the store twice per
epoch. A rewritten or replaced file has another key and is hashed again."""


def _sha256(fh: BinaryIO, digest: str) -> str:
    """SHA-256 of the open file fh (streamed, then rewound), or `digest` without reading when
    this file version already matched it in this process (_VERIFIED)."""
    st = os.fstat(fh.fileno())
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest)
    if key in _VERIFIED:
        return digest
    hasher = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        hasher.update(block)
    fh.seek(0)
    actual = hasher.hexdigest()
    if actual == digest:
        _VERIFIED.add(key)
    return actual


def _map_npy(fh: BinaryIO) -> np.ndarray:
    """A read-only memmap of the .npy in the open file fh (np.load maps only by file name,
    which could name another file by the time it is opened)."""
    fmt = np.lib.format
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(fh))
    if read is None:
        raise ValueError("expected a .npy file of format version 1.0 or 2.0")
    shape, fortran, dtype = read(fh)
    if dtype.hasobject:
        raise ValueError("object arrays cannot be mapped")
    return np.memmap(fh, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C",
                     offset=fh.tell())


class ActivationStore:
    """Memory-mapped reader of an activation store: rows h [d] float32, never all in RAM."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        raw = read_json(self.folder / META_FILE, "activation store")
        self.meta = parse_meta(raw, self.folder)
        self.images: list[str] | None = raw.get("images")
        """Relative image path of every row, when the store records them."""
        if self.images is not None and not (isinstance(self.images, list) and all(
                isinstance(i, str) for i in self.images)):
            raise Vs2Error(f"activation store {folder}: expected 'images' to be a list of paths")
        for s in range(len(self.meta.shards)):
            self._map(s, verify=False)                    # validate every shard's shape up front
        self.offsets = np.cumsum([0] + [rows for _, rows in self.meta.shards])

    def _map(self, s: int, verify: bool = True) -> np.ndarray:
        """Shard s as a read-only map [rows, d] float32; with verify, its file is first held to
        the SHA-256 meta.json lists (once per file version per process: _VERIFIED)."""
        name, rows = self.meta.shards[s]
        path = self.folder / name
        digest = self.meta.shard_sha256[s] if verify and self.meta.shard_sha256 else None
        if path.exists() and not path.is_file():  # opening a FIFO would block until a writer came
            raise Vs2Error(f"activation store: {path} is not a regular file")
        try:
            with open(path, "rb") as fh:  # one open file: the bytes hashed are the bytes mapped
                actual = digest if digest is None else _sha256(fh, digest)
                array = _map_npy(fh)
        except (OSError, ValueError, EOFError) as exc:
            raise Vs2Error(f"activation store: cannot read {path} ({exc})") from None
        if actual != digest:
            raise Vs2Error(f"activation store: {path} does not match meta.json (sha256 {actual[:12]}..., "
                           f"listed {digest[:12]}...): the shard was changed after extraction; "
                           "re-extract the store")
        if array.shape != (rows, self.meta.d) or array.dtype != np.float32 \
                or array.dtype.byteorder == ">":
            raise Vs2Error(f"activation store: {path} expected float32 [{rows}, {self.meta.d}], "
                           f"got {array.dtype} {list(array.shape)}")
        return array

    def __len__(self) -> int:
        return self.meta.count

    @property
    def origin(self) -> dict:
        """What an SAE trained on this store records (sae.save_sae): the model and its weights,
        and the store's content identity and place."""
        return {"id": self.meta.model_id, "source": self.meta.model_source,
                "weights_sha256": self.meta.weights_sha256, "store_id": self.meta.store_id,
                "acts": str(self.folder.resolve())}

    def image_paths(self) -> list[Path]:
        """The images the rows came from, as files (the user's in-domain images: the default
        for int8 calibration and verify); empty when the store does not record them."""
        if not self.images or not self.meta.images_root:
            return []
        root = Path(self.meta.images_root)
        return [root / p for p in self.images if not Path(p).is_absolute() and ".." not in Path(p).parts]

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
