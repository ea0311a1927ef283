"""Run an exported model with ONNX Runtime: provider choice, input checks, run / embed / classify.

Graph contract (DESIGN.md): input pixel_values float32 [B, 3, S, S] (or, for models exported with
--uint8-input, pixels_uint8 uint8 [B, S, S, 3]: resized, cropped RGB) plus optional scalar float32
inputs steer_gamma, steer_lambda, gate_tau (initializers that are also inputs: feeding one
overrides the exported default). Outputs: embedding [B, E], base_embedding [B, E],
logits [B, C] (with classes), fvu [B], steered [B] bool, latent_indices [B, k] int64,
latent_values [B, k].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import onnxruntime as ort
from PIL import Image

from .manifest import METADATA_KEY, Manifest, ManifestError
from .onnx_wire import external_data_locations
from .preprocess import (PreprocessedBatch, load_image, preprocess_image, preprocess_paths,
                         resize_crop)

log = logging.getLogger(__name__)

ImageLike = Union[str, Path, Image.Image]
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_OVERRIDES = {"gamma": "steer_gamma", "lam": "steer_lambda", "tau": "gate_tau"}


class ModelError(ValueError):
    """A model that cannot be used: missing, not ONNX, no or invalid vs2_export metadata."""


class ProviderError(ValueError):
    """The execution provider asked for is unknown or did not load."""


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
        than 1, benchmarks/README.md). optimization: ORT graph level; 'all' measured fastest
        (ViT-B-32 batch 16: 4% over 'extended', 9% over 'basic'). optimized_model: also write
        ORT's optimised graph there (hardware-specific at level 'all'); loading it with
        optimization='disable' skips the optimiser (ViT-B-32 start 0.24 s -> 0.19 s, measured)."""
        self._path = _model_path(model)
        _check_external_data(self._path)
        if provider not in _PROVIDERS:
            raise ProviderError(f"provider: expected one of {sorted(_PROVIDERS)}, got {provider!r}")
        if optimization not in _OPTIMIZATION:
            raise ValueError(f"optimization: expected one of {list(_OPTIMIZATION)}, got {optimization!r}")
        if threads is not None and not (_is_int(threads) and threads >= 1):
            raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = _OPTIMIZATION[_level_for(self._path, provider, optimization)]
        options.log_severity_level = 3  # errors only: we check and report providers ourselves
        if optimized_model is not None:
            options.optimized_model_filepath = str(optimized_model)
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session = _create_session(self._path, options, _PROVIDERS[provider])
        _check_provider(self._session, provider, allow_cpu_fallback)
        self._manifest = _read_manifest(self._session, self._path)
        _check_graph(self._session, self._manifest, self._path)
        # Initializers that are also graph inputs are not in get_inputs(): ORT lists them apart.
        self._overridable = {i.name: i for i in self._session.get_overridable_initializers()
                             if i.name in self._manifest.inputs.overridable}
        self._output_names = [o.name for o in self._session.get_outputs()]
        log.info("loaded %s (%s, %s) on %s", self._path, self._manifest.model.id,
                 self._manifest.precision, self.providers)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually uses, in priority order."""
        return list(self._session.get_providers())

    def run(self, pixel_values: np.ndarray, *, gamma: float | None = None, lam: float | None = None,
            tau: float | None = None) -> dict[str, np.ndarray]:
        """Pixels in the model's input kind -> every graph output by name (module docstring):
        float32 [B, 3, S, S] normalised, or for a uint8-input model (manifest.pixel_input ==
        'pixels_uint8') uint8 [B, S, S, 3] resized and cropped RGB (preprocess.resize_crop).

        gamma / lam / tau override steer_gamma / steer_lambda / gate_tau for this call only.
        """
        name, size = self._manifest.pixel_input, self._manifest.image_size
        check = _check_uint8 if name == "pixels_uint8" else _check_pixels
        feeds = {name: check(pixel_values, size)}
        feeds.update(self._override_feeds(gamma=gamma, lam=lam, tau=tau))
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def embed(self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 32,
              **overrides: float | None) -> np.ndarray:
        """Paths or PIL images -> steered L2-normalised embeddings [B, E]. A bad file raises ImageError."""
        return self._run_images(images, batch_size, overrides)["embedding"]

    def classify(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, *, batch_size: int = 32,
                 **overrides: float | None) -> list[list[tuple[str, float]]]:
        """Paths or PIL images -> per image the top_k (class, probability), most likely first."""
        self._require_classes()
        if not (_is_int(top_k) and top_k >= 1):  # checked before any image is decoded
            raise InputError(f"top_k: expected an int >= 1, got {top_k!r}")
        return self.top_k(self._run_images(images, batch_size, overrides)["logits"], top_k)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> what run() takes for one image: float32 [3, S, S] or uint8 [S, S, 3]."""
        spec = self._manifest.preprocess
        return resize_crop(image, spec) if self._takes_uint8 else preprocess_image(image, spec)

    def preprocess_paths(self, paths: Iterable[str | Path]) -> PreprocessedBatch:
        """Files -> PreprocessedBatch whose pixels are in the kind run() takes (see preprocess)."""
        return preprocess_paths(paths, self._manifest.preprocess, uint8=self._takes_uint8)

    @property
    def _takes_uint8(self) -> bool:
        return self._manifest.pixel_input == "pixels_uint8"

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
        return [[(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]

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
        empty = {"embedding": ((0, m.model.embed_dim), np.float32),
                 "base_embedding": ((0, m.model.embed_dim), np.float32),
                 "logits": ((0, len(m.classes or ())), np.float32), "fvu": ((0,), np.float32),
                 "steered": ((0,), np.bool_), "latent_indices": ((0, m.sae.k), np.int64),
                 "latent_values": ((0, m.sae.k), np.float32)}
        return {name: np.zeros(*empty[name]) for name in self._output_names}

    def _override_feeds(self, **overrides: float | None) -> dict[str, np.ndarray]:
        """gamma / lam / tau -> float32 feeds shaped like the graph input (scalar [] or [1])."""
        feeds = {}
        for arg, value in overrides.items():
            if value is None:
                continue
            name = _OVERRIDES[arg]
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


def _level_for(path: Path, provider: str, optimization: str) -> str:
    """ORT 1.31 segfaults applying its level-'all' CPU optimisations to our fp16 graph (measured,
    issue 4): on the CPU an fp16 variant gets at most 'basic'."""
    on_cpu = provider == "cpu" or "CUDAExecutionProvider" not in ort.get_available_providers()
    if path.name.endswith(".fp16.onnx") and on_cpu and optimization in ("extended", "all"):
        log.warning("%s: fp16 on the CPU runs with optimization 'basic' ('%s' crashes ORT)",
                    path, optimization)
        return "basic"
    return optimization


def _check_batch_size(batch_size: object) -> None:
    if not (_is_int(batch_size) and batch_size >= 1):
        raise InputError(f"batch_size: expected an int >= 1, got {batch_size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- loading: path, session, provider, manifest, graph


def _model_path(model: str | Path) -> Path:
    path = Path(model)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise ModelError(f"{path}: expected an exported model (a directory with model.onnx, or a "
                         ".onnx file), got no such file")
    return path


def _check_external_data(path: Path) -> None:
    """Refuse external data outside the model's folder ('..', absolute paths, symlinks out): a
    model from elsewhere must not make us read arbitrary files. Recent ORT checks this too; the
    versions we support (>= 1.18) did not all."""
    folder = path.parent.resolve()
    for location in external_data_locations(path):
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(f"{path}: expected external data inside the model's folder {folder}, "
                             f"got location {location!r} (resolves to {target})")


def _create_session(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    available = ort.get_available_providers()
    # Asking for a provider this build lacks only makes ORT warn; the provider check reports it.
    wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as exc:  # noqa: BLE001  ORT raises pybind classes (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: expected an ONNX model ONNX Runtime can load, got an error: "
                         f"{first}") from None


def _check_provider(session: ort.InferenceSession, provider: str, allow_cpu_fallback: bool) -> None:
    """ORT falls back to the CPU silently when CUDA libraries are missing (ORT #23372)."""
    if provider != "cuda" or "CUDAExecutionProvider" in session.get_providers():
        return
    message = ("provider: asked for cuda, but ONNX Runtime runs on "
               f"{session.get_providers()} (available: {ort.get_available_providers()}). "
               "Check the CUDA and cuDNN libraries ONNX Runtime needs.")
    both = is_installed("onnxruntime") and is_installed("onnxruntime-gpu")
    if both:
        message += (" Both onnxruntime and onnxruntime-gpu are installed, which disables CUDA "
                    "(ORT #26996): uninstall both, then install onnxruntime-gpu only.")
    if not allow_cpu_fallback:
        raise ProviderError(message)
    log.warning("%s Falling back to the CPU (allow_cpu_fallback=True).", message)


def is_installed(distribution: str) -> bool:
    """Whether a Python distribution (e.g. onnxruntime-gpu) is installed."""
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _read_manifest(session: ort.InferenceSession, path: Path) -> Manifest:
    """The ONNX metadata is authoritative; manifest.json beside the model is only a copy."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ModelError(f"{path}: expected '{METADATA_KEY}' metadata (written by vs2 export), got none")
    try:
        return Manifest.from_json(text)
    except ManifestError as exc:
        raise ModelError(f"{path}: invalid '{METADATA_KEY}' metadata: {exc}") from None


def _check_graph(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """The graph's inputs and outputs must be what its manifest says."""
    outputs = {o.name: o for o in session.get_outputs()}
    if set(outputs) != set(manifest.outputs):
        raise ModelError(f"{path}: graph outputs {sorted(outputs)} do not match manifest outputs "
                         f"{sorted(manifest.outputs)}")
    s, name = manifest.image_size, manifest.pixel_input
    uint8 = name == "pixels_uint8"
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
    expected_dims = {"logits": len(manifest.classes or ()), "embedding": manifest.model.embed_dim,
                     "base_embedding": manifest.model.embed_dim, "latent_indices": manifest.sae.k,
                     "latent_values": manifest.sae.k}
    for name, want in expected_dims.items():
        shape = outputs[name].shape if name in outputs else None
        if shape and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != want:
            raise ModelError(f"{path}: output {name}: expected {want} columns (from the manifest), "
                             f"got {shape[1]} in the graph")
