"""model + sae/ + steering.json (+ classes) -> exported/NAME/: ONE ONNX graph and its metadata.

    exported/NAME/model.onnx        pixels, steer_gamma, steer_lambda, gate_tau [, class_embeddings]
                                    -> embedding, base_embedding, [logits], fvu, steered,
                                    latent_indices, latent_values; metadata under contract.METADATA_KEY
    exported/NAME/model.onnx.data   its weights, only for graphs over 2 GB (ViT-H-14 and up):
                                    ONE sidecar that model.onnx names by this relative path
                                    (contract.sidecar_name; variants get their own if needed)
    exported/NAME/manifest.json     the same metadata, for people
    exported/NAME/class_embeddings.f32, text.onnx, tokenizer/   with classes: the default class
                                    matrix, and what names new classes at run time (text_tower.py)
    exported/NAME/reference/        images, their graph inputs and outputs, for ports (reference.py)
    RUN/exports/NAME.json           the export record: what verify rebuilds the reference from
                                    (record.py); RUN defaults to the folder of steering.json

The export folder is what ships: nothing but model files, manifests and runtime inputs goes
there. The SAE, steering and classes stay where the user keeps them; the record points at them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnxscript import rewriter
from tqdm import tqdm

from . import __version__, card
from .artifacts import atomic_pair, atomic_path, check_output, claim_output, write_json
from .clip import describe, no_mha_fastpath, release_text_tower
from .config import DEMO_MODEL, ExportConfig, ModelSpec, to_jsonable
from .errors import Vs2Error
from .fused import FusedParts, Uint8Pixels, build_steered_clip
from .image_front import prepend_image_front
from .onnx_files import onnx_mb, save_onnx
from .parity import TOLERANCES
from .precision import calibration_pixels, check_graph, write_variant
from .record import make_record, write_record
from .reference import write_reference
from .runtime import contract
from .runtime.classes import encode_class_embeddings
from .runtime.manifest import Manifest
from .sae import sae_origin
from .steering import load_steering
from .store import ActivationStore, spread
from .text_tower import text_spec, write_text_tower
from .zeroshot import read_classes

log = logging.getLogger(__name__)


def trace_to_onnx(parts: FusedParts, opset: int,
                  pixel_input: str = contract.PIXEL_VALUES) -> ir.Model | onnx.ModelProto:
    """SteeredClip -> ONNX with the dynamo exporter, dynamic batch (docs/design.md pitfalls:
    torch >= 2.9 defaults to dynamo, where dynamic_axes no longer works; it wants batch >= 2).
    The result is the exporter's IR model, whose weights are views of the torch tensors: unlike
    program.model_proto no copy (2.5 GB for ViT-H-14) is made until onnx_files.save_onnx writes
    them. image_rgb graphs come back as a ModelProto (image_front edits protobuf).

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
    with no_mha_fastpath(), torch.no_grad(), _without_rewrite_rule("SlicesSplit"):
        program = torch.onnx.export(
            module, (dummy, *inputs.values()), dynamo=True, opset_version=opset, verbose=False,
            input_names=[name, *inputs], output_names=list(module.output_names),
            dynamic_shapes=shapes)
    model = program.model
    _check_inputs(model, [name, *inputs])
    if pixel_input == contract.IMAGE_RGB:
        model = ir.to_proto(model)
        prepend_image_front(model, spec)
    return model


@contextlib.contextmanager
def _without_rewrite_rule(name: str):
    """torch.onnx.export's optimizer (onnxscript's optimize_ir, which reads this rule list when it
    runs) with onnxscript's default rewrite rules less `name`.

    SlicesSplit (two Slices of one tensor -> one Split) is a pattern with two output nodes, which
    onnxscript matches by scanning the whole graph again for every Slice in it (its
    _matcher.py calls this 'a potentially expensive algorithm'): O(Slices x nodes). Measured
    here, tracing ViT-H-14 took 70 s with it and 41 s without, ViT-B-32 25 s and 20 s. It never
    rewrote one of our graphs: the demo's, ViT-B-32's (pixel_values and image_rgb) and
    ViT-H-14's came out node for node the same without it. The list is private to onnxscript;
    where it is gone, nothing changes."""
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if getattr(r, "name", None) != name)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def _check_inputs(model: ir.Model, expected: list[str]) -> None:
    """Every input must survive as a real graph input without an initializer of its name: JS
    bindings cannot feed initializers (and ORT warns about them on load)."""
    names = [i.name for i in model.graph.inputs]
    baked = set(model.graph.initializers) & set(expected)
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
                  "embed_dim": parts.clip.embed_dim, "weights_sha256": parts.clip.weights_sha256},
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
        "pixel_input": cfg.pixel_input,
        "inputs": {cfg.pixel_input: shapes[cfg.pixel_input], **rgb,
                   "overridable": {k: float(v) for k, v in parts.scalars().items()}},
        contract.CLASS_EMBEDDINGS: None if class_bytes is None else {
            "file": contract.CLASS_EMBEDDINGS_FILE,
            "shape": [len(parts.classes), parts.clip.embed_dim],
            "sha256": hashlib.sha256(class_bytes).hexdigest()},
        "text": text,
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
        parts.steering, parts.clip.weights_sha256)


def _versions() -> dict[str, str]:
    versions = {"vs2_export": __version__}
    for dist, key in (("torch", "torch"), ("open_clip_torch", "open_clip"), ("onnx", "onnx"),
                      ("onnxruntime-gpu", "onnxruntime"), ("onnxruntime", "onnxruntime")):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions.setdefault(key, importlib_metadata.version(dist))
    return versions


def export(cfg: ExportConfig) -> Manifest:
    """Build SteeredClip, export it as ONE graph with metadata, check it, write the folder and
    the export record. Everything that can be refused (other weights than the SAE's, missing
    calibration images) is refused before model.onnx is written."""
    if (cfg.out / contract.INCOMPLETE_MARKER).exists() and (cfg.out / contract.MODEL_FILE).exists() \
            and not cfg.force:  # say why the model.onnx there is not a finished export
        raise Vs2Error(f"{cfg.out}: an earlier export into it did not finish (interrupted); pass "
                       "--force to export again")
    claim_output(cfg.out / contract.MODEL_FILE, cfg.force)
    cfg = resolve(cfg)
    check_output(cfg.out, "--out", (cfg.sae, cfg.steering, cfg.classes, cfg.calibration),
                 file=False)  # the export folder must not be written over its own sources
    log.info("%s", describe(cfg.model.name, cfg.model.source,
                            (sae_origin(cfg.sae) or {}).get("weights_sha256")))
    stages = tqdm(total=4 + len(cfg.precisions) - 1, desc="export", unit="step", disable=None)
    stage = _stages(stages)
    stage("load model, SAE and steering")
    classes = read_classes(cfg.classes) if cfg.classes else ()
    parts = build_steered_clip(cfg.model, cfg.sae, cfg.steering, classes, cfg.templates,
                               cfg.cls_only)
    check_weights(parts, cfg)
    stage("trace the fused graph (dynamo)")
    model = trace_to_onnx(parts, cfg.opset, cfg.pixel_input)
    class_bytes = encode_class_embeddings(parts.module.text.numpy()) if classes else None
    text = text_spec(parts.clip) if classes else None
    manifest = build_manifest(parts, cfg, _output_names(model), class_bytes,
                              text and text.to_dict() | {"model": contract.TEXT_MODEL_FILE})
    _set_metadata(model, manifest)
    pixels = _calibration(cfg, manifest)  # before anything is written: refused early
    stage(f"write and check {contract.MODEL_FILE}")
    # From the first file to the record the folder is marked: a kill in between (the int8
    # stage takes minutes) leaves a model.onnx the runtime must not take for a finished export.
    write_json(cfg.out / contract.INCOMPLETE_MARKER, {"pid": os.getpid()})
    _write_class_files(cfg, class_bytes)
    if text is not None:
        write_text_tower(parts.clip, cfg.out)
    record = _record(cfg, parts)
    final = cfg.out / contract.MODEL_FILE
    with atomic_pair(final, contract.sidecar_name(final)) as tmp:
        release_text_tower(parts.clip)  # text.onnx is written: ViT-H-14's 1.4 GB can go
        save_onnx(model, tmp)
        # The torch model and the traced graph go before ONNX Runtime loads the file: one copy
        # of the weights in memory at a time, not three.
        del model, parts
        forget_traced_graph()
        check_graph(tmp, manifest)
    write_json(cfg.out / contract.MANIFEST_FILE, json.loads(manifest.to_json()))
    card.reset(cfg.out, manifest)  # a new graph: earlier verdicts and timings no longer apply
    log.info("exported %s (%.1f MB)", final, onnx_mb(final))
    write_reference(cfg.out)
    for precision in cfg.precisions[1:]:
        stage(f"{precision} variant")
        write_variant(cfg, manifest, precision, pixels)
    stage("export record")
    path = write_record(cfg.run, record)
    (cfg.out / contract.INCOMPLETE_MARKER).unlink()
    stages.update()
    stages.close()
    log.info("sources recorded in %s (vs2 verify %s --run %s)", path, cfg.out, cfg.run)
    return manifest


def _output_names(model: ir.Model | onnx.ModelProto) -> list[str]:
    if isinstance(model, ir.Model):
        return [o.name for o in model.graph.outputs]
    return [o.name for o in model.graph.output]


def _set_metadata(model: ir.Model | onnx.ModelProto, manifest: Manifest) -> None:
    """The manifest under contract.METADATA_KEY, the graph's only metadata entry of ours."""
    if isinstance(model, ir.Model):
        model.metadata_props[contract.METADATA_KEY] = manifest.to_json()
    else:
        onnx.helper.set_model_props(model, {contract.METADATA_KEY: manifest.to_json()})


def forget_traced_graph() -> None:
    """Let the traced graph, and with it the torch weights it views, be freed. onnxscript's
    rewrite rules are module-level objects that keep the last graph they matched
    (SimplePatternMatcher._graph, _match, _current_node in onnxscript 0.7): without this, `del`
    frees nothing (measured in issue 13: ViT-H-14's 2.5 GB stayed resident through the check)."""
    try:
        from onnxscript.rewriter._matcher import PatternMatcher
    except ImportError:  # another onnxscript layout: nothing we know how to clear
        gc.collect()
        return
    gc.collect()
    for obj in gc.get_objects():
        if isinstance(obj, PatternMatcher):
            for attr in ("_graph", "_match", "_current_node", "_tracer"):
                if attr in vars(obj):
                    setattr(obj, attr, None)
    gc.collect()


def _stages(bar: tqdm):
    """A progress step per stage: the bar on a terminal, a log line everywhere."""
    started: list[str] = []

    def stage(what: str) -> None:
        if started:
            bar.update()
        started.append(what)
        bar.set_postfix_str(what)
        log.info("export: %s", what)
    return stage


def resolve(cfg: ExportConfig) -> ExportConfig:
    """Fill the defaults that come from the sources: the model the SAE was trained on, the run
    folder (steering.json's), the calibration images (the SAE's activation store's)."""
    origin = sae_origin(cfg.sae) or {}
    model = cfg.model
    if model is None:
        if not origin.get("id"):
            raise Vs2Error(f"export: expected --model: the SAE {cfg.sae} does not record the model "
                           "its activations came from")
        name, source = origin["id"], origin.get("source")
        model = ModelSpec(name, None if name == DEMO_MODEL else source)
    run = Path(cfg.run or Path(cfg.steering).parent).resolve()
    if run == Path(cfg.out).resolve() or run.is_relative_to(Path(cfg.out).resolve()):
        raise Vs2Error(f"export: the run folder {run} must not be the export folder {cfg.out} "
                       "(the export folder ships; pass --run elsewhere)")
    return dataclasses.replace(cfg, model=model, run=run)


def check_weights(parts: FusedParts, cfg: ExportConfig) -> None:
    """The SAE and tau belong to the weights their activations came from: refuse any other."""
    have = parts.clip.weights_sha256
    origin = (sae_origin(cfg.sae) or {}).get("weights_sha256")
    calibrated = parts.steering.model_weights_sha256
    if origin is None:
        raise Vs2Error(f"export: the SAE {cfg.sae} does not record the model weights its "
                       "activations came from (an older vs2-export, or a store without them); "
                       "extract and train again")
    for what, want in (("the SAE was trained on", origin), ("tau was calibrated on", calibrated)):
        if want is not None and want != have:
            raise Vs2Error(f"export: {what} activations of model weights {want[:12]}, but "
                           f"{cfg.model.name} ({cfg.model.source}) loads weights {have[:12]}; "
                           "export with the model the activations came from")


def _calibration(cfg: ExportConfig, manifest: Manifest) -> np.ndarray | None:
    """Calibration pixels for int8 (static: required; otherwise optional, for the self-check)
    from --calibration or the SAE's store's images."""
    if not set(cfg.precisions) - {"fp32"}:
        return None
    required = "int8" in cfg.precisions and cfg.int8_mode == "static"
    source = cfg.calibration
    if source is None:
        acts = load_steering(cfg.steering).acts
        paths = ActivationStore(Path(acts)).image_paths() if acts and Path(acts).is_dir() else []
        source = spread([p for p in paths if p.exists()], cfg.calibration_max)
        where = f"the images of the store {acts}"
    else:
        where = str(source)
    try:
        return calibration_pixels(source, manifest, cfg.calibration_max)
    except Vs2Error:
        if required:
            raise Vs2Error(f"export: int8 static needs calibration images: none readable in "
                           f"{where}; pass --calibration DIR (in-domain images) or "
                           "--int8-mode dynamic") from None
        return None


def _record(cfg: ExportConfig, parts: FusedParts):
    """The sources of this export (record.ExportRecord)."""
    text = parts.module.text
    return make_record(
        export=str(Path(cfg.out).resolve()),
        model={"name": cfg.model.name, "pretrained": cfg.model.pretrained,
               "weights_sha256": parts.clip.weights_sha256},
        sae=str(cfg.sae), sae_checksum=parts.sae_sha256, steering=str(cfg.steering),
        acts=parts.steering.acts, classes=list(parts.classes) or None,
        templates=list(parts.templates),
        text_sha256=None if text is None else hashlib.sha256(
            text.detach().float().contiguous().numpy().tobytes()).hexdigest(),
        cls_only=cfg.cls_only, pixel_input=cfg.pixel_input, opset=cfg.opset,
        precisions=list(cfg.precisions), int8_mode=cfg.int8_mode)


def _write_class_files(cfg: ExportConfig, class_bytes: bytes | None) -> None:
    """The default class_embeddings input (its shape and SHA-256 are in the manifest); an
    export without classes (--force over one with them) keeps no file describing old classes."""
    if class_bytes is not None:
        with atomic_path(cfg.out / contract.CLASS_EMBEDDINGS_FILE) as tmp:
            tmp.write_bytes(class_bytes)
    else:
        for name in (contract.CLASS_EMBEDDINGS_FILE, contract.TEXT_MODEL_FILE,
                     contract.sidecar_name(contract.TEXT_MODEL_FILE)):
            (cfg.out / name).unlink(missing_ok=True)
