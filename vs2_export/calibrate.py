"""acts/ + sae/ -> steering.json: gamma, lambda and the gate threshold tau (docs/method.md,
sections 3 and 4). No labels: tau is a quantile of the SAE's own per-sample gate score (FVU, or
the criterion chosen with --gate) on its training activations.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .artifacts import claim_output, read_json, write_json
from .config import CalibrateConfig
from .errors import Vs2Error
from .runtime import contract
from .sae import load_sae, sae_origin
from .steering import SteeringParams, sae_scores
from .store import META_FILE, ActivationStore

log = logging.getLogger(__name__)
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999),
             ("max", 1.0))
"""The points of a score distribution steering.json records (the drift monitor reads them)."""


def calibrate(cfg: CalibrateConfig) -> SteeringParams:
    """acts/ + sae/ -> steering.json: tau = q-quantile of the per-sample gate score
    (docs/method.md section 4), with the score's and FVU's distributions and the store's facts."""
    claim_output(cfg.out, cfg.force)
    store = ActivationStore(cfg.acts)
    sae, checksum = load_sae(cfg.sae)
    if store.meta.d != sae.cfg.d:
        raise Vs2Error(f"calibrate: SAE expects d={sae.cfg.d}, activations in {cfg.acts} have "
                       f"d={store.meta.d}")
    trained = (sae_origin(cfg.sae) or {}).get("weights_sha256")
    if trained != store.meta.weights_sha256:
        raise Vs2Error(f"calibrate: the SAE was trained on activations of model weights "
                       f"{str(trained)[:12]}, {cfg.acts} holds activations of weights "
                       f"{str(store.meta.weights_sha256)[:12]}; calibrate on the SAE's own store")
    fvu = _finite(sae_scores(sae, store, contract.GATE_FVU), cfg.acts)
    score = fvu if cfg.gate == contract.GATE_FVU else _finite(sae_scores(sae, store, cfg.gate),
                                                             cfg.acts)
    tau = float(np.quantile(score, cfg.quantile))
    fvu_stats = distribution(fvu)
    fvu_stats["median"] = fvu_stats["p50"]  # the key steering.json had before issue 12
    params = SteeringParams(
        gamma=cfg.gamma, lambda_=cfg.lambda_, quantile=cfg.quantile, tau=tau,
        sae_sha256=checksum, fvu_stats=fvu_stats, n_samples=int(fvu.size),
        model_id=store.meta.model_id, model_source=store.meta.model_source,
        model_weights_sha256=store.meta.weights_sha256, acts=str(cfg.acts.resolve()),
        store_id=store.meta.store_id, gate=cfg.gate,
        gate_stats={"pass_rate": float((score <= tau).mean()), **distribution(score)},
        data=store_facts(cfg.acts, store))
    write_json(cfg.out, params.to_dict())
    log.info("calibrated %s gate: tau=%.4g (q=%.3f over %d activations)", cfg.gate, tau,
             cfg.quantile, fvu.size)
    return params


def _finite(score: np.ndarray, acts: Path) -> np.ndarray:
    if score.size == 0:
        raise Vs2Error(f"calibrate: expected activations in {acts}, found none")
    bad = int((~np.isfinite(score)).sum())
    if bad:  # else tau = NaN lands in steering.json and every later step inherits it
        raise Vs2Error(f"calibrate: expected finite activations and SAE weights, got NaN or Inf "
                       f"FVU for {bad} of {score.size} activations in {acts}")
    return score


def distribution(score: np.ndarray) -> dict[str, float]:
    """[N] -> mean and the QUANTILES points."""
    return {"mean": float(score.mean()),
            **{name: float(np.quantile(score, q)) for name, q in QUANTILES}}


def store_facts(acts: Path, store: ActivationStore) -> dict:
    """What the model card says about the SAE's training data: the store's count and the
    SHA-256 of its image list (one path per line, store order), or None without a list."""
    images = read_json(Path(acts) / META_FILE, "activation store").get("images")
    digest = None
    if isinstance(images, list) and images:
        digest = hashlib.sha256("\n".join(map(str, images)).encode("utf-8",
                                                                    "surrogateescape")).hexdigest()
    return {"count": len(store), "images_sha256": digest, "model_id": store.meta.model_id,
            "model_source": store.meta.model_source}
