"""An exported model + the user's sources -> VerifyReport: the PyTorch reference (the same
SteeredClip, eager) against ONNX Runtime on the same pixels, judged by parity.TOLERANCES
(docs/design.md, Parity).

The reference is rebuilt from what the export was made from (record.py: model and weights
checksum, SAE, steering, classes), and so are the pixels (the model's own preprocessing). The
file under test contributes only its graph; its metadata is checked against the sources, field
by field, because apps act on it (an edited preprocessing spec changes what apps feed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from tqdm import tqdm

from . import card
from .artifacts import check_output, sha256_file, write_json
from .clip import describe, release_text_tower
from .config import VerifyConfig, to_jsonable
from .errors import CheckFailed, Vs2Error
from .fused import FusedParts, build_steered_clip
from .parity import TOLERANCES, Check, Decisions, compare, decide, latent_overlap
from .recheck import guard_setting
from .record import ExportRecord, find_record
from .runtime import contract
from .runtime.files import check_regular
from .runtime.manifest import Manifest
from .runtime.preprocess import PreprocessSpec, list_images, normalise, preprocess_image, preprocess_paths
from .runtime.session import Vs2Session, rgb_paths
from .store import ActivationStore, spread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaCheck:
    """One manifest field against the sources: what the file says, what it should say."""

    name: str
    passed: bool
    manifest: object
    expected: object


@dataclass(frozen=True)
class VerifyReport:
    """The verdict and everything it was reached from (also the JSON report)."""

    verdict: str
    precision: str
    model: str
    record: str
    report: str
    images: tuple[str, ...]
    """Row i of every per-image list is images[i]."""
    providers: tuple[str, ...]
    tolerances: dict
    checks: tuple[Check, ...]
    metadata: tuple[MetaCheck, ...]
    decisions: dict
    """near_ties [{image, gap, reference_only, graph_only}], near_gate [{image, fvu}], flips."""
    latent_index_overlap: dict
    steered_fraction: float
    skipped: tuple[dict, ...]

    @property
    def failed(self) -> list[str]:
        """One phrase per failing check or metadata field, naming the images."""
        out = [f"{m.name} differs from the sources (file {_short(m.manifest)}, expected "
               f"{_short(m.expected)})" for m in self.metadata if not m.passed]
        for c in self.checks:
            if not c.passed:
                names = ", ".join(Path(self.images[i]).name for i in c.images)
                out.append(f"{c.name} = {c.value:.6g} (limit {c.limit:.6g}, {c.judged}/{c.of} "
                           f"images judged){' on ' + names if names else ''}")
        return out

    def verdict_line(self) -> str:
        """The one line a CI log shows."""
        head = f"parity {self.verdict} ({self.precision}, {len(self.images)} images, report {self.report})"
        return head + (": " + "; ".join(self.failed) if self.failed else "")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["checks"] = [{**asdict(c), "images": [self.images[i] for i in c.images]}
                          for c in self.checks]
        data["n_images"] = len(self.images)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format(self) -> str:
        """The lines `vs2 verify` prints."""
        lines = [f"{'check':<28} {'value':>12} {'limit':>10} {'judged':>9}"]
        lines += [f"{c.name:<28} {c.value:>12.6g} {c.limit:>10.6g} {c.judged:>4}/{c.of:<4}"
                  f"{'' if c.passed else '  FAIL'}" for c in self.checks]
        lines.append(f"metadata: {sum(m.passed for m in self.metadata)}/{len(self.metadata)} "
                     "manifest fields match the sources")
        for tie in self.decisions["near_ties"]:
            lines.append(f"near-tie {Path(tie['image']).name}: top-k swap {tie['reference_only']} "
                         f"<-> {tie['graph_only']}, value gap {tie['gap']:.2g} of the top latent "
                         "(judged on the aligned reference)")
        lines += [f"near the gate {Path(g['image']).name}: fvu {g['fvu']:.6g}"
                  for g in self.decisions["near_gate"]]
        lines += [f"skipped {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines + [self.verdict_line()])


def verify(cfg: VerifyConfig) -> VerifyReport:
    """Compare and write the report; raise CheckFailed (after writing it, carrying it) if any
    check fails. Sources that changed since the export are a Vs2Error (bad input)."""
    path, precision = model_file(cfg)
    guard = int8_guard(path, precision)  # read and freed before the reference and the session
    record, run = find_record(cfg.run, path.parent)
    report_path = check_output(  # before the work: a report must never replace what it checks
        cfg.report or contract.report_path(run, path.parent.name, "verify", precision), "--report",
        (path.parent, contract.record_path(run, path.parent.name), cfg.images,
         cfg.sae or record.sae, cfg.steering or record.steering))
    spec = record.model_spec()
    log.info("%s (sources: %s)", describe(spec.name, spec.source, record.model.get("weights_sha256")),
             contract.record_path(run, path.parent.name))
    # The reference first: it frees its text tower before ORT loads the graph, so the peak is
    # image tower + graph, not + text tower (ViT-bigG-14: 2.8 GB less; docs/design.md).
    parts = rebuild_reference(record, cfg)
    session = Vs2Session(path, provider=cfg.provider, precision=precision,
                         optimization="basic" if precision == "fp16" else "all")
    paths = _images(cfg, record)
    batch, ref_pixels = graph_and_reference_pixels(paths, session.manifest.pixel_input,
                                                   parts.clip.preprocess)
    ref = run_reference(parts, ref_pixels, cfg.batch_size)
    got = run_graph(session, batch.pixels, cfg.batch_size)
    tol, tau = TOLERANCES[precision], parts.steering.tau
    decisions = decide(ref, got, tau, tol)
    aligned = align(parts, ref_pixels, ref, got, decisions, cfg.batch_size)
    checks = compare(ref, got, tau, tol, aligned=aligned, decisions=decisions,
                     logit_scale=parts.module.logit_scale)
    images = tuple(str(p) for p in batch.paths)
    metadata = metadata_checks(session.manifest, parts, record, precision, guard)
    failed = any(not c.passed for c in checks) or any(not m.passed for m in metadata)
    report = VerifyReport(
        verdict="FAIL" if failed else "PASS", precision=precision, model=str(path),
        record=str(contract.record_path(run, path.parent.name)), report=str(report_path),
        images=images, providers=tuple(session.providers), tolerances=to_jsonable(tol),
        checks=tuple(checks), metadata=tuple(metadata),
        decisions=_listed(decisions, ref, images),
        latent_index_overlap=latent_overlap(ref[contract.LATENT_INDICES], got[contract.LATENT_INDICES]),
        steered_fraction=float(ref[contract.STEERED].mean()),
        skipped=tuple({"path": str(p), "reason": r} for p, r in batch.skipped))
    write_json(report_path, report.to_dict())
    card.record_verify(path.parent, report.to_dict(), cfg.provider,  # FAIL verdicts too
                       session.manifest)
    if failed:
        raise CheckFailed(report.verdict_line(), report=report)
    return report


def graph_and_reference_pixels(paths: list[Path], kind: str, spec: PreprocessSpec):
    """Files -> (the batch in the graph's input kind, the float32 [N, 3, S, S] the reference
    takes), both from the SOURCE model's preprocessing spec, never the file's: uint8 pixels go
    through THE normalisation, so the graph's folded one is under test; image_rgb images
    through THE preprocessing (PIL), so the graph's resize and crop are."""
    if kind == contract.IMAGE_RGB:
        batch = rgb_paths(paths)
        ref = [preprocess_image(Image.fromarray(x), spec) for x in batch.pixels]
    else:
        uint8 = kind == contract.PIXELS_UINT8
        batch = preprocess_paths(paths, spec, uint8=uint8)
        ref = normalise(batch.pixels, spec) if uint8 else batch.pixels
    if not len(batch.paths):
        raise Vs2Error(f"verify: expected readable images among {len(paths)} files, found none")
    return batch, np.stack(ref) if isinstance(ref, list) else ref


def model_file(cfg: VerifyConfig) -> tuple[Path, str]:
    """cfg.exported (a folder, or a model file in one) -> (model file, precision)."""
    try:
        return contract.locate(cfg.exported, cfg.precision)
    except ValueError as exc:
        raise Vs2Error(f"verify: {exc}") from None


def rebuild_reference(record: ExportRecord, cfg: VerifyConfig) -> FusedParts:
    """The eager SteeredClip from the user's sources, each checked against what export used:
    sources that changed since are refused (the reference would not be the exported model's)."""
    sae, steering = Path(cfg.sae or record.sae), Path(cfg.steering or record.steering)
    parts = build_steered_clip(cfg.model or record.model_spec(), sae, steering,
                               tuple(record.classes or ()), tuple(record.templates), record.cls_only)
    drift = [(f"model weights of {record.model['name']}", parts.clip.weights_sha256,
              record.model.get("weights_sha256")),
             (f"SAE {sae}", parts.sae_sha256, record.sae_checksum),
             (f"steering {steering}", sha256_file(steering), record.steering_sha256)]
    for what, now, then in drift:
        if now != then:
            raise Vs2Error(f"verify: {what} changed since the export ({str(then)[:12]} then, "
                           f"{now[:12]} now); restore it, or export again")
    release_text_tower(parts.clip)  # the class embeddings are computed: ViT-H-14's 1.4 GB go
    return parts


def reference_for(exported: Path, run: Path | None) -> FusedParts:
    """The PyTorch reference of an export folder, from its record in `run` (bench uses it)."""
    record, _ = find_record(run, Path(exported))
    return rebuild_reference(record, VerifyConfig(Path(exported), run))


def _images(cfg: VerifyConfig, record: ExportRecord) -> list[Path]:
    """--images, or the images of the SAE's activation store: up to max_images, evenly spread."""
    if cfg.images is not None:
        paths = list_images(cfg.images)
        where = str(cfg.images)
    else:
        acts = Path(record.acts) if record.acts else None
        paths = ActivationStore(acts).image_paths() if acts and acts.is_dir() else []
        paths = [p for p in paths if p.exists()]
        where = f"the images the store {acts} was made from"
        if not paths:
            raise Vs2Error(f"verify: expected --images DIR: {where} are not there")
    if not paths:
        raise Vs2Error(f"verify: expected images under {where}, found none")
    return spread(paths, cfg.max_images)


@torch.no_grad()
def run_reference(parts: FusedParts, pixels: np.ndarray, batch: int, *, tau: float | None = None,
                  indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The eager SteeredClip on pixels [N, 3, S, S] -> outputs by name, concatenated. tau and
    indices [N, k] force the gate and the top-k set (align)."""
    scalars = parts.scalars()
    if tau is not None:
        scalars[contract.GATE_TAU] = torch.tensor(tau, dtype=torch.float32)
    chunks = []
    for start in tqdm(range(0, len(pixels), batch), desc="verify: torch", unit="batch",
                      disable=None if indices is None else True):
        forced = None if indices is None else indices[start:start + batch]
        with _forced_topk(parts.module.sae, forced):
            out = parts.module(torch.from_numpy(pixels[start:start + batch]), *scalars.values())
        chunks.append([t.numpy() for t in out])
    return {name: np.concatenate([c[i] for c in chunks])
            for i, name in enumerate(parts.module.output_names)}


@contextlib.contextmanager
def _forced_topk(sae, indices: np.ndarray | None):
    """Make sae.encode keep the given latents (values: the reference's own pre-activations)."""
    if indices is None:
        yield
        return
    idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
    sae.encode = lambda h: (sae.pre_activations(h).gather(-1, idx), idx)
    try:
        yield
    finally:
        del sae.encode  # the instance attribute goes; TopKSAE.encode is back


def align(parts: FusedParts, pixels: np.ndarray, ref: dict, got: dict, decisions: Decisions,
          batch: int) -> dict[str, np.ndarray]:
    """The reference with the graph's choices on near-tie and near-gate images: recomputed with
    the graph's top-k set and gate, so those images are judged by value too (parity rule 2)."""
    aligned = {name: value.copy() for name, value in ref.items()}
    rows = np.flatnonzero(decisions.to_align)
    for steered, tau in ((True, float(np.finfo(np.float32).max)), (False, -1.0)):
        sel = rows[got[contract.STEERED][rows] == steered]
        if len(sel):
            out = run_reference(parts, pixels[sel], batch, tau=tau,
                                indices=got[contract.LATENT_INDICES][sel])
            for name in aligned:
                aligned[name][sel] = out[name]
    return aligned


def run_graph(session: Vs2Session, pixels: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """ONNX Runtime on the same pixels, with the graph's own defaults -> outputs by name."""
    starts = tqdm(range(0, len(pixels), batch), desc="verify: onnxruntime", unit="batch",
                  disable=None)
    chunks = [session.run(pixels[s:s + batch]) for s in starts]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def int8_guard(path: Path, precision: str) -> tuple[float, float] | None:
    """The int8 file's own re-check setting (recheck.guard_setting; None for other files). Its
    weights stay on disk where they are external; an inline file is read whole, once."""
    if precision != "int8":
        return None
    check_regular(path, "an ONNX model", error=Vs2Error)  # a FIFO would block onnx.load
    try:
        return guard_setting(onnx.load(str(path), load_external_data=False))
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Vs2Error(f"verify: {path}: expected an ONNX model, got an error: {first}") from None


def metadata_checks(m: Manifest, parts: FusedParts, record: ExportRecord,
                    precision: str, guard: tuple[float, float] | None = None) -> list[MetaCheck]:
    """Every manifest field that changes what an app computes, against the sources; the int8
    re-check setting, which no source fixes, against the graph that carries it out."""
    s, sae = parts.steering, parts.module.sae.cfg
    spec = record.model_spec()
    pairs = {
        "model": ([m.model.id, m.model.source, m.model.weights_sha256, m.model.width, m.model.embed_dim],
                  [spec.name, spec.source, parts.clip.weights_sha256, parts.clip.width,
                   parts.clip.embed_dim]),
        "preprocess": (m.preprocess.to_dict(), parts.clip.preprocess.to_dict()),
        "sae": ([m.sae.d, m.sae.n, m.sae.k, m.sae.sha256], [sae.d, sae.n, sae.k, parts.sae_sha256]),
        "steering": ([m.steering.gamma, m.steering.lambda_, m.steering.quantile, m.steering.tau,
                      m.steering.sae_sha256, m.steering.gate],
                     [s.gamma, s.lambda_, s.quantile, s.tau, s.sae_sha256, s.gate]),
        "inputs.overridable": (m.inputs.overridable, {k: float(v) for k, v in parts.scalars().items()}),
        "classes": (list(m.classes or []), list(record.classes or [])),
        "templates": (list(m.templates), list(record.templates)),
        "logit_scale": (m.logit_scale, parts.module.logit_scale),
        "outputs": (list(m.outputs), list(parts.module.output_names)),
        "pixel_input": (m.pixel_input, record.pixel_input),
        "precision": (m.precision, contract.file_precision(precision)),  # bf16 runs model.onnx
        "int8_recheck": (None if m.int8_recheck is None else [m.int8_recheck.margin, m.int8_recheck.gate_band],
                         None if guard is None else list(guard)),
    }
    return [MetaCheck(f"manifest.{name}", _same(a, b), a, b) for name, (a, b) in pairs.items()]


def _same(a: object, b: object) -> bool:
    """Equal, floats to float32 rounding (the graph holds them as float32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _listed(d: Decisions, ref: dict, images: tuple[str, ...]) -> dict:
    """Per-image decisions for the report: every near-tie with its gap, every flip."""
    def swap(i: int) -> dict:
        return {"image": images[i], "gap": float(d.topk_gap[i]), "reference_only": d.swapped[i][0],
                "graph_only": d.swapped[i][1]}
    return {"near_ties": [swap(i) for i in np.flatnonzero(d.near_tie & ~d.topk_flip)],
            "near_gate": [{"image": images[i], "fvu": float(ref[contract.FVU][i])}
                          for i in np.flatnonzero(d.near_gate)],
            "topk_flips": [swap(i) for i in np.flatnonzero(d.topk_flip)],
            "gate_flips": [{"image": images[i], "fvu": float(ref[contract.FVU][i])}
                           for i in np.flatnonzero(d.gate_flip)]}


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:97] + "..."
