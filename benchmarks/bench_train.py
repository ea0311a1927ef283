"""SAE training throughput and memory on this machine (issue 3). A benchmark, not a test: it
prints a table and never asserts.

    python benchmarks/bench_train.py [--steps 5] [--threads 2] [--allowance-mb 512] [--skip-memory]

Throughput: one training step of a d=768, n=3072, k=64 top-k SAE on a batch of 4096 in-memory
activations, against a plain [4096, 768] x [768, 3072] matmul timed in the same run. Rows:
  sparse          our step (vs2_export.train.recipe.train_step): dense encoder forward, sparse rest
  sparse + AuxK   the same with 10% of the latents dead (AuxK on k_aux = 384 of them)
  dense autograd  the export path (encode + decode_delta) under plain autograd, for reference
"dense-equivalent GFLOP/s" counts 6 d n FLOPs per activation (docs/method.md section 2: 0.014 GFLOPs
per sample); "executed" counts what the sparse step computes: 2 d n + 8 k d per activation.

Memory: `train_sae` in a subprocess on a store of 2 x the allowance (d = 768, shards of 16384
rows), sampled every 10 ms: private anonymous memory + resident pages of mapped store shards,
above the level after a warm-up run (same metric as tests/test_train_memory.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vs2_export.config import SAEConfig, TrainConfig
from vs2_export.distributed import Comm
from vs2_export.sae import TopKSAE
from vs2_export.train.loop import deterministic
from vs2_export.train.recipe import Batch, FireStats, train_step

D, EXPANSION, K, B = 768, 4, 64, 4096
N = D * EXPANSION


def timed(fn, steps: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def sparse_step(dead_frac: float):
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d=D, expansion=EXPANSION, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=5e-4)
    cfg = TrainConfig("acts", "out", expansion=EXPANSION, k=K, batch_size=B, dead_after=10**9)
    fires = FireStats.zeros(N)
    h = torch.randn(B, D)
    dead = torch.arange(N) < int(dead_frac * N)

    def step():
        fires.since[dead] = 2 * 10**9             # keep the same latents dead at every step
        train_step(sae, opt, Batch(h, None, B), cfg, fires, Comm(), spread=float(D))
    return step


def dense_step():
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d=D, expansion=EXPANSION, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=5e-4)
    h = torch.randn(B, D)

    def step():
        values, indices = sae.encode(h)
        loss = (sae.decode(values, indices) - h).pow(2).sum() / (B * D)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def throughput(steps: int) -> list[dict]:
    a, w = torch.randn(B, D), torch.randn(N, D)
    matmul = timed(lambda: a @ w.T, steps * 3)
    rows = [{"what": "plain matmul 4096x768x3072", "seconds": matmul, "acts_per_s": None,
             "gflops_executed": 2 * B * D * N / matmul / 1e9, "gflops_dense_eq": None}]
    with deterministic():
        for name, fn, n in (("sparse", sparse_step(0.0), steps),
                            ("sparse + AuxK (10% dead)", sparse_step(0.1), steps),
                            ("dense autograd (export path)", dense_step(), max(1, steps // 3))):
            sec = timed(fn, n)
            executed = (2 * D * N + 8 * K * D) * B if name.startswith("sparse") else 6 * D * N * B
            rows.append({"what": name, "seconds": sec, "acts_per_s": B / sec,
                         "gflops_executed": executed / sec / 1e9,
                         "gflops_dense_eq": 6 * D * N * B / sec / 1e9})
    return rows


MEMORY_RUN = Path(__file__).resolve().parents[1] / "tests" / "test_train_memory.py"


def memory(allowance_mb: int) -> dict:
    """Train on a store of 2 x allowance in a subprocess; returns the sampled peak growth."""
    sys.path.insert(0, str(MEMORY_RUN.parent))
    from test_train_memory import RUN  # the sampler of the memory test, one definition

    from vs2_export.store import store_array
    run = RUN.replace("expansion=2, k=8", f"expansion={EXPANSION}, k={K}").replace(
        "torch.set_num_threads(1)", "")            # all cores, as a real run would
    rows = 2 * allowance_mb * 2**20 // (4 * D)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        parts = [rng.standard_normal((16384, D), dtype=np.float32) for _ in range(-(-rows // 16384))]
        store = store_array(Path(tmp) / "acts", np.concatenate(parts)[:rows], "bench", "none")
        del parts
        small = store_array(Path(tmp) / "small", rng.standard_normal((8192, D), dtype=np.float32),
                            "bench", "none")
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", run, str(store), f"{tmp}/sae", str(small)],
                             capture_output=True, text=True, env={**os.environ})
        seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"allowance_mb": allowance_mb, "store_mb": rows * D * 4 / 2**20, "rows": rows,
            "peak_growth_mb": result["peak_mb"] - result["base_mb"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--allowance-mb", type=int, default=512)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}; d={D} n={N} k={K} batch={B}")
    print(f"| {'step':<30} | {'s/step':>7} | {'act/s':>8} | {'GFLOP/s executed':>16} | "
          f"{'GFLOP/s dense-eq':>16} |")
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 10}|{'-' * 18}|{'-' * 18}|")
    for r in throughput(args.steps):
        acts = f"{r['acts_per_s']:>8.0f}" if r["acts_per_s"] else f"{'':>8}"
        dense = f"{r['gflops_dense_eq']:>16.1f}" if r["gflops_dense_eq"] else f"{'':>16}"
        print(f"| {r['what']:<30} | {r['seconds']:>7.3f} | {acts} | {r['gflops_executed']:>16.1f}"
              f" | {dense} |")
    if not args.skip_memory:
        m = memory(args.allowance_mb)
        print(f"\nmemory: store {m['store_mb']:.0f} MiB ({m['rows']} x {D}), allowance "
              f"{m['allowance_mb']} MiB, peak growth {m['peak_growth_mb']:.0f} MiB "
              f"(1 epoch in {m['seconds']:.0f} s incl. start-up)")


if __name__ == "__main__":
    main()
