"""Helpers shared by the end-to-end tests: run the pipeline through the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, ExportConfig, ExtractConfig, ModelSpec, TrainConfig
from vs2_export.export import export
from vs2_export.extract import extract
from vs2_export.train import train_sae


def noise_images(folder: Path, n: int, size: int = 96, seed: int = 0) -> Path:
    """n smooth random RGB images (PNG) of varied sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = size + int(rng.integers(0, 40)), size + int(rng.integers(0, 40))
        low = rng.random((4, 4, 3))
        img = Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        img.save(folder / f"img{i:03d}.png")
    return folder


def build_export(work: Path, model: ModelSpec, images: Path, classes: list[str], k: int,
                 epochs: int = 3) -> Path:
    """extract -> train -> calibrate -> export into work/; returns the export folder."""
    extract(ExtractConfig(images, work / "acts", model, batch_size=16))
    train_sae(TrainConfig(work / "acts", work / "sae", expansion=4, k=k, batch_size=64,
                          epochs=epochs))
    calibrate(CalibrateConfig(work / "acts", work / "sae", work / "steering.json"))
    (work / "classes.txt").write_text("\n".join(classes) + "\n")
    export(ExportConfig(work / "sae", work / "steering.json", work / "exported", model,
                        work / "classes.txt"))
    return work / "exported"


def tamper_one_weight(model_path: Path, name_part: str, delta: float = 5.0) -> str:
    """Add `delta` to ONE element of the first initializer whose name contains name_part."""
    model = onnx.load(str(model_path))
    for init in model.graph.initializer:
        if name_part in init.name:
            array = numpy_helper.to_array(init).copy()
            array.flat[0] += delta
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            onnx.save(model, str(model_path))
            return init.name
    raise AssertionError(f"no initializer named like {name_part!r}")


def demo_parts(work: Path, classes: list[str], k: int = 8, epochs: int = 3) -> Path:
    """Demo model: 200 target images -> extract -> SAE -> calibrate into work/, and classes.txt;
    returns work (sae/, steering.json, classes.txt) for exports with any options."""
    from vs2_export.demo.data import generate_unlabeled
    images = generate_unlabeled(work / "unlabeled", 200, seed=0)
    model = ModelSpec("vs2-demo")
    extract(ExtractConfig(images, work / "acts", model, batch_size=32))
    train_sae(TrainConfig(work / "acts", work / "sae", expansion=4, k=k, batch_size=64, epochs=epochs))
    calibrate(CalibrateConfig(work / "acts", work / "sae", work / "steering.json"))
    (work / "classes.txt").write_text("\n".join(classes) + "\n")
    return work


def export_demo(work: Path, out: Path, **options) -> Path:
    """An export of demo_parts(work) with ExportConfig options (pixel_input, precisions, ...)."""
    export(ExportConfig(work / "sae", work / "steering.json", out, ModelSpec("vs2-demo"),
                        work / "classes.txt", **options))
    return out
