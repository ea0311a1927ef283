"""THE graph contract: every name an exported model and its folder are known by. One home.

Everything that spells a graph input or output, a precision, a file of the export folder or the
metadata key imports it from here: the exporter writes these names, the runtime and every
binding (Python, Node, the browser) read them, verify compares them.

Image graph (model.onnx and its precision variants), all outputs batch-first:

    pixel input, exactly one of (manifest `pixel_input` says which):
      pixel_values   float32 [B, 3, S, S]  normalised by runtime.preprocess
      pixels_uint8   uint8   [B, S, S, 3]  decoded, resized, centre-cropped RGB
    overridable scalars (defaults in the manifest):
      steer_gamma    float32 []            latent amplification gamma (docs/method.md, 3)
      steer_lambda   float32 []            steering strength lambda    (docs/method.md, 3)
      gate_tau       float32 []            FVU gate threshold tau      (docs/method.md, 4)
    outputs:
      embedding      float32 [B, E]  steered, L2-normalised
      base_embedding float32 [B, E]  plain CLIP, L2-normalised
      logits         float32 [B, C]  with classes only
      fvu            float32 [B]
      steered        bool    [B]     gate_score <= gate_tau
      latent_indices int64   [B, k]  sorted by value, descending
      latent_values  float32 [B, k]
      gate_score     float32 [B]     what the gate compares with tau (criterion in the manifest)
"""

from __future__ import annotations

from pathlib import Path

METADATA_KEY = "vs2_export"
"""ONNX metadata_props key holding the manifest (one JSON document)."""
SCHEMA_VERSION = 1

# ---- graph inputs
PIXEL_VALUES = "pixel_values"
PIXELS_UINT8 = "pixels_uint8"
PIXEL_INPUTS = (PIXEL_VALUES, PIXELS_UINT8)
STEER_GAMMA = "steer_gamma"
STEER_LAMBDA = "steer_lambda"
GATE_TAU = "gate_tau"
STEERING_INPUTS = (STEER_GAMMA, STEER_LAMBDA, GATE_TAU)
"""The run-time scalars, in the order SteeredClip.forward takes them."""

# ---- graph outputs, in the order the graph returns them
EMBEDDING = "embedding"
BASE_EMBEDDING = "base_embedding"
LOGITS = "logits"
FVU = "fvu"
STEERED = "steered"
LATENT_INDICES = "latent_indices"
LATENT_VALUES = "latent_values"
GATE_SCORE = "gate_score"
OUTPUTS = (EMBEDDING, BASE_EMBEDDING, LOGITS, FVU, STEERED, LATENT_INDICES, LATENT_VALUES,
           GATE_SCORE)
REQUIRED_OUTPUTS = tuple(n for n in OUTPUTS if n not in (LOGITS, GATE_SCORE))
"""Every graph has these; `logits` only when exported with classes; `gate_score` in every export
since issue 12 (a graph without it gates on `fvu`, and its manifest says so)."""

# ---- the reliability gate (docs/method.md section 4): what gate_score is, by criterion name
GATE_FVU = "fvu"
GATE_REL_ERR = "rel_err"
GATE_ERR = "err"
GATE_CRITERIA = (GATE_FVU, GATE_REL_ERR, GATE_ERR)
"""fvu: ||h_tilde - h||^2 / ||h - mu||^2 (the paper's); rel_err: ||h_tilde - h||^2 / ||h||^2;
err: ||h_tilde - h||^2. The manifest's steering.gate names the one a graph was built with."""


STEERING_ARGS = {"gamma": STEER_GAMMA, "lambda_": STEER_LAMBDA, "tau": GATE_TAU}
"""One name per value end to end: the CLI option (--gamma, --lambda, --tau), the Python argument
and config field (gamma, lambda_, tau; 'lambda' is a Python keyword), the JSON key (gamma,
lambda, tau) and the graph input (this map's values) differ only by each language's rules."""


# ---- precisions and their files
PRECISIONS = ("fp32", "fp16", "int8")
"""fp32 is the base every variant is made from and verified against."""
INT8_MODES = ("static", "dynamic")
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


def model_file(precision: str) -> str:
    """fp32 -> model.onnx, fp16 -> model.fp16.onnx, int8 -> model.int8.onnx."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    return MODEL_FILE if precision == "fp32" else f"model.{precision}.onnx"


def manifest_file(precision: str) -> str:
    """The readable copy of a variant's metadata: manifest.json, manifest.fp16.json, ..."""
    return MANIFEST_FILE if model_file(precision) == MODEL_FILE else f"manifest.{precision}.json"


def model_path(folder: str | Path, precision: str) -> Path:
    """exported/NAME + precision -> the variant's .onnx file."""
    return Path(folder) / model_file(precision)


def precision_of(path: str | Path) -> str | None:
    """The precision a model file name stands for, or None for a name outside the contract."""
    name = Path(path).name
    return next((p for p in PRECISIONS if model_file(p) == name), None)


# ---- what the export folder holds besides the models (what verify rebuilds the reference from)
SAE_DIR = "sae"
STEERING_FILE = "steering.json"
CLASSES_FILE = "classes.txt"
EXPORT_CONFIG_FILE = "export_config.json"


def export_check_file(precision: str) -> str:
    """The variant-vs-fp32 check written at export."""
    return f"export_check.{precision}.json"


CARD_FILE = "MODEL_CARD.md"
"""The model card: export-time facts (also in the manifest under `card`), then what verify and
bench measured on this folder."""
CARD_RECORDS_FILE = "card_records.json"
"""Verdicts and timings verify and bench recorded here; MODEL_CARD.md is rendered from it."""

# ---- `vs2 gallery OUT`: a static page, not part of the export folder
GALLERY_PAGE = "index.html"
GALLERY_DATA = "gallery.json"
GALLERY_IMAGES = "images"
