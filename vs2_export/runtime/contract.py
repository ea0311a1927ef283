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
      steered        bool    [B]
      latent_indices int64   [B, k]  sorted by value, descending
      latent_values  float32 [B, k]

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
OUTPUTS = (EMBEDDING, BASE_EMBEDDING, LOGITS, FVU, STEERED, LATENT_INDICES, LATENT_VALUES)
REQUIRED_OUTPUTS = tuple(n for n in OUTPUTS if n != LOGITS)
"""Every graph has these; `logits` only when exported with classes."""


STEERING_ARGS = {"gamma": STEER_GAMMA, "lambda_": STEER_LAMBDA, "tau": GATE_TAU}
"""One name per value end to end: the CLI option (--gamma, --lambda, --tau), the Python argument
and config field (gamma, lambda_, tau; 'lambda' is a Python keyword), the JSON key (gamma,
lambda, tau) and the graph input (this map's values) differ only by each language's rules."""


# ---- text graph
INPUT_IDS = "input_ids"
TEXT_EMBEDDING = "text_embedding"


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
CLASS_EMBEDDINGS_FILE = "class_embeddings.f32"
"""The default class_embeddings: little-endian float32, row-major [C, E] (shape and SHA-256 in
the manifest)."""
TEXT_MODEL_FILE = "text.onnx"
VOCAB_FILE = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
"""open_clip's BPE vocab, copied into the export so apps tokenize class names without open_clip."""
REFERENCE_DIR = "reference"
"""Reference vectors written with every export: images, their graph inputs, the fp32 outputs."""
REFERENCE_INDEX = "reference.json"


def export_check_file(precision: str) -> str:
    """The variant-vs-fp32 check written at export."""
    return f"export_check.{precision}.json"
