"""What "the same" means between two runs of the graph contract: pure numpy rules and the named
tolerances per precision (docs/design.md, Parity). No torch, no files: verify.py (the step) and
the export's variant check both judge with these.

Top-k is discontinuous, so outputs are compared, not index order. Every check is computed; the
caller fails once, with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import contract

SWAP_MASS = 0.01
"""A top-k swap whose latents hold under 1% of the code's L1 mass is rounding, not a new choice."""


@dataclass(frozen=True)
class Tolerances:
    """What 'the same' means between the PyTorch reference and an exported graph (docs/design.md)."""

    embedding_cosine: float
    """Min cosine between reference and graph embeddings, per image."""
    embedding_max_abs: float
    """Max abs difference of any embedding entry."""
    fvu_abs: float
    """Max abs difference of the per-image FVU."""
    logits_tie: float
    """An argmax disagreement is allowed only where the reference's top-2 logits are this close."""
    gate_margin: float
    """A steered-flag disagreement is allowed only where |fvu - tau| is below this."""
    min_top1_agreement: float
    """Min fraction of images whose top-1 class equals the fp32 reference's."""
    gate_rel: float = 1e-3
    """gate_score: max difference, and the band around tau where a steered-flag disagreement is
    excused, as fractions of tau (criteria differ in scale; gate_margin / 0.1, the FVU margins
    at the demo's tau of about 0.1)."""


# One place for every precision; fp16 / int8 are looser and judged on the task too (issue 4).
TOLERANCES = {
    "fp32": Tolerances(embedding_cosine=0.99999, embedding_max_abs=1e-4, fvu_abs=1e-4,
                       logits_tie=1e-3, gate_margin=1e-4, min_top1_agreement=1.0, gate_rel=1e-3),
    # fp16 / int8: the steered embedding is judged where top-k set and gate match the reference;
    # the flips are judged by top-1 agreement (parity.same_decisions, issue 4). fp16 fvu_abs:
    # the demo measured 0.0103 (FVU is a ratio over a small spread), with top-1 agreement 99.8%.
    "fp16": Tolerances(embedding_cosine=0.999, embedding_max_abs=1e-2, fvu_abs=2e-2,
                       logits_tie=5e-2, gate_margin=1e-2, min_top1_agreement=0.99, gate_rel=1e-1),
    "int8": Tolerances(embedding_cosine=0.99, embedding_max_abs=5e-2, fvu_abs=5e-2,
                       logits_tie=2e-1, gate_margin=5e-2, min_top1_agreement=0.98, gate_rel=5e-1),
}


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
    """Every check of docs/design.md's parity rules on outputs of N images."""
    checks = []
    same = same_decisions(ref, got, tol)
    for name in (contract.EMBEDDING, contract.BASE_EMBEDDING):
        rows = same if name == contract.EMBEDDING else np.ones(len(same), bool)
        detail = "" if rows.all() else (f"on the {int(rows.sum())} of {len(rows)} images whose "
                                         "top-k set and gate match the reference")
        cos = float(_cosine_rows(ref[name][rows], got[name][rows]).min()) if rows.any() else 1.0
        checks.append(Check(f"{name}.cosine_min", cos >= tol.embedding_cosine, cos,
                            tol.embedding_cosine, detail))
        diff = float(np.abs(ref[name][rows] - got[name][rows]).max()) if rows.any() else 0.0
        checks.append(Check(f"{name}.max_abs", diff <= tol.embedding_max_abs, diff,
                            tol.embedding_max_abs, detail))
    diff = float(np.abs(ref[contract.FVU] - got[contract.FVU]).max())
    checks.append(Check("fvu.max_abs", diff <= tol.fvu_abs, diff, tol.fvu_abs))
    checks.extend(_gate_checks(ref, got, tau, tol))
    if contract.LOGITS in ref:
        checks.append(_argmax_check(ref[contract.LOGITS], got[contract.LOGITS], tol))
    return checks


def _gate_checks(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tau: float,
                 tol: Tolerances) -> list[Check]:
    """The gate: its score (gate_score, or fvu in graphs from before issue 12) within gate_rel
    of tau's scale, and the steered flags equal except within gate_rel * tau of tau."""
    checks = []
    scale = max(abs(tau), 1e-12)
    if contract.GATE_SCORE in ref and contract.GATE_SCORE in got:
        score = ref[contract.GATE_SCORE]
        rel = float(np.abs(score - got[contract.GATE_SCORE]).max()) / scale
        checks.append(Check("gate_score.max_rel_tau", rel <= tol.gate_rel, rel, tol.gate_rel,
                            "max abs difference / tau"))
        near_tau = np.abs(score - tau) < tol.gate_rel * scale
        band = f"{tol.gate_rel} tau"
    else:
        near_tau = np.abs(ref[contract.FVU] - tau) < tol.gate_margin
        band = f"{tol.gate_margin}"
    flips = int(((ref[contract.STEERED] != got[contract.STEERED]) & ~near_tau).sum())
    checks.append(Check("steered.mismatches", flips == 0, flips, 0,
                        f"{int(near_tau.sum())} images within {band} of tau excused"))
    return checks


def same_decisions(ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
                   tol: Tolerances) -> np.ndarray:
    """[N] bool: images where the graph made the reference's discrete choices: same gate, and
    latents swapped in or out of the top-k carry < SWAP_MASS of the code's mass. fp32
    (min_top1_agreement 1.0) judges every image. fp16 / int8 move h enough to swap a near-tie
    latent or cross tau, which moves the steered embedding by a step, not by rounding
    (measured: fp16 cosine 0.9956 from one swapped latent of 8): for them the steered embedding
    is compared where the choices match, and the flips are judged on the task (top-1
    agreement, every image) and reported (issue 4)."""
    if tol.min_top1_agreement >= 1.0:
        return np.ones(len(ref[contract.FVU]), bool)
    keep = ref[contract.STEERED] == got[contract.STEERED]
    for i, (ri, rv, gi, gv) in enumerate(zip(ref[contract.LATENT_INDICES], ref[contract.LATENT_VALUES],
                                             got[contract.LATENT_INDICES], got[contract.LATENT_VALUES], strict=True)):
        only_ref, only_got = ~np.isin(ri, gi), ~np.isin(gi, ri)
        swapped = np.abs(rv[only_ref]).sum() + np.abs(gv[only_got]).sum()
        keep[i] &= swapped < SWAP_MASS * max(float(np.abs(rv).sum()), 1e-12)
    return keep


def _argmax_check(ref: np.ndarray, got: np.ndarray, tol: Tolerances) -> Check:
    """Top-1 must agree except where the reference's top-2 logits are within logits_tie."""
    top2 = np.sort(ref, axis=-1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    tied = (top2[:, 1] - top2[:, 0]) < tol.logits_tie
    disagree = ref.argmax(-1) != got.argmax(-1)
    bad = int((disagree & ~tied).sum())
    agreement = float(1.0 - disagree.mean())
    detail = (f"top-1 agreement {agreement:.4f}, {int((disagree & tied).sum())} disagreements "
              "within the tie margin")
    if tol.min_top1_agreement < 1.0:
        # fp16 / int8 are judged on the task: raw top-1 agreement with fp32, ties not excused.
        return Check("logits.top1_agreement", agreement >= tol.min_top1_agreement, agreement,
                     tol.min_top1_agreement, detail)
    return Check("logits.argmax_mismatches", bad == 0, bad, 0, detail)


def latent_overlap(ref_idx: np.ndarray, got_idx: np.ndarray) -> dict[str, float]:
    """Mean and min fraction of each image's top-k index SET shared by both sides (reported)."""
    shares = [len(set(a) & set(b)) / len(a) for a, b in zip(ref_idx.tolist(), got_idx.tolist(), strict=True)]
    return {"mean": float(np.mean(shares)), "min": float(np.min(shares))}
