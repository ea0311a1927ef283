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
from .fused import INPUT, INPUT_UINT8, OVERRIDABLE, FusedParts, Uint8Pixels, build_steered_clip
from .precision import to_fp16, to_int8, variant_path
from .runtime.manifest import METADATA_KEY, Manifest
from .runtime.preprocess import list_images, preprocess_paths
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


def trace_to_onnx(parts: FusedParts, opset: int, uint8_input: bool = False) -> onnx.ModelProto:
    """SteeredClip -> ModelProto with the dynamo exporter, dynamic batch (DESIGN.md pitfalls:
    torch >= 2.9 defaults to dynamo, where dynamic_axes no longer works; it wants batch >= 2).
    uint8_input: the graph takes pixels_uint8 uint8 [B, S, S, 3] and normalises them itself
    (fused.Uint8Pixels)."""
    spec = parts.clip.preprocess
    size = spec.image_size
    if uint8_input:
        module, name = Uint8Pixels(parts.module, spec.mean, spec.std).eval(), INPUT_UINT8
        dummy = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    else:
        module, name, dummy = parts.module, INPUT, torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    scalars = parts.scalars()
    with no_mha_fastpath(), torch.no_grad():
        program = torch.onnx.export(
            module, (dummy, *scalars.values()), dynamo=True, opset_version=opset, verbose=False,
            input_names=[name, *OVERRIDABLE], output_names=list(module.output_names),
            dynamic_shapes={name: {0: batch}, **{n: None for n in OVERRIDABLE}})
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
        "inputs": {**({INPUT_UINT8: [None, size, size, 3]} if cfg.uint8_input
                      else {INPUT: [None, 3, size, size]}),
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


def cpu_options(precision: str) -> ort.SessionOptions:
    """Session options that work for `precision` on the CPU provider: ORT 1.31 segfaults while
    applying its level-'all' CPU optimisations to the fp16 graph (measured), 'basic' runs it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if precision == "fp16":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def check_graph(path: Path, parts: FusedParts, precision: str = "fp32",
                uint8_input: bool = False) -> None:
    """onnx.checker, then ONNX Runtime loads the file and runs one batch of 3."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        session = ort.InferenceSession(str(path), cpu_options(precision),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise their own types
        raise Vs2Error(f"export: the written graph does not load ({exc})") from None
    size = parts.clip.preprocess.image_size
    rng = np.random.default_rng(0)
    if uint8_input:
        feeds = {INPUT_UINT8: rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)}
    else:
        feeds = {INPUT: rng.standard_normal((3, 3, size, size)).astype(np.float32)}
    embedding = session.run(["embedding"], feeds)[0]
    if embedding.shape != (3, parts.clip.embed_dim) or not np.isfinite(embedding).all():
        raise Vs2Error(f"export: graph gave embedding {embedding.shape}, expected finite "
                       f"[3, {parts.clip.embed_dim}]")


def export(cfg: ExportConfig) -> Manifest:
    """Build SteeredClip, export it as ONE graph with metadata, check it, write the folder."""
    claim_output(cfg.out / MODEL_FILE, cfg.force)
    classes = read_classes(cfg.classes) if cfg.classes else ()
    parts = build_steered_clip(cfg.model, cfg.sae, cfg.steering, classes, cfg.templates,
                               cfg.cls_only)
    model = trace_to_onnx(parts, cfg.opset, cfg.uint8_input)
    make_overridable(model, parts.scalars())
    outputs = [o.name for o in model.graph.output]
    manifest = build_manifest(parts, cfg, outputs)
    onnx.helper.set_model_props(model, {METADATA_KEY: manifest.to_json()})
    if model.ByteSize() >= TWO_GB:
        raise Vs2Error("export: graphs over 2 GB need external data, not supported yet")
    _write_companions(cfg, classes)
    with atomic_path(cfg.out / MODEL_FILE) as tmp:
        onnx.save_model(model, str(tmp))
        check_graph(tmp, parts, uint8_input=cfg.uint8_input)
    write_json(cfg.out / MANIFEST_FILE, json.loads(manifest.to_json()))
    log.info("exported %s (%.1f MB)", cfg.out / MODEL_FILE,
             (cfg.out / MODEL_FILE).stat().st_size / 1e6)
    for precision in cfg.precisions[1:]:
        write_variant(cfg, parts, manifest, precision)
    return manifest


def write_variant(cfg: ExportConfig, parts: FusedParts, manifest: Manifest, precision: str) -> Path:
    """model.onnx -> model.PRECISION.onnx with its own metadata (precision.py says what stays fp32)."""
    final = variant_path(cfg.out, precision)
    claim_output(final, cfg.force)
    fp32 = cfg.out / MODEL_FILE
    meta = Manifest.from_dict({**json.loads(manifest.to_json()), "precision": precision})
    pixels = None
    if precision == "int8" and cfg.int8_mode == "static":
        pixels = calibration_pixels(cfg.calibration, meta, cfg.calibration_max)
    else:
        with contextlib.suppress(Vs2Error):  # only feeds the self-check here: optional
            pixels = calibration_pixels(cfg.calibration, meta, cfg.calibration_max)
    with atomic_path(final) as tmp:
        if precision == "fp16":
            onnx.save_model(to_fp16(onnx.load(str(fp32))), str(tmp))
        else:
            to_int8(fp32, tmp, pixels if cfg.int8_mode == "static" else None, cfg.int8_mode,
                    meta.pixel_input)
        model = onnx.load(str(tmp))
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
        onnx.save_model(model, str(tmp))
        check_graph(tmp, parts, precision, cfg.uint8_input)
    write_json(cfg.out / f"manifest.{precision}.json",
               json.loads(meta.to_json()))
    log.info("exported %s (%.1f MB)", final, final.stat().st_size / 1e6)
    if pixels is not None:
        self_check(cfg, final, precision, pixels[:64], parts.steering.tau)
    return final


def self_check(cfg: ExportConfig, variant: Path, precision: str, pixels: np.ndarray,
               tau: float) -> dict:
    """The variant against the fp32 graph on calibration pixels in the graph's input kind
    ([N, 3, S, S] float32 or [N, S, S, 3] uint8; ORT vs ORT), by the
    precision's tolerances: a variant that breaks them is announced at export, not found later.
    Writes export_check.PRECISION.json; `vs2 verify` on in-domain images is the real gate."""
    from .parity import compare  # parity imports this module
    runs = {}
    for name, path in (("ref", cfg.out / MODEL_FILE), ("got", variant)):
        session = ort.InferenceSession(str(path), cpu_options(precision if name == "got" else "fp32"),
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feed = session.get_inputs()[0].name  # pixel_values or pixels_uint8: the only required input
        runs[name] = dict(zip(names, session.run(names, {feed: pixels})))
    checks = compare(runs["ref"], runs["got"], tau, TOLERANCES[precision])
    failed = [c for c in checks if not c.passed]
    report = {"precision": precision, "n_images": int(len(pixels)),
              "verdict": "FAIL" if failed else "PASS", "checks": [c.__dict__ for c in checks]}
    write_json(cfg.out / f"export_check.{precision}.json", report)
    if failed:
        log.warning("%s breaks its %s tolerances against the fp32 graph on %d calibration images: "
                    "%s. `vs2 verify --precision %s` will fail; try --int8-mode dynamic or more "
                    "in-domain calibration images (calibration/README.md)", variant.name, precision,
                    len(pixels), "; ".join(f"{c.name} = {c.value:.4g} (limit {c.limit:.4g})"
                                           for c in failed), precision)
    return report


def calibration_pixels(folder: Path, manifest: Manifest, limit: int) -> np.ndarray:
    """Up to `limit` images of the calibration folder -> pixels in the graph's input kind,
    float32 [N, 3, S, S] or uint8 [N, S, S, 3] (sorted: the same folder, the same int8 graph)."""
    paths = list_images(folder)[:limit] if Path(folder).is_dir() else []
    uint8 = manifest.pixel_input == INPUT_UINT8
    batch = preprocess_paths(paths, manifest.preprocess, uint8=uint8) if paths else None
    if batch is None or not len(batch.paths):
        raise Vs2Error(f"int8 static: expected calibration images under {folder} (see "
                       "calibration/README.md), found none; or use --int8-mode dynamic")
    log.info("calibration: %d images from %s", len(batch.paths), folder)
    return batch.pixels


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
