"""Out-of-domain images for measuring the reliability gate (docs/method.md section 4).

The demo's SAE is trained on the shifted TARGET domain of demo/data.py. The gate should let
those images through and stop what the SAE never saw. No real photographs are available
offline (Pillow ships no test images), so the sets are generated:

- "source":  the demo's SOURCE domain (clean, saturated shapes): near OOD, same classes.
- "noise":   white pixel noise, uniform or Gaussian, sometimes grey.
- "texture": backgrounds without a shape: the source domain's stripes / checks / dots /
             gradients and the target domain's cluttered noise texture.
- "photo":   photo-like scenes: a sky gradient, a hilly horizon, 1/f ("pink") noise texture,
             a few blurred objects, a light source, sensor noise; natural images have roughly
             a 1/f amplitude spectrum, which this reproduces and which the demo data lacks.

Deterministic like demo/data.py: image i of a kind is drawn from
numpy.random.default_rng([seed, kind, i]).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import data

KINDS = ("source", "noise", "texture", "photo")


def _pink(size: int, rng: np.random.Generator, alpha: float = 1.0) -> np.ndarray:
    """Noise with a 1/f^alpha amplitude spectrum, float32 [size, size] scaled to [0, 1]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx ** 2 + fy ** 2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius ** alpha
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(size, size))
    return ((field - field.min()) / (np.ptp(field) + 1e-9)).astype(np.float32)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """White noise, float32 [size, size, 3] in 0-255."""
    if rng.random() < 0.5:
        img = rng.uniform(0, 255, (size, size, 3))
    else:
        img = rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), (size, size, 3))
    if rng.random() < 0.3:
        img = np.repeat(img[..., :1], 3, axis=-1)  # grey
    return img.astype(np.float32)


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A demo background with no shape on it, float32 [size, size, 3] in 0-255."""
    if rng.random() < 0.5:
        _, _, a, b = data._pick_colours(rng)
        kind = data.BACKGROUNDS[rng.integers(len(data.BACKGROUNDS))]
        return data._source_background(kind, size, a, b, rng)
    tex = data._noise_texture(size, rng)
    return data._clutter(tex, rng, data.TARGET_SHIFT["clutter"])


_SKIES = ((110, 160, 230), (180, 200, 225), (235, 170, 120), (90, 100, 120), (200, 215, 235))
_GROUNDS = ((70, 120, 50), (120, 100, 70), (160, 150, 120), (60, 80, 90), (190, 180, 150))


def _photo(size: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like landscape, float32 [size, size, 3] in 0-255 (module docstring)."""
    big = size * 2
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    sky = np.array(_SKIES[rng.integers(len(_SKIES))], np.float32) * rng.uniform(0.85, 1.1, 3)
    ground = np.array(_GROUNDS[rng.integers(len(_GROUNDS))], np.float32) * rng.uniform(0.8, 1.15, 3)
    horizon = rng.uniform(0.35, 0.7) + sum(
        rng.uniform(0.01, 0.08) * np.sin(2 * math.pi * (f * xx[0] + rng.uniform()))
        for f in rng.uniform(0.5, 4, 3))
    below = (yy > horizon[None, :]).astype(np.float32)[..., None]
    sky_img = sky * (1.15 - 0.35 * yy[..., None])
    tex = _pink(big, rng, rng.uniform(0.9, 1.4))[..., None]
    ground_img = ground * (0.6 + 0.8 * tex)
    img = sky_img * (1 - below) + ground_img * below
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(1, 5)):  # trees, rocks, houses: dark-ish natural colours
        x, y = rng.uniform(0, big), rng.uniform(0.4, 0.95) * big
        w, h = rng.uniform(0.05, 0.25) * big, rng.uniform(0.08, 0.35) * big
        col = tuple(int(v) for v in ground * rng.uniform(0.3, 0.9, 3))
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x - w / 2, y - h, x + w / 2, y), fill=col)
    if rng.random() < 0.5:  # sun or lamp
        x, y, r = rng.uniform(0, big), rng.uniform(0, 0.35) * big, rng.uniform(0.03, 0.08) * big
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 245, 210))
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.float32)
    out = out * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(1, 6), out.shape)
    return out


def render_ood(kind: str, seed: int, i: int, image_size: int = data.IMAGE_SIZE) -> Image.Image:
    """Image i of an OOD `kind` (KINDS) as an RGB PIL image of image_size x image_size."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind == "source":  # the labeled stream of the source domain, classes in turn
        return data.labeled_example(seed, "source", i % len(data.CLASSES), i // len(data.CLASSES),
                                    image_size)
    rng = np.random.default_rng([seed, 100 + KINDS.index(kind), i])
    img = {"noise": _noise, "texture": _texture, "photo": _photo}[kind](image_size, rng)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def generate_ood(out_dir: str | Path, kind: str, n: int, seed: int = 0,
                 image_size: int = data.IMAGE_SIZE) -> Path:
    """Write n images out_dir/<i>.png of one OOD kind; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        render_ood(kind, seed, i, image_size).save(out / f"{i:06d}.png")
    return out
