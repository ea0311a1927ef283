"""VS2 steering in torch (docs/method.md sections 3 and 4): one definition of the math.

The same `steer` function runs inside the exported graph (fused.SteeredClip) and in the PyTorch
baselines, so there is one definition of the math.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .artifacts import read_json
from .errors import Vs2Error
from .runtime import contract
from .sae import TopKSAE
from .store import ActivationStore

log = logging.getLogger(__name__)
EPS = 1e-12


class Steered(NamedTuple):
    """What one steering pass yields for h [B, d]."""

    h: torch.Tensor          # [B, d] steered where the gate passes, else the input h
    fvu: torch.Tensor        # [B] per-sample fraction of variance unexplained
    steered: torch.Tensor    # [B] bool, fvu <= tau
    values: torch.Tensor     # [B, k] active latent values, descending
    indices: torch.Tensor    # [B, k] int64 latent ids
    score: torch.Tensor      # [B] the gate's score (gate_score), compared with tau


def fvu_per_sample(h: torch.Tensor, h_tilde: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """||h_tilde - h||^2 / ||h - mu||^2 per row (docs/method.md section 4). h, h_tilde: [B, d] -> [B]."""
    err = (h_tilde - h).pow(2).sum(-1)
    spread = (h - mu).pow(2).sum(-1)
    return err / spread.clamp_min(EPS)


def gate_score(criterion: str, h: torch.Tensor, h_tilde: torch.Tensor,
               mu: torch.Tensor) -> torch.Tensor:
    """The gate's score per row, higher = less like the SAE's training data (docs/method.md
    section 4). h, h_tilde: [B, d] -> [B]. criterion: contract.GATE_CRITERIA.

    fvu divides the error by ||h - mu||^2, so an input far from the data gets a SMALL score and
    passes; rel_err divides by ||h||^2 instead, err not at all (benchmarks/README.md, gate table).
    """
    if criterion == contract.GATE_FVU:
        return fvu_per_sample(h, h_tilde, mu)
    err = (h_tilde - h).pow(2).sum(-1)
    if criterion == contract.GATE_ERR:
        return err
    if criterion == contract.GATE_REL_ERR:
        return err / h.pow(2).sum(-1).clamp_min(EPS)
    raise Vs2Error(f"gate: expected one of {list(contract.GATE_CRITERIA)}, got {criterion!r}")


def steer(h: torch.Tensor, sae: TopKSAE, gamma: torch.Tensor, lambda_: torch.Tensor,
          tau: torch.Tensor, gate: str = contract.GATE_FVU) -> Steered:
    """VS2 on h [B, d]; gamma, lambda_, tau are 0-d tensors (graph inputs once exported).

        v     = (gamma - 1) W_dec c                         (docs/method.md section 3; b_pre cancels)
        h_hat = (h + lambda v) ||h|| / ||h + lambda v||           (norm-preserving)
        h_hat = h where score(h) > tau                      (docs/method.md section 4: fall back)

    score is gate_score(gate, ...): the paper's FVU, or a criterion of ours (contract.GATE_CRITERIA).
    Every scalar meets a data-dependent tensor first (wc * gamma - wc, not (gamma - 1) * wc), so an
    exporter's constant folding cannot bake gamma into the weights: they stay overridable.
    """
    values, indices = sae.encode(h)
    wc = sae.decode_delta(values, indices)                     # W_dec c  [B, d]
    h_tilde = wc + sae.b_pre
    fvu = fvu_per_sample(h, h_tilde, sae.mu)
    score = fvu if gate == contract.GATE_FVU else gate_score(gate, h, h_tilde, sae.mu)
    steered = score <= tau
    h_out = torch.where(steered.unsqueeze(-1), shift(h, wc, gamma, lambda_), h)
    return Steered(h_out, fvu, steered, values, indices, score)


def shift(h: torch.Tensor, wc: torch.Tensor, gamma: torch.Tensor,
          lambda_: torch.Tensor) -> torch.Tensor:
    """(h + lambda (gamma - 1) wc) rescaled to ||h|| (docs/method.md section 3). h, wc: [..., d].
    wc is W_dec c; the gallery passes W_dec c without one latent to see what that latent did."""
    moved = h + (wc * gamma - wc) * lambda_                       # h + lambda v
    scale = h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return moved * scale


@dataclass(frozen=True)
class SteeringParams:
    """The contents of steering.json: VS2 strength and the calibrated gate."""

    gamma: float
    """Latent amplification (docs/method.md section 3; default 1.5)."""
    lambda_: float
    """Steering strength lambda (default 2.1)."""
    quantile: float
    """q of the gate (docs/method.md section 4)."""
    tau: float
    """q-quantile of the per-sample FVU on the SAE's training activations."""
    sae_sha256: str
    """Checksum of the SAE weights this gate was calibrated for."""
    fvu_stats: dict
    """Per-sample FVU distribution on the calibration activations (mean, median, p90, p99, max)."""
    n_samples: int
    """Activations the quantile was taken over."""
    model_id: str = ""
    """Model whose activations were used (from the store's meta.json)."""
    model_source: str = ""
    """Its pretrained tag, checkpoint or 'none' / 'demo'."""
    model_weights_sha256: str | None = None
    """Checksum of those model weights (clip.weights_sha256): export refuses other weights."""
    acts: str | None = None
    """The activation store tau was taken over (absolute path): its images are the default
    int8 calibration and verify images."""
    store_id: str | None = None
    """That store's content identity (store.StoreMeta.store_id)."""
    gate: str = contract.GATE_FVU
    """Gate criterion tau is a quantile of (contract.GATE_CRITERIA); files from before issue 12
    hold no key and were calibrated on FVU."""
    gate_stats: dict = field(default_factory=dict)
    """The gate score's distribution on the calibration activations: pass_rate (share with
    score <= tau), mean, p50, p90, p95, p99, p999, max. The runtime's drift monitor compares
    live traffic with it."""
    data: dict = field(default_factory=dict)
    """The SAE's training data as the store's meta.json describes it: count, images_sha256
    (SHA-256 of the image list, one path per line), model_id, model_source."""

    def __post_init__(self) -> None:
        """The values go into a float32 graph and the manifest: check them once, here."""
        from .config import finite32
        checks = {"gamma": finite32(self.gamma) and self.gamma > 0,
                  "lambda": finite32(self.lambda_) and self.lambda_ >= 0,
                  "quantile": finite32(self.quantile) and 0 < self.quantile <= 1,
                  "tau": finite32(self.tau) and self.tau >= 0,
                  "sae_sha256": isinstance(self.sae_sha256, str) and len(self.sae_sha256) == 64,
                  "n_samples": isinstance(self.n_samples, int) and not isinstance(self.n_samples, bool),
                  "fvu_stats": isinstance(self.fvu_stats, dict),
                  "model_id": isinstance(self.model_id, str),
                  "model_weights_sha256": self.model_weights_sha256 is None
                  or (isinstance(self.model_weights_sha256, str) and len(self.model_weights_sha256) == 64)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise Vs2Error(f"steering: expected gamma > 0, lambda >= 0, tau >= 0 finite in float32, "
                           f"quantile in (0, 1] and 64-hex checksums; got invalid {bad}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lambda"] = data.pop("lambda_")  # the JSON key is the CLI's --lambda
        return {"format": "vs2-steering", **data}


def load_steering(path: Path) -> SteeringParams:
    """Read steering.json."""
    data = read_json(path, "steering")
    if data.pop("format", None) != "vs2-steering":
        raise Vs2Error(f"steering {path}: expected format 'vs2-steering', got another JSON file")
    if "lambda" in data:
        data["lambda_"] = data.pop("lambda")
    try:
        params = SteeringParams(**data)
    except TypeError as exc:
        raise Vs2Error(f"steering {path}: unexpected or missing keys ({exc})") from None
    except Vs2Error as exc:
        raise Vs2Error(f"steering {path}: {str(exc).removeprefix('steering: ')}") from None
    if params.gate not in contract.GATE_CRITERIA:
        raise Vs2Error(f"steering {path}: gate: expected one of {list(contract.GATE_CRITERIA)}, "
                       f"got {params.gate!r}")
    return params


@torch.no_grad()
def sae_fvu(sae: TopKSAE, store: ActivationStore, batch_size: int = 4096) -> np.ndarray:
    """Per-sample FVU of `sae` over every activation in `store` -> [N] float64."""
    return sae_scores(sae, store, contract.GATE_FVU, batch_size)


@torch.no_grad()
def sae_scores(sae: TopKSAE, store: ActivationStore, gate: str,
               batch_size: int = 4096) -> np.ndarray:
    """Per-sample gate score (gate_score) over every activation in `store` -> [N] float64."""
    parts = []
    for batch in store.iter_batches(batch_size):
        h = torch.tensor(batch, dtype=torch.float32)
        parts.append(gate_score(gate, h, sae(h), sae.mu).double().numpy())
    return np.concatenate(parts) if parts else np.zeros(0)
