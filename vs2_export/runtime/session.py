"""Run an exported model with ONNX Runtime: input checks, run / embed / classify.

The graph's names and shapes are runtime/contract.py's; sessions are built by
runtime/providers.py (provider choice, options, the checks ORT does not do).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from . import contract
from .manifest import Manifest, ManifestError
from .monitor import GateMonitor
from .preprocess import PreprocessedBatch, load_image, preprocess_image, preprocess_paths, resize_crop
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
                 optimized_model: str | Path | None = None) -> None:
        """model: a directory holding model.onnx, or a .onnx file. threads: intra-op (None = ORT's:
        one per physical core; on the 2-core bench machine 2 threads ran ViT-B-32 1.7-1.9x faster
        than 1, benchmarks/README.md). optimization: ORT graph level (providers.OPTIMIZATION).
        optimized_model: also write
        ORT's optimised graph there (hardware-specific at level 'all'); loading it with
        optimization='disable' skips the optimiser (ViT-B-32 start 0.24 s -> 0.19 s, measured)."""
        self._path = _model_path(model)
        self._session = create_session(self._path, provider, threads=threads,
                                       optimization=optimization,
                                       optimized_model=optimized_model and Path(optimized_model),
                                       allow_cpu_fallback=allow_cpu_fallback)
        self._manifest = _read_manifest(self._session, self._path)
        _check_graph(self._session, self._manifest, self._path)
        # Initializers that are also graph inputs are not in get_inputs(): ORT lists them apart.
        self._overridable = {i.name: i for i in self._session.get_overridable_initializers()
                             if i.name in self._manifest.inputs.overridable}
        self._output_names = [o.name for o in self._session.get_outputs()]
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

    def run(self, pixel_values: np.ndarray, *, gamma: float | None = None,
            lambda_: float | None = None, tau: float | None = None) -> dict[str, np.ndarray]:
        """Pixels in the model's input kind -> every graph output by name (module docstring):
        float32 [B, 3, S, S] normalised, or for a uint8-input model (manifest.pixel_input ==
        'pixels_uint8') uint8 [B, S, S, 3] resized and cropped RGB (preprocess.resize_crop).

        gamma / lambda_ / tau override the graph's steering inputs for this call only
        (contract.STEERING_ARGS).
        """
        name, size = self._manifest.pixel_input, self._manifest.image_size
        check = _check_uint8 if name == contract.PIXELS_UINT8 else _check_pixels
        feeds = {name: check(pixel_values, size)}
        feeds.update(self._override_feeds(gamma=gamma, lambda_=lambda_, tau=tau))
        values = self._session.run(self._output_names, feeds)
        out = dict(zip(self._output_names, values, strict=True))
        if gamma is None and lambda_ is None and tau is None:  # the graph as shipped (monitor)
            self.gate_monitor.observe(out)
        return out

    def embed(self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 32,
              **overrides: float | None) -> np.ndarray:
        """Paths or PIL images -> steered L2-normalised embeddings [B, E]. A bad file raises ImageError."""
        return self._run_images(images, batch_size, overrides)[contract.EMBEDDING]

    def classify(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, *, batch_size: int = 32,
                 **overrides: float | None) -> list[list[tuple[str, float]]]:
        """Paths or PIL images -> per image the top_k (class, probability), most likely first."""
        self._require_classes()
        if not (_is_int(top_k) and top_k >= 1):  # checked before any image is decoded
            raise InputError(f"top_k: expected an int >= 1, got {top_k!r}")
        return self.top_k(self._run_images(images, batch_size, overrides)[contract.LOGITS], top_k)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> what run() takes for one image: float32 [3, S, S] or uint8 [S, S, 3]."""
        spec = self._manifest.preprocess
        return resize_crop(image, spec) if self._takes_uint8 else preprocess_image(image, spec)

    def preprocess_paths(self, paths: Iterable[str | Path]) -> PreprocessedBatch:
        """Files -> PreprocessedBatch whose pixels are in the kind run() takes (see preprocess)."""
        return preprocess_paths(paths, self._manifest.preprocess, uint8=self._takes_uint8)

    @property
    def _takes_uint8(self) -> bool:
        return self._manifest.pixel_input == contract.PIXELS_UINT8

    def run_paths(self, paths: Iterable[str | Path], *, batch_size: int = 32,
                  **overrides: float | None) -> PathsResult:
        """The lenient batch variant: files that fail to load are listed in .skipped, not raised."""
        _check_batch_size(batch_size)
        paths = [Path(p) for p in paths]
        kept: list[Path] = []
        skipped: list[tuple[Path, str]] = []
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, len(paths), batch_size):  # bounded memory on large folders
            batch = self.preprocess_paths(paths[start:start + batch_size])
            kept.extend(batch.paths)
            skipped.extend(batch.skipped)
            if len(batch.paths):
                chunks.append(self.run(batch.pixels, **overrides))
        return PathsResult(tuple(kept), self._concat(chunks), tuple(skipped))

    def top_k(self, logits: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """logits [B, C] -> per row the k (class, softmax probability) pairs, most likely first."""
        classes = self._require_classes()
        if not (_is_int(k) and k >= 1):
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
        for start in range(0, len(items), batch_size):
            pixels = [self.preprocess(item if isinstance(item, Image.Image) else load_image(item))
                      for item in items[start:start + batch_size]]
            chunks.append(self.run(np.stack(pixels), **overrides))
        if not chunks:
            raise InputError("images: expected at least one image, got none")
        return self._concat(chunks)

    def _concat(self, chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if chunks:
            return {name: np.concatenate([c[name] for c in chunks]) for name in self._output_names}
        # No usable image: empty outputs with the contract's trailing dims and dtypes.
        m = self._manifest
        empty = {contract.EMBEDDING: ((0, m.model.embed_dim), np.float32),
                 contract.BASE_EMBEDDING: ((0, m.model.embed_dim), np.float32),
                 contract.LOGITS: ((0, len(m.classes or ())), np.float32), contract.FVU: ((0,), np.float32),
                 contract.STEERED: ((0,), np.bool_), contract.LATENT_INDICES: ((0, m.sae.k), np.int64),
                 contract.LATENT_VALUES: ((0, m.sae.k), np.float32),
                 contract.GATE_SCORE: ((0,), np.float32)}
        return {name: np.zeros(*empty[name]) for name in self._output_names}

    def _override_feeds(self, **overrides: float | None) -> dict[str, np.ndarray]:
        """gamma / lambda_ / tau -> float32 feeds shaped like the graph input (scalar [] or [1])."""
        feeds = {}
        for arg, value in overrides.items():
            if value is None:
                continue
            name = contract.STEERING_ARGS[arg]
            if name not in self._overridable:
                raise InputError(f"{arg}: this model does not expose {name} as an input")
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(float(value)):
                raise InputError(f"{arg}: expected a finite float, got {value!r}")
            shape = self._overridable[name].shape
            fixed = [d if isinstance(d, int) else 1 for d in shape]
            feeds[name] = np.full(fixed, float(value), dtype=np.float32)
        return feeds

    def _require_classes(self) -> tuple[str, ...]:
        if self._manifest.classes is None:
            raise InputError(f"{self._path}: this model was exported without class names; "
                             "use embed() or export with classes")
        return self._manifest.classes


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


def _check_batch_size(batch_size: object) -> None:
    if not (_is_int(batch_size) and batch_size >= 1):
        raise InputError(f"batch_size: expected an int >= 1, got {batch_size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- loading: path, session, provider, manifest, graph


def _model_path(model: str | Path) -> Path:
    path = Path(model)
    if path.is_dir():
        path = path / contract.MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: expected an exported model (a directory with model.onnx, or a "
                         ".onnx file), got no such file")
    return path


def _read_manifest(session: ort.InferenceSession, path: Path) -> Manifest:
    """The ONNX metadata is authoritative; manifest.json beside the model is only a copy."""
    text = session.get_modelmeta().custom_metadata_map.get(contract.METADATA_KEY)
    if text is None:
        raise ModelError(f"{path}: expected '{contract.METADATA_KEY}' metadata (written by vs2 export), got none")
    try:
        return Manifest.from_json(text)
    except ManifestError as exc:
        raise ModelError(f"{path}: invalid '{contract.METADATA_KEY}' metadata: {exc}") from None


def _check_graph(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """The graph's inputs and outputs must be what its manifest says."""
    outputs = {o.name: o for o in session.get_outputs()}
    if set(outputs) != set(manifest.outputs):
        raise ModelError(f"{path}: graph outputs {sorted(outputs)} do not match manifest outputs "
                         f"{sorted(manifest.outputs)}")
    s, name = manifest.image_size, manifest.pixel_input
    uint8 = name == contract.PIXELS_UINT8
    kind, dims = ("tensor(uint8)", [s, s, 3]) if uint8 else ("tensor(float)", [3, s, s])
    inputs = {i.name: i for i in session.get_inputs()}
    pixels = inputs.get(name)
    if pixels is None or pixels.type != kind or len(pixels.shape) != 4 \
            or [d for d in pixels.shape[1:]] != dims:
        got = None if pixels is None else f"{pixels.type} {pixels.shape}"
        shown = ", ".join(map(str, ["B", *dims]))
        raise ModelError(f"{path}: expected input {name} {kind} [{shown}], got {got}")
    extra = sorted(set(inputs) - {name})
    if extra:
        raise ModelError(f"{path}: expected {name} as the only required input, got also {extra}")
    overridable = {i.name: i for i in session.get_overridable_initializers()}
    for name in manifest.inputs.overridable:
        if name not in overridable or overridable[name].type != "tensor(float)":
            raise ModelError(f"{path}: manifest lists {name} as overridable, but the graph has no "
                             "float initializer-input of that name")
    expected_dims = {contract.LOGITS: len(manifest.classes or ()), contract.EMBEDDING: manifest.model.embed_dim,
                     contract.BASE_EMBEDDING: manifest.model.embed_dim, contract.LATENT_INDICES: manifest.sae.k,
                     contract.LATENT_VALUES: manifest.sae.k}
    for name, want in expected_dims.items():
        shape = outputs[name].shape if name in outputs else None
        if shape and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != want:
            raise ModelError(f"{path}: output {name}: expected {want} columns (from the manifest), "
                             f"got {shape[1]} in the graph")
