"""The fp32 graph -> its fp16 (CUDA) and int8 (CPU) variants, written next to model.onnx, each
loaded, run and compared with the fp32 graph before it is kept.

    model.onnx       fp32, the reference every variant is verified against
    model.fp16.onnx  weights and matmuls fp16; LayerNorm, Softmax, TopK, the SAE head, the FVU gate
                     and the norms fp32; inputs and outputs fp32 (docs/design.md pitfalls: ORT #13639)
    model.int8.onnx  static QDQ int8 calibrated on images (default) or dynamic int8 weights; the
                     SAE head, gate, ln_post, projection, norms and the attention matmuls
                     (activation x activation) fp32; by default with the fp32 graph inside, re-run
                     on the images int8 may answer differently (recheck.py)

"Head" = every node after the trunk (the exporter records each node's module path in its
`namespace` metadata): it costs ~0.05% of the FLOPs (docs/method.md section 3) and holds the top-k
and the gate, which are discontinuous, so lowering it buys nothing and risks flips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from . import recheck
from .artifacts import atomic_pair, claim_output, write_json
from .config import ExportConfig
from .errors import Vs2Error
from .onnx_files import onnx_mb, save_onnx
from .parity import TOLERANCES, compare
from .runtime import contract
from .runtime.classes import read_class_embeddings
from .runtime.manifest import Int8RecheckInfo, Manifest
from .runtime.onnx_wire import external_data_locations
from .runtime.preprocess import list_images, preprocess_paths
from .runtime.providers import create_session
from .runtime.session import Vs2Session, rgb_paths, steering_feeds

log = logging.getLogger(__name__)
TRUNK_SCOPE = "/trunk: "
TRUNK_SCOPE_UINT8 = "/steered.trunk: "
UINT8_SCOPE = "fused.Uint8Pixels/"
"""The trunk's namespace under fused.Uint8Pixels (the uint8-input wrapper holds SteeredClip as
'steered')."""
# Ops that stay fp32 in the fp16 graph wherever they are (issue 4; ORT #13639 for LayerNorm).
FP16_KEEP_OPS = ("LayerNormalization", "Softmax", "TopK", "ReduceL2", "ReduceSum", "Pow", "Sqrt",
                 "Erf")
INT8_OPS = ("MatMul", "Gemm", "Conv")
REDUCE_RANGE = True
"""7-bit weights. On x86 CPUs without VNNI (AVX2 only, like the AMD EPYC CI runs on) ONNX
Runtime's u8s8 kernels multiply with VPMADDUBSW, which adds two u8 x s8 products into a
saturating int16: 255 x 127 x 2 = 64770 > 32767. Measured on the demo (3,000 target images):
the patch-embedding Conv alone went from base-embedding cosine 0.99896 (QDQ simulated in fp32,
ORT level 'disable') to 0.889 with ORT's int8 kernel, top-1 agreement 93.6% for the whole graph.
7-bit weights cannot overflow (255 x 63 x 2 = 32130): whole graph 97.6%, cosine 0.998. A file
made on a VNNI machine runs on any other, so the file is made safe for both (ORT's documented
remedy; u8u8 measured 97.9%, see benchmarks/README.md for its speed)."""


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes outside the trunk (SAE, gate, steering, ln_post, proj, norms, logits).

    A graph without the exporter's namespace metadata cannot be split safely: refuse.
    """
    scoped = [n for n in model.graph.node if any(p.key == "namespace" for p in n.metadata_props)]
    if not scoped:
        raise Vs2Error("precision: expected node 'namespace' metadata from the dynamo exporter "
                       "to find the SAE head, got a graph without it")
    trunk = {n.name for n in scoped if any(
        scope in next(p.value for p in n.metadata_props if p.key == "namespace")
        for scope in (TRUNK_SCOPE, TRUNK_SCOPE_UINT8))}
    if not trunk:
        raise Vs2Error("precision: expected trunk nodes in the graph namespaces, found none")
    # Unscoped nodes (shape plumbing) stay on whichever side they are; name them only if head.
    return [n.name for n in model.graph.node if n.name and n.name not in trunk
            and any(p.key == "namespace" for p in n.metadata_props)]


def to_fp16(fp32_path: Path) -> onnx.ModelProto:
    """fp32 file -> fp16 weights and matmuls with fp32 I/O, head and FP16_KEEP_OPS (a ModelProto
    with its weights in memory: 1.3 GB for ViT-H-14)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    model = load_with_shapes(Path(fp32_path))
    head = head_nodes(model)
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_OPS)),
        node_block_list=head, disable_shape_infer=True)
    _drop_duplicate_nodes(converted)
    _no_fp16_round_trips(converted, uint8_normalisation_nodes(model))
    del converted.graph.value_info[:]  # stale fp32/fp16 types from the converter; re-inferred
    log.info("fp16: %d head nodes and ops %s kept in fp32", len(head), FP16_KEEP_OPS)
    return converted


def load_with_shapes(path: Path) -> onnx.ModelProto:
    """The graph at `path` with ONNX shape inference applied, weights loaded (the fp16 converter
    needs the type of every value). Inference runs on the file: infer_shapes on a ModelProto
    serialises it, which fails over 2 GB; infer_shapes_path does not."""
    with tempfile.TemporaryDirectory(prefix="vs2-shapes-") as tmp:
        inferred = Path(tmp) / path.name
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        model = onnx.load(str(inferred), load_external_data=False)
    onnx.load_external_data_for_model(model, str(path.parent))  # a no-op for a single file
    return model


def uint8_normalisation_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of fused.Uint8Pixels' own nodes (cast, permute, scale, shift); empty for a graph
    with float input."""
    names = set()
    for node in model.graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        if UINT8_SCOPE in scope and "/steered: " not in scope:
            names.add(node.name)
    return names


def _no_fp16_round_trips(model: onnx.ModelProto, producers: set[str]) -> None:
    """The converter sends every output of a blocked node through Cast(fp16) -> Cast(fp32) when
    the next node is blocked too; between the uint8 graph's scale and shift that rounds the
    scaled pixels to fp16 (measured: 1 top-1 flip in 30 demo images vs none for the float
    graph). Rewire those Cast(fp32) to the fp32 value and drop the Cast(fp16). Only for
    `producers`: the float graph's fp16 variant stays exactly as it was."""
    outputs = {o for n in model.graph.node if n.name in producers for o in n.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dropped = []
    for node in model.graph.node:
        uses = consumers.get(node.output[0], []) if node.op_type == "Cast" else []
        if node.input and node.input[0] in outputs and _cast_to(node) == onnx.TensorProto.FLOAT16 \
                and uses and all(_cast_to(u) == onnx.TensorProto.FLOAT for u in uses):
            for use in uses:
                use.input[0] = node.input[0]  # now a no-op fp32 -> fp32 Cast, ORT removes it
            dropped.append(node)
    for node in dropped:
        model.graph.node.remove(node)


def _cast_to(node) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_duplicate_nodes(model: onnx.ModelProto) -> None:
    """The converter inserts one Cast per consumer of a shared tensor, under the same node and
    output names (measured: ln_pre.weight, head.proj); keep the first of each identical node."""
    seen: set[tuple] = set()
    kept = []
    for node in model.graph.node:
        key = (node.op_type, tuple(node.input), tuple(node.output))
        if key not in seen:
            seen.add(key)
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(_topological(model.graph, kept))


def _topological(graph: onnx.GraphProto, nodes: list) -> list:
    """Nodes ordered so each comes after the producers of its inputs (the checker's rule; the
    converter appends casts of graph inputs at the end)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], list(nodes)
    while pending:
        rest = [n for n in pending if not set(n.input) <= ready]
        done = [n for n in pending if set(n.input) <= ready]
        if not done:
            raise Vs2Error(f"fp16: graph has a cycle or a dangling input at {rest[0].name}")
        for n in done:
            ready.update(n.output)
        ordered.extend(done)
        pending = rest
    return ordered


class PixelReader:
    """ORT CalibrationDataReader over pixels in batches: float32 [N, 3, S, S] for input
    pixel_values, uint8 [N, S, S, 3] for pixels_uint8, a list of uint8 [H, W, 3] for image_rgb
    (one image a batch). extra: the other required inputs (steering scalars, class_embeddings),
    fed with every batch."""

    def __init__(self, pixels: np.ndarray | list, batch: int = 8, name: str = contract.PIXEL_VALUES,
                 extra: dict[str, np.ndarray] | None = None):
        if name == contract.IMAGE_RGB:  # one image a batch: their sizes differ
            batches = list(pixels)
        else:
            batches = [pixels[s:s + batch] for s in range(0, len(pixels), batch)]
        self._batches = iter([{**(extra or {}), name: b} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def to_int8(fp32_path: Path, out_path: Path, pixels: np.ndarray | list | None, mode: str = "static",
            input_name: str = contract.PIXEL_VALUES, extra: dict[str, np.ndarray] | None = None) -> None:
    """fp32 file -> int8 file (no metadata yet). pixels: calibration set (static) for the graph
    input input_name (float32 [N, 3, S, S], uint8 [N, S, S, 3] for pixels_uint8, a list of
    uint8 [H, W, 3] for image_rgb); extra: the other inputs' defaults (steering, classes).

    Weights int8 per channel, activations uint8 asymmetric: the u8s8 kernels are ORT's fast path
    on x86. Weights use 7 bits (reduce_range, REDUCE_RANGE says why). quant_pre_process needs
    skip_symbolic_shape=True on these graphs (docs/design.md pitfalls).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )
    if mode not in contract.INT8_MODES:
        raise Vs2Error(f"int8 mode: expected one of {list(contract.INT8_MODES)}, got {mode!r}")
    if mode == "static" and (pixels is None or not len(pixels)):
        raise Vs2Error("int8 static: expected calibration images, got none")
    head = head_nodes(onnx.load(str(fp32_path), load_external_data=False))
    # A graph over 2 GB cannot pass through the quantizer as one protobuf: every intermediate
    # file (pre-processed, augmented for calibration, quantised) then keeps its weights in a
    # sidecar, and so may out_path (contract.sidecar_name(out_path)): int8_model reads both.
    big = bool(external_data_locations(Path(fp32_path)))
    with tempfile.TemporaryDirectory(prefix="vs2-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True,
                          save_as_external_data=big, all_tensors_to_one_file=True,
                          external_data_location=contract.sidecar_name(pre))
        _drop_value_info(pre)
        keep = head + activation_matmuls(onnx.load(str(pre), load_external_data=False))
        common = dict(op_types_to_quantize=list(INT8_OPS), per_channel=True, reduce_range=REDUCE_RANGE,
                      nodes_to_exclude=keep, weight_type=QuantType.QInt8,
                      use_external_data_format=big)
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(out_path), **common)
        else:
            quantize_static(str(pre), str(out_path), PixelReader(pixels, name=input_name, extra=extra),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax, **common)
    log.info("int8 (%s): %d head nodes kept in fp32", mode, len(head))


def int8_model(fp32_path: Path, pixels: np.ndarray | list | None, mode: str = "static",
               input_name: str = contract.PIXEL_VALUES,
               extra: dict[str, np.ndarray] | None = None,
               recheck_settings: tuple[float | str, float, np.ndarray | list | None] = ("off", 0.0, None),
               ) -> tuple[onnx.ModelProto, Int8RecheckInfo | None]:
    """to_int8 into a scratch folder -> the int8 graph as a ModelProto with its weights in memory
    (0.65 GB for ViT-H-14), for the caller to write with its metadata (onnx_files.save_onnx), and
    the fp32 re-check built into it (recheck.py) or None. recheck_settings: ExportConfig's
    int8_recheck and int8_recheck_gate, and the calibration pixels to choose the margin on."""
    setting, gate_band, recheck_pixels = recheck_settings
    with tempfile.TemporaryDirectory(prefix="vs2-int8-out-") as scratch:
        out = Path(scratch) / contract.model_file("int8")
        to_int8(Path(fp32_path), out, pixels, mode, input_name, extra)
        has_logits = contract.CLASS_EMBEDDINGS in (extra or {})  # the contract: logits iff classes
        plan = recheck.plan(setting, gate_band, Path(fp32_path), out, recheck_pixels, extra or {},
                            input_name, has_logits)
        model = onnx.load(str(out))  # with its sidecar, if the quantizer wrote one
    if plan is None:
        return model, None
    return recheck.guarded_model(model, onnx.load(str(fp32_path)), plan, input_name), plan


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls with no weight operand: attention's Q K^T and softmax(.) V. Quantising both of
    their inputs per tensor cost the demo model's embeddings cosine 0.979 (min over 200 images);
    keeping them fp32 gave 0.999 (measured, issue 4). They are ~1% of ViT-B-32's FLOPs."""
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not set(n.input) & weights]


def _drop_value_info(path: Path) -> None:
    """Stale intermediate shapes make the quantizer's second shape inference fail (768 vs 3072
    on the SAE Gemm, measured); ONNX re-infers them from the weights. Only the graph is read and
    rewritten: external weights stay where they are, untouched."""
    model = onnx.load(str(path), load_external_data=False)
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def check_graph(path: Path, manifest: Manifest) -> None:
    """onnx.checker, then ONNX Runtime loads the file and runs one batch of 3 random inputs of
    the manifest's pixel kind: a graph that does not load or gives a wrong or non-finite
    embedding is refused at export."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        session = create_session(path, precision=manifest.precision)
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise their own types
        raise Vs2Error(f"export: the written graph does not load ({exc})") from None
    size, rng = manifest.image_size, np.random.default_rng(0)
    n = 1 if manifest.pixel_input == contract.IMAGE_RGB else 3
    feeds = {**steering_feeds(manifest), manifest.pixel_input: {
        contract.PIXELS_UINT8: lambda: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        contract.PIXEL_VALUES: lambda: rng.standard_normal((n, 3, size, size)).astype(np.float32),
        contract.IMAGE_RGB: lambda: rng.integers(0, 256, (size + 5, 2 * size + 3, 3), dtype=np.uint8),
    }[manifest.pixel_input]()}
    if manifest.class_embeddings is not None:  # any unit rows: only shapes and finiteness matter
        rows = rng.standard_normal(tuple(manifest.class_embeddings.shape)).astype(np.float32)
        feeds[contract.CLASS_EMBEDDINGS] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    embedding = session.run([contract.EMBEDDING], feeds)[0]
    if embedding.shape != (n, manifest.model.embed_dim) or not np.isfinite(embedding).all():
        raise Vs2Error(f"export: graph gave embedding {embedding.shape}, expected finite "
                       f"[{n}, {manifest.model.embed_dim}]")


def write_variant(cfg: ExportConfig, manifest: Manifest, precision: str,
                  pixels: np.ndarray | None = None) -> Path:
    """model.onnx -> model.PRECISION.onnx with its own metadata (precision.py says what stays fp32);
    one file when it fits under 2 GB (ViT-H-14's fp16 and int8 do), else with its own sidecar.
    pixels: calibration pixels in the graph's input kind, resolved by export before model.onnx
    was written (None: read cfg.calibration here)."""
    final = contract.model_path(cfg.out, precision)
    claim_output(final, cfg.force)
    fp32 = cfg.out / contract.MODEL_FILE
    meta = Manifest.from_dict({**json.loads(manifest.to_json()), "precision": precision})
    if pixels is None and cfg.calibration is not None:
        if precision == "int8" and cfg.int8_mode == "static":
            pixels = calibration_pixels(cfg.calibration, meta, cfg.calibration_max)
        else:
            with contextlib.suppress(Vs2Error):  # only feeds the self-check here: optional
                pixels = calibration_pixels(cfg.calibration, meta, cfg.calibration_max)
    if precision == "fp16":
        model = to_fp16(fp32)
    else:
        model, guard = int8_model(fp32, pixels if cfg.int8_mode == "static" else None,
                                  cfg.int8_mode, meta.pixel_input, default_feeds(cfg.out, meta),
                                  (cfg.int8_recheck, cfg.int8_recheck_gate, pixels))
        meta = dataclasses.replace(meta, int8_recheck=guard)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {contract.METADATA_KEY: meta.to_json()})
    with atomic_pair(final, contract.sidecar_name(final)) as tmp:
        save_onnx(model, tmp)
        del model  # the last reference: ONNX Runtime's check gets the memory instead
        gc.collect()
        check_graph(tmp, meta)
    write_json(cfg.out / contract.manifest_file(precision), json.loads(meta.to_json()))
    log.info("exported %s (%.1f MB)", final, onnx_mb(final))
    if pixels is not None:
        self_check(cfg, final, precision, pixels[:64], meta.steering.tau)
    return final


def self_check(cfg: ExportConfig, variant: Path, precision: str, pixels: np.ndarray,
               tau: float) -> dict:
    """The variant against the fp32 graph on calibration pixels in the graph's input kind
    ([N, 3, S, S] float32 or [N, S, S, 3] uint8; ORT vs ORT), by the
    precision's tolerances: a variant that breaks them is announced at export, not found later.
    Writes export_check.PRECISION.json; `vs2 verify` on in-domain images is the real gate."""
    # Vs2Session feeds the steering defaults and class_embeddings (precision from the file name).
    # One session at a time, batches of 8: 64 ViT-H-14 images at once would hold GBs of
    # activations, and two of its graphs 3.8 GB of weights (bounded memory).
    runs = {name: _run_batches(Vs2Session(path), pixels, 8)
            for name, path in (("ref", cfg.out / contract.MODEL_FILE), ("got", variant))}
    checks = compare(runs["ref"], runs["got"], tau, TOLERANCES[precision])
    failed = [c for c in checks if not c.passed]
    report = {"precision": precision, "n_images": int(len(pixels)),
              "verdict": "FAIL" if failed else "PASS", "checks": [c.__dict__ for c in checks]}
    run = cfg.run or cfg.steering.parent  # the run folder: the export folder only ships models
    write_json(contract.report_path(run, cfg.out.name, "export_check", precision), report)
    if failed:
        log.warning("%s breaks its %s tolerances against the fp32 graph on %d calibration images: "
                    "%s. `vs2 verify --precision %s` will fail; try --int8-mode dynamic or more "
                    "in-domain calibration images (calibration/README.md)", variant.name, precision,
                    len(pixels), "; ".join(f"{c.name} = {c.value:.4g} (limit {c.limit:.4g})"
                                           for c in failed), precision)
    return report


def _run_batches(session: Vs2Session, pixels: np.ndarray | list, batch: int) -> dict[str, np.ndarray]:
    chunks = [session.run(pixels[s:s + batch]) for s in range(0, len(pixels), batch)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def default_feeds(folder: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """The inputs besides the pixels, at their defaults: steering scalars and class_embeddings."""
    feeds = steering_feeds(manifest)
    classes = read_class_embeddings(folder, manifest)
    return feeds | ({contract.CLASS_EMBEDDINGS: classes} if classes is not None else {})


def calibration_pixels(folder: Path | list[Path], manifest: Manifest, limit: int) -> np.ndarray | list:
    """Up to `limit` images of the calibration folder (or of a list of files) -> pixels in the
    graph's input kind, float32 [N, 3, S, S], uint8 [N, S, S, 3], or a list of decoded RGB
    uint8 [H, W, 3] for image_rgb (sorted: the same folder, the same int8 graph)."""
    if isinstance(folder, list):
        paths = folder[:limit]
    else:
        paths = list_images(folder)[:limit] if Path(folder).is_dir() else []
    uint8 = manifest.pixel_input == contract.PIXELS_UINT8
    if manifest.pixel_input == contract.IMAGE_RGB:
        batch = rgb_paths(paths) if paths else None
    else:
        batch = preprocess_paths(paths, manifest.preprocess, uint8=uint8) if paths else None
    shown = folder if not isinstance(folder, list) else f"{len(folder)} listed files"
    if batch is None or not len(batch.paths):
        raise Vs2Error(f"int8 static: expected calibration images under {shown} (see "
                       "calibration/README.md), found none; or use --int8-mode dynamic")
    log.info("calibration: %d images from %s", len(batch.paths), shown)
    return batch.pixels
