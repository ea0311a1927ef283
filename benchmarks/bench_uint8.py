"""Float graph + numpy normalisation vs the uint8-input graph (issue 4, item 3), one process:
`python benchmarks/bench_uint8.py MODEL PRETRAINED WORK` (e.g. vs2-demo demo /tmp/u8-demo, or
ViT-B-32 none /tmp/u8-b32 for random weights).

Builds (once, into WORK) extract -> SAE -> calibrate on 64 demo images, then two fp32 exports of
the same parts: float input and --uint8-input. Times, on the same random uint8 pixels
[B, S, S, 3] (decode and resize are the same for both paths and left out):
  float: preprocess.normalise (uint8 NHWC -> float32 NCHW) + session.run
  uint8: session.run on the uint8 pixels
Median of 10 runs after 2 warm-ups, batches 1 and 16, both sessions loaded side by side.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from vs2_export.activations import extract
from vs2_export.config import (CalibrateConfig, ExportConfig, ExtractConfig, ModelSpec,
                               TrainConfig)
from vs2_export.demo.data import generate_unlabeled, write_classes
from vs2_export.export import export
from vs2_export.runtime import Vs2Session, normalise
from vs2_export.steering import calibrate
from vs2_export.train import train_sae

RUNS, WARMUP, BATCHES = 10, 2, (1, 16)


def build(model: ModelSpec, work: Path) -> tuple[Path, Path]:
    """WORK/float and WORK/uint8: fp32 exports of the same SAE and steering (built once)."""
    if not (work / "uint8" / "model.onnx").is_file():
        images = generate_unlabeled(work / "images", 64, seed=2)
        extract(ExtractConfig(images, work / "acts", model, batch_size=16, force=True))
        train_sae(TrainConfig(work / "acts", work / "sae", expansion=4, k=32, batch_size=64,
                              epochs=2, force=True))
        calibrate(CalibrateConfig(work / "acts", work / "sae", work / "steering.json", force=True))
        classes = write_classes(work / "classes.txt")
        for name, uint8 in (("float", False), ("uint8", True)):
            export(ExportConfig(work / "sae", work / "steering.json", work / name, model, classes,
                                force=True, uint8_input=uint8))
    return work / "float", work / "uint8"


def median_ms(fn) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(model: ModelSpec, work: Path) -> None:
    float_dir, uint8_dir = build(model, work)
    fs, us = Vs2Session(float_dir), Vs2Session(uint8_dir)
    spec, s = fs.manifest.preprocess, fs.manifest.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (max(BATCHES), s, s, 3), dtype=np.uint8)
    print(f"{model.name} S={s}: median of {RUNS} ms (float = numpy normalise + run)")
    print(f"{'batch':>5} {'normalise':>10} {'float':>10} {'uint8':>10} {'gain':>7}")
    for b in BATCHES:
        x = pixels[:b]
        norm = median_ms(lambda: normalise(x, spec))
        flt = median_ms(lambda: fs.run(normalise(x, spec)))
        u8 = median_ms(lambda: us.run(x))
        print(f"{b:>5} {norm:>10.2f} {flt:>10.2f} {u8:>10.2f} {100 * (flt - u8) / flt:>6.1f}%")


if __name__ == "__main__":
    name, pretrained, out = sys.argv[1:4]
    main(ModelSpec(name, None if pretrained in ("demo", "") else pretrained), Path(out))
