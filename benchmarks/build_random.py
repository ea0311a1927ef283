"""Build a random-weight export for benchmarking: `python benchmarks/build_random.py ViT-B-32 64 OUT`.

Random weights (`--pretrained none`, seeded) fix speed and numerics, not accuracy (docs/design.md).
Steps: 64 target-domain demo images upscaled by the model's own preprocessing -> extract ->
SAE (k given, expansion 4, 2 epochs: only its shape matters for speed) -> calibrate -> export
fp32 + fp16 + int8 (static, calibrated on calibration/). Prints the export folder.
"""

import sys
from pathlib import Path

from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, ExportConfig, ExtractConfig, ModelSpec, TrainConfig
from vs2_export.demo.data import generate_unlabeled, write_classes
from vs2_export.export import export
from vs2_export.extract import extract
from vs2_export.train import train_sae


def build_parts(model: ModelSpec, k: int, work: Path) -> Path:
    """64 demo images -> extract -> SAE (k, expansion 4, 2 epochs: only its shape matters for
    speed) -> calibrate, into WORK; returns the classes file the exports use."""
    images = generate_unlabeled(work / "images", 64, seed=2)
    extract(ExtractConfig(images, work / "acts", model, batch_size=16, force=True))
    train_sae(TrainConfig(work / "acts", work / "sae", expansion=4, k=k, batch_size=64,
                          epochs=2, force=True))
    calibrate(CalibrateConfig(work / "acts", work / "sae", work / "steering.json", force=True))
    return write_classes(work / "classes.txt")


def main(model_name: str, k: int, work: Path) -> Path:
    model = ModelSpec(model_name, "none")
    classes = build_parts(model, k, work)
    out = work / "exported"
    export(ExportConfig(work / "sae", work / "steering.json", out, model, classes,
                        precisions=("fp32", "fp16", "int8"), force=True))
    return out


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
