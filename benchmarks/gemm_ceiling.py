"""The batch-1 FLOP-rate ceiling with only the rows that decide it (benchmarks/README.md,
"Batch-1 fp32: the GEMM ceiling"): `python benchmarks/gemm_ceiling.py EXPORTED [ROUNDS]`.

EXPORTED: a ViT-B-32 export (`python benchmarks/build_random.py ViT-B-32 64 OUT`). Times, in
interleaved rounds at batch 1 and 16, the fused fp32 graph, the tower's GEMMs alone
(bench.baselines.gemm_ceiling_model) and ORT's 2048^3 MatMul run twice per round
(bench.run.MatMulProbe): the first, cold run and the second, warm one (the MatMul reference
`vs2 bench` divides by). Prints each
graph's share of both rates.
"""

import sys
from pathlib import Path

import numpy as np
import open_clip

from vs2_export.bench.baselines import gemm_ceiling_feeds, gemm_ceiling_model, vit_gflop
from vs2_export.bench.run import MatMulProbe
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.session import Vs2Session
from vs2_export.runtime.timing import interleaved

BATCHES = (1, 16)


def main(exported: Path, rounds: int) -> None:
    visual = open_clip.create_model("ViT-B-32").visual
    fused = Vs2Session(exported, threads=2)
    ceiling = create_session(gemm_ceiling_model(visual), threads=2)
    feeds = {b: gemm_ceiling_feeds(visual, b) for b in BATCHES}
    probe = MatMulProbe(threads=2)
    pixels = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    times = interleaved([fused.run, lambda x: ceiling.run(None, feeds[len(x)]), probe], pixels,
                        BATCHES, rounds, warmup=1)
    last = rounds * len(BATCHES)  # the timed rounds' probe calls
    rate = {"cold": probe.gflops(last, cold=True), "warm": probe.gflops(last)}
    print(f"ORT MatMul 2048^3: {rate['cold']:.1f} GFLOP/s cold, {rate['warm']:.1f} warm")
    gflop = vit_gflop(visual, cls_only=True)
    for i, name in enumerate(("fused fp32", "GEMMs alone")):
        for j, b in enumerate(BATCHES):
            gflops = gflop * b / np.median(times[i, j])
            print(f"{name} batch {b}: {1e3 * np.median(times[i, j]) / b:.1f} ms/image, share "
                  f"{gflops / rate['warm']:.3f} of warm, {gflops / rate['cold']:.3f} of cold")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20)
