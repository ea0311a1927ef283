"""What `vs2 bench` times besides the exported variants: the baselines a user would otherwise run.

- PyTorch eager: open_clip's own encode_image with VS2 applied by a forward hook on the last
  block (the same `steer` as the graph), then the zero-shot logits.
- The bare CLIP image encoder (open_clip `visual`, full last block, no SAE) exported to ONNX.
- One fp32 MatMul of 2048 x 2048 x 2048: the FLOP rate ONNX Runtime reaches on this machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..clip import no_mha_fastpath
from ..fused import FusedParts
from ..onnx_files import write_onnx
from ..runtime import contract
from ..steering import steer

log = logging.getLogger(__name__)
ORT_IR_VERSION = 10  # onnx 1.23 writes IR 14 by default; ORT 1.31 reads up to 13 (measured)


class HookedClip:
    """open_clip eager + a forward hook that steers the CLS token of the last block.

    Callable on pixels [B, 3, S, S] -> (embedding [B, E], logits [B, C] or None).
    """

    def __init__(self, parts: FusedParts):
        self.model = parts.clip.model.eval()
        self.parts = parts
        scalars = list(parts.scalars().values())
        sae = parts.module.sae

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            out = output.clone()                                   # [B, T, d], batch-first
            out[:, 0] = steer(output[:, 0], sae, *scalars, parts.module.gate).h
            return out

        self.handle = self.model.visual.transformer.resblocks[-1].register_forward_hook(hook)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        embedding = F.normalize(self.model.encode_image(pixels), dim=-1)
        text = self.parts.module.text
        logits = self.parts.module.logit_scale * embedding @ text.T if text is not None else None
        return embedding, logits

    def close(self) -> None:
        self.handle.remove()


def export_encoder(parts: FusedParts, path: Path, opset: int = 18) -> Path:
    """The bare image encoder (pixels [B, 3, S, S] -> embedding [B, E], unnormalised) -> ONNX,
    with the same exporter and settings as the fused graph, so the two differ only by VS2."""
    if path.is_file():
        return path
    size = parts.clip.preprocess.image_size
    batch = torch.export.Dim("batch", min=1, max=4096)
    with no_mha_fastpath(), torch.no_grad():
        program = torch.onnx.export(
            parts.clip.model.visual.eval(), (torch.randn(2, 3, size, size),), dynamo=True,
            opset_version=opset, verbose=False, input_names=[contract.PIXEL_VALUES],
            output_names=[contract.EMBEDDING], dynamic_shapes={"x": {0: batch}})
    write_onnx(program.model, path)  # with a sidecar over 2 GB, like the fused graph
    log.info("bench: exported the bare encoder to %s", path)
    return path


def matmul_model(n: int = 2048) -> bytes:
    """ONNX bytes of C = A @ B with A [n, n] an input and B [n, n] a constant (2 n^3 FLOP)."""
    b = numpy_helper.from_array(np.random.default_rng(0).random((n, n), np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = ORT_IR_VERSION
    return model.SerializeToString()


def vit_gflop(visual: nn.Module, cls_only: bool = False) -> float:
    """Multiply-add FLOPs (x2) of one image through an open_clip ViT's matmuls, in GFLOP.

    Patch embedding, per block QKV, scores, attention x V, out-proj and MLP, the projection.
    ViT-B-32 at 224: 8.82 GFLOP (issue 4's count). cls_only: the last block with one query.
    """
    d = visual.transformer.width
    blocks = len(visual.transformer.resblocks)
    grid = visual.grid_size[0] * visual.grid_size[1]
    patch = visual.patch_size[0] * visual.patch_size[1]
    t = grid + 1
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features

    def block(q: int) -> float:
        return 2 * (t * d * 2 * d + q * d * d + 2 * q * t * d + q * d * d + 2 * q * d * mlp)

    total = 2 * grid * 3 * patch * d + (blocks - 1) * block(t) + block(1 if cls_only else t)
    total += 2 * d * visual.output_dim
    return total / 1e9
