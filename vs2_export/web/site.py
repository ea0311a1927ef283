"""Assemble the static site of `vs2 web EXPORTED --out DIR`: page + ONNX Runtime Web + the export.

    DIR/index.html app.js style.css vs2.js manifest.js onnx_metadata.js sha256.js errors.js
        decode.js tokenizer.js html_entities.js                                      (static/)
    DIR/ort/ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm          (onnxruntime-web dist)
    DIR/model/model.onnx manifest.json class_embeddings.f32 text.onnx tokenizer/...  (the export)

Any static server can serve DIR (it needs application/wasm for .wasm and a JavaScript MIME type
for .js/.mjs to be fast and valid). Without COOP/COEP headers the page runs one wasm thread.
Torch-free: the standard library and runtime/contract.py's names.

onnxruntime-web's files come from npm (package.json pins ORT_WEB_VERSION): a checkout has them
in node_modules after `npm ci`; a pip-installed vs2-export has none and passes --ort-dist.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..artifacts import check_output, write_json
from ..runtime import contract
from ..runtime.manifest import Manifest

STATIC = Path(__file__).resolve().parent / "static"
ORT_WEB_VERSION = "1.30.0"
"""The onnxruntime-web release the page is tested with (package.json pins the same)."""
CHECKOUT_ORT_DIST = Path(__file__).resolve().parents[2] / "node_modules" / "onnxruntime-web" / "dist"
"""Where `npm ci` in a checkout of this repository puts onnxruntime-web's files."""
PAGE_FILES = ("index.html", "app.js", "style.css", "vs2.js", "manifest.js", "onnx_metadata.js",
              "sha256.js", "errors.js", "decode.js", "tokenizer.js", "html_entities.js")
"""From static/: the page and the modules it imports (png.js is for Node apps only)."""
ORT_WEB_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
"""From node_modules/onnxruntime-web/dist: the wasm-only ES module build, which embeds its
Emscripten glue, and the SIMD+threads wasm binary it fetches from beside itself."""
PAGE_PRECISIONS = ("fp32", "int8")
"""Variants the page is built for and tested with (bf16 is an OpenVINO compute mode, no file)."""
EXPORT_OPTIONAL = (contract.CLASS_EMBEDDINGS_FILE, contract.TEXT_MODEL_FILE, contract.VOCAB_FILE)
"""Needed for logits (class_embeddings.f32) and for run-time class names (the other two)."""


class SiteError(ValueError):
    """A missing input folder or file; the message names it."""


def default_ort_dist() -> Path:
    """This checkout's node_modules/onnxruntime-web/dist, or SiteError saying how to get it."""
    if (CHECKOUT_ORT_DIST / ORT_WEB_FILES[0]).is_file():
        return CHECKOUT_ORT_DIST
    raise SiteError(f"onnxruntime-web's files are not installed here: run `npm install "
                    f"onnxruntime-web@{ORT_WEB_VERSION}` and pass --ort-dist "
                    "node_modules/onnxruntime-web/dist")


def build_site(exported: str | Path, out: str | Path, ort_dist: str | Path,
               precision: str = "fp32", force: bool = False) -> Path:
    """Copy page, onnxruntime-web files and the export folder into `out` (created; refreshed
    only with `force`). precision: the variant the page runs (model.int8.onnx exported with
    --int8-recheck off is ~3x smaller to download; with its fp32 re-check, the default, ~1.2x
    larger); it is served as model/model.onnx with its own manifest as model/manifest.json.
    The export is loaded and checked first (the runtime's manifest and graph checks): a site
    is never built around a model the page cannot run."""
    exported, out, ort_dist = Path(exported), Path(out), Path(ort_dist)
    if precision not in PAGE_PRECISIONS:
        raise SiteError(f"precision: expected one of {list(PAGE_PRECISIONS)} (what the page runs), "
                        f"got {precision!r}")
    model = exported / contract.model_file(precision)
    _require(model, "the export folder")
    _fits_the_browser(model)
    for name in ORT_WEB_FILES:
        _require(ort_dist / name, f"onnxruntime-web's dist folder (npm install "
                 f"onnxruntime-web@{ORT_WEB_VERSION}: node_modules/onnxruntime-web/dist)")
    check_output(out, "--out", (exported, ort_dist), file=False)
    _claim_site(out, force)
    manifest = _checked_manifest(model)
    for name in PAGE_FILES:
        _copy(STATIC / name, out / name)
    for name in ORT_WEB_FILES:
        _copy(ort_dist / name, out / "ort" / name)
    _copy(model, out / "model" / contract.MODEL_FILE)
    # The graph's metadata is authoritative; manifest.json beside it is only a readable copy.
    write_json(out / "model" / contract.MANIFEST_FILE, json.loads(manifest.to_json()))
    for name in EXPORT_OPTIONAL:
        if (exported / name).is_file() and not _has_sidecar(exported / name):
            _copy(exported / name, out / "model" / name)
        else:  # a refreshed site must not keep a file of an earlier export; a text graph over
            # 2 GB (ViT-bigG-14) stays out: the page then classifies into the export's classes
            (out / "model" / name).unlink(missing_ok=True)
    return out


def _claim_site(out: Path, force: bool) -> None:
    """An existing non-empty folder is refreshed only with --force (never lose work)."""
    if out.exists() and not out.is_dir():
        raise SiteError(f"--out {out}: expected a folder, found a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SiteError(f"--out {out} exists already and is not empty; pass --force to "
                        "refresh the site in it")


def _checked_manifest(model: Path) -> Manifest:
    """Load the graph as every runtime command does: its metadata manifest validated, its
    inputs and outputs checked against it (a truncated file, no metadata: one error)."""
    from ..runtime.session import Vs2Session  # onnxruntime: only when a site is built
    return Vs2Session(model).manifest


def _has_sidecar(path: Path) -> bool:
    return path.with_name(contract.sidecar_name(path)).is_file()


def _fits_the_browser(model: Path) -> None:
    """A graph whose weights are external data (a sidecar file; graphs over 2 GB) cannot run in
    the page: onnxruntime-web loads one .onnx file, and wasm32 addresses 4 GB, which must hold
    the weights, ORT's copy of them and the activations."""
    if _has_sidecar(model):
        sidecar = model.with_name(contract.sidecar_name(model))
        raise SiteError(f"{model}: its weights are external data ({sidecar.name}, "
                        f"{sidecar.stat().st_size / 2**20:.1f} MiB), which the browser build "
                        "cannot fetch; serve a variant without a sidecar (--precision int8)")


def _require(path: Path, where: str) -> None:
    if not path.is_file():
        raise SiteError(f"{path}: expected this file from {where}, found nothing")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
