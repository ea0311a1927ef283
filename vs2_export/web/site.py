"""Assemble the static site of `vs2 web EXPORTED --out DIR`: page + ONNX Runtime Web + the export.

    DIR/index.html app.js style.css vs2.js decode.js tokenizer.js html_entities.js  (static/)
    DIR/ort/ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm          (onnxruntime-web dist)
    DIR/model/model.onnx manifest.json class_embeddings.f32 text.onnx tokenizer/...  (the export)

Any static server can serve DIR (it needs application/wasm for .wasm and a JavaScript MIME type
for .js/.mjs to be fast and valid). Without COOP/COEP headers the page runs one wasm thread.
Torch-free: only the standard library.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..runtime import contract

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = ("index.html", "app.js", "style.css", "vs2.js", "decode.js", "tokenizer.js",
              "html_entities.js")
"""From static/: the page and the modules it imports (png.js is for Node apps only)."""
ORT_WEB_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
"""From node_modules/onnxruntime-web/dist: the wasm-only ES module build, which embeds its
Emscripten glue, and the SIMD+threads wasm binary it fetches from beside itself."""
EXPORT_REQUIRED = (contract.MODEL_FILE, contract.MANIFEST_FILE)
EXPORT_OPTIONAL = (contract.CLASS_EMBEDDINGS_FILE, contract.TEXT_MODEL_FILE, contract.VOCAB_FILE)
"""Needed for logits (class_embeddings.f32) and for run-time class names (the other two)."""


class SiteError(ValueError):
    """A missing input folder or file; the message names it."""


def build_site(exported: str | Path, out: str | Path, ort_dist: str | Path) -> Path:
    """Copy page, onnxruntime-web files and the export folder into `out` (created or refreshed)."""
    exported, out, ort_dist = Path(exported), Path(out), Path(ort_dist)
    for name in EXPORT_REQUIRED:
        _require(exported / name, "the export folder")
    for name in ORT_WEB_FILES:
        _require(ort_dist / name, "onnxruntime-web's dist folder (npm ci, then node_modules/onnxruntime-web/dist)")
    for name in PAGE_FILES:
        _copy(STATIC / name, out / name)
    for name in ORT_WEB_FILES:
        _copy(ort_dist / name, out / "ort" / name)
    for name in EXPORT_REQUIRED + EXPORT_OPTIONAL:
        if (exported / name).is_file():
            _copy(exported / name, out / "model" / name)
    return out


def _require(path: Path, where: str) -> None:
    if not path.is_file():
        raise SiteError(f"{path}: expected this file from {where}, found nothing")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
