"""exported/NAME + images -> parity report: the PyTorch reference (the same SteeredClip, eager)
against ONNX Runtime on the same pixels, judged by the named tolerances of config.TOLERANCES.

Top-k is discontinuous, so outputs are compared, not index order (DESIGN.md, Parity). Every
failing output is collected first; the verdict fails once, with numbers.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .artifacts import write_json
from .config import TOLERANCES, ModelSpec, Tolerances, VerifyConfig, to_jsonable
from .errors import CheckFailed, Vs2Error
from .export import MODEL_FILE
from .fused import FusedParts, build_steered_clip
from .runtime.manifest import Manifest
from .runtime.preprocess import list_images, preprocess_paths
from .runtime.session import Vs2Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One output's verdict: the measured value against its limit."""

    name: str
    passed: bool
    value: float
    limit: float
    detail: str = ""


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of [N, E] arrays -> [N]."""
    num = (a * b).sum(-1)
    return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tau: float,
            tol: Tolerances) -> list[Check]:
    """Every check of DESIGN.md's parity rules on outputs of N images."""
    checks = []
    for name in ("embedding", "base_embedding"):
        cos = float(_cosine_rows(ref[name], got[name]).min())
        checks.append(Check(f"{name}.cosine_min", cos >= tol.embedding_cosine, cos,
                            tol.embedding_cosine))
        diff = float(np.abs(ref[name] - got[name]).max())
        checks.append(Check(f"{name}.max_abs", diff <= tol.embedding_max_abs, diff,
                            tol.embedding_max_abs))
    diff = float(np.abs(ref["fvu"] - got["fvu"]).max())
    checks.append(Check("fvu.max_abs", diff <= tol.fvu_abs, diff, tol.fvu_abs))
    near_tau = np.abs(ref["fvu"] - tau) < tol.gate_margin
    flips = int(((ref["steered"] != got["steered"]) & ~near_tau).sum())
    checks.append(Check("steered.mismatches", flips == 0, flips, 0,
                        f"{int(near_tau.sum())} images within {tol.gate_margin} of tau excused"))
    if "logits" in ref:
        checks.append(_argmax_check(ref["logits"], got["logits"], tol))
    return checks


def _argmax_check(ref: np.ndarray, got: np.ndarray, tol: Tolerances) -> Check:
    """Top-1 must agree except where the reference's top-2 logits are within logits_tie."""
    top2 = np.sort(ref, axis=-1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    tied = (top2[:, 1] - top2[:, 0]) < tol.logits_tie
    disagree = ref.argmax(-1) != got.argmax(-1)
    bad = int((disagree & ~tied).sum())
    agreement = float(1.0 - disagree.mean())
    return Check("logits.argmax_mismatches", bad == 0 and agreement >= tol.min_top1_agreement,
                 bad, 0, f"top-1 agreement {agreement:.4f}, {int((disagree & tied).sum())} "
                 "disagreements excused as ties")


def latent_overlap(ref_idx: np.ndarray, got_idx: np.ndarray) -> dict[str, float]:
    """Mean and min fraction of each image's top-k index SET shared by both sides (reported)."""
    shares = [len(set(a) & set(b)) / len(a) for a, b in zip(ref_idx.tolist(), got_idx.tolist())]
    return {"mean": float(np.mean(shares)), "min": float(np.min(shares))}


def load_pixels(folder: Path, manifest: Manifest, limit: int) -> tuple[np.ndarray, list]:
    """Up to `limit` images under `folder` -> (pixels [N, 3, S, S], skipped [(path, reason)])."""
    batch = preprocess_paths(list_images(folder)[:limit], manifest.preprocess)
    if not len(batch.paths):
        raise Vs2Error(f"verify: expected readable images under {folder}, found none")
    return batch.pixels, [(str(p), r) for p, r in batch.skipped]


@torch.no_grad()
def run_reference(parts: FusedParts, pixels: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """The eager SteeredClip on pixels [N, 3, S, S] -> outputs by name, concatenated."""
    chunks = []
    for start in range(0, len(pixels), batch):
        out = parts.module(torch.from_numpy(pixels[start:start + batch]), *parts.scalars().values())
        chunks.append([t.numpy() for t in out])
    return {name: np.concatenate([c[i] for c in chunks])
            for i, name in enumerate(parts.module.output_names)}


def run_graph(session: Vs2Session, pixels: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """ONNX Runtime on the same pixels -> outputs by name, concatenated."""
    chunks = [session.run(pixels[s:s + batch]) for s in range(0, len(pixels), batch)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def reference_for(exported: Path, manifest: Manifest, model: ModelSpec | None) -> FusedParts:
    """Rebuild the PyTorch reference from the export folder's companions and the manifest."""
    if model is None:
        source = manifest.model.source
        model = ModelSpec(manifest.model.id, None if source == "demo" else source)
    return build_steered_clip(model, exported / "sae", exported / "steering.json",
                              tuple(manifest.classes or ()), tuple(manifest.templates))


def verify(cfg: VerifyConfig) -> dict:
    """Compare and write the report; raise CheckFailed (after writing it) if any check fails."""
    session = Vs2Session(cfg.exported, provider=cfg.provider)
    manifest = session.manifest
    parts = reference_for(Path(cfg.exported), manifest, cfg.model)
    pixels, skipped = load_pixels(cfg.images, manifest, cfg.max_images)
    ref = run_reference(parts, pixels, cfg.batch_size)
    got = run_graph(session, pixels, cfg.batch_size)
    tol = TOLERANCES[manifest.precision]
    checks = compare(ref, got, parts.steering.tau, tol)
    failed = [c for c in checks if not c.passed]
    report = {
        "verdict": "FAIL" if failed else "PASS", "precision": manifest.precision,
        "model": str(Path(cfg.exported) / MODEL_FILE), "n_images": int(len(pixels)),
        "providers": session.providers, "tolerances": to_jsonable(tol),
        "checks": [asdict(c) for c in checks],
        "latent_index_overlap": latent_overlap(ref["latent_indices"], got["latent_indices"]),
        "steered_fraction": float(ref["steered"].mean()),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }
    write_json(cfg.report or Path(cfg.exported) / "parity_report.json", report)
    if failed:
        raise CheckFailed("parity FAIL: " + "; ".join(
            f"{c.name} = {c.value:.6g} (limit {c.limit:.6g})" for c in failed))
    return report
