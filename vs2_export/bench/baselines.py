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


def _vit_dims(visual: nn.Module) -> dict[str, int]:
    """An open_clip ViT's matmul sizes: width d, blocks, tokens t (patches + CLS), patch
    pixels x 3, MLP width, heads, output dim."""
    grid = visual.grid_size[0] * visual.grid_size[1]
    return {"d": visual.transformer.width, "blocks": len(visual.transformer.resblocks),
            "grid": grid, "t": grid + 1, "patch": 3 * visual.patch_size[0] * visual.patch_size[1],
            "mlp": visual.transformer.resblocks[0].mlp.c_fc.out_features,
            "heads": visual.transformer.resblocks[0].attn.num_heads, "out": visual.output_dim}


def gemm_ceiling_model(visual: nn.Module) -> bytes:
    """ONNX bytes of the CLS-only tower's matrix products and nothing else: exactly the
    vit_gflop(cls_only=True) FLOPs at the same shapes (patch embedding, per block K/V, Q,
    scores, attention x V, out-proj, MLP; the projection), chained block to block, without the
    LayerNorms, softmax, GELU, biases or head transposes. Its FLOP rate is what ORT's GEMMs
    reach at these shapes: an upper bound for any fp32 graph of this tower on ORT (the
    batch-1 item, benchmarks/README.md). Inputs: patches [B, grid, patch], the attention
    operands q [B*heads, 1 or t, d/heads], k [B*heads, d/heads, t], v [B*heads, t, d/heads]
    (fed, not computed: computing them needs the transposes this graph leaves out)."""
    n = _vit_dims(visual)
    d, t, rng = n["d"], n["t"], np.random.default_rng(0)
    nodes, inits, outputs = [], [], []

    def matmul(a: str, k: int, cols: int, out: str) -> str:
        w = numpy_helper.from_array((rng.standard_normal((k, cols)) / k**0.5).astype(np.float32),
                                    f"W_{out}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [a, w.name], [out]))
        return out

    def cls_row(x: str, name: str) -> str:  # x [B, t, d] -> [B, 1, d], the CLS query
        nodes.append(helper.make_node("Slice", [x, "zero", "one", "one"], [name]))
        return name

    inits += [numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("zero", 0), ("one", 1))]
    inits.append(numpy_helper.from_array(np.zeros((1, 1, d), np.float32), "cls_token"))
    patches = matmul("patches", n["patch"], d, "embedded")
    nodes.append(helper.make_node("Expand", ["cls_token", "cls_shape"], ["cls"]))
    nodes.append(helper.make_node("Concat", ["cls", patches], ["x0"], axis=1))
    x = "x0"
    for b in range(n["blocks"]):
        last = b == n["blocks"] - 1
        query = cls_row(x, f"cls{b}") if last else x
        outputs += [matmul(x, d, 2 * d, f"kv{b}"), matmul(query, d, d, f"q{b}")]
        q = "q_cls" if last else "q_all"
        nodes.append(helper.make_node("MatMul", [q, "k"], [f"scores{b}"]))
        nodes.append(helper.make_node("MatMul", [f"scores{b}", "v"], [f"heads{b}"]))
        outputs += [f"heads{b}", matmul(query, d, d, f"attn{b}")]
        x = matmul(matmul(query, d, n["mlp"], f"fc{b}"), n["mlp"], d, f"x{b + 1}")
    outputs.append(matmul(x, d, n["out"], "projected"))
    dh = d // n["heads"]
    inputs = [("patches", ["B", n["grid"], n["patch"]]), ("cls_shape", [3]),
              ("q_all", ["BH", t, dh]), ("q_cls", ["BH", 1, dh]), ("k", ["BH", dh, t]),
              ("v", ["BH", t, dh])]
    graph = helper.make_graph(
        nodes, "gemm_ceiling",
        [helper.make_tensor_value_info(k, TensorProto.INT64 if k == "cls_shape" else TensorProto.FLOAT, s)
         for k, s in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = ORT_IR_VERSION
    return model.SerializeToString()


def gemm_ceiling_feeds(visual: nn.Module, batch: int) -> dict[str, np.ndarray]:
    """Random inputs of gemm_ceiling_model for `batch` images."""
    n, rng = _vit_dims(visual), np.random.default_rng(1)
    dh, bh, t = n["d"] // n["heads"], batch * n["heads"], n["t"]
    shapes = {"patches": (batch, n["grid"], n["patch"]), "q_all": (bh, t, dh),
              "q_cls": (bh, 1, dh), "k": (bh, dh, t), "v": (bh, t, dh)}
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    return {**feeds, "cls_shape": np.array([batch, 1, n["d"]], np.int64)}


def vit_gflop(visual: nn.Module, cls_only: bool = False) -> float:
    """Multiply-add FLOPs (x2) of one image through an open_clip ViT's matmuls, in GFLOP.

    Patch embedding, per block QKV, scores, attention x V, out-proj and MLP, the projection.
    ViT-B-32 at 224: 8.82 GFLOP (issue 4's count). cls_only: the last block with one query.
    """
    n = _vit_dims(visual)
    d, t = n["d"], n["t"]

    def block(q: int) -> float:
        return 2 * (t * d * 2 * d + q * d * d + 2 * q * t * d + q * d * d + 2 * q * d * n["mlp"])

    total = 2 * n["grid"] * n["patch"] * d + (n["blocks"] - 1) * block(t)
    total += block(1 if cls_only else t) + 2 * d * n["out"]
    return total / 1e9
