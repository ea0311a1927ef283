"""VS2 steering in torch (docs/method.md sections 3 and 4): one definition of the math.

The same `steer` function runs inside the exported graph (fused.SteeredClip) and in the PyTorch
baselines, so there is one definition of the math.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .artifacts import read_json
from .errors import Vs2Error
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


def fvu_per_sample(h: torch.Tensor, h_tilde: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """||h_tilde - h||^2 / ||h - mu||^2 per row (docs/method.md section 4). h, h_tilde: [B, d] -> [B]."""
    err = (h_tilde - h).pow(2).sum(-1)
    spread = (h - mu).pow(2).sum(-1)
    return err / spread.clamp_min(EPS)


def steer(h: torch.Tensor, sae: TopKSAE, gamma: torch.Tensor, lambda_: torch.Tensor,
          tau: torch.Tensor) -> Steered:
    """VS2 on h [B, d]; gamma, lambda_, tau are 0-d tensors (graph inputs once exported).

        v     = (gamma - 1) W_dec c                         (docs/method.md section 3; b_pre cancels)
        h_hat = (h + lambda v) ||h|| / ||h + lambda v||           (norm-preserving)
        h_hat = h where FVU(h) > tau                        (docs/method.md section 4: fall back)

    Every scalar meets a data-dependent tensor first (wc * gamma - wc, not (gamma - 1) * wc), so an
    exporter's constant folding cannot bake gamma into the weights: they stay overridable.
    """
    values, indices = sae.encode(h)
    wc = sae.decode_delta(values, indices)                     # W_dec c  [B, d]
    fvu = fvu_per_sample(h, wc + sae.b_pre, sae.mu)
    moved = h + (wc * gamma - wc) * lambda_                       # h + lambda v
    scale = h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(EPS)
    steered = fvu <= tau
    h_out = torch.where(steered.unsqueeze(-1), moved * scale, h)
    return Steered(h_out, fvu, steered, values, indices)


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
        return SteeringParams(**data)
    except TypeError as exc:
        raise Vs2Error(f"steering {path}: unexpected or missing keys ({exc})") from None
    except Vs2Error as exc:
        raise Vs2Error(f"steering {path}: {str(exc).removeprefix('steering: ')}") from None


@torch.no_grad()
def sae_fvu(sae: TopKSAE, store: ActivationStore, batch_size: int = 4096) -> np.ndarray:
    """Per-sample FVU of `sae` over every activation in `store` -> [N] float64."""
    parts = []
    for batch in store.iter_batches(batch_size):
        h = torch.tensor(batch, dtype=torch.float32)
        parts.append(fvu_per_sample(h, sae(h), sae.mu).double().numpy())
    return np.concatenate(parts) if parts else np.zeros(0)
