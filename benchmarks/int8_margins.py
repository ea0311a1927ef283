"""How far static int8 is from fp32 in top-1 answers, and why (benchmarks/README.md, "How far
static int8 is from 99%"): `python benchmarks/int8_margins.py EXPORTED [--per-class 300]`.

EXPORTED holds model.onnx and model.int8.onnx of the demo model (`vs2 quickstart`, then `vs2
export ... --precision fp32 --precision int8`). Runs both on the demo's labeled target images
(seed 7: disjoint from calibration and the quickstart's data) with steering on and off; prints
top-1 agreement, the fp32 top-2 margins against int8's logit error, and what re-running the
images with a small int8 margin in fp32 would give (simulated from the same outputs). When
model.int8.onnx holds the fp32 re-check (recheck.py), "int8" is the plain graph inside it and the
file as shipped is measured too: its agreement and the share of images it re-ran.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from int8_recheck_cost import copy_with, plain  # benchmarks/, beside this script

from vs2_export.demo.data import generate_labeled
from vs2_export.recheck import top2_margin
from vs2_export.runtime import contract
from vs2_export.runtime.preprocess import list_images, preprocess_paths
from vs2_export.runtime.session import Vs2Session


def outputs(session: Vs2Session, pixels: np.ndarray, **overrides) -> dict[str, np.ndarray]:
    runs = [session.run(pixels[i:i + 250], **overrides) for i in range(0, len(pixels), 250)]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("exported", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    args = parser.parse_args()
    fp32 = Vs2Session(contract.model_path(args.exported, "fp32"), threads=2)
    shipped = Vs2Session(contract.model_path(args.exported, "int8"), threads=2)
    recheck = shipped.manifest.int8_recheck
    with tempfile.TemporaryDirectory() as tmp:
        generate_labeled(Path(tmp) / "images", args.per_class, "target", seed=7)
        pixels = preprocess_paths(list_images(Path(tmp) / "images"), fp32.manifest.preprocess).pixels
        int8 = Vs2Session(copy_with(args.exported, plain(args.exported), Path(tmp) / "plain"),
                          threads=2) if recheck else shipped
    print(f"{len(pixels)} labeled target images; int8 re-check: {recheck}")
    for label, overrides in (("steered", {}), ("steering off (lambda 0)", {"lambda_": 0.0})):
        f, q = outputs(fp32, pixels, **overrides), outputs(int8, pixels, **overrides)
        same = f["logits"].argmax(-1) == q["logits"].argmax(-1)
        if recheck:
            g = outputs(shipped, pixels, **overrides)
            gate = q.get("gate_score", q["fvu"])
            rerun = (top2_margin(q["logits"]) < recheck.margin) | (
                np.abs(gate - shipped.manifest.steering.tau) < recheck.gate_band)
            print(f"{label}, model.int8.onnx as shipped: top-1 agreement "
                  f"{(f['logits'].argmax(-1) == g['logits'].argmax(-1)).mean():.4f}, re-ran "
                  f"{rerun.mean():.4f} of the images in fp32")
        margin = top2_margin(f["logits"])
        error = np.abs(f["logits"] - q["logits"]).max(-1)
        print(f"{label}, plain static int8: top-1 agreement {same.mean():.4f} ({(~same).sum()} flips), gate flips "
              f"{(f['steered'] != q['steered']).mean():.4f}")
        print(f"  fp32 top-2 margin p1 / p10 / p50: {np.percentile(margin, [1, 10, 50]).round(4)}")
        print(f"  int8 max logit error p50 / p99: {np.percentile(error, [50, 99]).round(4)}")
        close = margin < np.median(error)
        print(f"  margin below the median error: {close.mean():.4f} of the images, "
              f"{(~same[close]).sum()} of the flips")
        for threshold in (0.1, 0.2, 0.3, 0.5):
            rerun = top2_margin(q["logits"]) < threshold
            print(f"  re-run in fp32 below an int8 margin of {threshold}: {rerun.mean():.4f} of "
                  f"the images, agreement {(same | rerun).mean():.4f}")


if __name__ == "__main__":
    main()
