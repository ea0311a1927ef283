"""Reference vectors written with every export, so a port (another language, runtime or device)
can check itself against ONNX Runtime on the same graph:

    reference/NAME.png            a few photo-like images (sizes around and off the model's S)
    reference/NAME.input.npy      what the graph's pixel input gets for that image (the Python
                                  runtime's preprocessing: float32 [1, 3, S, S], uint8
                                  [1, S, S, 3], or for image_rgb the decoded RGB uint8 [H, W, 3])
    reference/reference.json      index, written last: per image and run (manifest defaults; and
                                  steer_lambda = 0, which must give base_embedding), every output
                                  of model.onnx (fp32) as nested lists, and the tolerances to use

.npy is NumPy's documented format (a short header, then little-endian data); JSON floats are the
float32 outputs written exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .artifacts import atomic_path, write_json
from .runtime import contract
from .runtime.session import Vs2Session

RUNS = {"default": {}, "plain": {"lambda_": 0.0}}
"""Run name -> Vs2Session.run overrides (Python names; the JSON lists graph input names)."""
TOLERANCES = {"embedding_max_abs": 1e-4, "logits_max_abs": 1e-3, "fvu_max_abs": 1e-4,
              "latent_values_max_abs": 1e-4, contract.LATENT_INDICES: "same set per row",
              "steered": "equal unless abs(fvu - tau) < 1e-4"}
"""What an fp32 port should meet (docs/design.md parity table); pixels: exact for the decoder
and crop, +-1 level where a port resamples (image_rgb does that inside the graph)."""


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """A natural-looking RGB uint8 [h, w, 3] image: smooth colour fields, edges, texture and
    sensor-like noise, so resampling errors show as they would on photos (uniform noise hides
    them; flat synthetic shapes exaggerate them)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    low = rng.random((5, 5, 3))
    field = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                       dtype=np.float64)
    angle = rng.uniform(0, np.pi)
    stripes = 40 * np.sin(2 * np.pi * rng.uniform(4, 20) * (x * np.cos(angle) + y * np.sin(angle)))
    disc = ((x - rng.uniform(0.2, 0.8)) ** 2 + (y - rng.uniform(0.2, 0.8)) ** 2) < rng.uniform(0.01, 0.06)
    image = field + stripes[..., None] * rng.random(3) + 70 * disc[..., None] * (rng.random(3) - 0.5)
    image += rng.normal(0, 6, image.shape)  # sensor noise
    return np.clip(image, 0, 255).round().astype(np.uint8)


def reference_images(image_size: int) -> dict[str, np.ndarray]:
    """name -> RGB uint8 image: landscape and portrait photos that need resampling, and one at
    exactly S x S (no resampling: checks decode, crop and normalisation alone)."""
    s = image_size
    return {"landscape": photo_like(3 * s // 2 + 7, 2 * s + 13, seed=1),
            "portrait": photo_like(2 * s + 5, s + 19, seed=2),
            "exact": photo_like(s, s, seed=3)}


def write_reference(folder: Path) -> Path:
    """folder/reference/ for the fp32 model in `folder` (run with the torch-free runtime)."""
    session = Vs2Session(folder)
    out = Path(folder) / contract.REFERENCE_DIR
    entries = []
    for name, rgb in reference_images(session.manifest.image_size).items():
        with atomic_path(out / f"{name}.png") as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        with Image.open(out / f"{name}.png") as image:
            pixels = session.preprocess(image)
        pixels = pixels if session.manifest.pixel_input == contract.IMAGE_RGB else pixels[None]
        with atomic_path(out / f"{name}.input.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, pixels)
        runs = {run: {"overrides": {contract.STEERING_ARGS[k]: v for k, v in overrides.items()},
                      "outputs": {k: v.tolist() for k, v in session.run(pixels, **overrides).items()}}
                for run, overrides in RUNS.items()}
        entries.append({"name": name, "png": f"{name}.png", "size": [rgb.shape[1], rgb.shape[0]],
                        "input": f"{name}.input.npy", "input_dtype": str(pixels.dtype),
                        "input_shape": list(pixels.shape), "runs": runs})
    index = {"model": contract.MODEL_FILE, "pixel_input": session.manifest.pixel_input,
             "classes": list(session.classes or ()), "tolerances": TOLERANCES, "images": entries}
    json.dumps(index, allow_nan=False)  # NaN in an output would be a broken graph: fail here
    return write_json(out / contract.REFERENCE_INDEX, index)
