"""THE graph contract: every name an exported model and its folder are known by. One home.

Everything that spells a graph input or output, a precision, a file of the export folder or the
metadata key imports it from here: the exporter writes these names, the runtime and every
binding (Python, Node, the browser) read them, verify compares them.

Image graph (model.onnx and its precision variants), all outputs batch-first. Every input is
a REAL required graph input (no initializer of the same name: ORT's JS bindings cannot override
those); every wrapper feeds the manifest's defaults unless the caller overrides them.

    pixel input, exactly one of (manifest `pixel_input` says which):
      pixel_values   float32 [B, 3, S, S]  normalised by runtime.preprocess
      pixels_uint8   uint8   [B, S, S, 3]  decoded, resized, centre-cropped RGB
      image_rgb      uint8   [H, W, 3]     ONE decoded RGB image of any size up to MAX_SIDE;
                                           the graph resizes, crops and normalises (B = 1)
    steering scalars (defaults in the manifest's inputs.overridable):
      steer_gamma    float32 []            latent amplification gamma (docs/method.md, 3)
      steer_lambda   float32 []            steering strength lambda    (docs/method.md, 3)
      gate_tau       float32 []            FVU gate threshold tau      (docs/method.md, 4)
    with classes only:
      class_embeddings float32 [C, E]      unit rows; default CLASS_EMBEDDINGS_FILE
    outputs:
      embedding      float32 [B, E]  steered, L2-normalised
      base_embedding float32 [B, E]  plain CLIP, L2-normalised
      logits         float32 [B, C]  with classes only
      fvu            float32 [B]
      steered        bool    [B]     gate_score <= gate_tau
      latent_indices int64   [B, k]  sorted by value, descending
      latent_values  float32 [B, k]
      gate_score     float32 [B]     what the gate compares with tau (criterion in the manifest)

Text graph (text.onnx, exported with classes): input_ids int64 [N, L] -> text_embedding float32
[N, E], L2-normalised; L = the model's context length (manifest text.context_length).
"""

from __future__ import annotations

from pathlib import Path

METADATA_KEY = "vs2_export"
"""ONNX metadata_props key holding the manifest (one JSON document)."""
SCHEMA_VERSION = 2
"""2: steering scalars and class_embeddings are required inputs, image_rgb, text.onnx."""

# ---- graph inputs
PIXEL_VALUES = "pixel_values"
PIXELS_UINT8 = "pixels_uint8"
IMAGE_RGB = "image_rgb"
PIXEL_INPUTS = (PIXEL_VALUES, PIXELS_UINT8, IMAGE_RGB)
MAX_SIDE = 8192
"""image_rgb: the largest image side the graph takes, and the largest side of the resized image
before the crop (a sliver image would otherwise ask the resize for gigabytes). 8192 keeps a
48-megapixel photo (8064 x 6048) whole; the graph resizes uint8, so it holds ~3 bytes a pixel."""
STEER_GAMMA = "steer_gamma"
STEER_LAMBDA = "steer_lambda"
GATE_TAU = "gate_tau"
STEERING_INPUTS = (STEER_GAMMA, STEER_LAMBDA, GATE_TAU)
"""The run-time scalars, in the order SteeredClip.forward takes them."""
CLASS_EMBEDDINGS = "class_embeddings"
"""float32 [C, E] input of graphs exported with classes: logits = logit_scale * embedding @ it^T."""

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
"""One name per value end to end: the Python argument and config field (gamma, lambda_, tau;
'lambda' is a Python keyword), the JSON key (gamma, lambda, tau), the CLI option (`vs2 calibrate
--gamma --lambda`; tau is calibrated from --quantile, not given) and the graph input (this map's
values) differ only by each language's rules."""


# ---- text graph
INPUT_IDS = "input_ids"
TEXT_EMBEDDING = "text_embedding"


# ---- precisions and their files
PRECISIONS = ("fp32", "fp16", "int8")
"""The precisions with a file of their own; fp32 is the base every variant is made from and
verified against."""
COMPUTE_PRECISIONS = {"bf16": "fp32"}
"""Precisions with no file of their own -> the file precision whose graph they run: bf16 is
OpenVINO computing model.onnx with INFERENCE_PRECISION_HINT bf16 (providers.create_session).
Verified like a variant (parity.TOLERANCES, parity_report.bf16.json), never exported."""
RUN_PRECISIONS = PRECISIONS + tuple(COMPUTE_PRECISIONS)
"""Everything a session can be asked to compute in (verify --precision, bench rows)."""
INT8_MODES = ("static", "dynamic")
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
INCOMPLETE_MARKER = ".vs2-export-incomplete"
"""Written into the export folder before export's first file and removed after its last: a
folder that still holds it was interrupted mid-export (model.onnx may be there without the
variants or their checks). It holds {"pid": PID}; the runtime refuses the folder to anyone else."""


def file_precision(precision: str) -> str:
    """The precision of the file a precision runs: bf16 -> fp32, the others -> themselves."""
    if precision not in RUN_PRECISIONS:
        raise ValueError(f"precision: expected one of {list(RUN_PRECISIONS)}, got {precision!r}")
    return COMPUTE_PRECISIONS.get(precision, precision)


def model_file(precision: str) -> str:
    """fp32 (and bf16) -> model.onnx, fp16 -> model.fp16.onnx, int8 -> model.int8.onnx."""
    precision = file_precision(precision)
    return MODEL_FILE if precision == "fp32" else f"model.{precision}.onnx"


def manifest_file(precision: str) -> str:
    """The readable copy of a variant's metadata: manifest.json, manifest.fp16.json, ..."""
    return MANIFEST_FILE if model_file(precision) == MODEL_FILE else f"manifest.{precision}.json"


def model_path(folder: str | Path, precision: str) -> Path:
    """exported/NAME + precision -> the variant's .onnx file."""
    return Path(folder) / model_file(precision)


SIDECAR_SUFFIX = ".data"


def sidecar_name(model: str | Path) -> str:
    """The ONE external-data file of a graph whose weights do not fit in its protobuf (over 2 GB:
    ViT-H-14 and up), by the relative name the .onnx file records: model.onnx ->
    model.onnx.data, model.fp16.onnx -> model.fp16.onnx.data. It lives beside the model."""
    return Path(model).name + SIDECAR_SUFFIX


def sidecar_of(name: str | Path) -> str | None:
    """The model file name a sidecar name belongs to (model.onnx.data -> model.onnx), or None."""
    name = Path(name).name
    return name[:-len(SIDECAR_SUFFIX)] if name.endswith(SIDECAR_SUFFIX) else None


def precision_of(path: str | Path) -> str | None:
    """The precision a model file name stands for, or None for a name outside the contract."""
    name = Path(path).name
    return next((p for p in PRECISIONS if model_file(p) == name), None)


def file_precision_problem(path: str | Path, precision: str) -> str | None:
    """Why a graph of `precision` may not sit at `path`, or None: a contract file name
    (model.onnx, model.fp16.onnx, model.int8.onnx) holds its own precision's graph only, since
    commands pick the file by name. Other names (a copy, custom.onnx) may hold any."""
    named = precision_of(path)
    if named is None or named == precision:
        return None
    return (f"{Path(path).name} is the {named} graph's file name, but its manifest says "
            f"{precision} (the {precision} graph is {model_file(precision)})")


def locate(exported: str | Path, precision: str | None = None) -> tuple[Path, str]:
    """An export folder (+ precision, default fp32) or one model file in it -> (model file,
    precision). Every command that takes an export accepts both."""
    path = Path(exported)
    if path.is_dir() or not path.suffix:
        precision = precision or "fp32"
        return model_path(path, precision), precision
    found = precision_of(path)
    if found is None or (precision and precision != found):
        names = ", ".join(model_file(p) for p in PRECISIONS)
        raise ValueError(f"{path}: expected an export folder or one of its model files ({names})"
                         + (f" matching --precision {precision}" if precision else ""))
    return path, found


# ---- run-time classes (the text graph beside the image graph; docs/js.md)
TEXT_MODEL_FILE = "text.onnx"
CLASS_EMBEDDINGS_FILE = "class_embeddings.f32"
"""The default class embedding matrix, little-endian float32 [C, E] row-major."""
VOCAB_FILE = "tokenizer/bpe_simple_vocab_16e6.txt.gz"


REFERENCE_DIR = "reference"
"""Reference vectors written with every export: images, their graph inputs, the fp32 outputs,
for ports to check themselves against."""
REFERENCE_INDEX = "reference.json"


# ---- what ships: the export folder holds the model files, their manifests and what the
# runtime reads, nothing else. Sources, records and reports live in the run folder (below).


def shipped(name: str) -> bool:
    """Whether a file name belongs in an export folder: a model file, its manifest copy, a
    runtime input (class embeddings, the text graph, the tokenizer, reference vectors) or the
    model card with the verdicts and timings it is rendered from. A graph's sidecar (its
    weights, for graphs over 2 GB: model files, and text.onnx from ViT-bigG-14 up) ships with it."""
    model = sidecar_of(name)
    return (precision_of(name) is not None or model == TEXT_MODEL_FILE
            or (model is not None and precision_of(model) is not None)
            or name in {manifest_file(p) for p in PRECISIONS}
            or name in RUNTIME_FILES or name in (CARD_FILE, CARD_RECORDS_FILE))


RUNTIME_FILES = frozenset({CLASS_EMBEDDINGS_FILE, TEXT_MODEL_FILE, Path(VOCAB_FILE).parts[0],
                           REFERENCE_DIR})
"""Besides the models: what a runtime (Python, Node, the browser) reads from the folder."""

# ---- the run folder (runs/x): what an export was made from and what was measured on it
STEERING_FILE = "steering.json"
"""calibrate's output, by convention in the run folder (the default run folder of export)."""
CLASSES_FILE = "classes.txt"
"""Class names, one per line (a source, read at export; the manifest carries them)."""
RECORDS_DIR = "exports"
REPORTS_DIR = "reports"
CACHE_DIR = "cache"


def record_path(run: str | Path, export_name: str) -> Path:
    """RUN/exports/NAME.json: the export record of export folder NAME (record.py)."""
    return Path(run) / RECORDS_DIR / f"{export_name}.json"


def report_path(run: str | Path, export_name: str, command: str, precision: str = "fp32") -> Path:
    """RUN/reports/NAME.COMMAND[.PRECISION].json: verify, eval, bench and export_check reports
    (precision omitted for fp32)."""
    suffix = "" if precision == "fp32" else f".{precision}"
    return Path(run) / REPORTS_DIR / f"{export_name}.{command}{suffix}.json"


def cache_path(run: str | Path, export_name: str) -> Path:
    """RUN/cache/NAME/: graphs bench derives (bare encoder, ablations), rebuilt when missing."""
    return Path(run) / CACHE_DIR / export_name



CARD_FILE = "MODEL_CARD.md"
"""The model card: export-time facts (also in the manifest under `card`), then what verify and
bench measured on this folder."""
CARD_RECORDS_FILE = "card_records.json"
"""Verdicts and timings verify and bench recorded here; MODEL_CARD.md is rendered from it."""

# ---- `vs2 gallery OUT`: a static page, not part of the export folder
GALLERY_PAGE = "index.html"
GALLERY_DATA = "gallery.json"
GALLERY_IMAGES = "images"
