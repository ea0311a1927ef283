"""model + sae/ + steering.json (+ classes) -> exported/NAME/: ONE ONNX graph and its metadata.

    exported/NAME/model.onnx        pixels -> embedding, base_embedding, [logits], fvu, steered,
                                    latent_indices, latent_values; metadata under contract.METADATA_KEY
    exported/NAME/manifest.json     the same metadata, for people
    exported/NAME/sae/, steering.json, classes.txt   what verify needs to rebuild the reference
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

import onnx
import torch
from onnx import numpy_helper

from . import __version__, card
from .artifacts import atomic_path, claim_output, write_json
from .config import ExportConfig, to_jsonable
from .errors import Vs2Error
from .fused import FusedParts, Uint8Pixels, build_steered_clip
from .parity import TOLERANCES
from .precision import check_graph, write_variant
from .runtime import contract
from .runtime.manifest import Manifest
from .sae import CFG_FILE, WEIGHTS_FILE
from .zeroshot import read_classes

log = logging.getLogger(__name__)
TWO_GB = 2**31


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """PyTorch's fused MHA fast path does not export (immich #12496): off while exporting."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def trace_to_onnx(parts: FusedParts, opset: int, uint8_input: bool = False) -> onnx.ModelProto:
    """SteeredClip -> ModelProto with the dynamo exporter, dynamic batch (docs/design.md pitfalls:
    torch >= 2.9 defaults to dynamo, where dynamic_axes no longer works; it wants batch >= 2).
    uint8_input: the graph takes pixels_uint8 uint8 [B, S, S, 3] and normalises them itself
    (fused.Uint8Pixels)."""
    spec = parts.clip.preprocess
    size = spec.image_size
    if uint8_input:
        module, name = Uint8Pixels(parts.module, spec.mean, spec.std).eval(), contract.PIXELS_UINT8
        dummy = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    else:
        module, name, dummy = parts.module, contract.PIXEL_VALUES, torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    scalars = parts.scalars()
    with no_mha_fastpath(), torch.no_grad():
        program = torch.onnx.export(
            module, (dummy, *scalars.values()), dynamo=True, opset_version=opset, verbose=False,
            input_names=[name, *contract.STEERING_INPUTS], output_names=list(module.output_names),
            dynamic_shapes={name: {0: batch}, **{n: None for n in contract.STEERING_INPUTS}})
    return program.model_proto


def make_overridable(model: onnx.ModelProto, defaults: dict[str, torch.Tensor]) -> None:
    """Give the scalar graph inputs default values: an initializer with an input's name makes the
    input optional, so apps can change steering strength and gate at run time (docs/design.md)."""
    graph_inputs = {i.name for i in model.graph.input}
    for name, value in defaults.items():
        if name not in graph_inputs:
            raise Vs2Error(f"export: expected graph input {name!r}, the exporter dropped it")
        model.graph.initializer.append(numpy_helper.from_array(value.numpy(), name=name))


def build_manifest(parts: FusedParts, cfg: ExportConfig, outputs: list[str]) -> Manifest:
    """The metadata contract (runtime/manifest.py validates it, here and in every app)."""
    size = parts.clip.preprocess.image_size
    s = parts.steering
    return Manifest.from_dict({
        "schema_version": 1,
        "model": {"id": cfg.model.name, "source": cfg.model.source, "width": parts.clip.width,
                  "embed_dim": parts.clip.embed_dim},
        "preprocess": parts.clip.preprocess.to_dict(),
        "sae": {"d": parts.module.sae.cfg.d, "n": parts.module.sae.cfg.n,
                "k": parts.module.sae.cfg.k, "sha256": parts.sae_sha256},
        "steering": {"gamma": s.gamma, "lambda": s.lambda_, "quantile": s.quantile, "tau": s.tau,
                     "sae_sha256": s.sae_sha256, "gate": s.gate,
                     "gate_stats": s.gate_stats or None},
        "classes": list(parts.classes) or None,
        "templates": list(parts.templates),
        "logit_scale": parts.module.logit_scale,
        "precision": "fp32",
        "opset": cfg.opset,
        "inputs": {**({contract.PIXELS_UINT8: [None, size, size, 3]} if cfg.uint8_input
                      else {contract.PIXEL_VALUES: [None, 3, size, size]}),
                   "overridable": {k: float(v) for k, v in parts.scalars().items()}},
        "outputs": outputs,
        "versions": _versions(),
        "tolerances": {p: to_jsonable(t) for p, t in TOLERANCES.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "card": card_facts(parts, cfg),
    })


def card_facts(parts: FusedParts, cfg: ExportConfig) -> dict:
    """The model card's export-time facts (card.py), measured from the parts being exported."""
    sae = parts.module.sae.cfg
    return card.export_facts(
        {"id": cfg.model.name, "source": cfg.model.source},
        {"d": sae.d, "n": sae.n, "k": sae.k, "expansion": sae.expansion, "sha256": parts.sae_sha256},
        parts.steering, card.weights_sha256(parts.clip.model.state_dict()))


def _versions() -> dict[str, str]:
    versions = {"vs2_export": __version__}
    for dist, key in (("torch", "torch"), ("open_clip_torch", "open_clip"), ("onnx", "onnx"),
                      ("onnxruntime-gpu", "onnxruntime"), ("onnxruntime", "onnxruntime")):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions.setdefault(key, importlib_metadata.version(dist))
    return versions


def export(cfg: ExportConfig) -> Manifest:
    """Build SteeredClip, export it as ONE graph with metadata, check it, write the folder."""
    claim_output(cfg.out / contract.MODEL_FILE, cfg.force)
    classes = read_classes(cfg.classes) if cfg.classes else ()
    parts = build_steered_clip(cfg.model, cfg.sae, cfg.steering, classes, cfg.templates,
                               cfg.cls_only)
    model = trace_to_onnx(parts, cfg.opset, cfg.uint8_input)
    make_overridable(model, parts.scalars())
    outputs = [o.name for o in model.graph.output]
    manifest = build_manifest(parts, cfg, outputs)
    onnx.helper.set_model_props(model, {contract.METADATA_KEY: manifest.to_json()})
    if model.ByteSize() >= TWO_GB:
        raise Vs2Error("export: graphs over 2 GB need external data, not supported yet")
    _write_companions(cfg, classes)
    with atomic_path(cfg.out / contract.MODEL_FILE) as tmp:
        onnx.save_model(model, str(tmp))
        check_graph(tmp, manifest)
    write_json(cfg.out / contract.MANIFEST_FILE, json.loads(manifest.to_json()))
    card.reset(cfg.out)  # a new graph: earlier verdicts and timings no longer apply
    log.info("exported %s (%.1f MB)", cfg.out / contract.MODEL_FILE,
             (cfg.out / contract.MODEL_FILE).stat().st_size / 1e6)
    for precision in cfg.precisions[1:]:
        write_variant(cfg, manifest, precision)
    return manifest


def _write_companions(cfg: ExportConfig, classes: tuple[str, ...]) -> None:
    """Copies of the SAE, steering and classes, so verify can rebuild the torch reference."""
    for name in (WEIGHTS_FILE, CFG_FILE):
        with atomic_path(cfg.out / contract.SAE_DIR / name) as tmp:
            shutil.copyfile(cfg.sae / name, tmp)
    with atomic_path(cfg.out / contract.STEERING_FILE) as tmp:
        shutil.copyfile(cfg.steering, tmp)
    if classes:
        with atomic_path(cfg.out / contract.CLASSES_FILE) as tmp:
            tmp.write_text("\n".join(classes) + "\n", encoding="utf-8")
    write_json(cfg.out / contract.EXPORT_CONFIG_FILE, to_jsonable(cfg))
