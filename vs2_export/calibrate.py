"""acts/ + sae/ -> steering.json: gamma, lambda and the gate threshold tau (docs/method.md,
sections 3 and 4). No labels: tau is a quantile of the SAE's own per-sample FVU on its training
activations."""

from __future__ import annotations

import logging

import numpy as np

from .artifacts import claim_output, write_json
from .config import CalibrateConfig
from .errors import Vs2Error
from .sae import load_sae, sae_origin
from .steering import SteeringParams, sae_fvu
from .store import ActivationStore

log = logging.getLogger(__name__)


def calibrate(cfg: CalibrateConfig) -> SteeringParams:
    """acts/ + sae/ -> steering.json: tau = q-quantile of per-sample FVU (docs/method.md section 4)."""
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
    fvu = sae_fvu(sae, store)
    if fvu.size == 0:
        raise Vs2Error(f"calibrate: expected activations in {cfg.acts}, found none")
    bad = int((~np.isfinite(fvu)).sum())
    if bad:  # else tau = NaN lands in steering.json and every later step inherits it
        raise Vs2Error(f"calibrate: expected finite activations and SAE weights, got NaN or Inf "
                       f"FVU for {bad} of {fvu.size} activations in {cfg.acts}")
    stats = {name: float(np.quantile(fvu, q)) for name, q in
             (("median", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}
    stats["mean"] = float(fvu.mean())
    params = SteeringParams(gamma=cfg.gamma, lambda_=cfg.lambda_, quantile=cfg.quantile,
                            tau=float(np.quantile(fvu, cfg.quantile)), sae_sha256=checksum,
                            fvu_stats=stats, n_samples=int(fvu.size), model_id=store.meta.model_id,
                            model_source=store.meta.model_source,
                            model_weights_sha256=store.meta.weights_sha256,
                            acts=str(cfg.acts.resolve()), store_id=store.meta.store_id)
    write_json(cfg.out, params.to_dict())
    log.info("calibrated tau=%.4f (q=%.3f over %d activations)", params.tau, cfg.quantile, fvu.size)
    return params
