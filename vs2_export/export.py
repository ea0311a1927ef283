"""model + sae/ + steering.json (+ classes) -> exported/NAME/: ONE ONNX graph and its metadata.

    exported/NAME/model.onnx        pixels -> embedding, base_embedding, [logits], fvu, steered,
                                    latent_indices, latent_values; metadata under "vs2_export"
    exported/NAME/manifest.json     the same metadata, for people
    exported/NAME/sae/, steering.json, classes.txt   what verify needs to rebuild the reference
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from . import __version__
from .artifacts import atomic_path, claim_output, write_json
from .config import TOLERANCES, ExportConfig, to_jsonable
from .errors import Vs2Error
from .fused import INPUT, OVERRIDABLE, FusedParts, build_steered_clip
from .runtime.manifest import METADATA_KEY, Manifest
from .sae import CFG_FILE, WEIGHTS_FILE
from .zeroshot import read_classes

log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
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


def trace_to_onnx(parts: FusedParts, opset: int) -> onnx.ModelProto:
    """SteeredClip -> ModelProto with the dynamo exporter, dynamic batch (DESIGN.md pitfalls:
    torch >= 2.9 defaults to dynamo, where dynamic_axes no longer works; it wants batch >= 2)."""
    module = parts.module
    size = parts.clip.preprocess.image_size
    dummy = torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    scalars = parts.scalars()
    with no_mha_fastpath(), torch.no_grad():
        program = torch.onnx.export(
            module, (dummy, *scalars.values()), dynamo=True, opset_version=opset, verbose=False,
            input_names=[INPUT, *OVERRIDABLE], output_names=list(module.output_names),
            dynamic_shapes={INPUT: {0: batch}, **{name: None for name in OVERRIDABLE}})
    return program.model_proto


def make_overridable(model: onnx.ModelProto, defaults: dict[str, torch.Tensor]) -> None:
    """Give the scalar graph inputs default values: an initializer with an input's name makes the
    input optional, so apps can change steering strength and gate at run time (DESIGN.md)."""
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
        "steering": {"gamma": s.gamma, "lambda": s.lam, "quantile": s.quantile, "tau": s.tau,
                     "sae_sha256": s.sae_sha256},
        "classes": list(parts.classes) or None,
        "templates": list(parts.templates),
        "logit_scale": parts.module.logit_scale,
        "precision": "fp32",
        "opset": cfg.opset,
        "inputs": {INPUT: [None, 3, size, size],
                   "overridable": {k: float(v) for k, v in parts.scalars().items()}},
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


def check_graph(path: Path, parts: FusedParts) -> None:
    """onnx.checker, then ONNX Runtime loads the file and runs one batch of 3."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise their own types
        raise Vs2Error(f"export: the written graph does not load ({exc})") from None
    size = parts.clip.preprocess.image_size
    pixels = np.random.default_rng(0).standard_normal((3, 3, size, size)).astype(np.float32)
    embedding = session.run(["embedding"], {INPUT: pixels})[0]
    if embedding.shape != (3, parts.clip.embed_dim) or not np.isfinite(embedding).all():
        raise Vs2Error(f"export: graph gave embedding {embedding.shape}, expected finite "
                       f"[3, {parts.clip.embed_dim}]")


def export(cfg: ExportConfig) -> Manifest:
    """Build SteeredClip, export it as ONE graph with metadata, check it, write the folder."""
    claim_output(cfg.out / MODEL_FILE, cfg.force)
    classes = read_classes(cfg.classes) if cfg.classes else ()
    parts = build_steered_clip(cfg.model, cfg.sae, cfg.steering, classes, cfg.templates)
    model = trace_to_onnx(parts, cfg.opset)
    make_overridable(model, parts.scalars())
    outputs = [o.name for o in model.graph.output]
    manifest = build_manifest(parts, cfg, outputs)
    onnx.helper.set_model_props(model, {METADATA_KEY: manifest.to_json()})
    if model.ByteSize() >= TWO_GB:
        raise Vs2Error("export: graphs over 2 GB need external data, not supported yet")
    _write_companions(cfg, classes)
    with atomic_path(cfg.out / MODEL_FILE) as tmp:
        onnx.save_model(model, str(tmp))
        check_graph(tmp, parts)
    write_json(cfg.out / MANIFEST_FILE, json.loads(manifest.to_json()))
    log.info("exported %s (%.1f MB)", cfg.out / MODEL_FILE,
             (cfg.out / MODEL_FILE).stat().st_size / 1e6)
    return manifest


def _write_companions(cfg: ExportConfig, classes: tuple[str, ...]) -> None:
    """Copies of the SAE, steering and classes, so verify can rebuild the torch reference."""
    for name in (WEIGHTS_FILE, CFG_FILE):
        with atomic_path(cfg.out / "sae" / name) as tmp:
            shutil.copyfile(cfg.sae / name, tmp)
    with atomic_path(cfg.out / "steering.json") as tmp:
        shutil.copyfile(cfg.steering, tmp)
    if classes:
        with atomic_path(cfg.out / "classes.txt") as tmp:
            tmp.write_text("\n".join(classes) + "\n", encoding="utf-8")
    write_json(cfg.out / "export_config.json", to_jsonable(cfg))
