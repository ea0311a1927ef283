"""SteeredClip: the exact module that gets exported, and the PyTorch reference that verify runs.

    pixel_values [B, 3, S, S] -> trunk -> h [B, d] -> SAE encode -> FVU gate -> VS2 steering
        -> ln_post -> proj -> L2 normalise -> embedding [B, E]
        (-> logits [B, C] = logit_scale * embedding @ class_embeddings^T, class_embeddings [C, E]
            a graph input: classes change at run time)

The steering scalars and class_embeddings are forward() arguments, so the exporter makes them
graph inputs; nothing of them is a weight that constant folding could bake in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .clip import ClipHead, ClipTrunk, LoadedClip, load_clip
from .config import ModelSpec
from .errors import Vs2Error
from .runtime import contract
from .sae import TopKSAE, load_sae
from .steering import SteeringParams, load_steering, steer
from .zeroshot import class_embeddings


class SteeredClip(nn.Module):
    """CLIP image tower with VS2 steering of the last block's CLS token (docs/method.md sections 1-5)."""

    def __init__(self, visual: nn.Module, sae: TopKSAE, text: torch.Tensor | None,
                 logit_scale: float, cls_only: bool = True, gate: str = contract.GATE_FVU):
        super().__init__()
        self.gate = gate  # the gate criterion (steering.gate_score), fixed in the graph
        self.trunk = ClipTrunk(visual, cls_only)  # cls_only: clip.ClipTrunk (same math, fewer FLOPs)
        self.head = ClipHead(visual)
        self.sae = sae
        # [C, E] unit rows: the default of the class_embeddings input. A plain attribute, not a
        # buffer: it must not become a weight of the graph (the graph takes it as an input).
        self.text = text.float() if text is not None else None
        self.logit_scale = float(logit_scale)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(n for n in contract.OUTPUTS if n != contract.LOGITS or self.text is not None)

    def forward(self, pixel_values: torch.Tensor, steer_gamma: torch.Tensor,
                steer_lambda: torch.Tensor, gate_tau: torch.Tensor,
                class_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Outputs in `output_names` order; scalars are 0-d float tensors; class_embeddings
        [C, E] (default: the export's classes) is used only by a module built with classes."""
        h = self.trunk(pixel_values)
        out = steer(h, self.sae, steer_gamma, steer_lambda, gate_tau, self.gate)
        # Plain CLIP and steered CLIP share the head; steering only replaces h (docs/method.md s. 1).
        base = F.normalize(self.head(h), dim=-1)
        embedding = F.normalize(self.head(out.h), dim=-1)
        logits = ()
        if self.text is not None:
            classes = self.text if class_embeddings is None else class_embeddings
            logits = (self.logit_scale * embedding @ classes.T,)
        return (embedding, base, *logits, out.fvu, out.steered, out.indices, out.values, out.score)


class Uint8Pixels(nn.Module):
    """pixels_uint8 [B, S, S, 3] (resized, cropped RGB) -> normalise in the graph -> SteeredClip.

    x / 255 then (x - mean) / std is folded into one multiply-add per channel,
    x * (1 / (255 std)) - mean / std, so apps skip the float conversion and copy on their side.
    """

    def __init__(self, steered: SteeredClip, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.steered = steered
        m = torch.tensor(mean, dtype=torch.float64).reshape(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).reshape(1, 3, 1, 1)
        # Constants computed in float64, rounded once to float32.
        self.register_buffer("scale", (1.0 / (255.0 * s)).float())
        self.register_buffer("shift", (m / s).float())

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.steered.output_names

    def forward(self, pixels_uint8: torch.Tensor, steer_gamma: torch.Tensor,
                steer_lambda: torch.Tensor, gate_tau: torch.Tensor,
                class_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """uint8 [B, S, S, 3] -> SteeredClip's outputs (pixels [B, 3, S, S] float32 inside)."""
        pixels = pixels_uint8.permute(0, 3, 1, 2).float() * self.scale - self.shift
        return self.steered(pixels, steer_gamma, steer_lambda, gate_tau, class_embeddings)


@dataclass(frozen=True)
class FusedParts:
    """A SteeredClip and everything the export metadata records about its parts."""

    module: SteeredClip
    clip: LoadedClip
    steering: SteeringParams
    sae_sha256: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]

    def scalars(self) -> dict[str, torch.Tensor]:
        """The default values of the steering inputs (float32 0-d)."""
        s = self.steering
        return {name: torch.tensor(v, dtype=torch.float32)
                for name, v in zip(contract.STEERING_INPUTS, (s.gamma, s.lambda_, s.tau), strict=True)}

    def inputs(self) -> dict[str, torch.Tensor]:
        """Every input but the pixels, with its default, in forward() order: the steering scalars,
        then class_embeddings [C, E] when built with classes."""
        text = self.module.text
        return self.scalars() | ({contract.CLASS_EMBEDDINGS: text} if text is not None else {})


def build_steered_clip(model: ModelSpec, sae_dir: Path, steering_path: Path,
                       classes: tuple[str, ...], templates: tuple[str, ...],
                       cls_only: bool = True) -> FusedParts:
    """Load every part, check they belong together, and assemble SteeredClip (eval, fp32)."""
    clip = load_clip(model)
    sae, checksum = load_sae(sae_dir)
    steering = load_steering(steering_path)
    if sae.cfg.d != clip.width:
        raise Vs2Error(f"SAE {sae_dir} expects d={sae.cfg.d}, model {model.name} has CLS width "
                       f"d={clip.width}")
    if steering.sae_sha256 != checksum:
        raise Vs2Error(f"steering {steering_path} was calibrated for SAE {steering.sae_sha256[:12]}, "
                       f"but {sae_dir} holds SAE {checksum[:12]}")
    if steering.model_id and steering.model_id != model.name:
        raise Vs2Error(f"steering {steering_path} comes from activations of {steering.model_id}, "
                       f"not of the model being exported ({model.name})")
    text = class_embeddings(clip, classes, templates) if classes else None
    scale = float(clip.model.logit_scale.detach().exp()) if hasattr(clip.model, "logit_scale") else 100.0
    module = SteeredClip(clip.model.visual, sae, text, scale, cls_only, steering.gate).eval()
    return FusedParts(module, clip, steering, checksum, tuple(classes), tuple(templates))
