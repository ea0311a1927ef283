"""Float graph + numpy normalisation vs the pixels_uint8 graph (issue 4, item 3), one process:
`python benchmarks/bench_uint8.py MODEL PRETRAINED WORK` (e.g. vs2-demo demo /tmp/u8-demo, or
ViT-B-32 none /tmp/u8-b32 for random weights).

Builds (once, into WORK) extract -> SAE -> calibrate on 64 demo images, then two fp32 exports of
the same parts: float input and --pixel-input pixels_uint8. Times, on the same random uint8 pixels
[B, S, S, 3] (decode and resize are the same for both paths and left out):
  float: preprocess.normalise (uint8 NHWC -> float32 NCHW) + session.run
  uint8: session.run on the uint8 pixels
Median of 10 runs after 2 warm-ups, batches 1 and 16, both sessions loaded side by side.
"""

import sys
from pathlib import Path

import numpy as np
from build_random import build_parts

from vs2_export.config import ExportConfig, ModelSpec
from vs2_export.export import export
from vs2_export.runtime import Vs2Session, normalise
from vs2_export.runtime.timing import time_runs

RUNS, WARMUP, BATCHES = 10, 2, (1, 16)


def build(model: ModelSpec, work: Path) -> tuple[Path, Path]:
    """WORK/float and WORK/uint8: fp32 exports of the same SAE and steering (built once)."""
    if not (work / "uint8" / "model.onnx").is_file():
        classes = build_parts(model, 32, work)
        for name, pixel_input in (("float", "pixel_values"), ("uint8", "pixels_uint8")):
            export(ExportConfig(work / "sae", work / "steering.json", work / name, model, classes,
                                force=True, pixel_input=pixel_input))
    return work / "float", work / "uint8"


def median_ms(fn) -> float:
    return 1000 * float(np.median(time_runs(fn, RUNS, WARMUP)))


def main(model: ModelSpec, work: Path) -> None:
    float_dir, uint8_dir = build(model, work)
    fs, us = Vs2Session(float_dir), Vs2Session(uint8_dir)
    spec, s = fs.manifest.preprocess, fs.manifest.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (max(BATCHES), s, s, 3), dtype=np.uint8)
    print(f"{model.name} S={s}: median of {RUNS} ms (float = numpy normalise + run)")
    print(f"{'batch':>5} {'normalise':>10} {'float':>10} {'uint8':>10} {'gain':>7}")
    for b in BATCHES:
        x = pixels[:b]
        norm = median_ms(lambda x=x: normalise(x, spec))
        flt = median_ms(lambda x=x: fs.run(normalise(x, spec)))
        u8 = median_ms(lambda x=x: us.run(x))
        print(f"{b:>5} {norm:>10.2f} {flt:>10.2f} {u8:>10.2f} {100 * (flt - u8) / flt:>6.1f}%")


if __name__ == "__main__":
    name, pretrained, out = sys.argv[1:4]
    main(ModelSpec(name, None if pretrained in ("demo", "") else pretrained), Path(out))
