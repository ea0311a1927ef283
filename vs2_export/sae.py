"""The top-k sparse autoencoder (docs/method.md section 2) and its files: cfg.json + sae.safetensors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .artifacts import atomic_path, read_json, sha256_file
from .config import SAEConfig
from .errors import Vs2Error

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
MAX_ELEMENTS = 1 << 31
"""n x d at most (2 G floats, 8 GB): a cfg.json asking for more is refused before allocating."""


class TopKSAE(nn.Module):
    """Top-k SAE on CLS activations h: [B, d].

        pre     = ReLU(W_enc (h - b_pre) + b_enc)        W_enc: [n, d], b_enc: [n]
        c       = TopK_k(pre)                             k values per row, rest zero
        h_tilde = W_dec c + b_pre                         W_dec: stored [n, d], one ROW per latent

    W_dec is stored transposed against docs/method.md (rows, not columns, are latent directions) so
    that decoding k latents gathers k rows. `mu` [d] is the mean of the training activations:
    the centre of the FVU denominator used by the gate (docs/method.md section 4), not a parameter.
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        n, d = cfg.n, cfg.d
        self.W_enc = nn.Parameter(torch.empty(n, d))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.register_buffer("mu", torch.zeros(d))
        nn.init.kaiming_uniform_(self.W_enc, a=5**0.5)
        with torch.no_grad():
            # W_dec starts as W_enc transposed, unit-norm (docs/method.md section 2; Gao et al. 2024).
            self.W_dec.copy_(self.W_enc)
            self.normalize_decoder()

    def pre_activations(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, d] -> ReLU(W_enc (h - b_pre) + b_enc) [B, n]."""
        return F.relu(F.linear(h - self.b_pre, self.W_enc, self.b_enc))

    def encode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, d] -> (values [B, k] descending, indices [B, k] int64). Values may be 0 (ReLU)."""
        # sorted=True: ONNX Runtime's TopK orders ties and unsorted output differently (docs/design.md).
        values, indices = torch.topk(self.pre_activations(h), self.cfg.k, dim=-1, sorted=True)
        return values, indices

    def decode_delta(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(values, indices) [B, k] -> W_dec c [B, d], touching only the k active rows."""
        rows = self.W_dec[indices]                      # [B, k, d]
        return torch.matmul(values.unsqueeze(-2), rows).squeeze(-2)

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(values, indices) [B, k] -> h_tilde [B, d]."""
        return self.decode_delta(values, indices) + self.b_pre

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, d] -> h_tilde [B, d]."""
        return self.decode(*self.encode(h))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Drop the gradient component along each (unit) decoder row, so steps keep the norm."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(-1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)


def sae_checksum(weights_sha256: str, cfg: SAEConfig, origin: dict | None) -> str:
    """THE SAE checksum (steering.json, the manifest, the export record): the weights' SHA-256,
    every cfg.json field that changes the math (d, expansion, n, k), and the model weights the
    activations came from. Editing k in cfg.json, or the model it claims, changes it."""
    doc = {"format": "vs2-topk-sae", "weights_sha256": weights_sha256, "d": cfg.d,
           "expansion": cfg.expansion, "n": cfg.n, "k": cfg.k,
           "model_weights_sha256": (origin or {}).get("weights_sha256")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def save_sae(sae: TopKSAE, folder: Path, extra: dict | None = None,
             origin: dict | None = None) -> str:
    """Write folder/sae.safetensors then folder/cfg.json (cfg last: its presence marks a complete
    SAE). origin: {"id", "source", "weights_sha256", "store_id", "acts"} of the activations it
    was trained on. Returns sae_checksum, which steering.json and the export metadata record."""
    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"format": "vs2-topk-sae"})
    weights = sha256_file(folder / WEIGHTS_FILE)
    checksum = sae_checksum(weights, sae.cfg, origin)
    cfg = {"format": "vs2-topk-sae", **asdict(sae.cfg), "n": sae.cfg.n, "sha256": weights,
           "checksum": checksum, "model": origin, **(extra or {})}
    with atomic_path(folder / CFG_FILE) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    return checksum


def sae_origin(folder: Path) -> dict | None:
    """The activations an SAE was trained on, from its cfg.json: {"id", "source",
    "weights_sha256", "store_id", "acts"} or None (an SAE from an older version)."""
    origin = read_json(Path(folder) / CFG_FILE, "SAE config").get("model")
    return origin if isinstance(origin, dict) else None


def _config(cfg: dict, folder: Path) -> SAEConfig:
    """cfg.json -> SAEConfig, every field an int in range, checked against the weights file's
    header before anything is allocated (a hostile cfg.json could ask for 10^9 latents)."""
    values = {}
    for key in ("d", "expansion", "k"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise Vs2Error(f"SAE {folder}: cfg.json: expected {key} an int >= 1, got {value!r:.40}")
        values[key] = value
    if values["d"] * values["expansion"] * values["d"] > MAX_ELEMENTS:
        raise Vs2Error(f"SAE {folder}: cfg.json asks for {values['d'] * values['expansion']} x "
                       f"{values['d']} weights, more than {MAX_ELEMENTS}")
    try:
        sae_cfg = SAEConfig(**values)
    except ValueError as exc:
        raise Vs2Error(f"SAE {folder}: cfg.json: {exc}") from None
    try:
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as fh:
            shapes = {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118 (not a dict)
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise Vs2Error(f"SAE {folder}: cannot read {WEIGHTS_FILE} ({exc})") from None
    want = {"W_enc": (sae_cfg.n, sae_cfg.d), "b_enc": (sae_cfg.n,), "W_dec": (sae_cfg.n, sae_cfg.d),
            "b_pre": (sae_cfg.d,), "mu": (sae_cfg.d,)}
    if shapes != want:
        raise Vs2Error(f"SAE {folder}: weights do not match cfg.json: expected {want}, got {shapes}")
    return sae_cfg


def load_sae(folder: Path) -> tuple[TopKSAE, str]:
    """Read an SAE folder -> (TopKSAE in eval mode, its sae_checksum)."""
    folder = Path(folder)
    cfg = read_json(folder / CFG_FILE, "SAE config")
    if cfg.get("format") != "vs2-topk-sae" and "d_in" in cfg:
        raise Vs2Error(f"SAE {folder}: this is a sparsify checkpoint, expected a vs2 SAE folder; "
                       "convert it with `vs2 train --acts ACTS --out SAE --import-sae "
                       f"{folder}`")
    if cfg.get("format") != "vs2-topk-sae":
        raise Vs2Error(f"SAE {folder}: expected format 'vs2-topk-sae' in cfg.json, got "
                       f"{cfg.get('format')!r:.40}")
    sae = TopKSAE(_config(cfg, folder))
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
        sae.load_state_dict(state, strict=True)
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise Vs2Error(f"SAE {folder}: cannot read {WEIGHTS_FILE} ({exc})") from None
    except RuntimeError as exc:
        raise Vs2Error(f"SAE {folder}: weights do not match cfg.json ({str(exc)[:200]})") from None
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise Vs2Error(f"SAE {folder}: {WEIGHTS_FILE} holds NaN or Inf; retrain it")
    weights = sha256_file(folder / WEIGHTS_FILE)
    # A kill between the weights' rename and cfg.json's (train --force over an old SAE) leaves
    # new weights beside the old cfg.json: refuse the mix instead of loading it.
    if cfg.get("sha256") not in (None, weights):
        raise Vs2Error(f"SAE {folder}: cfg.json expects weights with SHA-256 {str(cfg['sha256'])[:12]}, "
                       f"{WEIGHTS_FILE} has {weights[:12]} (an interrupted write?); retrain "
                       "with --force")
    origin = cfg.get("model") if isinstance(cfg.get("model"), dict) else None
    checksum = sae_checksum(weights, sae.cfg, origin)
    if cfg.get("checksum") not in (None, checksum):
        raise Vs2Error(f"SAE {folder}: cfg.json was edited after training (its fields k, d, "
                       f"expansion or model no longer give checksum {str(cfg['checksum'])[:12]}); "
                       "retrain, or restore cfg.json")
    return sae.eval(), checksum
