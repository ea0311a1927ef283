"""images/ -> acts/: CLS activations in a sharded on-disk store, and its memory-mapped reader.

    acts/shard-00000.npy   float32 [rows, d], each written atomically when full
    acts/meta.json         model, layer, d, count, shards, the images they hold, skipped files

meta.json is written last: a store without it is incomplete and is refused by the reader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from .artifacts import atomic_path, claim_output, read_json, write_json
from .clip import ClipTrunk, LoadedClip, load_clip
from .config import ExtractConfig, to_jsonable
from .errors import Vs2Error
from .runtime.preprocess import list_images, preprocess_paths

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class ExtractReport:
    """What extract did."""

    out: Path
    count: int
    skipped: tuple[tuple[str, str], ...]
    """(path, reason) of every image that could not be read."""


def _write_shard(folder: Path, index: int, rows: list[np.ndarray]) -> tuple[str, int]:
    name = f"shard-{index:05d}.npy"
    block = np.concatenate(rows, axis=0).astype(np.float32, copy=False)
    with atomic_path(folder / name) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, block)
    return name, int(block.shape[0])


def _batches(paths: list[Path], clip: LoadedClip, batch_size: int, skipped: list, kept: list
             ) -> Iterator[np.ndarray]:
    """Decode + preprocess with THE runtime preprocessing -> pixels [b, 3, S, S] batches."""
    with tqdm(total=len(paths), desc="extract", unit="img", disable=None) as bar:
        for start in range(0, len(paths), batch_size):
            batch = preprocess_paths(paths[start:start + batch_size], clip.preprocess)
            kept.extend(batch.paths)
            for path, reason in batch.skipped:
                log.warning("skipped %s: %s", path, reason)
                skipped.append((str(path), reason))
            bar.update(batch_size)
            if len(batch.paths):
                yield batch.pixels


def write_meta(folder: Path, model_id: str, source: str, d: int,
               shards: list[tuple[str, int]], extra: dict) -> None:
    """meta.json, written last: it marks the store complete."""
    write_json(folder / META_FILE, {
        "format": "vs2-activations", "model_id": model_id, "model_source": source,
        "layer": LAYER, "d": d, "count": sum(n for _, n in shards), "dtype": "float32",
        "shards": [{"file": f, "count": n} for f, n in shards], **extra})


def store_array(folder: Path, h: np.ndarray, model_id: str, source: str,
                shard_size: int = 16384) -> Path:
    """Write activations h [N, d] computed elsewhere as a store (tests, imports)."""
    folder = Path(folder)
    shards = [_write_shard(folder, i, [h[s:s + shard_size]])
              for i, s in enumerate(range(0, len(h), shard_size))]
    write_meta(folder, model_id, source, int(h.shape[1]), shards, {})
    return folder


@torch.no_grad()
def extract(cfg: ExtractConfig) -> ExtractReport:
    """Run the image trunk over every image under cfg.images and store h [N, d] (METHOD.md s. 1)."""
    claim_output(cfg.out / META_FILE, cfg.force)
    paths = list_images(cfg.images)
    if not paths:
        raise Vs2Error(f"extract: expected images (jpg, png, webp, bmp) under {cfg.images}, found none")
    clip = load_clip(cfg.model)
    trunk = ClipTrunk(clip.model.visual).to(cfg.device).eval()
    cfg.out.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    kept: list[Path] = []
    shards: list[tuple[str, int]] = []
    pending: list[np.ndarray] = []
    for pixels in _batches(paths, clip, cfg.batch_size, skipped, kept):
        h = trunk(torch.from_numpy(pixels).to(cfg.device)).float().cpu().numpy()
        pending.append(h)
        if sum(len(p) for p in pending) >= cfg.shard_size:
            block = np.concatenate(pending)
            shards.append(_write_shard(cfg.out, len(shards), [block[: cfg.shard_size]]))
            pending = [block[cfg.shard_size:]] if len(block) > cfg.shard_size else []
    if pending:
        shards.append(_write_shard(cfg.out, len(shards), pending))
    count = sum(n for _, n in shards)
    if count == 0:
        raise Vs2Error(f"extract: none of the {len(paths)} files under {cfg.images} could be read")
    write_meta(cfg.out, cfg.model.name, cfg.model.source, clip.width, shards, {
        "preprocess": clip.preprocess.to_dict(), "config": to_jsonable(cfg),
        "images": [str(p.relative_to(cfg.images)) for p in kept],
        "skipped": [{"path": p, "reason": r} for p, r in skipped]})
    log.info("extracted %d activations (d=%d) into %s; skipped %d", count, clip.width, cfg.out,
             len(skipped))
    return ExtractReport(cfg.out, count, tuple(skipped))


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
        self.arrays = [self._open(name, rows) for name, rows in shards]
        self.offsets = np.cumsum([0] + [rows for _, rows in shards])

    def _open(self, name: str, rows: int) -> np.ndarray:
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
        """Rows in store order, [<=batch_size, d] each (a batch never spans two shards)."""
        for array in self.arrays:
            for start in range(0, len(array), batch_size):
                yield array[start:start + batch_size]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global index [m] -> [m, d] float32 (sorted reads, original order kept)."""
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.meta.d), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, rows[order], side="right") - 1
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[order[mask]] = self.arrays[s][rows[order][mask] - self.offsets[s]]
        return out

    def mean(self) -> np.ndarray:
        """Mean activation [d], float64 accumulation."""
        total = np.zeros(self.meta.d, dtype=np.float64)
        for batch in self.iter_batches(8192):
            total += batch.sum(axis=0, dtype=np.float64)
        return total / max(len(self), 1)
