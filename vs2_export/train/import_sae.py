"""Import top-k SAEs trained elsewhere, so they can be calibrated and exported like our own.

Supported: EleutherAI sparsify checkpoints of one hookpoint (a folder with cfg.json + sae.safetensors):

    cfg.json          {"d_in": d, "k": k, "num_latents": n or 0, "expansion_factor": e,
                       "activation": "topk", "transcode": false, "skip_connection": false, ...}
    sae.safetensors   encoder.weight [n, d], encoder.bias [n], W_dec [n, d], b_dec [d]

sparsify encodes ReLU(encoder(x - b_dec)), keeps the top k and decodes W_dec^T c + b_dec: our
TopKSAE with W_enc = encoder.weight, b_enc = encoder.bias, b_pre = b_dec, same W_dec rows. mu (the
gate's FVU centre, docs/method.md section 4) is not in the checkpoint: it is the mean of the activation
store given, which must be the SAE's hookpoint (the CLS residual after the last block).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..artifacts import claim_output, read_json, write_json
from ..config import SAEConfig
from ..errors import Vs2Error
from ..sae import CFG_FILE, WEIGHTS_FILE, TopKSAE, save_sae
from ..steering import sae_fvu
from ..store import ActivationStore

log = logging.getLogger(__name__)
SPARSIFY_KEYS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
UNSUPPORTED = ("transcode", "skip_connection", "embed_skip", "gram_lookup")


def _sparsify_config(cfg: dict, folder: Path) -> SAEConfig:
    """sparsify cfg.json -> our SAEConfig, refusing variants that are not a plain top-k SAE."""
    if cfg.get("activation", "topk") != "topk":
        raise Vs2Error(f"import {folder}: expected activation 'topk', got {cfg['activation']!r}")
    for key in UNSUPPORTED:
        if cfg.get(key):
            raise Vs2Error(f"import {folder}: expected a plain SAE, got {key}=true (unsupported)")
    try:
        d, k = int(cfg["d_in"]), int(cfg["k"])
        n = int(cfg.get("num_latents") or 0) or d * int(cfg["expansion_factor"])
    except (KeyError, TypeError, ValueError) as exc:
        raise Vs2Error(f"import {folder}: sparsify cfg.json lacks or mistypes {exc}") from None
    if n % d:
        raise Vs2Error(f"import {folder}: expected num_latents a multiple of d_in={d}, got {n}")
    return SAEConfig(d=d, expansion=n // d, k=k)


def read_sparsify(folder: Path) -> TopKSAE:
    """A sparsify checkpoint folder -> TopKSAE (float32; mu left at zero)."""
    folder = Path(folder)
    cfg = read_json(folder / CFG_FILE, "SAE config")
    if "d_in" not in cfg:
        raise Vs2Error(f"import {folder}: unknown SAE format: expected a sparsify cfg.json "
                       f"(with d_in, k, expansion_factor), got keys {sorted(cfg)[:8]}")
    sae_cfg = _sparsify_config(cfg, folder)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise Vs2Error(f"import {folder}: cannot read {WEIGHTS_FILE} ({exc})") from None
    if set(tensors) != SPARSIFY_KEYS:
        raise Vs2Error(f"import {folder}: expected tensors {sorted(SPARSIFY_KEYS)}, got "
                       f"{sorted(tensors)}")
    sae = TopKSAE(sae_cfg)
    n, d = sae_cfg.n, sae_cfg.d
    mapping = {"W_enc": ("encoder.weight", (n, d)), "b_enc": ("encoder.bias", (n,)),
               "W_dec": ("W_dec", (n, d)), "b_pre": ("b_dec", (d,))}
    with torch.no_grad():
        for ours, (theirs, shape) in mapping.items():
            if tuple(tensors[theirs].shape) != shape:
                raise Vs2Error(f"import {folder}: {theirs} expected shape {list(shape)}, got "
                               f"{list(tensors[theirs].shape)}")
            getattr(sae, ours).copy_(tensors[theirs].float())
    return sae.eval()


def import_sae(source: Path, acts: Path, out: Path, force: bool = False) -> dict:
    """sparsify folder + the activation store of its hookpoint -> our SAE folder; returns a
    report (FVU on the store, so a wrong hookpoint shows at once)."""
    claim_output(Path(out) / CFG_FILE, force)
    sae = read_sparsify(source)
    store = ActivationStore(acts)
    if store.meta.d != sae.cfg.d:
        raise Vs2Error(f"import: the SAE expects d={sae.cfg.d}, activations in {acts} have "
                       f"d={store.meta.d}")
    with torch.no_grad():
        sae.mu.copy_(torch.from_numpy(store.mean().astype(np.float32)))
    fvu = sae_fvu(sae, store)
    report = {"imported_from": str(source), "source_format": "sparsify", "n": sae.cfg.n,
              "k": sae.cfg.k, "d": sae.cfg.d, "samples": len(store),
              "fvu_per_sample": {"median": float(np.median(fvu)), "p90": float(np.quantile(fvu, 0.9))}}
    if not math.isfinite(report["fvu_per_sample"]["median"]) or report["fvu_per_sample"]["median"] > 1:
        log.warning("import: median FVU %.3f on %s: is the store the SAE's hookpoint?",
                    report["fvu_per_sample"]["median"], acts)
    save_sae(sae, out, extra={"import": report}, origin=store.origin)
    write_json(Path(out) / "import_report.json", report)
    return report
