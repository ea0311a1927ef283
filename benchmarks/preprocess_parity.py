"""The image_rgb graph's preprocessing (resize and crop in ONNX) against THE preprocessing (Pillow,
runtime.preprocess): embedding cosine on photo-like images of many sizes and aspect ratios.

    python benchmarks/preprocess_parity.py RGB_EXPORT FLOAT_EXPORT

RGB_EXPORT and FLOAT_EXPORT: the same model, SAE and steering exported with --pixel-input
image_rgb and pixel_values. Per image: the decoded RGB pixels into the image_rgb graph, and
runtime.preprocess's float pixels into the pixel_values graph; cosine of base_embedding (plain
CLIP) and of embedding (steered).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vs2_export.reference import photo_like
from vs2_export.runtime import Vs2Session, contract

SIZES = [(224, 224), (225, 224), (224, 300), (480, 640), (640, 480), (1080, 1920), (1920, 1080),
         (3024, 4032), (4000, 3000), (100, 1000), (1000, 100), (37, 53), (150, 100), (64, 64), (96, 80)]
SEEDS = range(3)


def main(rgb_export: Path, float_export: Path) -> None:
    rgb, floats = Vs2Session(rgb_export), Vs2Session(float_export)
    if rgb.manifest.pixel_input != contract.IMAGE_RGB or floats.manifest.pixel_input != contract.PIXEL_VALUES:
        raise SystemExit("expected an image_rgb export, then a pixel_values export of the same model")
    rows = []
    for (h, w), seed in itertools.product(SIZES, SEEDS):
        image = photo_like(h, w, seed=1000 * seed + h + w)
        a = rgb.run(image)
        b = floats.run(floats.preprocess(Image.fromarray(image))[None])
        rows.append(((h, w), *(float((a[n] * b[n]).sum()) for n in (contract.BASE_EMBEDDING, contract.EMBEDDING))))
    cosines = np.array([r[1:] for r in rows])
    print(f"{rgb.manifest.model.id} ({rgb.manifest.model.source}), {len(rows)} photo-like images, "
          f"{len(SIZES)} sizes (h x w) x {len(SEEDS)} seeds")
    print("| h x w | min cosine, plain | min cosine, steered |\n|---|---|---|")
    for size in SIZES:
        mine = cosines[[i for i, r in enumerate(rows) if r[0] == size]].min(axis=0)
        print(f"| {size[0]} x {size[1]} | {mine[0]:.8f} | {mine[1]:.8f} |")
    print(f"all: min {cosines.min():.8f}, median {np.median(cosines):.8f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
