"""model + sae/ + steering.json (+ classes) -> exported/NAME/: ONE ONNX graph and its metadata.

    exported/NAME/model.onnx        pixels, steer_gamma, steer_lambda, gate_tau [, class_embeddings]
                                    -> embedding, base_embedding, [logits], fvu, steered,
                                    latent_indices, latent_values; metadata under contract.METADATA_KEY
    exported/NAME/manifest.json     the same metadata, for people
    exported/NAME/class_embeddings.f32, text.onnx, tokenizer/   with classes: the default class
                                    matrix, and what names new classes at run time (text_tower.py)
    exported/NAME/reference/        images, their graph inputs and outputs, for ports (reference.py)
    exported/NAME/sae/, steering.json, classes.txt   what verify needs to rebuild the reference
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

import onnx
import torch

from . import __version__
from .artifacts import atomic_path, claim_output, write_json
from .config import ExportConfig, to_jsonable
from .errors import Vs2Error
from .fused import FusedParts, Uint8Pixels, build_steered_clip
from .image_front import prepend_image_front
from .parity import TOLERANCES
from .precision import check_graph, write_variant
from .reference import write_reference
from .runtime import contract
from .runtime.classes import encode_class_embeddings
from .runtime.manifest import Manifest
from .sae import CFG_FILE, WEIGHTS_FILE
from .text_tower import text_spec, write_text_tower
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


def trace_to_onnx(parts: FusedParts, opset: int,
                  pixel_input: str = contract.PIXEL_VALUES) -> onnx.ModelProto:
    """SteeredClip -> ModelProto with the dynamo exporter, dynamic batch (docs/design.md pitfalls:
    torch >= 2.9 defaults to dynamo, where dynamic_axes no longer works; it wants batch >= 2).

    Every non-pixel input (steering scalars, class_embeddings [C, E] with dynamic C) is a forward()
    argument, so it is a required graph input that constant folding cannot touch. pixel_input:
    pixels_uint8 wraps the module in fused.Uint8Pixels; image_rgb adds image_front's resize and
    crop in front of that."""
    spec = parts.clip.preprocess
    size = spec.image_size
    if pixel_input == contract.PIXEL_VALUES:
        module, name, dummy = parts.module, contract.PIXEL_VALUES, torch.randn(2, 3, size, size)
    else:
        module, name = Uint8Pixels(parts.module, spec.mean, spec.std).eval(), contract.PIXELS_UINT8
        dummy = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    inputs = parts.inputs()
    shapes = {name: {0: torch.export.Dim("batch", min=1, max=4096)}, **{n: None for n in inputs}}
    if contract.CLASS_EMBEDDINGS in inputs:  # traced with 3 rows: 0 and 1 would be specialised
        text = inputs[contract.CLASS_EMBEDDINGS]
        inputs[contract.CLASS_EMBEDDINGS] = torch.nn.functional.normalize(torch.randn(3, text.shape[1]), dim=-1)
        shapes[contract.CLASS_EMBEDDINGS] = {0: torch.export.Dim("classes", min=1)}
    with no_mha_fastpath(), torch.no_grad():
        program = torch.onnx.export(
            module, (dummy, *inputs.values()), dynamo=True, opset_version=opset, verbose=False,
            input_names=[name, *inputs], output_names=list(module.output_names),
            dynamic_shapes=shapes)
    model = program.model_proto
    _check_inputs(model, [name, *inputs])
    if pixel_input == contract.IMAGE_RGB:
        prepend_image_front(model, spec)
    return model


def _check_inputs(model: onnx.ModelProto, expected: list[str]) -> None:
    """Every input must survive as a real graph input without an initializer of its name: JS
    bindings cannot feed initializers (and ORT warns about them on load)."""
    names = [i.name for i in model.graph.input]
    baked = {i.name for i in model.graph.initializer} & set(expected)
    if names != expected or baked:
        raise Vs2Error(f"export: expected graph inputs {expected}, the exporter gave {names}"
                       + (f" with initializers {sorted(baked)}" if baked else ""))


def build_manifest(parts: FusedParts, cfg: ExportConfig, outputs: list[str],
                   class_bytes: bytes | None, text: dict | None) -> Manifest:
    """The metadata contract (runtime/manifest.py validates it, here and in every app).
    class_bytes: the class_embeddings.f32 content (its shape and SHA-256 go in); text: the text
    graph's TokenizerSpec dict, or None without a text graph."""
    size = parts.clip.preprocess.image_size
    s = parts.steering
    shapes = {contract.PIXEL_VALUES: [None, 3, size, size], contract.PIXELS_UINT8: [None, size, size, 3],
              contract.IMAGE_RGB: [None, None, 3]}
    rgb = {"max_side": contract.MAX_SIDE} if cfg.pixel_input == contract.IMAGE_RGB else {}
    return Manifest.from_dict({
        "schema_version": contract.SCHEMA_VERSION,
        "model": {"id": cfg.model.name, "source": cfg.model.source, "width": parts.clip.width,
                  "embed_dim": parts.clip.embed_dim},
        "preprocess": parts.clip.preprocess.to_dict(),
        "sae": {"d": parts.module.sae.cfg.d, "n": parts.module.sae.cfg.n,
                "k": parts.module.sae.cfg.k, "sha256": parts.sae_sha256},
        "steering": {"gamma": s.gamma, "lambda": s.lambda_, "quantile": s.quantile, "tau": s.tau,
                     "sae_sha256": s.sae_sha256},
        "classes": list(parts.classes) or None,
        "templates": list(parts.templates),
        "logit_scale": parts.module.logit_scale,
        "precision": "fp32",
        "opset": cfg.opset,
        "pixel_input": cfg.pixel_input,
        "inputs": {cfg.pixel_input: shapes[cfg.pixel_input], **rgb,
                   "overridable": {k: float(v) for k, v in parts.scalars().items()}},
        "class_embeddings": None if class_bytes is None else {
            "file": contract.CLASS_EMBEDDINGS_FILE,
            "shape": [len(parts.classes), parts.clip.embed_dim],
            "sha256": hashlib.sha256(class_bytes).hexdigest()},
        "text": text,
        "outputs": outputs,
        "versions": _versions(),
        "tolerances": {p: to_jsonable(t) for p, t in TOLERANCES.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


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
    model = trace_to_onnx(parts, cfg.opset, cfg.pixel_input)
    outputs = [o.name for o in model.graph.output]
    class_bytes = encode_class_embeddings(parts.module.text.numpy()) if classes else None
    text = text_spec(parts.clip) if classes else None
    manifest = build_manifest(parts, cfg, outputs, class_bytes,
                              text and text.to_dict() | {"model": contract.TEXT_MODEL_FILE})
    onnx.helper.set_model_props(model, {contract.METADATA_KEY: manifest.to_json()})
    if model.ByteSize() >= TWO_GB:
        raise Vs2Error("export: graphs over 2 GB need external data, not supported yet")
    _write_companions(cfg, classes, class_bytes)
    if text is not None:
        write_text_tower(parts.clip, cfg.out)
    with atomic_path(cfg.out / contract.MODEL_FILE) as tmp:
        onnx.save_model(model, str(tmp))
        check_graph(tmp, manifest)
    write_json(cfg.out / contract.MANIFEST_FILE, json.loads(manifest.to_json()))
    log.info("exported %s (%.1f MB)", cfg.out / contract.MODEL_FILE,
             (cfg.out / contract.MODEL_FILE).stat().st_size / 1e6)
    write_reference(cfg.out)
    for precision in cfg.precisions[1:]:
        write_variant(cfg, manifest, precision)
    return manifest


def _write_companions(cfg: ExportConfig, classes: tuple[str, ...], class_bytes: bytes | None) -> None:
    """Copies of the SAE, steering and classes, so verify can rebuild the torch reference; the
    default class_embeddings input (its SHA-256 is in the manifest)."""
    for name in (WEIGHTS_FILE, CFG_FILE):
        with atomic_path(cfg.out / contract.SAE_DIR / name) as tmp:
            shutil.copyfile(cfg.sae / name, tmp)
    with atomic_path(cfg.out / contract.STEERING_FILE) as tmp:
        shutil.copyfile(cfg.steering, tmp)
    if classes:
        with atomic_path(cfg.out / contract.CLASSES_FILE) as tmp:
            tmp.write_text("\n".join(classes) + "\n", encoding="utf-8")
        with atomic_path(cfg.out / contract.CLASS_EMBEDDINGS_FILE) as tmp:
            tmp.write_bytes(class_bytes)
    else:  # --force over an export with classes: nothing may describe classes it no longer has
        for name in (contract.CLASSES_FILE, contract.CLASS_EMBEDDINGS_FILE, contract.TEXT_MODEL_FILE):
            (cfg.out / name).unlink(missing_ok=True)
    write_json(cfg.out / contract.EXPORT_CONFIG_FILE, to_jsonable(cfg))
