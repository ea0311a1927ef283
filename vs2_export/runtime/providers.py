"""The one place ONNX Runtime sessions are built: provider choice, session options, the checks
ORT does not do for us (external data outside the model folder, a provider that silently fell
back to the CPU), and ORT's load errors turned into one line.

Everything that opens a graph (the runtime, export's checks, verify, bench, doctor) goes through
`create_session`, so a workaround for an ORT bug lives here once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from . import contract
from .files import check_regular
from .onnx_wire import WireError, WireScan, scan
from .openvino_session import OpenVinoError, OpenVinoSession

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
"""--provider value -> ORT providers in priority order."""
OPENVINO = "openvino"
"""--provider value for OpenVINO's CPU plugin (openvino_session.py says why not ORT's EP)."""
ALL_PROVIDERS = (*PROVIDERS, OPENVINO)
OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
"""ORT graph optimisation levels; 'all' measured fastest (ViT-B-32 batch 16: 4% over
'extended', 9% over 'basic')."""
MAX_THREADS = 1024
"""Intra-op threads at most: ORT allocates per thread up front (10**9 was std::bad_alloc)."""


class ModelError(ValueError):
    """A model that cannot be used: missing, not ONNX, no or invalid vs2_export metadata."""


class ProviderError(ValueError):
    """The execution provider asked for is unknown or did not load."""


def create_session(model: Path | bytes, provider: str = "cpu", *, precision: str | None = None,
                   threads: int | None = None, optimization: str = "all",
                   optimized_model: Path | None = None, profile_prefix: Path | None = None,
                   allow_cpu_fallback: bool = False) -> ort.InferenceSession:
    """A graph file (or serialised bytes) -> a session on `provider` ('cpu', 'cuda' or
    'openvino': then an OpenVinoSession with the same run() contract; files only).

    precision: what to compute in (default: the graph manifest's, else what its file name stands
    for, contract.precision_of; one contradicting the manifest is refused); for OpenVINO the
    compute precision (bf16 runs model.onnx, contract.COMPUTE_PRECISIONS). The fp16 optimisation
    workaround below follows the graph's own float16 tensors. threads: intra-op
    threads (None = ORT's choice, one per physical core). optimized_model: also save ORT's
    optimised graph there.
    """
    if provider not in ALL_PROVIDERS:
        raise ProviderError(f"provider: expected one of {list(ALL_PROVIDERS)}, got {provider!r}")
    if optimization not in OPTIMIZATION:
        raise ValueError(f"optimization: expected one of {list(OPTIMIZATION)}, got {optimization!r}")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool)
                                    and 1 <= threads <= MAX_THREADS):
        raise ValueError(f"threads: expected None or an int in [1, {MAX_THREADS}], got {threads!r}")
    if isinstance(model, Path):
        check_regular(model, "an ONNX model", error=ModelError)  # ORT would block on a FIFO
    wire = _scan(model)
    external = _check_external_data(model, wire.locations) if isinstance(model, Path) else []
    precision = _precision(model, precision, wire)
    if provider == OPENVINO:
        return _openvino(model, precision or "fp32", threads)
    if precision in contract.COMPUTE_PRECISIONS:
        raise ProviderError(f"precision {precision}: ONNX Runtime on {provider} does not compute "
                            f"in it; use provider {OPENVINO!r}")
    options = ort.SessionOptions()
    options.log_severity_level = _quiet_ort()
    float16 = wire.float16 or precision == "fp16"
    options.graph_optimization_level = OPTIMIZATION[_level_for(float16, provider, optimization)]
    if threads is not None:
        options.intra_op_num_threads = threads
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
        if external:
            _optimized_external_data(options, Path(optimized_model))
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    if provider == "cuda":
        _preload_cuda_libraries()
    session = _load(model, options, PROVIDERS[provider], _provider_options(provider, precision),
                    external=bool(external))
    _check_provider(session, provider, allow_cpu_fallback)
    return session


def _quiet_ort() -> int:
    """ORT's own log severity: fatal only (4), since its load and provider errors come back as
    exceptions and the provider check, and are reported here as one line; its coloured
    multi-line dumps ahead of that line only bury it. Warnings (2) when vs2_export logs at DEBUG
    or VS2_DEBUG is set, for whoever is debugging. Also sets ORT's default logger (provider
    loading logs there, before any session exists)."""
    verbose = log.isEnabledFor(logging.DEBUG) or bool(os.environ.get("VS2_DEBUG"))
    severity = 2 if verbose else 4
    ort.set_default_logger_severity(severity)
    return severity


@functools.cache
def _preload_cuda_libraries() -> None:
    """`pip install onnxruntime-gpu[cuda,cudnn]` puts CUDA and cuDNN in nvidia-* packages, where
    the dynamic loader does not look, so the CUDA provider fails to load in a process without
    torch (the torch-free runtime). ORT's preload_dlls (1.21+) loads them from there, and skips
    what torch loaded already (ORT's CUDA EP docs, "Preload DLLs"). Its notices go to stdout,
    which `--json` output owns: they go to stderr instead."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            preload()
        except OSError as exc:  # a library it found but could not load: the provider check says
            log.info("onnxruntime.preload_dlls: %s", exc)


def _openvino(model: Path | bytes, precision: str, threads: int | None) -> OpenVinoSession:
    if not isinstance(model, Path):
        raise ProviderError("provider openvino: expected a model file, got serialised bytes")
    try:
        return OpenVinoSession(model, precision, threads)
    except OpenVinoError as exc:
        raise ProviderError(str(exc)) from None
    except RuntimeError as exc:  # OpenVINO's read/compile errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model}: expected an ONNX model OpenVINO can load, got: {first}") from None


def _scan(model: Path | bytes) -> WireScan:
    try:
        return scan(model)
    except WireError as exc:
        name = model if isinstance(model, Path) else "the graph"
        raise ModelError(f"{name}: expected an ONNX model, got a file that is not well-formed "
                         f"protobuf ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{model}: cannot read the model ({exc})") from None


def _precision(model: Path | bytes, asked: str | None, wire: WireScan) -> str | None:
    """What to compute in: `asked`, else the graph's manifest's, else its file name's. An asked
    precision whose file precision contradicts the manifest is refused: 'int8' must not quietly
    run model.onnx as fp32 (bf16 computes the fp32 file, contract.COMPUTE_PRECISIONS)."""
    stated = _manifest_precision(wire)
    if asked is not None and stated is not None and contract.file_precision(asked) != stated:
        problem = isinstance(model, Path) and contract.file_precision_problem(model, stated)
        if problem:  # the asked precision came from the name: say what is wrong with the file
            raise ModelError(f"{model}: {problem}")
        raise ModelError(f"{model if isinstance(model, Path) else 'the graph'}: precision {asked!r} "
                         f"asked for, but the graph's manifest says {stated!r}")
    return asked or stated or (contract.precision_of(model) if isinstance(model, Path) else None)


def _manifest_precision(wire: WireScan) -> str | None:
    """The manifest's precision, read leniently (the session validates the whole manifest)."""
    try:
        data = json.loads(wire.metadata.get(contract.METADATA_KEY, "null"))
    except (ValueError, RecursionError):
        return None
    precision = data.get("precision") if isinstance(data, dict) else None
    return precision if precision in contract.PRECISIONS else None


def _level_for(float16: bool, provider: str, optimization: str) -> str:
    """ORT 1.31 segfaults applying its level-'all' CPU optimisations to our fp16 graph (measured,
    issue 4): on the CPU a graph holding float16 tensors gets at most 'basic'. Decided from the
    tensors themselves, so neither a renamed file nor an edited manifest brings the crash back."""
    on_cpu = provider == "cpu" or "CUDAExecutionProvider" not in ort.get_available_providers()
    if float16 and on_cpu and optimization in ("extended", "all"):
        log.info("fp16 on the CPU runs with optimization 'basic' ('%s' crashes ORT)", optimization)
        return "basic"
    return optimization


def _check_external_data(path: Path, locations: list[str]) -> list[str]:
    """Refuse external data outside the model's folder ('..', absolute paths, symlinks out) and
    hardlinked data files: a model from elsewhere must not make us read arbitrary files. A file
    whose protobuf cannot be parsed to the end is refused too, since what ORT would read from it
    is unknown. ORT validates paths itself only from 1.24 (microsoft/onnxruntime#26776; models
    loaded from bytes from 1.24.3, #27430; sparse tensors later still, #28709), which is why
    this check runs first whatever the version. Each data file must also be a regular file: ORT
    would block forever opening a FIFO. Returns the locations, deduplicated (our exports over
    2 GB have one, contract.sidecar_name)."""
    folder = path.parent.resolve()
    locations = list(dict.fromkeys(locations))  # one entry per tensor
    for location in locations:
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(f"{path}: expected external data inside the model's folder {folder}, "
                             f"got location {location!r} (resolves to {target})")
    for location in locations:  # every location is inside: now each must be a plain file
        target = (folder / location).resolve()
        if not target.is_file():
            raise ModelError(f"{path}: expected its external data file {location!r} beside it, "
                             f"found {'no file' if not target.exists() else 'no regular file'} "
                             f"at {target}")
        if target.stat().st_nlink > 1:
            raise ModelError(f"{path}: external data {location!r} is a hardlink (link count "
                             f"{target.stat().st_nlink}); expected a plain file of this folder")
    return locations


def _optimized_external_data(options: ort.SessionOptions, optimized_model: Path) -> None:
    """ORT writes an optimised graph over 2 GB only with its weights in a sidecar of its own,
    named by the contract after the optimised file (x.onnx -> x.onnx.data); tensors up to 1 KiB
    (shapes, scalars) stay in the graph."""
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                     contract.sidecar_name(optimized_model))
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024")


def _provider_options(provider: str, precision: str | None) -> dict[str, dict[str, str]]:
    """ORT's CUDA provider computes fp32 MatMul and Conv in TF32 by default (use_tf32=1: 10
    mantissa bits), which moved latents 6e-4 and swapped a top-k pick on an H100 (verify FAIL at
    fp32's tolerances, benchmarks/README.md 'GPU'). fp32 means fp32 here; fp16 is the fast file."""
    if provider == "cuda" and precision in (None, "fp32"):
        return {"CUDAExecutionProvider": {"use_tf32": "0"}}
    return {}


def _ort_source(model: Path, external: bool) -> str | bytes:
    """What InferenceSession takes for a file: its path, or its bytes where the path is not
    UTF-8 (ORT's binding refuses such a str: 'incompatible constructor arguments'). A graph with
    external data needs its path, to find the data beside it."""
    try:
        str(model).encode("utf-8")
    except UnicodeEncodeError:
        if external:
            raise ModelError(f"{model}: ONNX Runtime cannot open a graph with external data at a "
                             "path that is not UTF-8; rename the folder") from None
        return model.read_bytes()
    return str(model)


def _load(model: Path | bytes, options: ort.SessionOptions, providers: list[str],
          provider_options: dict[str, dict[str, str]], *, external: bool = False
          ) -> ort.InferenceSession:
    available = ort.get_available_providers()
    # Asking for a provider this build lacks only makes ORT warn; the provider check reports it.
    wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else _ort_source(model, external)
    try:
        return ort.InferenceSession(source, options, providers=wanted,
                                    provider_options=[provider_options.get(p, {}) for p in wanted])
    except Exception as exc:  # noqa: BLE001  ORT raises pybind classes (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = "the graph" if isinstance(model, bytes) else str(model)
        raise ModelError(f"{name}: expected an ONNX model ONNX Runtime can load, got an error: "
                         f"{first}") from None


def _check_provider(session: ort.InferenceSession, provider: str, allow_cpu_fallback: bool) -> None:
    """ORT falls back to the CPU silently when CUDA libraries are missing (ORT #23372)."""
    if provider != "cuda" or "CUDAExecutionProvider" in session.get_providers():
        return
    message = ("provider: asked for cuda, but ONNX Runtime runs on "
               f"{session.get_providers()} (available: {ort.get_available_providers()}). "
               "Check the CUDA and cuDNN libraries ONNX Runtime needs (VS2_DEBUG=1 shows its "
               "log of what failed to load).")
    if is_installed("onnxruntime") and is_installed("onnxruntime-gpu"):
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
