"""exported/NAME -> BenchReport (bench/report.py): latency and throughput of every way to run VS2,
in ONE process with the same threads and the same pixels. Reports measurements and ratios; never
asserts, and no targets (they live in benchmarks/README.md).

Rows: PyTorch eager with a steering hook, the bare ONNX encoder, the fused graph in every
precision on every backend that runs it here (ONNX Runtime: fp32, int8, fp16 on CUDA only;
OpenVINO when installed: fp32, int8, and bf16 where the CPU computes it), and with `ablations` the
fused fp32 graph without the CLS-only last block, with BiasGelu fusion, at lower ORT levels, etc.

Honest timing: every session is started first, then the rows are timed round by round (each
round times every row once per batch size, in a new random order), so load from other processes
hits every row alike; medians and p10-p90 over the rounds; the load average is recorded at both
ends and a busy machine is flagged. Nothing is written into the export folder: the report goes to --out (default
runs/bench-NAME/bench.json, chart beside it) and every graph the bench builds (the bare encoder,
ablations) goes to a temporary folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import card
from ..artifacts import check_output, write_json
from ..config import BenchConfig, to_jsonable
from ..errors import Vs2Error
from ..onnx_files import onnx_mb, write_onnx
from ..precision import default_feeds, int8_model
from ..runtime import contract, openvino_session
from ..runtime.preprocess import list_images, preprocess_paths
from ..runtime.providers import OPENVINO, create_session
from ..runtime.session import Vs2Session
from ..runtime.timing import candidates, cosine_rows, interleaved
from .baselines import HookedClip, export_encoder, gemm_ceiling_feeds, gemm_ceiling_model, matmul_model, vit_gflop
from .chart import draw_chart
from .report import BatchStats, BenchReport, Row

log = logging.getLogger(__name__)
ORT_FP32 = "onnxruntime fp32"
GEMM_CEILING = "GEMMs alone (ceiling)"
"""The ablation row timing only the tower's matrix products: the FLOP rate no fp32 graph of
this tower can pass on ORT (the batch-1 item, benchmarks/README.md)."""
PYTORCH = "pytorch eager + hook"


@dataclass
class Spec:
    """A row before timing: start() builds the runner; the runner maps pixels [B, 3, S, S] to
    (embedding [B, E], the ORT fp32 output it is compared with), or (None, None) for a row
    with no embedding (the GEMM ceiling)."""

    name: str
    backend: str
    precision: str
    start: Callable[[], Callable[[np.ndarray], tuple[np.ndarray, str]]]
    path: Path | None = None


def _vs2(path: Path, provider: str, threads: int, precision: str | None = None,
         level: str = "all"):
    def start():
        session = Vs2Session(path, provider=provider, threads=threads, optimization=level,
                             precision=precision)
        return lambda x: (session.run(x)[contract.EMBEDDING], contract.EMBEDDING)
    return start


def _ort(path: Path, provider: str, threads: int, level: str = "all",
         extra: dict[str, np.ndarray] | None = None):
    """A plain ORT session on a graph whose first output is an embedding (the bare encoder,
    compared with base_embedding; or an ablation graph of the fused contract, fed `extra`: its
    steering scalars and class_embeddings at the export's defaults)."""
    def start():
        session = create_session(path, provider, threads=threads, optimization=level)
        first = session.get_outputs()[0].name
        key = contract.BASE_EMBEDDING if first != contract.EMBEDDING else contract.EMBEDDING
        feeds = _graph_extra(session, extra)
        return lambda x: (session.run([first], {contract.PIXEL_VALUES: x, **feeds})[0], key)
    return start


def _gemm_ceiling(visual, provider: str, threads: int):
    """The tower's matrix products alone (baselines.gemm_ceiling_model), fed per batch size."""
    def start():
        session = create_session(gemm_ceiling_model(visual), provider, threads=threads)
        feeds: dict[int, dict[str, np.ndarray]] = {}

        def run(x: np.ndarray):
            b = len(x)
            session.run(None, feeds.setdefault(b, gemm_ceiling_feeds(visual, b)))
            return None, None
        return run
    return start


def _graph_extra(session, extra: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The inputs of `extra` that this graph takes (none for the bare encoder)."""
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in (extra or {}).items() if k in names}


def default_inputs(folder: Path) -> dict[str, np.ndarray]:
    """A fused graph's inputs besides the pixels (steering scalars, class_embeddings) at the
    export's defaults (every wrapper feeds them: they are real graph inputs)."""
    manifest = Vs2Session(contract.model_path(folder, "fp32")).manifest
    return default_feeds(Path(folder), manifest)


def variant_specs(cfg: BenchConfig, threads: int) -> list[Spec]:
    """The fused graph in each precision on each backend that runs it here (timing.candidates):
    ORT on cfg.provider; OpenVINO beside ORT on the CPU."""
    folder = Path(cfg.exported)
    if cfg.provider == "cpu" and cfg.openvino and not openvino_session.available():
        log.info("bench: openvino rows skipped (pip install 'vs2-export[openvino]')")
    wanted = {cfg.provider} | ({OPENVINO} if cfg.provider == "cpu" and cfg.openvino else set())
    specs = []
    for provider, precision in candidates(folder, cuda=cfg.provider == "cuda"):
        if provider in wanted:
            path = contract.model_path(folder, contract.COMPUTE_PRECISIONS.get(precision, precision))
            backend = OPENVINO if provider == OPENVINO else "onnxruntime"
            specs.append(Spec(f"{backend} {precision}", backend, precision,
                              _vs2(path, provider, threads, precision), path))
    return specs


def _all_specs(cfg: BenchConfig, parts, threads: int, scratch: Path, opset: int) -> list[Spec]:
    hooked = HookedClip(parts)
    pytorch = Spec(PYTORCH, "pytorch", "fp32", lambda: lambda x: (
        hooked(torch.from_numpy(x))[0].numpy(), contract.EMBEDDING))
    encoder = export_encoder(parts, scratch / "encoder.onnx")
    specs = [pytorch, Spec("onnxruntime bare encoder", "onnxruntime", "fp32",
                           _ort(encoder, cfg.provider, threads), encoder)]
    specs += variant_specs(cfg, threads)
    if cfg.ablations:
        specs += _ablation_specs(cfg, parts, threads, scratch, opset)
    return specs


MAX_BATCH = 4096
"""Largest --batch, as eval's and verify's batch_size: the pixels of the largest batch are one
array (4096 x 3 x 224 x 224 float32 is 2.5 GB)."""
MATMUL_N = 2048


class MatMulProbe:
    """ORT's fp32 n^3 MatMul, timed inside the interleaved rounds (one more runner; pixels
    ignored) so that it sees the same load as the rows. Each call runs the product twice and
    keeps the second run's seconds: the first pays for the 16 MB operand the neighbouring row
    evicted from the cache, and the rate the shares divide by is ORT's peak (measured on this
    2-core CPU: 61.1 GFLOP/s cold, 70.0 warm, in the same rounds: benchmarks/gemm_ceiling.py)."""

    def __init__(self, threads: int, n: int = MATMUL_N):
        self.session = create_session(matmul_model(n), threads=threads)
        self.a = np.random.default_rng(1).random((n, n), np.float32)
        self.flop, self.cold_seconds, self.seconds = 2 * n**3, [], []

    def __call__(self, _pixels: np.ndarray) -> None:
        for kept in (self.cold_seconds, self.seconds):
            start = time.perf_counter()
            self.session.run(None, {"A": self.a})
            kept.append(time.perf_counter() - start)

    def gflops(self, last: int, cold: bool = False) -> float:
        """GFLOP/s over the median of the `last` calls (the timed rounds, not the warmup): the
        warm run's, or the cold one's."""
        seconds = self.cold_seconds if cold else self.seconds
        return self.flop / float(np.median(seconds[-last:])) / 1e9


FUSED_OPS = ("FusedMatMul", "FusedGemm", "FusedConv", "Gelu", "BiasGelu", "FastGelu", "QuickGelu",
             "LayerNormalization", "SkipLayerNormalization", "Attention", "MultiHeadAttention",
             "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
             "QLinearConv", "Erf", "Softmax")


def fusion_counts(path: Path, out: Path, threads: int) -> dict[str, int]:
    """Let ORT optimise `path` at level 'all', save the result to `out`, count its fused ops
    (and what stayed unfused: Erf = a GELU not fused, Softmax = attention not fused)."""
    import onnx
    Vs2Session(path, threads=threads, optimized_model=out)
    ops = [n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node]
    return {op: ops.count(op) for op in FUSED_OPS if op in ops} | {"nodes": len(ops)}


def op_time_shares(path: Path, pixels: np.ndarray, threads: int, scratch: Path) -> dict[str, float]:
    """ORT's profiler on one run of `pixels` (after one warm-up): share of kernel time per op type,
    largest first. Says where a graph's time goes (what limits it), measured."""
    import json
    session = create_session(path, threads=threads, profile_prefix=scratch / "profile")
    feeds = {contract.PIXEL_VALUES: pixels, **_graph_extra(session, default_inputs(path.parent))}
    session.run(None, feeds)
    session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"]
    whole = sum(totals.values()) or 1.0
    return {op: t / whole for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def _file_mb(path: Path | None) -> float | None:
    """Size in MB with its sidecar, if it has one (onnx_files.onnx_mb)."""
    return None if path is None or not path.is_file() else onnx_mb(path)


def _full_block_graph(parts, path: Path, opset: int) -> Path:
    """The fused graph as it would be without the CLS-only last block (cached beside encoder.onnx)."""
    from ..export import trace_to_onnx
    if not path.is_file():
        parts.module.trunk.cls_only = False
        try:
            model = trace_to_onnx(parts, opset)
        finally:
            parts.module.trunk.cls_only = True
        write_onnx(model, path)
    return path


def _transformer_fused(fp32: Path, path: Path, width: int, heads: int) -> Path:
    """ORT's offline transformer optimiser on the fp32 graph (export side: it imports torch).
    On our dynamo graphs it fuses bias+GELU (BiasGelu) only: attention and skip-LayerNorm
    patterns do not match (counted, issue 4)."""
    from onnxruntime.transformers import optimizer
    if not path.is_file():
        fused = optimizer.optimize_model(str(fp32), model_type="vit", num_heads=heads,
                                         hidden_size=width, opt_level=0)
        log.info("bench: transformer fusions %s", fused.get_fused_operator_statistics())
        write_onnx(fused.model, path)
    return path


def _ablation_specs(cfg: BenchConfig, parts, threads: int, scratch: Path,
                    opset: int) -> list[Spec]:
    """The tower's GEMMs alone (the FLOP-rate ceiling), the fused fp32 graph without the CLS-only
    last block, with BiasGelu fusion, dynamic int8, at lower ORT levels, with 1 thread, and
    started from ORT's saved optimised file: what the defaults were chosen by. Every graph is
    built in `scratch`."""
    fp32 = contract.model_path(cfg.exported, "fp32")
    extra = default_inputs(Path(cfg.exported))
    full = _full_block_graph(parts, scratch / "fused_full_last_block.onnx", opset)
    block = parts.clip.model.visual.transformer.resblocks[0].attn
    biasgelu = _transformer_fused(fp32, scratch / "fused_biasgelu.onnx", block.embed_dim,
                                  block.num_heads)
    spec = lambda name, start, path: Spec(f"ablation: {name}", "onnxruntime", "fp32", start, path)
    specs = [spec(GEMM_CEILING, _gemm_ceiling(parts.clip.model.visual, cfg.provider, threads), None),
             spec("full last block", _ort(full, cfg.provider, threads, extra=extra), full),
             spec("+ BiasGelu fusion", _ort(biasgelu, cfg.provider, threads, extra=extra), biasgelu)]
    if contract.model_path(cfg.exported, "int8").is_file():
        dynamic = scratch / "int8_dynamic.onnx"
        write_onnx(int8_model(fp32, None, "dynamic")[0], dynamic)
        specs.append(Spec("ablation: int8 dynamic", "onnxruntime", "int8",
                          _ort(dynamic, cfg.provider, threads, extra=extra), dynamic))
    for level in ("basic", "extended"):
        specs.append(spec(f"ORT level {level}", _ort(fp32, cfg.provider, threads, level, extra), fp32))
    if threads > 1:
        specs.append(spec("1 thread", _ort(fp32, cfg.provider, 1, extra=extra), fp32))
    saved = scratch / "optimized.fp32.onnx"  # written by fusion_counts at level 'all'
    # A plain session: the saved file sits in scratch, away from the export's class files.
    specs.append(spec("saved optimised file", _ort(saved, cfg.provider, threads, "disable", extra),
                      saved))
    return specs


def bench_pixels(cfg: BenchConfig, manifest) -> tuple[np.ndarray, str]:
    """float32 [max batch, 3, S, S]: cfg.images' images (cycled to fill the largest batch) or
    random normal pixels; and a description for the report."""
    n, size = max(cfg.batches), manifest.image_size
    if cfg.images is None:
        rng = np.random.default_rng(cfg.seed)
        return rng.standard_normal((n, 3, size, size)).astype(np.float32), \
            f"random normal (seed {cfg.seed})"
    batch = preprocess_paths(list_images(cfg.images)[:n], manifest.preprocess)
    if not len(batch.paths):
        raise Vs2Error(f"bench: expected images under {cfg.images}, found none")
    return np.resize(batch.pixels, (n, 3, size, size)), f"{len(batch.paths)} images of {cfg.images}"


def _start(specs: list[Spec]) -> tuple[list, list[float]]:
    runners, seconds = [], []
    for spec in specs:
        t0 = time.perf_counter()
        runners.append(spec.start())
        seconds.append(time.perf_counter() - t0)
        log.info("bench: started %s in %.2f s", spec.name, seconds[-1])
    return runners, seconds


def _cosines(runners: list, pixels: np.ndarray,
             reference: dict[str, np.ndarray]) -> list[float | None]:
    """Min per-image cosine of each row's embedding with the ORT fp32 fused graph's outputs."""
    result = []
    for runner in runners:
        emb, key = runner(pixels)
        if emb is None:
            result.append(None)
            continue
        result.append(float(cosine_rows(emb, reference[key]).min()))
    return result


def _stats(times: np.ndarray, batches: tuple[int, ...]) -> list[dict[str, BatchStats]]:
    """[rows, batches, runs] seconds -> per row {batch: BatchStats} (ratios filled in later)."""
    rows = []
    for row in times:
        stats = {}
        for b, t in zip(batches, row, strict=True):
            median = float(np.median(t))
            stats[str(b)] = BatchStats(1e3 * median, 1e3 * float(np.percentile(t, 10)),
                                       1e3 * float(np.percentile(t, 90)), 1e3 * median / b,
                                       b / median, None, None, None)
        rows.append(stats)
    return rows


FULL_GRAPH_ROWS = (PYTORCH, "onnxruntime bare encoder", "ablation: full last block")
"""Rows that compute every token in the last block (the others: the CLS query only)."""


def _with_ratios(rows: list[Row], visual, gflops: float) -> tuple[Row, ...]:
    """Speed-ups over the ORT fp32 fused graph and PyTorch; fp32 rows' share of ORT's MatMul
    rate, counting the FLOPs each row executes (vit_gflop, CLS-only or not)."""
    by_name = {r.name: r for r in rows}
    out = []
    for row in rows:
        batches, gflop = {}, vit_gflop(visual, cls_only=row.name not in FULL_GRAPH_ROWS)
        for b, st in row.batches.items():
            over = {k: by_name[n].batches[b].ms_per_image / st.ms_per_image if n in by_name else None
                    for k, n in (("speedup_vs_ort_fp32", ORT_FP32), ("speedup_vs_pytorch", PYTORCH))}
            share = gflop * st.images_per_s / gflops if row.precision == "fp32" else None
            batches[b] = BatchStats(**{**st.__dict__, **over, "matmul_rate_share": share})
        out.append(Row(**{**row.__dict__, "batches": batches}))
    return tuple(out)


def _run(cfg: BenchConfig) -> Path:
    """The run folder (the record's, when --run names a record file)."""
    if cfg.run is None:
        raise Vs2Error("bench: expected --run RUN: the run folder holding the export record "
                       "(the PyTorch baseline is built from the sources it names)")
    run = Path(cfg.run)
    return run.resolve().parent.parent if run.is_file() else run


def _record(cfg: BenchConfig) -> Path | None:
    """The export record the baseline is built from (an input: never a report's path)."""
    if cfg.run is None:
        return None
    run = Path(cfg.run)
    return run if run.is_file() else contract.record_path(run, Path(cfg.exported).name)


def bench(cfg: BenchConfig) -> BenchReport:
    """Start every row, time them interleaved, compare embeddings; write JSON and PNG to
    cfg.report (default RUN/reports/NAME.bench.json, never the export folder); return it."""
    from ..verify import reference_for
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if max(cfg.batches) > MAX_BATCH:
        raise Vs2Error(f"batch: expected sizes in [1, {MAX_BATCH}], got {max(cfg.batches)}")
    fp32 = contract.model_path(cfg.exported, "fp32")
    out = check_output(cfg.report or contract.report_path(_run(cfg), Path(cfg.exported).name,
                                                          "bench"), "--report",
                       (cfg.exported, cfg.images, _record(cfg)))
    manifest = Vs2Session(fp32).manifest
    if manifest.pixel_input != contract.PIXEL_VALUES:  # its rows feed float pixels to every graph
        raise Vs2Error(f"bench: expected a float-input export, {cfg.exported} takes "
                       f"{manifest.pixel_input}; bench an export with --pixel-input pixel_values")
    parts = reference_for(Path(cfg.exported), cfg.run)  # the user's sources (record.py)
    pixels, described = bench_pixels(cfg, manifest)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vs2-bench-") as tmp:
        scratch = Path(tmp)
        fusions = {p: fusion_counts(contract.model_path(cfg.exported, p),
                                    scratch / f"optimized.{p}.onnx", threads)
                   for p in ("fp32", "int8") if contract.model_path(cfg.exported, p).is_file()}
        specs = _all_specs(cfg, parts, threads, scratch, manifest.opset)
        runners, started = _start(specs)
        reference = Vs2Session(fp32, provider=cfg.provider, threads=threads).run(pixels)
        cosines = _cosines(runners, pixels, reference)
        probe = MatMulProbe(threads)
        times = interleaved([*runners, probe], pixels, cfg.batches, cfg.runs, cfg.warmup)[:-1]
        del runners
        shares = {p: op_time_shares(contract.model_path(cfg.exported, p), pixels, threads, scratch)
                  for p in ("fp32", "int8") if contract.model_path(cfg.exported, p).is_file()}
    gflops = probe.gflops(cfg.runs * len(cfg.batches))
    visual = parts.clip.model.visual
    rows = [Row(s.name, s.backend, s.precision, t, _file_mb(s.path), c, st) for s, t, c, st
            in zip(specs, started, cosines, _stats(times, cfg.batches), strict=True)]
    report = BenchReport(
        manifest.model.id, manifest.model.source, threads, cfg.provider, described,
        to_jsonable(cfg), cfg.runs, load_start, os.getloadavg(), os.cpu_count() or 1, gflops,
        vit_gflop(visual), vit_gflop(visual, cls_only=True),
        _with_ratios(rows, visual, gflops), fusions, shares)
    write_json(out, report.to_dict())
    draw_chart(report.to_dict(), out.with_suffix(".png"))
    card.record_bench(Path(cfg.exported), report.to_dict(), manifest)
    return report
