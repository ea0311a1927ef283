"""Run an exported model with ONNX Runtime: input checks, run / embed / classify, run-time classes.

The graph's names and shapes are runtime/contract.py's; sessions are built by
runtime/providers.py (provider choice, options, the checks ORT does not do). Every graph input
but the pixels is fed here from the manifest's defaults (steer_gamma, steer_lambda, gate_tau)
and the export's class_embeddings.f32, unless the caller overrides them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from . import contract
from .classes import TextEncoder, check_names, read_class_embeddings
from .files import open_regular
from .manifest import Manifest, ManifestError, is_finite32
from .monitor import GateMonitor
from .preprocess import (
    ImageError,
    PreprocessedBatch,
    PreprocessSpec,
    _keep_ratio_size,
    _shortest_edge_size,
    is_int,
    load_image,
    preprocess_image,
    preprocess_paths,
    resize_crop,
)
from .providers import ModelError, ProviderError, create_session

log = logging.getLogger(__name__)

ImageLike = str | Path | Image.Image
__all__ = ["ImageLike", "InputError", "ModelError", "PathsResult", "ProviderError", "Vs2Session"]


class InputError(ValueError):
    """An array or argument given to run / embed / classify that breaks the graph contract."""


@dataclass(frozen=True)
class PathsResult:
    """What run_paths returns: outputs for the usable files, and why the others were skipped."""

    paths: tuple[Path, ...]
    """Files behind row i of every output."""
    outputs: dict[str, np.ndarray]
    """Graph outputs, batch-first, B = len(paths) rows (B may be 0)."""
    skipped: tuple[tuple[Path, str], ...]
    """(path, short reason) for files that could not be loaded."""


class Vs2Session:
    """One exported model, ready to run. Reads and checks its manifest from the ONNX metadata."""

    def __init__(self, model: str | Path, *, provider: str = "cpu", allow_cpu_fallback: bool = False,
                 threads: int | None = None, optimization: str = "all",
                 optimized_model: str | Path | None = None, precision: str | None = None) -> None:
        """model: a directory holding model.onnx, or a .onnx file. threads: intra-op (None = ORT's:
        one per physical core; on the 2-core bench machine 2 threads ran ViT-B-32 1.7-1.9x faster
        than 1, benchmarks/README.md). optimization: ORT graph level (providers.OPTIMIZATION).
        optimized_model: also write
        ORT's optimised graph there (hardware-specific at level 'all'); loading it with
        optimization='disable' skips the optimiser (ViT-B-32 start 0.24 s -> 0.19 s, measured).
        provider: 'cpu', 'cuda' or 'openvino'. precision: what to compute in, default the file's;
        'bf16' runs model.onnx on provider 'openvino' (contract.COMPUTE_PRECISIONS).
        Keep it in the export folder: a session reads class_embeddings.f32 and text.onnx from
        its model's folder."""
        self._path = _model_path(model)
        if optimized_model is not None:
            _check_optimized_model(Path(optimized_model), self._path)
        self._session = create_session(self._path, provider, threads=threads,
                                       optimization=optimization,
                                       optimized_model=optimized_model and Path(optimized_model),
                                       allow_cpu_fallback=allow_cpu_fallback, precision=precision)
        self._manifest = _read_manifest(self._session, self._path)
        _check_graph(self._session, self._manifest, self._path)
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._text_options = {"provider": provider, "threads": threads}
        self._text: TextEncoder | None = None
        self._default_class_embeddings = read_class_embeddings(self._path.parent, self._manifest)
        self.reset_classes()
        self.gate_monitor = GateMonitor.from_manifest(self._manifest)
        """Running gate statistics and drift alarms over the runs with the shipped gamma,
        lambda and tau (runtime/monitor.py); `gate_monitor.summary()` reads them."""
        log.info("loaded %s (%s, %s) on %s", self._path, self._manifest.model.id,
                 self._manifest.precision, self.providers)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually uses, in priority order."""
        return list(self._session.get_providers())

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The class names behind the logits columns: the export's, or set_classes' names."""
        return self._classes

    @property
    def class_embeddings(self) -> np.ndarray | None:
        """What the graph's class_embeddings input gets: float32 [C, E], unit rows."""
        return self._class_embeddings

    def set_classes(self, names: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """Classify into `names` from now on: tokenizer + text.onnx, no torch, no re-export.
        templates: default the manifest's. Returns the new class embeddings [C, E]."""
        self._require_classes()  # the graph needs a logits head (export with classes)
        templates = self._manifest.templates if templates is None else templates
        try:
            names, templates = check_names(names, templates)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if self._text is None:
            self._text = TextEncoder(self._path.parent, self._manifest, **self._text_options)
        self._class_embeddings = self._text.class_embeddings(names, templates)
        self._classes = names
        return self._class_embeddings

    def reset_classes(self) -> None:
        """Back to the export's classes and class_embeddings.f32."""
        self._classes = self._manifest.classes
        self._class_embeddings = self._default_class_embeddings

    def run(self, pixels: np.ndarray | Sequence[np.ndarray], *, gamma: float | None = None,
            lambda_: float | None = None, tau: float | None = None) -> dict[str, np.ndarray]:
        """Pixels in the model's input kind -> every graph output by name (module docstring):
        float32 [B, 3, S, S] normalised (pixel_values), uint8 [B, S, S, 3] resized and cropped RGB
        (pixels_uint8, preprocess.resize_crop), or for image_rgb decoded RGB uint8 [H, W, 3]: one
        image, a list of them, or [B, H, W, 3] (the graph runs once per image).

        gamma / lambda_ / tau override the steering inputs for this call only
        (contract.STEERING_ARGS); otherwise the manifest's defaults are fed.
        """
        name = self._manifest.pixel_input
        feeds = self._feeds(gamma=gamma, lambda_=lambda_, tau=tau)
        if name == contract.IMAGE_RGB:
            images = _rgb_list(pixels)
            chunks = [self._run({**feeds, name: _check_rgb(x, self._manifest)}) for x in images]
            out = self._concat(chunks)
        else:
            check = _check_uint8 if name == contract.PIXELS_UINT8 else _check_pixels
            out = self._run({**feeds, name: check(pixels, self._manifest.image_size)})
        if gamma is None and lambda_ is None and tau is None:  # the graph as shipped (monitor)
            self.gate_monitor.observe(out)
        return out

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, feeds)
        out = dict(zip(self._output_names, values, strict=True))
        _check_finite(out, self._path)
        return out

    def embed(self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 32,
              **overrides: float | None) -> np.ndarray:
        """Paths or PIL images -> steered L2-normalised embeddings [B, E]. A bad file raises ImageError."""
        return self._run_images(images, batch_size, overrides)[contract.EMBEDDING]

    def classify(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, *, batch_size: int = 32,
                 **overrides: float | None) -> list[list[tuple[str, float]]]:
        """Paths or PIL images -> per image the top_k (class, probability), most likely first."""
        self._require_classes()
        if not (is_int(top_k) and top_k >= 1):  # checked before any image is decoded
            raise InputError(f"top_k: expected an int >= 1, got {top_k!r}")
        return self.top_k(self._run_images(images, batch_size, overrides)[contract.LOGITS], top_k)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> what run() takes for one image: float32 [3, S, S], uint8 [S, S, 3], or
        for image_rgb the decoded RGB pixels uint8 [H, W, 3] (the graph resizes)."""
        spec, kind = self._manifest.preprocess, self._manifest.pixel_input
        if kind == contract.IMAGE_RGB:
            return rgb_pixels(image)
        return resize_crop(image, spec) if kind == contract.PIXELS_UINT8 else preprocess_image(image, spec)

    def preprocess_paths(self, paths: Iterable[str | Path]) -> PreprocessedBatch:
        """Files -> PreprocessedBatch whose pixels are in the kind run() takes (see preprocess);
        for image_rgb, .pixels is a list of uint8 [H, W, 3] (sizes differ)."""
        if self._manifest.pixel_input == contract.IMAGE_RGB:
            return rgb_paths(paths)
        uint8 = self._manifest.pixel_input == contract.PIXELS_UINT8
        return preprocess_paths(paths, self._manifest.preprocess, uint8=uint8)

    def run_paths(self, paths: Iterable[str | Path], *, batch_size: int = 32,
                  **overrides: float | None) -> PathsResult:
        """The lenient batch variant: files that fail to load are listed in .skipped, not raised."""
        _check_batch_size(batch_size)
        paths = [Path(p) for p in paths]
        kept: list[Path] = []
        skipped: list[tuple[Path, str]] = []
        chunks: list[dict[str, np.ndarray]] = []
        step = self._decode_step(batch_size)
        for start in range(0, len(paths), step):  # bounded memory on large folders
            batch = self.preprocess_paths(paths[start:start + step])
            kept.extend(batch.paths)
            skipped.extend(batch.skipped)
            if len(batch.paths):
                chunks.append(self.run(batch.pixels, **overrides))
        return PathsResult(tuple(kept), self._concat(chunks), tuple(skipped))

    def top_k(self, logits: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """logits [B, C] -> per row the k (class, softmax probability) pairs, most likely first;
        class names are the current ones (set_classes), the columns run() gave."""
        classes = self._require_classes()
        if not (is_int(k) and k >= 1):
            raise InputError(f"top_k: expected an int >= 1, got {k!r}")
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)  # stable softmax
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, len(classes))]
        return [[(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]

    def _run_images(self, images, batch_size: int, overrides: dict) -> dict[str, np.ndarray]:
        """Strict: every image must load (ImageError names the file)."""
        _check_batch_size(batch_size)
        items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
        for item in items:
            if not isinstance(item, (str, Path, Image.Image)):
                raise InputError(f"images: expected paths or PIL images, got {type(item).__name__} "
                                 "(use run() for preprocessed arrays)")
        chunks = []
        step = self._decode_step(batch_size)
        for start in range(0, len(items), step):
            pixels = [self.preprocess(item if isinstance(item, Image.Image) else load_image(item))
                      for item in items[start:start + step]]
            rgb = self._manifest.pixel_input == contract.IMAGE_RGB  # sizes differ: no stacking
            chunks.append(self.run(pixels if rgb else np.stack(pixels), **overrides))
        if not chunks:
            raise InputError("images: expected at least one image, got none")
        return self._concat(chunks)

    def _decode_step(self, batch_size: int) -> int:
        """Images decoded at a time: an image_rgb graph runs one image a call anyway, and 32
        decoded 12-megapixel photos would hold 1 GB."""
        return 1 if self._manifest.pixel_input == contract.IMAGE_RGB else batch_size

    def _concat(self, chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if chunks:
            return {name: np.concatenate([c[name] for c in chunks]) for name in self._output_names}
        # No usable image: empty outputs with the contract's trailing dims and dtypes.
        m = self._manifest
        empty = {contract.EMBEDDING: ((0, m.model.embed_dim), np.float32),
                 contract.BASE_EMBEDDING: ((0, m.model.embed_dim), np.float32),
                 contract.LOGITS: ((0, len(self._classes or ())), np.float32), contract.FVU: ((0,), np.float32),
                 contract.STEERED: ((0,), np.bool_), contract.LATENT_INDICES: ((0, m.sae.k), np.int64),
                 contract.LATENT_VALUES: ((0, m.sae.k), np.float32),
                 contract.GATE_SCORE: ((0,), np.float32)}
        return {name: np.zeros(*empty[name]) for name in self._output_names}

    def _feeds(self, **overrides: float | None) -> dict[str, np.ndarray]:
        """Every input but the pixels: the steering scalars (float32 [], the manifest's default
        unless overridden) and, with classes, the current class_embeddings [C, E]."""
        feeds = steering_feeds(self._manifest, **overrides)
        if self._class_embeddings is not None:
            feeds[contract.CLASS_EMBEDDINGS] = self._class_embeddings
        return feeds

    def _require_classes(self) -> tuple[str, ...]:
        if self._classes is None:
            raise InputError(f"{self._path}: this model was exported without class names; "
                             "use embed() or export with classes")
        return self._classes


def steering_feeds(manifest: Manifest, **overrides: float | None) -> dict[str, np.ndarray]:
    """gamma / lambda_ / tau (contract.STEERING_ARGS; None = the manifest's default) -> the graph's
    float32 [] steering inputs. Everything that runs an exported graph feeds them from here."""
    unknown = sorted(set(overrides) - set(contract.STEERING_ARGS))
    if unknown:
        raise InputError(f"overrides: expected some of {list(contract.STEERING_ARGS)}, got {unknown}")
    feeds = {}
    for arg, name in contract.STEERING_ARGS.items():
        value = overrides.get(arg)
        if value is None:
            value = manifest.inputs.overridable[name]
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not is_finite32(float(value)):  # the graph's dtype: 1e39 is inf there
            raise InputError(f"{arg}: expected a number finite in float32 (|x| < 3.4e38), "
                             f"got {value!r}")
        feeds[name] = np.array(float(value), dtype=np.float32)
    return feeds


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """A decoded PIL image -> what an image_rgb graph takes: RGB uint8 [H, W, 3]. (open_clip
    converts after its resize; a palette or translucent image can differ, docs/design.md.)"""
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise ImageError(f"cannot convert a {image.mode} image to RGB: {exc}") from None


def rgb_paths(paths: Iterable[str | Path]) -> PreprocessedBatch:
    """Files -> what an image_rgb graph takes: .pixels a list of RGB uint8 [H, W, 3] (sizes
    differ); unreadable files in .skipped, as preprocess_paths does."""
    kept, images, skipped = [], [], []
    for raw in paths:
        try:
            images.append(rgb_pixels(load_image(raw)))
            kept.append(Path(raw))
        except ImageError as exc:
            skipped.append((Path(raw), exc.reason))
    return PreprocessedBatch(pixels=images, paths=tuple(kept), skipped=tuple(skipped))


def resized_size(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(h, w) of the image after the resize and before the crop: what the image_rgb graph
    computes (fused image front) and preprocess.resize_crop does in PIL."""
    s = spec.image_size
    if spec.resize_mode == "shortest":
        return _shortest_edge_size(h, w, s)
    if spec.resize_mode == "longest":
        return _keep_ratio_size(h, w, s)
    return s, s


def _check_pixels(x: object, size: int) -> np.ndarray:
    """Every rule ORT would otherwise enforce with an obscure message, plus finiteness."""
    want = f"float32 [B, 3, {size}, {size}]"
    if not isinstance(x, np.ndarray):
        raise InputError(f"pixel_values: expected a numpy.ndarray {want}, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise InputError(f"pixel_values: expected dtype float32, got {x.dtype} (shape {list(x.shape)})")
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (size, size):
        raise InputError(f"pixel_values: expected shape {want}, got {list(x.shape)}")
    if x.shape[0] < 1:
        raise InputError(f"pixel_values: expected a batch of at least 1, got {list(x.shape)}")
    finite = np.isfinite(x)
    if not finite.all():
        nan, inf = int(np.isnan(x).sum()), int((~finite).sum() - np.isnan(x).sum())
        raise InputError(f"pixel_values: expected finite values, got {nan} NaN and {inf} Inf")
    return np.ascontiguousarray(x)


def _check_uint8(x: object, size: int) -> np.ndarray:
    """pixels_uint8 rules (every uint8 value is valid, so no finiteness check)."""
    want = f"uint8 [B, {size}, {size}, 3] (resized, cropped RGB; this model normalises itself)"
    if not isinstance(x, np.ndarray):
        raise InputError(f"pixels_uint8: expected a numpy.ndarray {want}, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise InputError(f"pixels_uint8: expected {want}, got dtype {x.dtype} "
                         f"(shape {list(x.shape)})")
    if x.ndim != 4 or x.shape[1:] != (size, size, 3):
        raise InputError(f"pixels_uint8: expected shape {want}, got {list(x.shape)}")
    if x.shape[0] < 1:
        raise InputError(f"pixels_uint8: expected a batch of at least 1, got {list(x.shape)}")
    return np.ascontiguousarray(x)


def _rgb_list(pixels: object) -> list:
    """image_rgb run() input -> list of candidate [H, W, 3] arrays (checked one by one)."""
    if isinstance(pixels, np.ndarray) and pixels.ndim == 4:
        if not len(pixels):  # as pixel_values refuses an empty batch
            raise InputError(f"image_rgb: expected at least one image, got {list(pixels.shape)}")
        return list(pixels)
    if isinstance(pixels, (list, tuple)):
        if not pixels:
            raise InputError("image_rgb: expected at least one image, got an empty list")
        return list(pixels)
    return [pixels]


def _check_rgb(x: object, manifest: Manifest) -> np.ndarray:
    """image_rgb rules: one uint8 [H, W, 3] image, sides and resized sides within max_side (the
    graph allocates for the resize: contract.MAX_SIDE)."""
    limit = manifest.inputs.max_side
    want = f"uint8 [H, W, 3] (one decoded RGB image, H and W <= {limit})"
    if not isinstance(x, np.ndarray):
        raise InputError(f"image_rgb: expected a numpy.ndarray {want}, got {type(x).__name__}")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
        raise InputError(f"image_rgb: expected {want}, got {x.dtype} {list(x.shape)}")
    h, w = x.shape[:2]
    if not (1 <= h <= limit and 1 <= w <= limit):
        raise InputError(f"image_rgb: expected {want}, got {w}x{h} (downscale it first)")
    rh, rw = resized_size(h, w, manifest.preprocess)
    if max(rh, rw) > limit:
        raise InputError(f"image_rgb: a {w}x{h} image resizes to {rw}x{rh}, over the graph's "
                         f"limit of {limit} per side; expected an aspect ratio of at most "
                         f"{limit / manifest.image_size:.1f}:1 (crop it first)")
    return np.ascontiguousarray(x)


def _check_finite(outputs: dict[str, np.ndarray], path: Path) -> None:
    """Finite inputs give finite outputs from a sound graph: NaN or inf means damaged weights (or
    absurd pixels), and printing them as results (a NaN top-1 is still a class name) hides it."""
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            raise ModelError(f"{path}: the graph produced NaN/inf in output {name} (rows {shown}) "
                             "from finite inputs: a damaged or tampered weight, or pixels far "
                             "outside the preprocessed range (fp16 overflows at 65504)")


def _check_batch_size(batch_size: object) -> None:
    if not (is_int(batch_size) and batch_size >= 1):
        raise InputError(f"batch_size: expected an int >= 1, got {batch_size!r}")


# ---- loading: path, session, provider, manifest, graph


def _model_path(model: str | Path) -> Path:
    path = Path(model)
    if path.is_dir():
        path = path / contract.MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: expected an exported model (a directory with model.onnx, or a "
                         ".onnx file), got no such file")
    _check_complete(path.parent)
    return path


def _check_complete(folder: Path) -> None:
    """A folder an export was interrupted in (contract.INCOMPLETE_MARKER) is refused, except to
    that export's own process, whose self-check loads the files it just wrote."""
    marker = folder / contract.INCOMPLETE_MARKER
    if not marker.exists() and not marker.is_symlink():
        return
    try:
        with open_regular(marker, "an export marker", max_size=4096, error=ModelError) as (fh, _):
            pid = json.loads(fh.read()).get("pid")
    except (ModelError, ValueError, AttributeError):
        pid = None
    if pid != os.getpid():
        raise ModelError(f"{folder}: an export into this folder did not finish (interrupted, or "
                         f"still running); run `vs2 export ... --force` again")


def _check_optimized_model(saved: Path, model: Path) -> None:
    """ORT writes optimized_model whatever is there: never over the model, its sidecar or any
    file that ships in the export folder (the saved graph is hardware-specific)."""
    target, folder = saved.resolve(), model.parent.resolve()
    shipped = target.parent == folder and contract.shipped(target.name)
    if target in (model.resolve(), folder / contract.sidecar_name(model)) or shipped:
        raise InputError(f"optimized_model: expected a path outside the export's own files, got "
                         f"{saved} (it would overwrite {target.name})")


def _read_manifest(session: ort.InferenceSession, path: Path) -> Manifest:
    """The ONNX metadata is authoritative; manifest.json beside the model is only a copy."""
    text = session.get_modelmeta().custom_metadata_map.get(contract.METADATA_KEY)
    if text is None:
        raise ModelError(f"{path}: expected '{contract.METADATA_KEY}' metadata (written by vs2 export), got none")
    try:
        manifest = Manifest.from_json(text)
    except ManifestError as exc:
        raise ModelError(f"{path}: invalid '{contract.METADATA_KEY}' metadata: {exc}") from None
    # No file-name check here: a served folder holds any variant as model.onnx (vs2 web, the JS
    # loadModel), and the graph's own manifest says what it is; a precision the caller asked
    # for that contradicts it is refused when the session is created (providers._precision).
    return manifest


def _check_graph(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """The graph's inputs and outputs must be what its manifest says (schema 2: every input
    required, no initializer posing as an input)."""
    outputs = {o.name: o for o in session.get_outputs()}
    if set(outputs) != set(manifest.outputs):
        raise ModelError(f"{path}: graph outputs {sorted(outputs)} do not match manifest outputs "
                         f"{sorted(manifest.outputs)}")
    inputs = {i.name: i for i in session.get_inputs()}
    if set(inputs) != set(manifest.graph_inputs):
        raise ModelError(f"{path}: expected graph inputs {list(manifest.graph_inputs)}, got "
                         f"{list(inputs)}")
    posing = [i.name for i in session.get_overridable_initializers()]
    if posing:
        raise ModelError(f"{path}: expected no initializers as inputs (ORT's JS bindings cannot "
                         f"override them), got {posing}")
    for name, (kind, dims) in _input_specs(manifest).items():
        got = inputs[name]
        shape = list(got.shape)
        fits = len(shape) == len(dims) and all(d is None or s == d for s, d in zip(shape, dims, strict=True))
        if got.type != kind or not fits:
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            raise ModelError(f"{path}: expected input {name} {kind} [{shown}], got {got.type} {shape}")
    expected_dims = {contract.EMBEDDING: manifest.model.embed_dim,
                     contract.BASE_EMBEDDING: manifest.model.embed_dim,
                     contract.LATENT_INDICES: manifest.sae.k, contract.LATENT_VALUES: manifest.sae.k}
    for name, want in expected_dims.items():
        shape = outputs[name].shape if name in outputs else None
        if shape and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != want:
            raise ModelError(f"{path}: output {name}: expected {want} columns (from the manifest), "
                             f"got {shape[1]} in the graph")


def _input_specs(manifest: Manifest) -> dict[str, tuple[str, list[int | None]]]:
    """Graph input -> (ORT type, dims; None = any size) the manifest implies."""
    s, e = manifest.image_size, manifest.model.embed_dim
    pixels = {contract.PIXEL_VALUES: ("tensor(float)", [None, 3, s, s]),
              contract.PIXELS_UINT8: ("tensor(uint8)", [None, s, s, 3]),
              contract.IMAGE_RGB: ("tensor(uint8)", [None, None, 3])}
    specs = {manifest.pixel_input: pixels[manifest.pixel_input]}
    specs.update({name: ("tensor(float)", []) for name in contract.STEERING_INPUTS})
    if manifest.class_embeddings is not None:
        specs[contract.CLASS_EMBEDDINGS] = ("tensor(float)", [None, e])
    return specs
