"""exported/NAME + images -> parity report: the PyTorch reference (the same SteeredClip, eager)
against ONNX Runtime on the same pixels, judged by parity.TOLERANCES (docs/design.md, Parity).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import card
from .artifacts import write_json
from .config import ModelSpec, VerifyConfig, to_jsonable
from .errors import CheckFailed, Vs2Error
from .fused import FusedParts, build_steered_clip
from .parity import TOLERANCES, compare, latent_overlap, same_decisions
from .runtime import contract
from .runtime.manifest import Manifest
from .runtime.preprocess import list_images, normalise, preprocess_paths
from .runtime.session import Vs2Session

log = logging.getLogger(__name__)


def load_pixels(folder: Path, manifest: Manifest, limit: int) -> tuple[np.ndarray, list]:
    """Up to `limit` images under `folder` -> (pixels in the graph's input kind, skipped
    [(path, reason)]): float32 [N, 3, S, S], or uint8 [N, S, S, 3] for a pixels_uint8 graph."""
    uint8 = manifest.pixel_input == contract.PIXELS_UINT8
    batch = preprocess_paths(list_images(folder)[:limit], manifest.preprocess, uint8=uint8)
    if not len(batch.paths):
        raise Vs2Error(f"verify: expected readable images under {folder}, found none")
    return batch.pixels, [(str(p), r) for p, r in batch.skipped]


def reference_pixels(pixels: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Graph-input pixels -> the float32 [N, 3, S, S] the torch reference takes: uint8 pixels go
    through THE normalisation (preprocess.normalise), so the graph's folded one is under test."""
    return normalise(pixels, manifest.preprocess) if pixels.dtype == np.uint8 else pixels


@torch.no_grad()
def run_reference(parts: FusedParts, pixels: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """The eager SteeredClip on pixels [N, 3, S, S] -> outputs by name, concatenated."""
    chunks = []
    for start in tqdm(range(0, len(pixels), batch), desc="verify: torch", unit="batch",
                      disable=None):
        out = parts.module(torch.from_numpy(pixels[start:start + batch]), *parts.scalars().values())
        chunks.append([t.numpy() for t in out])
    return {name: np.concatenate([c[i] for c in chunks])
            for i, name in enumerate(parts.module.output_names)}


def run_graph(session: Vs2Session, pixels: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """ONNX Runtime on the same pixels -> outputs by name, concatenated."""
    starts = tqdm(range(0, len(pixels), batch), desc="verify: onnxruntime", unit="batch",
                  disable=None)
    chunks = [session.run(pixels[s:s + batch]) for s in starts]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def reference_for(exported: Path, manifest: Manifest, model: ModelSpec | None,
                  cls_only: bool = True) -> FusedParts:
    """Rebuild the PyTorch reference from the export folder's companions and the manifest."""
    if model is None:
        source = manifest.model.source
        model = ModelSpec(manifest.model.id, None if source == "demo" else source)
    parts = build_steered_clip(model, exported / contract.SAE_DIR, exported / contract.STEERING_FILE,
                               tuple(manifest.classes or ()), tuple(manifest.templates), cls_only)
    # An export --force killed after the companions but before model.onnx leaves a new SAE beside
    # the old graph: that is an inconsistent folder, not a parity failure.
    if parts.sae_sha256 != manifest.sae.sha256:
        raise Vs2Error(f"verify: {exported}/sae holds SAE {parts.sae_sha256[:12]}, but "
                       f"{contract.MODEL_FILE} was exported with SAE {manifest.sae.sha256[:12]}; "
                       "re-export with --force")
    return parts


def verify(cfg: VerifyConfig) -> dict:
    """Compare and write the report; raise CheckFailed (after writing it) if any check fails."""
    # The fp16 graph crashes ORT's level-'all' CPU optimiser (export.cpu_options): basic there.
    level = "basic" if cfg.precision == "fp16" and cfg.provider == "cpu" else "all"
    session = Vs2Session(contract.model_path(cfg.exported, cfg.precision), provider=cfg.provider,
                         optimization=level)
    manifest = session.manifest
    if manifest.precision != cfg.precision:
        raise Vs2Error(f"verify: {contract.model_path(cfg.exported, cfg.precision)} should hold the "
                       f"{cfg.precision} variant, its metadata says {manifest.precision}")
    parts = reference_for(Path(cfg.exported), manifest, cfg.model)
    pixels, skipped = load_pixels(cfg.images, manifest, cfg.max_images)
    ref = run_reference(parts, reference_pixels(pixels, manifest), cfg.batch_size)
    got = run_graph(session, pixels, cfg.batch_size)
    tol = TOLERANCES[manifest.precision]
    checks = compare(ref, got, parts.steering.tau, tol)
    failed = [c for c in checks if not c.passed]
    report = {
        "verdict": "FAIL" if failed else "PASS", "precision": manifest.precision,
        "model": str(contract.model_path(cfg.exported, cfg.precision)), "n_images": int(len(pixels)),
        "providers": session.providers, "tolerances": to_jsonable(tol),
        "checks": [asdict(c) for c in checks],
        "latent_index_overlap": latent_overlap(ref[contract.LATENT_INDICES], got[contract.LATENT_INDICES]),
        "discrete_flips": int((~same_decisions(ref, got, tol)).sum()),
        "steered_fraction": float(ref[contract.STEERED].mean()),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }
    suffix = "" if cfg.precision == "fp32" else f".{cfg.precision}"
    write_json(cfg.report or Path(cfg.exported) / f"parity_report{suffix}.json", report)
    card.record_verify(Path(cfg.exported), report, cfg.provider)  # FAIL verdicts too
    if failed:
        raise CheckFailed("parity FAIL: " + "; ".join(
            f"{c.name} = {c.value:.6g} (limit {c.limit:.6g})" for c in failed))
    return report
