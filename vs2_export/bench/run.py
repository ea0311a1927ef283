"""exported/NAME -> bench.json + bench.png: latency and throughput of every way to run VS2, in ONE
run with the same threads and the same random pixels (issue 4). Reports ratios; never asserts.

Rows: PyTorch eager with a steering hook, the bare ONNX encoder, the fused graph in each precision
present (fp16 only where it runs: CUDA), and with `ablations` the fused graph without the CLS-only
last block and at lower ORT optimisation levels. Plus ORT's FLOP rate on one 2048^3 MatMul.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import card
from ..artifacts import write_json
from ..config import BenchConfig, to_jsonable
from ..errors import Vs2Error
from ..onnx_files import onnx_mb, write_onnx
from ..precision import default_feeds, int8_model
from ..runtime import contract
from ..runtime.providers import create_session
from ..runtime.session import Vs2Session
from .baselines import HookedClip, export_encoder, matmul_model, vit_gflop
from .chart import draw_chart

log = logging.getLogger(__name__)


def _rss_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process in MB (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM (Linux): each row gets its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


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


def measure(name: str, start: Callable[[], Callable[[np.ndarray], object]], pixels: np.ndarray,
            cfg: BenchConfig, size_mb: float | None) -> dict:
    """One row: start() builds the runner (timed as session start), then every batch size."""
    _reset_peak()
    rss_before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    runner = start()
    row = {"name": name, "session_start_s": time.perf_counter() - t0, "file_mb": size_mb,
           "batches": {}}
    for b in cfg.batches:
        times = time_runs(lambda b=b: runner(pixels[:b]), cfg.runs, cfg.warmup)
        median = float(np.median(times))
        row["batches"][str(b)] = {
            "median_ms": 1e3 * median, "p10_ms": 1e3 * float(np.percentile(times, 10)),
            "p90_ms": 1e3 * float(np.percentile(times, 90)), "ms_per_image": 1e3 * median / b,
            "images_per_s": b / median}
    peak = _rss_mb("VmHWM")
    row["peak_rss_mb"] = peak
    row["peak_over_start_mb"] = None if peak is None or rss_before is None else peak - rss_before
    log.info("bench %s: %s", name, {b: round(v["ms_per_image"], 2) for b, v in row["batches"].items()})
    return row


def _ort_runner(path: Path, cfg: BenchConfig, threads: int, level: str = "all"):
    def start():
        session = create_session(path, cfg.provider, threads=threads, optimization=level)
        extra = default_inputs(session, Path(cfg.exported))
        return lambda x: session.run(None, {contract.PIXEL_VALUES: x, **extra})
    return start


def default_inputs(session, folder: Path) -> dict[str, np.ndarray]:
    """A fused graph's inputs besides the pixels (steering scalars, class_embeddings) at the
    export's defaults; none for the bare encoder."""
    names = {i.name for i in session.get_inputs()} - {contract.PIXEL_VALUES}
    if not names:
        return {}
    manifest = Vs2Session(folder / contract.MODEL_FILE).manifest
    return {k: v for k, v in default_feeds(folder, manifest).items() if k in names}


def _vs2_runner(path: Path, cfg: BenchConfig, threads: int, level: str = "all"):
    def start():
        session = Vs2Session(path, provider=cfg.provider, threads=threads, optimization=level)
        return session.run
    return start


def matmul_gflops(threads: int, runs: int = 5, n: int = 2048) -> float:
    """ORT's fp32 GFLOP/s on one n^3 MatMul with `threads` intra-op threads (median of runs)."""
    session = create_session(matmul_model(n), threads=threads)
    a = np.random.default_rng(1).random((n, n), np.float32)
    times = time_runs(lambda: session.run(None, {"A": a}), runs, 1)
    return 2 * n**3 / float(np.median(times)) / 1e9


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
    feeds = {contract.PIXEL_VALUES: pixels, **default_inputs(session, path.parent)}
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


def _file_mb(path: Path) -> float:
    return onnx_mb(path)  # with its sidecar, if it has one


def _rows(cfg: BenchConfig, parts, pixels: np.ndarray, threads: int, scratch: Path,
          opset: int) -> list[dict]:
    """Every timed row, in chart order. scratch: a temporary folder holding ORT's optimised
    fp32 graph (from fusion_counts)."""
    folder = Path(cfg.exported)
    hooked = HookedClip(parts)
    rows = [measure("pytorch eager + hook", lambda: lambda x: hooked(torch.from_numpy(x)),
                    pixels, cfg, None)]
    hooked.close()
    cache = contract.cache_path(_run(cfg), folder.name)  # derived graphs never go in the export
    encoder = export_encoder(parts, cache / "encoder.onnx")
    rows.append(measure("onnx bare encoder", _ort_runner(encoder, cfg, threads), pixels, cfg,
                        _file_mb(encoder)))
    for precision in contract.PRECISIONS:
        path = contract.model_path(folder, precision)
        if not path.is_file():
            continue
        if precision == "fp16" and cfg.provider == "cpu":
            log.info("bench: fp16 skipped on the CPU (a CUDA variant; ORT's CPU has no fast fp16)")
            continue
        rows.append(measure(f"fused {precision}", _vs2_runner(path, cfg, threads), pixels, cfg,
                            _file_mb(path)))
    if cfg.ablations:
        rows.extend(_ablation_rows(cfg, parts, pixels, threads, scratch, opset))
    return rows


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


def _ablation_rows(cfg: BenchConfig, parts, pixels: np.ndarray, threads: int, scratch: Path,
                   opset: int) -> list[dict]:
    """The fused fp32 graph without the CLS-only last block, at lower ORT levels, with fewer
    threads, and started from ORT's saved optimised file: what the defaults were chosen by."""
    folder = Path(cfg.exported)
    cache = contract.cache_path(_run(cfg), folder.name)
    full = _full_block_graph(parts, cache / "fused_full_last_block.onnx", opset)
    fp32 = folder / contract.MODEL_FILE
    rows = [measure("ablation: full last block", _ort_runner(full, cfg, threads), pixels, cfg,
                    _file_mb(full))]
    block = parts.clip.model.visual.transformer.resblocks[0].attn
    biasgelu = _transformer_fused(fp32, cache / "fused_biasgelu.onnx",
                                  block.embed_dim, block.num_heads)
    rows.append(measure("ablation: + BiasGelu fusion", _ort_runner(biasgelu, cfg, threads),
                        pixels, cfg, _file_mb(biasgelu)))
    if contract.model_path(folder, "int8").is_file():
        dynamic = cache / "int8_dynamic.onnx"
        if not dynamic.is_file():
            write_onnx(int8_model(fp32, None, "dynamic"), dynamic)
        rows.append(measure("ablation: int8 dynamic", _ort_runner(dynamic, cfg, threads), pixels,
                            cfg, _file_mb(dynamic)))
    for level in ("basic", "extended"):
        rows.append(measure(f"ablation: ORT level {level}", _ort_runner(fp32, cfg, threads, level),
                            pixels, cfg, _file_mb(fp32)))
    if threads > 1:
        rows.append(measure("ablation: 1 thread", _ort_runner(fp32, cfg, 1), pixels, cfg,
                            _file_mb(fp32)))
    saved = scratch / "optimized.fp32.onnx"  # written by fusion_counts at level 'all'
    # _ort_runner: the saved file sits in scratch, away from the export's class_embeddings.f32.
    rows.append(measure("ablation: saved optimised file", _ort_runner(saved, cfg, threads, "disable"),
                        pixels, cfg, _file_mb(saved)))
    return rows


def bench(cfg: BenchConfig) -> dict:
    """Time every row, compute ratios and the issue's targets; write JSON and PNG; return the report."""
    from ..verify import reference_for
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    fp32 = contract.model_path(cfg.exported, "fp32")
    manifest = Vs2Session(fp32).manifest
    if manifest.pixel_input != contract.PIXEL_VALUES:  # its rows feed float pixels to every graph
        raise Vs2Error(f"bench: expected a float-input export, {cfg.exported} takes "
                       f"{manifest.pixel_input}; bench an export with --pixel-input pixel_values")
    parts = reference_for(Path(cfg.exported), cfg.run)  # the user's sources (record.py)
    size = manifest.image_size
    pixels = np.random.default_rng(cfg.seed).standard_normal(
        (max(cfg.batches), 3, size, size)).astype(np.float32)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vs2-bench-") as scratch:
        fusions = {p: fusion_counts(contract.model_path(cfg.exported, p),
                                    Path(scratch) / f"optimized.{p}.onnx", threads)
                   for p in ("fp32", "int8") if contract.model_path(cfg.exported, p).is_file()}
        rows = _rows(cfg, parts, pixels, threads, Path(scratch), manifest.opset)
        shares = {p: op_time_shares(contract.model_path(cfg.exported, p), pixels, threads, Path(scratch))
                  for p in ("fp32", "int8") if contract.model_path(cfg.exported, p).is_file()}
    gflops = matmul_gflops(threads)
    visual = parts.clip.model.visual
    report = {"model": manifest.model.id, "source": manifest.model.source, "threads": threads,
              "provider": cfg.provider, "config": to_jsonable(cfg),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "matmul_2048_gflops": gflops, "gflop_per_image": vit_gflop(visual),
              "gflop_per_image_cls_only": vit_gflop(visual, cls_only=True),
              "ort_fusions": fusions, "op_time_share_largest_batch": shares, "rows": rows}
    add_ratios(report)
    out = cfg.report or contract.report_path(_run(cfg), Path(cfg.exported).name, "bench")
    write_json(out, report)
    draw_chart(report, out.with_suffix(".png"))
    card.record_bench(Path(cfg.exported), report)
    return report


def _run(cfg: BenchConfig) -> Path:
    """The run folder (the record's, when --run names a record file)."""
    run = Path(cfg.run)
    return run.resolve().parent.parent if run.is_file() else run


def add_ratios(report: dict) -> None:
    """Per row and batch: speed-up over PyTorch, cost over the bare encoder, share of the MatMul
    FLOP rate; then the issue-4 targets (reported, never asserted)."""
    rows = {r["name"]: r for r in report["rows"]}
    for row in report["rows"]:
        for b, stats in row["batches"].items():
            ms = stats["ms_per_image"]
            stats["speedup_vs_pytorch"] = rows["pytorch eager + hook"]["batches"][b]["ms_per_image"] / ms
            stats["cost_vs_encoder"] = ms / rows["onnx bare encoder"]["batches"][b]["ms_per_image"]
            stats["matmul_rate_share"] = (report["gflop_per_image"] * stats["images_per_s"]
                                          / report["matmul_2048_gflops"])
    report["targets"] = targets(rows)


def targets(rows: dict) -> list[dict]:
    """Issue 4's targets against the measured rows (fp32 fused vs encoder / PyTorch / MatMul rate;
    int8 vs fp32)."""
    out = []

    def add(what: str, value: float, limit: float, higher_is_better: bool = True) -> None:
        met = value >= limit if higher_is_better else value <= limit
        out.append({"target": what, "value": value, "limit": limit, "met": bool(met)})

    fused = rows["fused fp32"]["batches"]
    for b in fused:
        add(f"fused fp32 cost vs bare encoder, batch {b}", fused[b]["cost_vs_encoder"], 1.02, False)
        add(f"fused fp32 speed-up vs PyTorch, batch {b}", fused[b]["speedup_vs_pytorch"],
            2.0 if b == "1" else 1.2)
        if "fused int8" in rows:
            int8 = rows["fused int8"]["batches"][b]
            add(f"int8 speed-up vs fp32, batch {b}", fused[b]["ms_per_image"] / int8["ms_per_image"],
                1.5)
    largest = max(fused, key=int)
    add(f"fused fp32 share of the MatMul FLOP rate, batch {largest}",
        fused[largest]["matmul_rate_share"], 0.85)
    return out

