"""`vs2 doctor`: can this machine run vs2? Versions, ONNX Runtime providers, threads, the demo model.

Each probe yields Findings; any finding at level "fail" makes the machine unhealthy (exit 1).
Probes never raise: what goes wrong is the finding. Two traps are looked for explicitly
(docs/design.md pitfalls): onnxruntime and onnxruntime-gpu installed together (ORT #26996), and a CUDA
provider that is built in but silently falls back to the CPU for lack of libraries (ORT #23372).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from . import __version__

log = logging.getLogger(__name__)
DISTRIBUTIONS = ("torch", "open_clip_torch", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy",
                 "pillow", "safetensors", "typer")
# Every ONNX Runtime wheel installs the same `onnxruntime` package: two of them overwrite each
# other's files, and the CUDA provider is the usual victim (ORT #26996).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                     "onnxruntime-openvino", "onnxruntime-qnn", "ort-nightly", "ort-nightly-gpu")
ORT_DEFAULT_LOG_SEVERITY = 2  # ORT's default logger level (warning), restored after probes


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report."""

    name: str
    level: str
    """'ok', 'info', 'warn' or 'fail' (only 'fail' makes the machine unhealthy)."""
    detail: str


def versions() -> dict[str, str | None]:
    """Python, vs2_export and every distribution vs2 depends on (None = not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version(), "vs2_export": __version__}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def check_ort_distributions() -> list[Finding]:
    """More than one ONNX Runtime wheel installed is a broken install (ORT #26996)."""
    installed = [d for d in ORT_DISTRIBUTIONS if _installed(d)]
    if not installed:
        return [Finding("onnxruntime install", "fail", "no ONNX Runtime distribution installed")]
    if len(installed) > 1:
        return [Finding("onnxruntime install", "fail",
                        f"{' and '.join(installed)} are installed together; they overwrite each "
                        "other and CUDA is silently lost (ORT #26996): uninstall all, then install "
                        "one (onnxruntime-gpu for GPUs)")]
    return [Finding("onnxruntime install", "ok", installed[0])]


def _installed(dist: str) -> bool:
    # Not runtime.session.is_installed: importing that imports onnxruntime, and doctor must still
    # run (and say so) when the ONNX Runtime install is what is broken.
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ORT's default logger prints a red error when a provider library fails to load; the
    doctor reports that itself, so silence it for the probe."""
    import onnxruntime as ort
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)


PROBE_MODEL = (b'\x08\x08:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08'
               b'\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x11')
"""A one-node Identity graph x [1] -> y [1] (IR 8, opset 17), serialised: enough to make ORT
instantiate a provider, and no onnx package needed (a runtime-only install has none)."""


def probe_provider(provider: str) -> tuple[list[str], str]:
    """Create a tiny session asking for `provider` (then CPU) -> (providers ORT really uses,
    error text or '')."""
    import numpy as np
    import onnxruntime as ort
    asked = list(dict.fromkeys([provider, "CPUExecutionProvider"]))  # CPU last, once
    try:
        with _quiet_ort():
            session = ort.InferenceSession(PROBE_MODEL, providers=asked)
            session.run(None, {"x": np.zeros(1, np.float32)})
        return list(session.get_providers()), ""
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return [], f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def check_providers(require_gpu: bool) -> tuple[list[Finding], dict]:
    """Available providers (compiled in) against usable ones (a session really runs on them)."""
    import onnxruntime as ort
    available = list(ort.get_available_providers())
    usable: dict[str, bool] = {}
    findings = []
    cpu, error = probe_provider("CPUExecutionProvider")
    usable["CPUExecutionProvider"] = "CPUExecutionProvider" in cpu
    findings.append(Finding("provider cpu", "ok" if usable["CPUExecutionProvider"] else "fail",
                            "runs" if usable["CPUExecutionProvider"] else f"does not run: {error}"))
    gpu_level = "fail" if require_gpu else "warn"
    if "CUDAExecutionProvider" not in available:
        usable["CUDAExecutionProvider"] = False
        findings.append(Finding("provider cuda", gpu_level if require_gpu else "info",
                                f"not in this ONNX Runtime build (available: {available})"))
    else:
        got, error = probe_provider("CUDAExecutionProvider")
        usable["CUDAExecutionProvider"] = "CUDAExecutionProvider" in got
        findings.append(Finding("provider cuda", "ok", "runs") if usable["CUDAExecutionProvider"]
                        else Finding("provider cuda", gpu_level,
                                     "compiled in, but a session falls back to "
                                     f"{got or 'nothing'} (ORT #23372): the CUDA / cuDNN libraries "
                                     f"are missing or no GPU is present{'; ' + error if error else ''}"))
    return findings, {"available": available, "usable": usable}


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The x86 features that decide the fast kernels: VNNI for int8 without u8s8 saturation
(precision.to_int8), AVX512_BF16 / AMX for OpenVINO's bf16."""


def cpu_flags() -> list[str]:
    """Which of CPU_FLAGS /proc/cpuinfo lists (Linux; [] elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    return []


def check_backends(usable: dict) -> list[Finding]:
    """Which backend runs which precision here. Which is fastest is measured by `vs2 bench`
    (one interleaved table); this only says what can run."""
    flags = cpu_flags()
    ort_precisions = ["fp32", "int8"] + (["fp16"] if usable.get("CUDAExecutionProvider") else [])
    findings = [Finding("cpu features", "info", ", ".join(flags) or "none of " + ", ".join(CPU_FLAGS)),
                Finding("backend onnxruntime", "ok", "precisions " + ", ".join(ort_precisions)
                        + ("" if "fp16" in ort_precisions else " (fp16 is a CUDA variant)"))]
    try:
        import openvino

        from .runtime.openvino_session import cpu_precisions
        precisions = cpu_precisions()
        detail = f"openvino {openvino.__version__}, precisions {', '.join(precisions)}"
        if "bf16" not in precisions:
            detail += " (no bf16: the CPU lacks AVX512_BF16 / AMX)"
        findings.append(Finding("backend openvino", "ok", detail))
    except ImportError:
        findings.append(Finding("backend openvino", "info",
                                "not installed (pip install 'vs2-export[openvino]')"))
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        findings.append(Finding("backend openvino", "warn", f"installed but does not run: "
                                                            f"{type(exc).__name__}: {_first_line(exc)}"))
    return findings


def check_speed(model: Path, cuda: bool, rounds: int) -> tuple[list[Finding], list[dict]]:
    """Time every backend x precision that runs here on the export `model` (runtime.timing,
    interleaved rounds on random pixels) -> findings naming the fastest path and the fastest
    lossless one (embedding cosine >= timing.LOSSLESS_COSINE against ORT fp32) at each batch
    size, and the timings. Raises ValueError for a folder with no runnable model.onnx."""
    from .runtime.timing import LOSSLESS_COSINE, time_backends
    found = time_backends(model, rounds=rounds, cuda=cuda)
    timings = found.ranked
    findings = [Finding(f"timed {_name(t)}", "info", ", ".join(
        f"batch {b} {ms:.2f} ms/image ({t.speedup[b]:.2f}x)" for b, ms in t.ms_per_image.items())
        + f", cosine {t.cosine_min:.6f}") for t in timings]
    findings += [Finding(f"not timed {name}", "warn", f"does not start: {why}")
                 for name, why in found.skipped.items()]
    for batch in timings[0].ms_per_image:
        ranked = sorted(timings, key=lambda t: t.ms_per_image[batch])
        lossless = next(t for t in ranked if t.lossless)  # ORT fp32 itself always is
        findings.append(Finding(f"fastest at batch {batch}", "ok", _timed(lossless, batch)
                                + f", lossless (cosine >= {LOSSLESS_COSINE})"))
        if ranked[0] is not lossless:
            findings.append(Finding(f"fastest at batch {batch}, lossy", "info",
                                    _timed(ranked[0], batch) + "; check it with `vs2 verify "
                                    f"--precision {ranked[0].precision}` before shipping it"))
    return findings, [asdict(t) | {"lossless": t.lossless} for t in timings]


def _name(t) -> str:
    """'onnxruntime fp32', 'onnxruntime cuda fp16', 'openvino bf16'."""
    backend = {"cpu": "onnxruntime", "cuda": "onnxruntime cuda"}.get(t.provider, t.provider)
    return f"{backend} {t.precision}"


def _timed(t, batch: int) -> str:
    return (f"{_name(t)} (--provider {t.provider} --precision {t.precision}): "
            f"{t.ms_per_image[batch]:.2f} ms/image, {t.speedup[batch]:.2f}x onnxruntime fp32, "
            f"embedding cosine {t.cosine_min:.6f}")


def thread_info() -> dict:
    """CPUs the process may use and the thread counts torch and ONNX Runtime will pick."""
    info: dict = {"cpu_count": os.cpu_count()}
    with contextlib.suppress(AttributeError, OSError):
        info["affinity"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        info["cgroup_cpu_max"] = Path("/sys/fs/cgroup/cpu.max").read_text().strip()  # quota period
    info["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                   if k in os.environ}
    with contextlib.suppress(Exception):
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.is_available()
    info["onnxruntime_intra_op"] = "0 = one per physical core (Vs2Session(threads=N) overrides)"
    return info


def check_demo_model() -> Finding:
    """Load the bundled demo CLIP and run its image trunk on one blank image."""
    start = time.perf_counter()
    try:
        import torch

        from .clip import ClipTrunk, load_clip
        from .config import ModelSpec
        clip = load_clip(ModelSpec())
        size = clip.preprocess.image_size
        with torch.no_grad():
            h = ClipTrunk(clip.model.visual)(torch.zeros(1, 3, size, size))
        if not bool(torch.isfinite(h).all()):
            return Finding("demo model", "fail", "loads, but gives non-finite activations")
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return Finding("demo model", "fail", f"does not load: {type(exc).__name__}: "
                                             f"{_first_line(exc)}")
    return Finding("demo model", "ok", f"loads and runs ({size} px, d={clip.width}, "
                                       f"{time.perf_counter() - start:.1f} s)")


def diagnose(require_gpu: bool = False, demo: bool = True, model: Path | None = None,
             rounds: int = 10) -> dict:
    """Run every probe -> the report: healthy, findings, versions, providers, threads; with
    `model` (an export folder) also which backend runs it fastest here (check_speed)."""
    found = versions()
    findings = [Finding(f"import {d}", "fail", "not installed") for d in ("numpy", "pillow")
                if found.get(d) is None]
    toolchain = found.get("torch") is not None
    if not toolchain:
        findings.append(Finding("export toolchain", "info", "not installed: this install runs "
                                "exported models only (pip install 'vs2-export[export]' to export)"))
    findings += check_ort_distributions()
    providers: dict = {}
    try:
        provider_findings, providers = check_providers(require_gpu)
        findings += provider_findings + check_backends(providers["usable"])
    except ImportError as exc:
        findings.append(Finding("import onnxruntime", "fail", str(exc)))
    if demo and toolchain:  # the demo CLIP is a torch model
        findings.append(check_demo_model())
    timings: list[dict] = []
    if model is None:
        findings.append(Finding("fastest", "info", "timed per export: `vs2 doctor --model "
                                "EXPORTED` (every backend and precision that runs here)"))
    elif not providers:  # onnxruntime does not import: its failure is listed above
        findings.append(Finding("fastest", "fail", f"{model} not timed: no ONNX Runtime"))
    else:
        speed, timings = check_speed(model, providers["usable"]["CUDAExecutionProvider"], rounds)
        findings += speed
    healthy = not any(f.level == "fail" for f in findings)
    log.info("doctor: %s", "healthy" if healthy else "NOT healthy")
    return {"healthy": healthy, "findings": [asdict(f) for f in findings], "versions": found,
            "providers": providers, "threads": thread_info(), "timings": timings}


def format_report(report: dict) -> str:
    """The human-readable doctor report (the CLI prints it)."""
    lines = ["versions: " + ", ".join(f"{k} {v or '-'}" for k, v in report["versions"].items())]
    if report["providers"]:
        usable = [p for p, ok in report["providers"]["usable"].items() if ok]
        lines.append(f"providers: available {report['providers']['available']}, usable {usable}")
    t = report["threads"]
    lines.append(f"threads: {t.get('cpu_count')} CPUs, affinity {t.get('affinity', '?')}, "
                 f"torch {t.get('torch_threads', '?')}, cgroup {t.get('cgroup_cpu_max', '-')}")
    lines += [f"[{f['level']:>4}] {f['name']}: {f['detail']}" for f in report["findings"]]
    lines.append("healthy" if report["healthy"] else "NOT healthy")
    return "\n".join(lines)
