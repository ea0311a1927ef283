"""images/ -> acts/: CLS activations (docs/method.md section 1) into the sharded store of store.py.

Extraction is resumable and appendable: every full shard is written with the list of its images,
so `append=True` keeps all complete shards and extracts only the images not held yet (after an
interruption, or when new images arrive). Under torchrun each rank takes a contiguous part of the
images still to do and writes its own shards (named by session, rank, index, so sorted names give
the single-process row order); rank 0 writes meta.json once all ranks are done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .artifacts import claim_output, read_json
from .clip import ClipTrunk, LoadedClip, load_clip
from .config import ExtractConfig, to_jsonable
from .distributed import Comm, session
from .errors import Vs2Error
from .runtime.preprocess import IMAGE_EXTENSIONS, list_images, preprocess_paths
from .store import META_FILE, ActivationStore, write_meta, write_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractReport:
    """What extract did."""

    out: Path
    count: int
    skipped: tuple[tuple[str, str], ...]
    """(path, reason) of every image that could not be read."""

    def to_json(self) -> dict:
        return {"out": str(self.out), "count": self.count,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}

    def format(self) -> str:
        return (f"store {self.out} holds {self.count} activations"
                + "".join(f"\nskipped {p}: {r}" for p, r in self.skipped))


@dataclass(frozen=True)
class HeldShard:
    """A complete shard found on disk: its file, rows, images and the model that made it."""

    name: str
    images: tuple[str, ...]
    model: tuple[str, str, str | None]
    """(model id, source, weights SHA-256) that made the shard."""


def held_shards(folder: Path) -> list[HeldShard]:
    """Complete shards (npy + image sidecar with matching rows), sorted by name = row order."""
    found = []
    for sidecar in sorted(Path(folder).glob("shard-*.npy.json")):
        npy = sidecar.with_suffix("")
        if not npy.is_file():
            continue                      # the sidecar is written first: this shard never landed
        data = read_json(sidecar, "shard image list")
        images = data.get("images")
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise Vs2Error(f"store {folder}: {sidecar.name} has no list of image paths")
        try:
            rows = np.load(npy, mmap_mode="r", allow_pickle=False).shape[0]
        except (OSError, ValueError, EOFError) as exc:
            raise Vs2Error(f"store {folder}: cannot read {npy.name} ({exc}); extract with --force") from None
        if rows != len(images):
            raise Vs2Error(f"store {folder}: {npy.name} has {rows} rows, its image list "
                           f"{len(images)}")
        found.append(HeldShard(npy.name, tuple(images), (
            str(data.get("model_id", "")), str(data.get("model_source", "")),
            data.get("model_weights_sha256"))))
    return found


def _batches(paths: list[Path], clip: LoadedClip, batch_size: int, skipped: list, kept: list,
             show: bool) -> Iterator[np.ndarray]:
    """Decode + preprocess with THE runtime preprocessing -> pixels [b, 3, S, S] batches."""
    with tqdm(total=len(paths), desc="extract", unit="img", disable=None if show else True) as bar:
        for start in range(0, len(paths), batch_size):
            batch = preprocess_paths(paths[start:start + batch_size], clip.preprocess)
            kept.extend(batch.paths)
            for path, reason in batch.skipped:
                log.warning("skipped %s: %s", path, reason)
                skipped.append((str(path), reason))
            bar.update(min(batch_size, len(paths) - start))
            if len(batch.paths):
                yield batch.pixels


def extract(cfg: ExtractConfig) -> ExtractReport:
    """Run the image trunk over every image under cfg.images and store h [N, d] (docs/method.md s. 1).
    Under torchrun, every rank extracts a disjoint part of the images."""
    with session(cfg.device) as (comm, device):
        return _extract(cfg, comm, device)


def _prepare(cfg: ExtractConfig, comm: Comm) -> list[HeldShard]:
    """Check what the out folder holds against append / force; clear it for a fresh store."""
    if not cfg.append:
        claim_output(cfg.out / META_FILE, cfg.force)
    held = held_shards(cfg.out) if cfg.out.is_dir() else []
    if held and not cfg.append and not cfg.force:
        raise Vs2Error(f"extract: {cfg.out} holds {len(held)} shards of an interrupted "
                       "extraction; pass --append to resume it or --force to start over")
    if cfg.force:
        comm.barrier()                    # every rank has scanned before rank 0 deletes
        if comm.main:
            (cfg.out / META_FILE).unlink(missing_ok=True)   # it would list deleted shards
            for f in list(cfg.out.glob("shard-*.npy")) + list(cfg.out.glob("shard-*.npy.json")):
                f.unlink()
        comm.barrier()
        return []
    return held


def _check_held(cfg: ExtractConfig, held: list[HeldShard], clip: LoadedClip) -> None:
    """--append adds to a store only activations of the very same weights."""
    model = (cfg.model.name, cfg.model.source, clip.weights_sha256)
    for shard in held:
        if shard.model != model:
            raise Vs2Error(f"extract --append: {cfg.out} holds activations of {shard.model[:2]} "
                           f"(weights {str(shard.model[2])[:12]}), expected {model[:2]} (weights "
                           f"{model[2][:12]})")


@torch.no_grad()
def _extract(cfg: ExtractConfig, comm: Comm, device: str) -> ExtractReport:
    paths = list_images(cfg.images)
    if not paths:
        raise Vs2Error(f"extract: expected images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under "
                       f"{cfg.images}, found none")
    held = _prepare(cfg, comm)
    have = {image for shard in held for image in shard.images}
    todo = [p for p in paths if str(p.relative_to(cfg.images)) not in have]
    todo = todo[comm.part(len(todo))]
    sessions = [int(s.name.split("-")[1][1:]) for s in held if s.name.startswith("shard-s")]
    session_id = max(sessions, default=-1) + 1
    log.info("extract: %d images, %d held already, %d for rank %d", len(paths), len(have),
             len(todo), comm.rank)
    clip = load_clip(cfg.model)
    _check_held(cfg, held, clip)
    trunk = ClipTrunk(clip.model.visual).to(device).eval()
    cfg.out.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    _run(cfg, clip, trunk, device, todo, f"shard-s{session_id:03d}-r{comm.rank:03d}", skipped,
         comm.main)
    skipped = [tuple(s) for part in comm.gather(skipped) for s in part]
    comm.barrier()
    if comm.main:
        _finish(cfg, clip, skipped)
    comm.barrier()
    return ExtractReport(cfg.out, len(ActivationStore(cfg.out)), tuple(skipped))


def _run(cfg: ExtractConfig, clip: LoadedClip, trunk: ClipTrunk, device: str, todo: list[Path],
         prefix: str, skipped: list, show: bool) -> None:
    """Extract `todo` into shards prefix-00000.npy, ... (each with its image list)."""
    kept: list[Path] = []
    pending: list[np.ndarray] = []
    index, written = 0, 0
    model = (cfg.model.name, cfg.model.source, clip.weights_sha256)
    for pixels in _batches(todo, clip, cfg.batch_size, skipped, kept, show):
        pending.append(trunk(torch.from_numpy(pixels).to(device)).float().cpu().numpy())
        while sum(len(p) for p in pending) >= cfg.shard_size:
            block = np.concatenate(pending)
            names = [str(p.relative_to(cfg.images)) for p in kept[written:written + cfg.shard_size]]
            write_shard(cfg.out, f"{prefix}-{index:05d}.npy", block[:cfg.shard_size], names, model)
            pending = [block[cfg.shard_size:]]
            index, written = index + 1, written + cfg.shard_size
    if sum(len(p) for p in pending):
        names = [str(p.relative_to(cfg.images)) for p in kept[written:]]
        write_shard(cfg.out, f"{prefix}-{index:05d}.npy", np.concatenate(pending), names, model)


def _finish(cfg: ExtractConfig, clip: LoadedClip, skipped: list) -> None:
    """Rank 0: meta.json over every complete shard, in name order."""
    shards = held_shards(cfg.out)
    count = sum(len(s.images) for s in shards)
    if count == 0:
        raise Vs2Error(f"extract: none of the files under {cfg.images} could be read")
    write_meta(cfg.out, cfg.model.name, cfg.model.source, clip.width,
               [(s.name, len(s.images)) for s in shards], {
                   "preprocess": clip.preprocess.to_dict(), "config": to_jsonable(cfg),
                   "images_root": str(Path(cfg.images).resolve()),
                   "images": [i for s in shards for i in s.images],
                   "skipped": [{"path": p, "reason": r} for p, r in skipped]},
               clip.weights_sha256)
    log.info("store %s: %d activations (d=%d) in %d shards; skipped %d", cfg.out, count,
             clip.width, len(shards), len(skipped))

