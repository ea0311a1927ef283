"""A bench report -> PNG bar chart (Pillow only): images/s per row, one panel per batch size."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from ..artifacts import atomic_path

_COLOURS = {"pytorch": (200, 80, 60), "onnxruntime bare": (120, 120, 120),
            "onnxruntime": (40, 110, 200), "openvino": (60, 160, 90), "ablation": (160, 160, 200)}
_ROW_H, _LABEL_W, _BAR_W, _PAD = 22, 230, 420, 12


def _colour(name: str) -> tuple[int, int, int]:
    return next((c for key, c in _COLOURS.items() if name.startswith(key)), (90, 90, 90))


def draw_chart(report: dict, path: Path) -> Path:
    """One panel per batch size: a horizontal bar of images/s per row, labelled with the value
    and the speed-up over ONNX Runtime fp32 (the fused graph). Written atomically."""
    rows = report["rows"]
    batches = list(rows[0]["batches"])
    panel_h = _PAD * 3 + _ROW_H * (len(rows) + 1)
    width = _LABEL_W + _BAR_W + 170
    image = Image.new("RGB", (width, 40 + panel_h * len(batches)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_PAD, _PAD), f"vs2 bench: {report['model']} ({report['source']}), "
              f"{report['threads']} threads, {report['provider']}; "
              f"MatMul 2048^3: {report['matmul_2048_gflops']:.0f} GFLOP/s", fill="black")
    for p, b in enumerate(batches):
        top = 40 + p * panel_h
        draw.text((_PAD, top), f"batch {b}: images/s (x = speed-up vs ONNX Runtime fp32)", fill="black")
        best = max(r["batches"][b]["images_per_s"] for r in rows)
        for i, row in enumerate(rows):
            stats = row["batches"][b]
            y = top + _PAD + _ROW_H * (i + 1)
            length = int(_BAR_W * stats["images_per_s"] / best)
            draw.text((_PAD, y + 4), row["name"][:34], fill="black")
            draw.rectangle((_LABEL_W, y + 2, _LABEL_W + max(length, 1), y + _ROW_H - 4),
                           fill=_colour(row["name"]))
            draw.text((_LABEL_W + length + 6, y + 4),
                      f"{stats['images_per_s']:.1f}/s  x{stats['speedup_vs_ort_fp32'] or 0:.2f}",
                      fill="black")
    with atomic_path(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
