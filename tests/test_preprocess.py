"""runtime.preprocess against open_clip's own eval transform, plus loading and listing files."""

from __future__ import annotations

import functools
import io
import os

import numpy as np
import pytest
from PIL import Image

from vs2_export.runtime.preprocess import (
    ImageError,
    PreprocessedBatch,
    PreprocessSpec,
    list_images,
    load_image,
    preprocess_image,
    preprocess_paths,
)

open_clip = pytest.importorskip("open_clip")

SIZES = [(1, 1), (17, 300), (300, 17), (224, 224), (640, 480), (481, 1023), (225, 224), (223, 223)]
MODES = ["RGB", "RGBA", "L", "P", "CMYK", "I;16", "LA", "1"]


@functools.cache  # cached: quantising to 'P' is the slow part; nothing mutates it
def _make_image(w: int, h: int, mode: str, seed: int = 0) -> Image.Image:
    """A noisy-but-smooth image (gradient + noise) so resampling differences would show."""
    rng = np.random.default_rng(seed + w * 7 + h)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w, 1), yy * 255.0 / max(h, 1), (xx + yy) % 256], -1)
    rgb = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode == "P":
        return img.quantize(colors=64)
    if mode == "I;16":
        arr16 = (rgb[..., 0].astype(np.uint16) * 257).astype("<u2")
        return Image.frombytes("I;16", (w, h), arr16.tobytes())
    if mode == "RGBA":
        alpha = Image.fromarray(rgb[..., 2], "L")
        out = img.convert("RGBA")
        out.putalpha(alpha)
        return out
    return img.convert(mode)


def _reference(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    transform = open_clip.image_transform(
        spec.image_size, is_train=False, mean=spec.mean, std=spec.std,
        resize_mode=spec.resize_mode, interpolation=spec.interpolation, fill_color=spec.fill_color,
    )
    return transform(img).numpy()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_matches_open_clip_all_modes_and_sizes(mode, size):
    spec = PreprocessSpec(image_size=224)
    img = _make_image(*size, mode)
    ours = preprocess_image(img, spec)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(img, spec), rtol=0, atol=1e-5)


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA", "L"])
@pytest.mark.parametrize("size", [(1, 1), (17, 300), (300, 17), (64, 64), (481, 1023), (640, 480)])
def test_matches_open_clip_resize_modes(resize_mode, interpolation, mode, size):
    spec = PreprocessSpec(image_size=64, resize_mode=resize_mode, interpolation=interpolation,
                          fill_color=37, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = _make_image(*size, mode, seed=1)
    np.testing.assert_allclose(preprocess_image(img, spec), _reference(img, spec), rtol=0, atol=1e-5)


def test_matches_open_clip_after_file_round_trip(tmp_path):
    """Decoded files (lazy PIL images from disk) give the same pixels as open_clip on them."""
    spec = PreprocessSpec(image_size=32)
    path = tmp_path / "x.png"
    _make_image(50, 40, "P").save(path)
    with Image.open(path) as ref_img:
        expected = _reference(ref_img, spec)
    np.testing.assert_allclose(preprocess_image(load_image(path), spec), expected, atol=1e-5, rtol=0)


def test_preprocess_paths_batches_and_skips(tmp_path):
    spec = PreprocessSpec(image_size=16)
    good = tmp_path / "a.png"
    _make_image(20, 30, "RGB").save(good)
    empty = tmp_path / "b.jpg"
    empty.write_bytes(b"")
    batch = preprocess_paths([good, empty, tmp_path / "missing.png"], spec)
    assert isinstance(batch, PreprocessedBatch)
    assert batch.pixels.shape == (1, 3, 16, 16) and batch.pixels.dtype == np.float32
    assert batch.paths == (good,)
    assert [p for p, _ in batch.skipped] == [empty, tmp_path / "missing.png"]
    assert "empty" in batch.skipped[0][1] and "not found" in batch.skipped[1][1]


def test_preprocess_paths_empty_gives_zero_batch():
    batch = preprocess_paths([], PreprocessSpec(image_size=8))
    assert batch.pixels.shape == (0, 3, 8, 8) and batch.pixels.dtype == np.float32


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    _make_image(64, 64, "RGB").save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.png", b"", "empty"),
        ("trunc.png", _truncated_png(), "truncated"),
        ("text.jpg", b"this is not a jpeg at all\n", "not a recognised image"),
    ],
)
def test_load_image_bad_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert info.value.path == path


def test_load_image_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_load_image_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _make_image(40, 40, "RGB").save(path)
    # 1600 pixels: above the limit (warning zone) but below twice it (Pillow would only warn).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_load_image_keeps_mode_and_closes_file(tmp_path):
    path = tmp_path / "p.png"
    _make_image(10, 10, "P").save(path)
    img = load_image(path)
    assert img.mode == "P" and img.size == (10, 10)
    os.remove(path)  # still usable: fully decoded in memory
    assert preprocess_image(img, PreprocessSpec(image_size=4)).shape == (3, 4, 4)


def test_list_images_nested_mixed_case_and_symlink_loop(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    files = ["x.JPG", "a/y.png", "a/b/z.WebP", "a/b/w.bmp", "a/b/v.jpeg"]
    for f in files:
        (tmp_path / f).write_bytes(b"not decoded by list_images")
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / "a" / "dir.png").mkdir()  # a directory with an image suffix is skipped
    os.symlink(tmp_path, tmp_path / "a" / "b" / "loop")  # points back up: a loop
    os.symlink(tmp_path / "gone.png", tmp_path / "broken.png")  # dangling link
    found = list_images(tmp_path)
    assert found == sorted(tmp_path / f for f in files)


def test_list_images_not_a_directory(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        list_images(tmp_path / "missing")


def test_extreme_aspect_ratios_are_refused_before_any_resize(tmp_path):
    """A 1 x 100000 PNG is 177 bytes; resized 'shortest' to 224 it would be 224 x 22.4 M
    pixels (15 GB). It is refused from its header, and a folder goes on without it."""
    from vs2_export.runtime.preprocess import MAX_ASPECT_RATIO, ImageError, resize_crop
    Image.new("L", (100_000, 1)).save(tmp_path / "sliver.png")
    Image.new("RGB", (30, 20), "red").save(tmp_path / "ok.png")
    spec = PreprocessSpec(image_size=224)
    batch = preprocess_paths([tmp_path / "sliver.png", tmp_path / "ok.png"], spec)
    assert [p.name for p in batch.paths] == ["ok.png"]
    assert "aspect ratio" in batch.skipped[0][1]
    with pytest.raises(ImageError, match="aspect ratio"):
        resize_crop(Image.new("L", (1, int(MAX_ASPECT_RATIO) + 1)), spec)
    resize_crop(Image.new("L", (1, int(MAX_ASPECT_RATIO))), PreprocessSpec(image_size=16))
    with pytest.raises(ImageError, match="too large"):  # S = 4096: the target is bounded too
        resize_crop(Image.new("L", (1, 100)), PreprocessSpec(image_size=4096))


def test_one_list_of_extensions(tmp_path):
    from vs2_export.runtime.preprocess import image_files, list_images
    Image.new("RGB", (8, 8)).save(tmp_path / "a.tiff")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.gif")
    assert [p.name for p in list_images(tmp_path)] == ["a.tiff"]
    files, skipped = image_files([tmp_path / "a.tiff", tmp_path / "b.gif", tmp_path])
    assert [p.name for p in files] == ["a.tiff", "a.tiff"]
    assert skipped[0][0].name == "b.gif" and "not one of" in skipped[0][1]
