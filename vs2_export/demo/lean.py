"""A random SAE and steering file for any open_clip architecture, without extract, train or
calibrate: what export and parity need to measure a model's size, speed and memory (issue 13).

Only their shapes and the model checksum matter for that: export refuses an SAE whose recorded
weights differ from the model's (clip.LoadedClip.weights_sha256), and a tau every image passes
keeps the steering branch live, so parity compares the steered path too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from ..artifacts import write_json
from ..config import CalibrateConfig, ModelSpec, SAEConfig, default
from ..sae import TopKSAE, save_sae
from ..steering import SteeringParams

PROBE = ("from vs2_export.clip import load_clip; from vs2_export.config import ModelSpec; "
         "c = load_clip(ModelSpec({name!r}, {source!r})); print(c.width, c.weights_sha256)")


def probe(model: ModelSpec, timeout: float = 1800) -> tuple[int, str]:
    """(d, weights_sha256) of `model`, read in a child process: a multi-GB model must not stay
    resident in the caller while export and verify run after it."""
    code = PROBE.format(name=model.name, source=model.pretrained)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout,
                          check=True)
    width, checksum = done.stdout.decode().split()[-2:]
    return int(width), checksum


def lean_parts(work: Path, model: ModelSpec, width: int, weights_sha256: str,
               k: int = 32, expansion: int = 4) -> tuple[Path, Path]:
    """work/sae (a seeded random TopKSAE, d -> expansion * d, top-k) and work/steering.json
    (CalibrateConfig's gamma and lambda, tau = 1e3 so every image is steered) -> their paths."""
    torch.manual_seed(0)
    origin = {"id": model.name, "source": model.pretrained, "weights_sha256": weights_sha256}
    sae = TopKSAE(SAEConfig(d=width, expansion=expansion, k=k))
    checksum = save_sae(sae, work / "sae", origin=origin)
    steering = {k: default(CalibrateConfig, k) for k in ("gamma", "lambda_", "quantile")}
    params = SteeringParams(**steering, tau=1e3, sae_sha256=checksum, fvu_stats={}, n_samples=0,
                            model_id=model.name, model_source=model.pretrained,
                            model_weights_sha256=weights_sha256)
    write_json(work / "steering.json", params.to_dict())
    return work / "sae", work / "steering.json"
