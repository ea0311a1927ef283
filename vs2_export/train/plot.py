"""A PNG of the training curves, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..artifacts import atomic_path

PANELS = (("fvu", "FVU"), ("aux", "AuxK loss"), ("l0", "L0"), ("dead_frac", "dead fraction"),
          ("dense_frac", "dense fraction"), ("acts_per_s", "activations / s"))
W, H, PAD = 360, 220, 40


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int], title: str,
           points: list[tuple[float, float]], font) -> None:
    """One curve in the W x H cell whose top-left corner is box."""
    x0, y0 = box
    left, top, right, bottom = x0 + PAD, y0 + 24, x0 + W - 12, y0 + H - 28
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    draw.text((x0 + PAD, y0 + 6), title, fill=(0, 0, 0), font=font)
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo_x, hi_x, lo_y, hi_y = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or 1.0
    line = [(left + (x - lo_x) / span_x * (right - left),
             bottom - (y - lo_y) / span_y * (bottom - top)) for x, y in points]
    if len(line) == 1:
        line = line * 2
    draw.line(line, fill=(31, 119, 180), width=2)
    draw.text((x0 + 2, top - 4), f"{hi_y:.3g}", fill=(80, 80, 80), font=font)
    draw.text((x0 + 2, bottom - 8), f"{lo_y:.3g}", fill=(80, 80, 80), font=font)
    draw.text((left, bottom + 6), f"step {lo_x:.0f}", fill=(80, 80, 80), font=font)
    draw.text((right - 70, bottom + 6), f"{hi_x:.0f}", fill=(80, 80, 80), font=font)


def plot_curves(records: list[dict], path: Path) -> Path:
    """records (metrics.jsonl rows with 'step') -> a 3 x 2 grid of curves as a PNG, atomically."""
    image = Image.new("RGB", (3 * W, 2 * H), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, (key, title) in enumerate(PANELS):
        points = [(float(r["step"]), float(r[key])) for r in records if r.get(key) is not None]
        _panel(draw, ((i % 3) * W, (i // 3) * H), title, points, font)
    with atomic_path(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
