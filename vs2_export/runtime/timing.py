"""Which backend runs an export fastest on this machine: interleaved timing, torch-free.

`vs2 doctor --model EXPORTED` and apps (pick a provider at start-up) use time_backends(); `vs2
bench` (the full table, with the PyTorch and ablation rows) uses the same interleaved(). Every
(backend, precision) that can run here is started, then timed round by round, each round in a
new random order, so load from other processes hits every row alike (benchmarks/README.md: a
fixed order biased one row by 1.25x on a 2-core CPU). Cosines are against ONNX Runtime fp32 on
the same pixels: a speed without its accuracy would invite picking a lossy path blind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract, openvino_session
from .providers import OPENVINO
from .session import Vs2Session

log = logging.getLogger(__name__)
LOSSLESS_COSINE = 0.9999
"""Min embedding cosine against ORT fp32 for a path to count as lossless (issue 11's bar; fp32
on another backend gives 1.000000, OpenVINO bf16 0.99999 on ViT-B-32)."""


def time_runs(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Seconds of `runs` calls of fn after `warmup` untimed ones -> [runs]."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def interleaved(runners: list[Callable[[np.ndarray], object]], pixels: np.ndarray,
                batches: tuple[int, ...], runs: int, warmup: int, seed: int = 0) -> np.ndarray:
    """Seconds [rows, batches, runs]: `warmup` untimed rounds, then `runs` timed ones; each round
    calls every runner once per batch size, so drift in the machine's load hits all rows alike.

    Each round runs its (row, batch) calls in a new seeded random order. In a fixed order each
    call always follows the same neighbour: measured on this 2-core CPU (ViT-B-32, batch 1,
    fixed order), the fused fp32 row ran 1.25x slower than the same graph loaded from its saved
    optimised file, which sat elsewhere in the order; the likely cause is the neighbour's
    thread pool still spinning (ORT's and OpenMP's workers spin before they sleep). Shuffling
    spreads whatever a neighbour costs over every row (benchmarks/README.md)."""
    times = np.zeros((len(runners), len(batches), runs))
    calls = [(i, j) for i in range(len(runners)) for j in range(len(batches))]
    rng = np.random.default_rng(seed)
    for r in range(warmup + runs):
        for k in rng.permutation(len(calls)):
            i, j = calls[k]
            start = time.perf_counter()
            runners[i](pixels[:batches[j]])
            if r >= warmup:
                times[i, j, r - warmup] = time.perf_counter() - start
    return times


@dataclass(frozen=True)
class BackendTiming:
    """One (provider, precision) on one export, timed against ORT fp32 in the same rounds."""

    provider: str
    precision: str
    ms_per_image: dict[int, float]
    """batch size -> median ms per image over the rounds."""
    speedup: dict[int, float]
    """batch size -> ORT fp32 on the CPU's ms per image / this one's."""
    cosine_min: float
    """Min per-image embedding cosine against ORT fp32 on the timing pixels."""

    @property
    def lossless(self) -> bool:
        return self.cosine_min >= LOSSLESS_COSINE


@dataclass(frozen=True)
class Timings:
    """What time_backends found: the paths that ran, fastest first, and those that did not."""

    ranked: tuple[BackendTiming, ...]
    """Fastest at the first batch size first; ORT fp32 on the CPU is always among them."""
    skipped: dict[str, str]
    """'provider precision' -> why it did not start (a damaged variant file, a failed
    compile): listed, never hidden behind the paths that did run."""


def candidates(folder: Path, cuda: bool = False) -> list[tuple[str, str]]:
    """(provider, precision) pairs this machine can run for this export, ORT fp32 first: the
    variant files present; fp16 on CUDA only (on a CPU ORT computes it in fp32 with casts);
    OpenVINO's precisions where the package is installed (bf16 where the CPU has it)."""
    have = [p for p in contract.PRECISIONS if contract.model_path(folder, p).is_file()]
    found = [("cpu", p) for p in have if p != "fp16"]
    if cuda:
        found += [("cuda", p) for p in have]
    if openvino_session.available():  # its precisions: fp32, int8, bf16 (runs model.onnx)
        found += [(OPENVINO, p) for p in openvino_session.cpu_precisions()
                  if contract.model_path(folder, contract.COMPUTE_PRECISIONS.get(p, p)).is_file()]
    return found


def random_pixels(manifest, n: int, seed: int = 0) -> np.ndarray:
    """[n, ...] inputs in the export's pixel input kind: normalised float pixels, or RGB uint8
    at the model's size (pixels_uint8, and image_rgb, whose graph resizes any size)."""
    rng, size = np.random.default_rng(seed), manifest.image_size
    if manifest.pixel_input == contract.PIXEL_VALUES:
        return rng.standard_normal((n, 3, size, size)).astype(np.float32)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def time_backends(folder: str | Path, batches: tuple[int, ...] = (1, 8), rounds: int = 10,
                  threads: int | None = None, cuda: bool = False) -> Timings:
    """Start every candidate on `folder`, time them interleaved on random pixels, and rank
    them: fastest at the first batch size first. A candidate that fails to start is left out
    of the timing and listed in Timings.skipped with its reason."""
    folder = Path(folder)
    # the baseline first, outside the try: a folder it cannot run in is the caller's error
    sessions = {("cpu", "fp32"): Vs2Session(contract.model_path(folder, "fp32"), threads=threads)}
    skipped = {}
    for provider, precision in candidates(folder, cuda)[1:]:
        path = contract.model_path(folder, contract.COMPUTE_PRECISIONS.get(precision, precision))
        try:
            sessions[provider, precision] = Vs2Session(path, provider=provider, threads=threads,
                                                       precision=precision)
        except Exception as exc:  # noqa: BLE001 - one backend's failure must not hide the others
            skipped[f"{provider} {precision}"] = str(exc).strip().splitlines()[0]
            log.warning("timing: %s %s does not start: %s", provider, precision, exc)
    pixels = random_pixels(sessions["cpu", "fp32"].manifest, max(batches))
    embed = {k: s.run(pixels)[contract.EMBEDDING] for k, s in sessions.items()}
    runners = [lambda x, s=s: s.run(x) for s in sessions.values()]
    times = np.median(interleaved(runners, pixels, batches, rounds, warmup=1), axis=2)
    per_image = times / np.array(batches)  # [rows, batches]
    base = per_image[list(sessions).index(("cpu", "fp32"))]
    ranked = [BackendTiming(provider, precision,
                            {b: 1e3 * float(per_image[i, j]) for j, b in enumerate(batches)},
                            {b: float(base[j] / per_image[i, j]) for j, b in enumerate(batches)},
                            float(cosine_rows(embed[provider, precision], embed["cpu", "fp32"]).min()))
              for i, (provider, precision) in enumerate(sessions)]
    return Timings(tuple(sorted(ranked, key=lambda t: t.ms_per_image[batches[0]])), skipped)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of [N, E] arrays -> [N], in float64 (parity and bench use it too)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    num = (a * b).sum(-1)
    return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
