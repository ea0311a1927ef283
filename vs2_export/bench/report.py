"""What `vs2 bench` returns: a frozen BenchReport, with to_json() (bench.json) and format() (the
table the CLI prints). Measurements and ratios only: targets live in benchmarks/README.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

LOAD_WARN_PER_CPU = 0.25
"""A 1-minute load average above this per CPU (at the start; at the end, after taking off the
bench's own threads) means other processes shared the cores: timings are then slower and
noisier than on an idle machine (measured: ORT's MatMul rate fell from 487 to 86 GFLOP/s at
load 7 on 2 cores, benchmarks/README.md)."""


@dataclass(frozen=True)
class BatchStats:
    """One row at one batch size, over the timed rounds."""

    median_ms: float
    """Per call (the whole batch); ms_per_image divides by the batch size."""
    p10_ms: float
    p90_ms: float
    ms_per_image: float
    images_per_s: float
    speedup_vs_ort_fp32: float | None
    """ORT fp32 fused graph's ms per image / this row's (None without that row)."""
    speedup_vs_pytorch: float | None
    matmul_rate_share: float | None
    """GFLOP/image x images/s over matmul_2048_gflops (fp32 rows)."""


@dataclass(frozen=True)
class Row:
    name: str
    backend: str
    """'pytorch', 'onnxruntime' or 'openvino'."""
    precision: str
    session_start_s: float | None
    file_mb: float | None
    embedding_cosine_min: float | None
    """Min per-image cosine of this row's embedding with the ORT fp32 fused graph's, on the bench
    pixels (the bare encoder: against base_embedding)."""
    batches: dict[str, BatchStats]


@dataclass(frozen=True)
class BenchReport:
    model: str
    source: str
    threads: int
    provider: str
    pixels: str
    """'random normal (seed N)' or the images folder they came from."""
    config: dict
    rounds: int
    """Timed rounds: each times every row once per batch size, rows interleaved."""
    load_average_start: tuple[float, float, float]
    load_average_end: tuple[float, float, float]
    cpu_count: int
    matmul_2048_gflops: float
    """ORT's peak fp32 rate: a warm 2048^3 MatMul timed in the same rounds (run.MatMulProbe)."""
    gflop_per_image: float
    gflop_per_image_cls_only: float
    rows: tuple[Row, ...]
    ort_fusions: dict = field(default_factory=dict)
    op_time_share_largest_batch: dict = field(default_factory=dict)

    @property
    def load_warning(self) -> str | None:
        """A line saying the machine was busy, or None (LOAD_WARN_PER_CPU)."""
        start = self.load_average_start[0] / self.cpu_count
        end = max(self.load_average_end[0] - self.threads, 0.0) / self.cpu_count
        if max(start, end) <= LOAD_WARN_PER_CPU:
            return None
        return (f"WARNING: load average {self.load_average_start[0]:.2f} at the start, "
                f"{self.load_average_end[0]:.2f} at the end on {self.cpu_count} CPUs: other "
                "processes shared the cores; absolute timings are slower and noisier than on an "
                "idle machine (rows were interleaved, so ratios are less affected)")

    def to_dict(self) -> dict:
        return {**asdict(self), "load_warning": self.load_warning}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """The human table: one line per row and batch size."""
        lines = [f"vs2 bench: {self.model} ({self.source}), {self.threads} threads, pixels: "
                 f"{self.pixels}; median of {self.rounds} interleaved rounds",
                 f"{'row':<32} {'batch':>5} {'ms/img':>8} {'p10-p90':>15} {'img/s':>8} "
                 f"{'x ORT fp32':>10} {'x torch':>8} {'cos min':>9} {'MatMul':>6}"]
        for row in self.rows:
            cos = "-" if row.embedding_cosine_min is None else f"{row.embedding_cosine_min:.6f}"
            for b, st in row.batches.items():
                spread = f"{st.p10_ms / int(b):.1f}-{st.p90_ms / int(b):.1f}"  # per image too
                lines.append(f"{row.name[:32]:<32} {b:>5} {st.ms_per_image:>8.2f} {spread:>15} "
                             f"{st.images_per_s:>8.1f} {_ratio(st.speedup_vs_ort_fp32):>10} "
                             f"{_ratio(st.speedup_vs_pytorch):>8} {cos:>9} {_share(st):>6}")
        lines.append(f"ORT MatMul 2048^3: {self.matmul_2048_gflops:.1f} GFLOP/s in the same "
                     f"rounds; {self.gflop_per_image:.2f} GFLOP/image; MatMul = an fp32 row's "
                     "FLOP rate over that")
        if self.load_warning:
            lines.append(self.load_warning)
        return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _share(stats: BatchStats) -> str:
    return "-" if stats.matmul_rate_share is None else f"{stats.matmul_rate_share:.2f}"
