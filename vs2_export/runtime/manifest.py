"""The metadata contract of an exported model: one JSON document, schema_version 2.

Schema 2 (issue 9): the steering scalars are required graph inputs whose defaults are
inputs.overridable; `pixel_input` names the one pixel input (image_rgb adds inputs.max_side);
`class_embeddings` (file, shape, SHA-256) describes the default of the class_embeddings input and
`text` the text graph and its tokenizer. This runtime reads schema 2 only.

It sits in the ONNX metadata_props under contract.METADATA_KEY (authoritative) and, as a copy, in
manifest.json beside model.onnx. The exporter builds a Manifest and writes to_json(); the runtime
reads it with from_json(), which checks types here and meaning in Manifest.__post_init__, so an
invalid manifest can neither be written nor read.
"""

from __future__ import annotations

import json
import math
import re
import string
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any

from . import contract
from .preprocess import PreprocessSpec, is_finite_number, is_int
from .tokenizer import TokenizerError, TokenizerSpec

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that does not follow the schema; the message names the key, expected and got."""


@dataclass(frozen=True)
class ModelInfo:
    """The CLIP image tower that was exported."""

    id: str
    """open_clip architecture name, e.g. 'ViT-B-32'."""
    source: str
    """'openai' (pretrained tag), a checkpoint path, 'none' (random init) or 'demo'."""
    width: int
    """Residual width d of the tower (where the SAE reads h: [B, d])."""
    embed_dim: int
    """Embedding size E of the outputs embedding / base_embedding: [B, E]."""
    weights_sha256: str | None = None
    """Checksum of the exported weights (every state_dict entry, clip.weights_sha256); verify
    recomputes it from the user's model. Optional: manifests before it lack the key."""


@dataclass(frozen=True)
class SaeInfo:
    """The top-k sparse autoencoder baked into the graph."""

    d: int
    """Input width (= model.width)."""
    n: int
    """Number of latents."""
    k: int
    """Latents kept per input (latent_indices: [B, k])."""
    sha256: str
    """The SAE checksum (sae.sae_checksum): its weights, the cfg.json fields that change the
    math (d, expansion, n, k) and the model weights it was trained for."""


@dataclass(frozen=True)
class SteeringInfo:
    """VS2 steering and gate constants (defaults of the overridable graph inputs)."""

    gamma: float
    lambda_: float
    """Serialised as 'lambda' (a Python keyword)."""
    quantile: float
    """Gate quantile q that produced tau."""
    tau: float
    """Gate threshold: steer only where gate_score <= tau."""
    sae_sha256: str
    """SHA-256 of the SAE the calibration ran with (must equal sae.sha256)."""
    gate: str = contract.GATE_FVU
    """Gate criterion (contract.GATE_CRITERIA); absent before issue 12, when it was always FVU."""
    gate_stats: dict[str, float] | None = None
    """The gate score on the calibration activations: pass_rate, mean, p50 ... p999, max (what
    the runtime's GateMonitor compares live traffic with); None when not recorded."""


@dataclass(frozen=True)
class InputsInfo:
    """Graph inputs: the pixel input's shape and the steering scalars with their defaults."""

    pixel_values: tuple[int | None, ...] | None = None
    """[None, 3, S, S] float32 (None is the dynamic batch), or None for another pixel input."""
    overridable: dict[str, float] = field(default_factory=dict)
    """contract.STEERING_INPUTS -> default value; required graph inputs, fed by every wrapper."""
    pixels_uint8: tuple[int | None, ...] | None = None
    """[None, S, S, 3] uint8 RGB (decoded, resized, cropped; the graph normalises), or None."""
    image_rgb: tuple[int | None, ...] | None = None
    """[None, None, 3] uint8: one decoded RGB image of any size (the graph resizes), or None."""
    max_side: int | None = None
    """image_rgb only: the largest image side, and resized side, the graph takes
    (contract.MAX_SIDE)."""

    @property
    def pixel_input(self) -> str:
        """The one pixel input the graph takes (contract.PIXEL_INPUTS)."""
        given = [k for k in contract.PIXEL_INPUTS if getattr(self, k) is not None]
        return given[0] if len(given) == 1 else contract.PIXEL_VALUES


@dataclass(frozen=True)
class ClassEmbeddingsInfo:
    """The default of the class_embeddings graph input: a file in the export folder."""

    file: str
    """contract.CLASS_EMBEDDINGS_FILE: little-endian float32, row-major."""
    shape: tuple[int, int]
    """[C, E]: C = len(classes), E = model.embed_dim."""
    sha256: str
    """Hex SHA-256 of the file: a changed file is refused."""


@dataclass(frozen=True)
class TextInfo:
    """The text graph (run-time class names) and its tokenizer."""

    model: str
    """contract.TEXT_MODEL_FILE: input_ids int64 [N, context_length] -> text_embedding [N, E]."""
    vocab: str
    """contract.VOCAB_FILE: open_clip's BPE merges."""
    context_length: int
    """Tokens per prompt (16 for the demo model, 77 for CLIP ViTs)."""
    clean: str
    """open_clip's text cleaning: 'lower', 'whitespace' or 'canonicalize'."""

    def tokenizer_spec(self) -> TokenizerSpec:
        return TokenizerSpec(vocab=self.vocab, context_length=self.context_length, clean=self.clean)


@dataclass(frozen=True)
class Int8RecheckInfo:
    """How model.int8.onnx re-runs its close calls in fp32 (recheck.py; docs/design.md, "int8
    that keeps its answers"): rows whose int8 top-2 logit margin is below `margin`, or whose gate
    score is within `gate_band` of gate_tau, get the fp32 graph's outputs."""

    margin: float
    """Logit units; 0 = the margin is not used."""
    gate_band: float
    """Gate-score units; 0 = not used."""
    estimated_disagreement: float | None
    """Top-1 disagreement with fp32 estimated on the calibration images; None when the margin was
    given, not chosen."""
    rerun_rate: float | None
    """Share of the calibration images re-run; None without calibration images."""
    images: int
    """Calibration images the margin was chosen on (0: given by the user)."""


@dataclass(frozen=True)
class Manifest:
    """Everything an app needs to run, and trust, an exported model (schema_version 2)."""

    model: ModelInfo
    preprocess: PreprocessSpec
    sae: SaeInfo
    steering: SteeringInfo
    classes: tuple[str, ...] | None
    """Class names in logits column order, or None (no logits output)."""
    templates: tuple[str, ...]
    """Prompt templates with one '{}' each (averaged per class)."""
    logit_scale: float
    precision: str
    opset: int
    inputs: InputsInfo
    outputs: tuple[str, ...]
    versions: dict[str, str]
    """Package versions at export time."""
    tolerances: dict[str, Any]
    """Parity tolerances the export was verified against (free-form)."""
    created: str
    """ISO 8601 timestamp."""
    class_embeddings: ClassEmbeddingsInfo | None = None
    """The class_embeddings input's default (with classes), else None."""
    text: TextInfo | None = None
    """The text graph for run-time classes (with classes and a CLIP-BPE tokenizer), else None."""
    schema_version: int = contract.SCHEMA_VERSION
    card: dict[str, Any] | None = None
    """Model-card facts known at export (source and licence, SAE data, gate; free-form, JSON
    values); MODEL_CARD.md renders them. None in exports from before issue 12."""
    int8_recheck: Int8RecheckInfo | None = None
    """int8 with the fp32 re-check of its close calls; None for every other graph."""

    def __post_init__(self) -> None:
        # Accept lists where tuples are meant (JSON has no tuples), then check everything once.
        for name in ("templates", "outputs"):
            object.__setattr__(self, name, tuple(_seq(getattr(self, name), name)))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(_seq(self.classes, "classes")))
        for name in contract.PIXEL_INPUTS:
            if isinstance(getattr(self.inputs, name, None), list):
                object.__setattr__(self.inputs, name, tuple(getattr(self.inputs, name)))
        if self.class_embeddings is not None and isinstance(self.class_embeddings.shape, list):
            object.__setattr__(self.class_embeddings, "shape", tuple(self.class_embeddings.shape))
        if is_finite_number(self.logit_scale):
            object.__setattr__(self, "logit_scale", float(self.logit_scale))
        _check_manifest(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document, keys as in the schema."""
        steering = {f.name.rstrip("_"): getattr(self.steering, f.name) for f in fields(SteeringInfo)}
        return {
            "schema_version": self.schema_version,
            "model": _section_dict(self.model),
            "preprocess": self.preprocess.to_dict() | {"mean": list(self.preprocess.mean),
                                                       "std": list(self.preprocess.std)},
            "sae": _section_dict(self.sae),
            "steering": steering,
            "classes": None if self.classes is None else list(self.classes),
            "templates": list(self.templates),
            "logit_scale": self.logit_scale,
            "precision": self.precision,
            "opset": self.opset,
            "pixel_input": self.pixel_input,
            "inputs": {self.pixel_input: list(getattr(self.inputs, self.pixel_input)),
                       **({"max_side": self.inputs.max_side} if self.inputs.max_side is not None
                          else {}),
                       "overridable": dict(self.inputs.overridable)},
            contract.CLASS_EMBEDDINGS: None if self.class_embeddings is None else {
                "file": self.class_embeddings.file, "shape": list(self.class_embeddings.shape),
                "sha256": self.class_embeddings.sha256},
            "text": None if self.text is None else {
                f.name: getattr(self.text, f.name) for f in fields(TextInfo)},
            "outputs": list(self.outputs),
            "versions": dict(self.versions),
            "tolerances": json.loads(json.dumps(self.tolerances)),  # deep copy, JSON-only values
            "created": self.created,
            **({} if self.card is None else {"card": json.loads(json.dumps(self.card))}),
            **({} if self.int8_recheck is None else {"int8_recheck": _section_dict(self.int8_recheck)}),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (NaN/Inf refused)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest: expected a JSON document, got invalid JSON ({exc})") from None
        except RecursionError:  # json's C parser recurses per '[': 10^5 of them is not a manifest
            raise ManifestError("manifest: expected a JSON document, got one nested too deep") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        return _parse(cls, data)

    @property
    def image_size(self) -> int:
        """S of pixel_values [B, 3, S, S] (or of pixels_uint8 [B, S, S, 3])."""
        return self.preprocess.image_size

    @property
    def pixel_input(self) -> str:
        """The graph's pixel input: 'pixel_values' (float32 [B, 3, S, S], normalised by the app),
        'pixels_uint8' (uint8 [B, S, S, 3], normalised in the graph) or 'image_rgb' (uint8
        [H, W, 3], one decoded image; resized, cropped and normalised in the graph)."""
        return self.inputs.pixel_input

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """Every input the image graph requires, in the graph's order."""
        extra = (contract.CLASS_EMBEDDINGS,) if self.class_embeddings is not None else ()
        return (self.pixel_input, *contract.STEERING_INPUTS, *extra)


def is_sha256(value: str) -> bool:
    """64 lowercase hex digits."""
    return bool(_SHA256.match(value))


def repeated(names: Sequence[Any]) -> list:
    """The names that occur more than once, sorted (one pass: list.count per name took 27 s
    for 30,000 class names)."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def is_iso_timestamp(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_finite32(value: Any) -> bool:
    """A real number that stays finite in float32, the dtype of every graph scalar (1e39 is
    finite as a Python float and inf in the graph)."""
    if not is_finite_number(value):
        return False
    try:
        return math.isfinite(struct.unpack("f", struct.pack("f", float(value)))[0])
    except OverflowError:  # struct refuses floats beyond float32's range
        return False


TEMPLATE_RULE = "a string with exactly one '{}' and no other '{...}' field ('{{' and '}}' for braces)"
"""What a prompt template must be; templates are filled with str.format(name)."""


def is_template(value: Any) -> bool:
    """Whether str.format(name) fills value with the name exactly once and cannot fail: one
    bare '{}' (no name, index, conversion or format spec), literal braces doubled."""
    if not isinstance(value, str):
        return False
    try:
        found = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value)
                 if name is not None]
    except ValueError:  # a lone '{' or '}'
        return False
    return found == [("", "", None)]


# ---- parsing: JSON structure -> dataclasses (types and meaning are checked in __post_init__)

_TOP_KEYS = ("schema_version", "model", "preprocess", "sae", "steering", "classes", "templates",
             "logit_scale", "precision", "opset", "pixel_input", "inputs", contract.CLASS_EMBEDDINGS,
             "text", "outputs", "versions", "tolerances", "created")
_OPTIONAL_TOP_KEYS = ("card", "int8_recheck")
_SECTIONS = {"model": ModelInfo, "sae": SaeInfo, "steering": SteeringInfo}
_OPTIONAL_SECTIONS = {contract.CLASS_EMBEDDINGS: ClassEmbeddingsInfo, "text": TextInfo}
"""Sections that are null when the export has no classes (or no text graph)."""


def _parse(cls: type[Manifest], data: Any) -> Manifest:
    """Dict (parsed JSON) -> Manifest; ManifestError names the key, what was expected and got."""
    _expect(isinstance(data, dict), "manifest", "a JSON object", data)
    version = data.get("schema_version")
    _expect(version == contract.SCHEMA_VERSION and not isinstance(version, bool), "schema_version",
            f"{contract.SCHEMA_VERSION} (this runtime reads schema {contract.SCHEMA_VERSION} only)", version)
    _keys(data, _TOP_KEYS, "manifest", _OPTIONAL_TOP_KEYS)
    sections = {name: _section(data[name], section_cls, name) for name, section_cls in _SECTIONS.items()}
    sections.update({name: None if data[name] is None else _section(data[name], section_cls, name)
                     for name, section_cls in _OPTIONAL_SECTIONS.items()})
    inputs = data["inputs"]
    _expect(isinstance(inputs, dict), "inputs", "an object", inputs)
    pixel_keys = [k for k in contract.PIXEL_INPUTS if k in inputs]
    _expect(len(pixel_keys) == 1, "inputs", f"exactly one of {list(contract.PIXEL_INPUTS)}", sorted(inputs))
    _expect(data["pixel_input"] == pixel_keys[0], "pixel_input", f"the pixel key of inputs, {pixel_keys[0]!r}",
            data["pixel_input"])
    image_rgb = pixel_keys[0] == contract.IMAGE_RGB
    _keys(inputs, (pixel_keys[0], *(("max_side",) if image_rgb else ()), "overridable"), "inputs")
    preprocess = data["preprocess"]
    _expect(isinstance(preprocess, dict), "preprocess", "an object", preprocess)
    _keys(preprocess, tuple(PreprocessSpec.__dataclass_fields__), "preprocess")
    try:
        spec = PreprocessSpec.from_dict(preprocess)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"preprocess.{exc}") from None
    if data.get("int8_recheck") is not None:
        sections["int8_recheck"] = _section(data["int8_recheck"], Int8RecheckInfo, "int8_recheck")
    rest = {k: data[k] for k in _TOP_KEYS + _OPTIONAL_TOP_KEYS
            if k in data and k not in sections and k not in ("inputs", "preprocess", "pixel_input")}
    extra = {"max_side": inputs["max_side"]} if image_rgb else {}
    return cls(**sections, **rest, preprocess=spec,
               inputs=InputsInfo(overridable=inputs["overridable"], **extra, **{
                   pixel_keys[0]: _seq(inputs[pixel_keys[0]], f"inputs.{pixel_keys[0]}")}))


def _section_dict(section: Any) -> dict[str, Any]:
    """A section dataclass -> its JSON object. An optional field left unset (None, its default)
    is not written: a manifest from before the field reads and writes back unchanged."""
    return {f.name: getattr(section, f.name) for f in fields(section)
            if not (f.default is None and getattr(section, f.name) is None)}


def _section(value: Any, section_cls: type, where: str) -> Any:
    """A JSON object -> one of the small section dataclasses ('lambda' -> field lambda_)."""
    _expect(isinstance(value, dict), where, "an object", value)
    names = {f.name.rstrip("_"): f.name for f in fields(section_cls)}
    optional = tuple(k for k, f in zip(names, fields(section_cls), strict=True)
                     if f.default is not MISSING)  # keys added later, with their old meaning
    _keys(value, tuple(k for k in names if k not in optional), where, optional)
    return section_cls(**{names[k]: value[k] for k in names if k in value})


def _keys(data: dict, expected: tuple[str, ...], where: str, optional: tuple[str, ...] = ()) -> None:
    missing = [k for k in expected if k not in data]
    if missing:
        raise ManifestError(f"{where}: required key(s) {missing} missing; expected keys {list(expected)}")
    unknown = sorted(set(data) - set(expected) - set(optional))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; expected only {list(expected)}")


def _seq(value: Any, where: str) -> list:
    _expect(isinstance(value, (list, tuple)), where, "a list", value)
    return list(value)


def _expect(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        shown = repr(got)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ManifestError(f"{key}: expected {expected}, got {shown}")


# ---- meaning: every rule of schema 2, on a constructed Manifest


def _check_manifest(m: Manifest) -> None:
    _expect(m.schema_version == contract.SCHEMA_VERSION and not isinstance(m.schema_version, bool),
            "schema_version", str(contract.SCHEMA_VERSION), m.schema_version)
    _expect(isinstance(m.preprocess, PreprocessSpec), "preprocess", "a PreprocessSpec", m.preprocess)
    _check_model_and_sae(m)
    _check_steering(m)
    _check_classes(m)
    _check_io(m)
    _check_class_inputs(m)
    _check_gate(m)
    _expect(m.precision in contract.PRECISIONS, "precision", f"one of {list(contract.PRECISIONS)}", m.precision)
    _expect(is_int(m.opset) and m.opset >= 7, "opset", "an int >= 7", m.opset)
    _expect(isinstance(m.versions, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in m.versions.items()),
            "versions", "an object of strings", m.versions)
    _expect(isinstance(m.tolerances, dict), "tolerances", "an object", m.tolerances)
    _expect(isinstance(m.created, str) and is_iso_timestamp(m.created), "created",
            "an ISO 8601 timestamp string", m.created)


def _check_model_and_sae(m: Manifest) -> None:
    for key in ("id", "source"):
        value = getattr(m.model, key)
        _expect(isinstance(value, str) and value != "", f"model.{key}", "a non-empty string", value)
    for key in ("width", "embed_dim"):
        value = getattr(m.model, key)
        _expect(is_int(value) and value >= 1, f"model.{key}", "an int >= 1", value)
    weights = m.model.weights_sha256
    _expect(weights is None or (isinstance(weights, str) and is_sha256(weights)),
            "model.weights_sha256", "null or 64 lowercase hex digits", weights)
    for key in ("d", "n", "k"):
        value = getattr(m.sae, key)
        _expect(is_int(value) and value >= 1, f"sae.{key}", "an int >= 1", value)
    _expect(m.sae.k <= m.sae.n, "sae.k", f"<= sae.n = {m.sae.n}", m.sae.k)
    _expect(m.sae.d == m.model.width, "sae.d", f"model.width = {m.model.width}", m.sae.d)
    _expect(isinstance(m.sae.sha256, str) and is_sha256(m.sae.sha256), "sae.sha256",
            "64 lowercase hex digits", m.sae.sha256)


def _check_steering(m: Manifest) -> None:
    s = m.steering
    # gamma, lambda and tau are fed to the graph as float32: 1e39 would run as inf.
    _expect(is_finite32(s.gamma) and s.gamma > 0, "steering.gamma", "a number > 0, finite in float32",
            s.gamma)
    _expect(is_finite32(s.lambda_) and s.lambda_ >= 0, "steering.lambda",
            "a number >= 0, finite in float32", s.lambda_)
    _expect(is_finite_number(s.quantile) and 0 < s.quantile <= 1, "steering.quantile",
            "a number in (0, 1]", s.quantile)
    _expect(is_finite32(s.tau) and s.tau >= 0, "steering.tau", "a number >= 0, finite in float32", s.tau)
    # Calibration is only valid for the SAE it ran with.
    _expect(s.sae_sha256 == m.sae.sha256, "steering.sae_sha256", f"sae.sha256 = {m.sae.sha256!r}",
            s.sae_sha256)
    _expect(is_finite32(m.logit_scale) and m.logit_scale > 0, "logit_scale",
            "a number > 0, finite in float32 (the graph's constant)", m.logit_scale)


def _check_classes(m: Manifest) -> None:
    if m.classes is not None:
        _expect(len(m.classes) >= 1, "classes", "null or a non-empty list", list(m.classes))
        for i, name in enumerate(m.classes):
            _expect(isinstance(name, str) and name.strip() != "", f"classes[{i}]", "a non-empty string",
                    name)
        dupes = repeated(m.classes)
        _expect(not dupes, "classes", "unique names", f"duplicates {dupes}")
        _expect(len(m.templates) >= 1, "templates", "at least one template when classes are given",
                list(m.templates))
    for i, template in enumerate(m.templates):
        _expect(is_template(template), f"templates[{i}]", TEMPLATE_RULE, template)


def _check_io(m: Manifest) -> None:
    s = m.preprocess.image_size
    _expect(isinstance(m.inputs, InputsInfo), "inputs", "an InputsInfo", m.inputs)
    given = [k for k in contract.PIXEL_INPUTS if getattr(m.inputs, k) is not None]
    _expect(len(given) == 1, "inputs", f"exactly one of {list(contract.PIXEL_INPUTS)}", given)
    name = given[0]
    shape = {contract.PIXEL_VALUES: [None, 3, s, s], contract.PIXELS_UINT8: [None, s, s, 3],
             contract.IMAGE_RGB: [None, None, 3]}[name]
    value = getattr(m.inputs, name)
    _expect(isinstance(value, (list, tuple)) and list(value) == shape, f"inputs.{name}",
            f"{shape} (preprocess.image_size = {s})".replace("None", "null"), value)
    if name == contract.IMAGE_RGB:
        _expect(is_int(m.inputs.max_side) and s <= m.inputs.max_side <= contract.MAX_SIDE,
                "inputs.max_side", f"an int in [{s}, {contract.MAX_SIDE}]", m.inputs.max_side)
    else:
        _expect(m.inputs.max_side is None, "inputs.max_side", "absent (image_rgb graphs only)",
                m.inputs.max_side)
    over = m.inputs.overridable
    _expect(isinstance(over, dict), "inputs.overridable", "an object", over)
    # Every steering scalar is a required graph input, so every one needs its default.
    _expect(set(over) == set(contract.STEERING_INPUTS), "inputs.overridable",
            f"exactly the keys {list(contract.STEERING_INPUTS)}", sorted(over))
    defaults = {contract.STEER_GAMMA: m.steering.gamma, contract.STEER_LAMBDA: m.steering.lambda_,
                contract.GATE_TAU: m.steering.tau}
    for name, value in over.items():
        # The graph default must be the calibrated value (float32 rounding allowed).
        _expect(is_finite_number(value) and math.isclose(value, defaults[name], rel_tol=1e-6, abs_tol=1e-9),
                f"inputs.overridable.{name}", f"the steering value {defaults[name]!r}", value)
    outs = list(m.outputs)
    _expect(all(isinstance(o, str) for o in outs) and len(set(outs)) == len(outs), "outputs",
            "unique output names", outs)
    known = set(contract.REQUIRED_OUTPUTS) | {contract.LOGITS, contract.GATE_SCORE}
    _expect(set(outs) <= known, "outputs", f"names among {sorted(known)}", sorted(set(outs) - known))
    _expect(set(contract.REQUIRED_OUTPUTS) <= set(outs), "outputs", f"to include {list(contract.REQUIRED_OUTPUTS)}",
            outs)
    has_classes = m.classes is not None
    _expect((contract.LOGITS in outs) == has_classes, "outputs",
            "'logits' listed if and only if classes are given "
            f"(classes {'given' if has_classes else 'null'})", outs)


def _check_class_inputs(m: Manifest) -> None:
    """class_embeddings and text are there exactly when classes are (the graph's logits need the
    class_embeddings input; run-time class names need the text graph)."""
    has_classes = m.classes is not None
    ce = m.class_embeddings
    _expect((ce is not None) == has_classes, contract.CLASS_EMBEDDINGS,
            f"{'an object' if has_classes else 'null'} (classes {'given' if has_classes else 'null'})",
            ce)
    if ce is not None:
        _expect(ce.file == contract.CLASS_EMBEDDINGS_FILE, "class_embeddings.file",
                repr(contract.CLASS_EMBEDDINGS_FILE), ce.file)
        want = [len(m.classes), m.model.embed_dim]
        _expect(isinstance(ce.shape, (list, tuple)) and list(ce.shape) == want,
                "class_embeddings.shape", f"{want} (classes x model.embed_dim)", ce.shape)
        _expect(isinstance(ce.sha256, str) and is_sha256(ce.sha256), "class_embeddings.sha256",
                "64 lowercase hex digits", ce.sha256)
    if m.text is None:
        return
    _expect(has_classes, "text", "null when classes are null (no logits to classify with)", "an object")
    _expect(m.text.model == contract.TEXT_MODEL_FILE, "text.model", repr(contract.TEXT_MODEL_FILE),
            m.text.model)
    _expect(m.text.vocab == contract.VOCAB_FILE, "text.vocab", repr(contract.VOCAB_FILE), m.text.vocab)
    try:
        m.text.tokenizer_spec()
    except TokenizerError as exc:
        raise ManifestError(f"text.{exc}") from None


def _check_gate(m: Manifest) -> None:
    s = m.steering
    _expect(s.gate in contract.GATE_CRITERIA, "steering.gate",
            f"one of {list(contract.GATE_CRITERIA)}", s.gate)
    # An app must be able to see what the gate compared with tau.
    _expect(s.gate == contract.GATE_FVU or contract.GATE_SCORE in m.outputs, "outputs",
            f"to include {contract.GATE_SCORE!r} (the gate is {s.gate!r}, not fvu)", list(m.outputs))
    stats = s.gate_stats
    # Every criterion is a squared norm or a ratio of them (>= 0), and pass_rate a share: the
    # drift monitor compares live traffic with these and prints them (1e308 read "inf%").
    _expect(stats is None or (isinstance(stats, dict) and all(
        isinstance(k, str) and is_finite32(v) and v >= 0 for k, v in stats.items())),
        "steering.gate_stats", "null or an object of numbers >= 0, finite in float32", stats)
    _expect(stats is None or stats.get("pass_rate", 0) <= 1, "steering.gate_stats.pass_rate",
            "a share in [0, 1]", (stats or {}).get("pass_rate"))
    _expect(m.card is None or isinstance(m.card, dict), "card", "null or an object", m.card)
    _check_recheck(m)



def _check_recheck(m: Manifest) -> None:
    r = m.int8_recheck
    if r is None:
        return
    _expect(isinstance(r, Int8RecheckInfo), "int8_recheck", "an object", r)
    _expect(m.precision == "int8", "int8_recheck", "only in an int8 manifest", m.precision)
    for key in ("margin", "gate_band"):
        value = getattr(r, key)
        _expect(is_finite_number(value) and value >= 0, f"int8_recheck.{key}", "a finite number >= 0", value)
    _expect(r.margin > 0 or r.gate_band > 0, "int8_recheck", "margin or gate_band > 0", _section_dict(r))
    _expect(r.margin == 0 or m.classes is not None, "int8_recheck.margin", "0 without classes", r.margin)
    for key in ("estimated_disagreement", "rerun_rate"):
        value = getattr(r, key)
        _expect(value is None or (is_finite_number(value) and 0 <= value <= 1),
                f"int8_recheck.{key}", "null or a number in [0, 1]", value)
    _expect(is_int(r.images) and r.images >= 0, "int8_recheck.images", "an int >= 0", r.images)
