"""Generator of the demo data: coloured shapes drawn with PIL, in two domains.

- SOURCE: saturated shapes, large and roughly centred, on clean backgrounds (plain, striped,
  checkered, gradient, dotted). Each image has a caption; the demo CLIP is trained on these.
- TARGET: the same ten shapes, shifted: smaller, less centred, lower contrast, on noisy
  textured backgrounds with clutter, a colour cast, pixel noise and a little blur. The SAE is
  trained on unlabeled target images and the evaluation runs on labeled target images.

Everything is deterministic: image i of a stream is drawn from its own
`numpy.random.default_rng([seed, domain, stream, class, i])`, so any image can be regenerated
alone and the labeled, unlabeled and training streams never share an image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = (
    "circle", "square", "triangle", "star", "cross",
    "hexagon", "diamond", "ring", "crescent", "arrow",
)
"""Zero-shot classes: the shape names (also the folder names written by generate_labeled)."""

TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a drawing of a {}.")
"""Zero-shot prompt templates; class text embeddings are averaged over them and renormalised."""

IMAGE_SIZE = 64
DOMAINS = ("source", "target")

# Named colours for shapes (the name goes into the caption). RGB before jitter.
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (240, 220, 30), "orange": (245, 130, 20), "purple": (140, 40, 180),
    "white": (245, 245, 245), "black": (15, 15, 15),
}
BACKGROUNDS = ("plain", "striped", "checkered", "gradient", "dotted")
_SUPERSAMPLE = 3  # shapes are drawn at 3x and box-filtered down: anti-aliased edges
_STREAMS = {"train": 0, "labeled": 1, "unlabeled": 2}

# Caption wordings for the source domain; {c} colour, {s} shape, {b} background. About half
# name the shape alone: colour and background are easier cues, and captions that only name
# the shape make the contrastive loss learn shape early (and match the zero-shot prompts).
_CAPTIONS = (
    "a photo of a {c} {s} on a {b} background.",
    "a picture of a {c} {s} on a {b} background.",
    "a drawing of a {c} {s} against a {b} background.",
    "a {c} {s} on a {b} background.",
    "a photo of a {c} {s}.",
    "a {c} {s}.",
    "a photo of a {s} on a {b} background.",
    "a {s} on a {b} background.",
    "a photo of a {s}.",
    "a picture of a {s}.",
    "a drawing of a {s}.",
    "a {s}.",
)


def _regular(n: int, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices of a regular n-gon of radius r (unit-centred), rotated by rot radians."""
    return [(r * math.cos(rot + 2 * math.pi * k / n), r * math.sin(rot + 2 * math.pi * k / n))
            for k in range(n)]


def _rotate(pts: list[tuple[float, float]], rot: float) -> list[tuple[float, float]]:
    c, s = math.cos(rot), math.sin(rot)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def _polygon(cls: str, rng: np.random.Generator) -> list[tuple[float, float]] | None:
    """Outline of a polygonal class in unit coordinates (radius about 1), or None for curves.

    Rotations are limited where a free rotation would turn one class into another
    (a square at 45 degrees is a diamond, a cross at 45 degrees is an x).
    """
    small = math.radians(rng.uniform(-15, 15))
    free = rng.uniform(0, 2 * math.pi)
    if cls == "square":
        return _regular(4, 1.0, math.pi / 4 + small)
    if cls == "triangle":
        return _regular(3, 1.0, -math.pi / 2 + small)
    if cls == "hexagon":
        return _regular(6, 1.0, free)
    if cls == "diamond":  # a rhombus, taller than wide: not a rotated square
        return _rotate([(0, -1.0), (0.6, 0), (0, 1.0), (-0.6, 0)], small)
    if cls == "star":
        pts = [(0.42 if k % 2 else 1.0, -math.pi / 2 + free + math.pi * k / 5) for k in range(10)]
        return [(r * math.cos(a), r * math.sin(a)) for r, a in pts]
    if cls == "cross":
        a, b = 0.32, 1.0
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
               (-b, a), (-b, -a), (-a, -a)]
        return _rotate(pts, small)
    if cls == "arrow":
        pts = [(-1.0, -0.25), (0.2, -0.25), (0.2, -0.6), (1.0, 0), (0.2, 0.6), (0.2, 0.25),
               (-1.0, 0.25)]
        return _rotate(pts, free)
    return None


def _shape_mask(cls: str, size: int, cx: float, cy: float, r: float,
                rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage of one shape. Returns float32 [size, size] in [0, 1].

    cx, cy: centre in pixels; r: radius in pixels.
    """
    ss = _SUPERSAMPLE
    img = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(img)
    x, y, rr = cx * ss, cy * ss, r * ss
    pts = _polygon(cls, rng)
    if pts is not None:
        draw.polygon([(x + px * rr, y + py * rr) for px, py in pts], fill=255)
    elif cls == "circle":
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
    elif cls == "ring":
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
        ri = rr * 0.55
        draw.ellipse((x - ri, y - ri, x + ri, y + ri), fill=0)
    elif cls == "crescent":
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
        a = rng.uniform(0, 2 * math.pi)
        ox, oy = x + 0.45 * rr * math.cos(a), y + 0.45 * rr * math.sin(a)
        draw.ellipse((ox - 0.85 * rr, oy - 0.85 * rr, ox + 0.85 * rr, oy + 0.85 * rr), fill=0)
    else:
        raise ValueError(f"unknown class {cls!r}")
    img = img.resize((size, size), Image.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def _pick_colours(rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """A named shape colour and two background colours far enough from it to keep the shape
    visible. Returns (name, shape rgb [3], bg colour a [3], bg colour b [3]) as float32 0-255."""
    name = list(COLOURS)[rng.integers(len(COLOURS))]
    fg = np.clip(np.array(COLOURS[name], np.float32) + rng.normal(0, 12, 3), 0, 255)
    bgs = []
    while len(bgs) < 2:
        c = rng.uniform(0, 255, 3).astype(np.float32)
        if np.linalg.norm(c - fg) > 150:  # rejection: background must contrast with the shape
            bgs.append(c)
    return name, fg, bgs[0], bgs[1]


def _source_background(kind: str, size: int, a: np.ndarray, b: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Clean two-colour background of one BACKGROUNDS kind. Returns float32 [size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "plain":
        t = np.zeros((size, size), np.float32)
    elif kind == "striped":
        ang, period = rng.uniform(0, math.pi), rng.uniform(6, 14)
        t = ((xx * math.cos(ang) + yy * math.sin(ang)) // (period / 2) % 2).astype(np.float32)
    elif kind == "checkered":
        cell = rng.uniform(5, 12)
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    elif kind == "dotted":
        cell = rng.uniform(7, 12)
        t = ((((xx % cell) - cell / 2) ** 2 + ((yy % cell) - cell / 2) ** 2) < (cell / 4) ** 2)
        t = t.astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}")
    t = t[..., None]
    return a * (1 - t) + b * t


def _noise_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Multi-scale smooth noise, float32 [size, size, 3] in about 0-255 (target backgrounds)."""
    out = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((4, 0.5), (8, 0.3), (16, 0.2)):
        low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        up = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        out += weight * np.asarray(up, np.float32)
    return out


def _clutter(bg: np.ndarray, rng: np.random.Generator, count: tuple[int, int]) -> np.ndarray:
    """Draw a few random lines and small blobs over a target background (distractors)."""
    size = bg.shape[0]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(*count)):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            x0, y0, x1, y1 = rng.uniform(0, size, 4)
            draw.line((x0, y0, x1, y1), fill=col, width=int(rng.integers(1, 3)))
        else:
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1, 3.5)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=col)
    return np.asarray(img, np.float32)


def _render_source(cls: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One source image, float32 [size, size, 3] in 0-255, and its caption."""
    cname, fg, a, b = _pick_colours(rng)
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg = _source_background(kind, size, a, b, rng)
    r = size * rng.uniform(0.25, 0.4)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    m = _shape_mask(cls, size, cx, cy, r, rng)[..., None]
    img = bg * (1 - m) + fg * m
    caption = _CAPTIONS[rng.integers(len(_CAPTIONS))].format(c=cname, s=cls, b=kind)
    return img, caption.replace(" a orange", " an orange")


# Strength of the target shift (ranges drawn uniformly per image). Chosen so that zero-shot
# drops clearly from the source domain while staying well above chance.
TARGET_SHIFT = {
    "radius": (0.22, 0.34),      # shape radius / image size (source: 0.25-0.4)
    "offset": 0.1,               # max centre displacement / image size (source: 0.08)
    "opacity": (0.7, 0.95),      # shape alpha over the textured background (source: 1)
    "texture": (0.5, 0.8),       # amplitude of the noise texture around its mean colour
    "clutter": (1, 4),           # number of distractor lines/blobs, [low, high)
    "contrast": (0.7, 0.9),      # global contrast compression factor
    "cast": (0.8, 1.2),          # per-channel gain
    "noise": 8.0,                # pixel noise std, 0-255 scale
    "blur": (0.2, 0.6),          # Gaussian blur radius, pixels
}


def _render_target(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One target image, float32 [size, size, 3] in 0-255 (see the module docstring)."""
    sh = TARGET_SHIFT
    _, fg, _, _ = _pick_colours(rng)
    tex = _noise_texture(size, rng)
    tex_mean = tex.mean(axis=(0, 1), keepdims=True)
    tex = tex_mean + (tex - tex_mean) * rng.uniform(*sh["texture"])
    bg = _clutter(tex, rng, sh["clutter"])
    r = size * rng.uniform(*sh["radius"])
    cx, cy = np.clip(size / 2 + rng.uniform(-sh["offset"], sh["offset"], 2) * size,
                     r + 1, size - r - 1)
    m = _shape_mask(cls, size, cx, cy, r, rng)[..., None] * rng.uniform(*sh["opacity"])
    img = bg * (1 - m) + fg * m
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = mean + (img - mean) * rng.uniform(*sh["contrast"])
    img = img * rng.uniform(*sh["cast"], 3)
    img = img + rng.normal(0, sh["noise"], img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(*sh["blur"])))
    return np.asarray(pil, np.float32)


def _rng(seed: int, domain: str, stream: str, cls_idx: int, i: int) -> np.random.Generator:
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    return np.random.default_rng([seed, DOMAINS.index(domain), _STREAMS[stream], cls_idx, i])


def render_example(rng: np.random.Generator, domain: str = "source", cls_idx: int | None = None,
                   image_size: int = IMAGE_SIZE) -> tuple[Image.Image, str, int]:
    """Draw one example in memory (the CLIP training script's data source).

    Returns (RGB PIL image of image_size x image_size, caption, class index). The class is drawn
    from rng unless cls_idx is given. Target-domain captions are "a photo of a {shape}." (the
    target domain is never used for CLIP training; the caption is only for completeness).
    """
    if cls_idx is None:
        cls_idx = int(rng.integers(len(CLASSES)))
    cls = CLASSES[cls_idx]
    if domain == "source":
        img, caption = _render_source(cls, image_size, rng)
    elif domain == "target":
        img, caption = _render_target(cls, image_size, rng), TEMPLATES[0].format(cls)
    else:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB"), caption, cls_idx


def labeled_example(seed: int, domain: str, cls_idx: int, i: int,
                    image_size: int = IMAGE_SIZE) -> Image.Image:
    """Image i of class cls_idx of the labeled stream (what generate_labeled writes)."""
    rng = _rng(seed, domain, "labeled", cls_idx, i)
    return render_example(rng, domain, cls_idx, image_size)[0]


def train_rng(seed: int, step: int) -> np.random.Generator:
    """Generator for training batch `step`: a stream disjoint from the labeled/unlabeled ones."""
    return _rng(seed, "source", "train", 0, step)


def generate_labeled(out_dir: str | Path, n_per_class: int, domain: str = "target",
                     seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Write out_dir/<class name>/<i>.png for every class in CLASSES; returns out_dir."""
    out = Path(out_dir)
    for c, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            labeled_example(seed, domain, c, i, image_size).save(out / name / f"{i}.png")
    return out


def generate_unlabeled(out_dir: str | Path, n: int, domain: str = "target", seed: int = 1,
                       image_size: int = IMAGE_SIZE) -> Path:
    """Write n unlabeled images out_dir/<i>.png (classes uniform at random); returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = _rng(seed, domain, "unlabeled", 0, i)
        render_example(rng, domain, None, image_size)[0].save(out / f"{i:06d}.png")
    return out


def write_classes(path: str | Path) -> Path:
    """Write CLASSES one per line to path; returns the path."""
    path = Path(path)
    path.write_text("".join(f"{c}\n" for c in CLASSES))
    return path
