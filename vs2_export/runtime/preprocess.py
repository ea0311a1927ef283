"""THE preprocessing: decode, RGB, resize, crop, normalise. Used by apps and by extraction.

It reproduces open_clip's eval transform (open_clip.transform.image_transform, is_train=False)
with PIL and numpy only, so the pixels an app feeds the graph are the pixels training saw.
The PIL calls are the very ones torchvision makes on PIL images (Image.resize, Image.crop,
ImageOps.expand), in the same order; open_clip 3.3 converts to RGB AFTER resize and crop
(MaybeConvertMode), so a palette or RGBA image is resized in its own mode first, as here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
"""THE list of image file extensions (any case): folders are searched for these, and a file
named one by one must carry one of them too, so extract, verify, eval and classify agree."""
MAX_ASPECT_RATIO = 100.0
"""Long side / short side beyond this is refused before decoding: 'shortest' resizing upsamples
the long side to S x ratio, so a 1 x 10^6 sliver (a few hundred bytes as PNG) would ask for a
224 x 224-million image. No photo is that narrow; a 100:1 banner still passes."""
MAX_RESIZE_PIXELS = 1 << 25
"""Pixels of the resize target (before the crop) at most (32 M, about 100 MB of RGB): bounds
memory for every image size S and mode, checked before any resize."""

MIN_STD = 1e-3
"""The smallest normalisation std accepted: real models use 0.2-0.5."""

# torchvision's pil_modes_mapping for the two interpolations open_clip uses at eval time.
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageError(ValueError):
    """An image file that cannot be used: missing, unreadable, corrupt, too large."""

    def __init__(self, message: str, *, path: Path | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        """The offending file, when there is one."""
        self.reason = reason if reason is not None else message
        """The short reason without the path (what batch reports list)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """open_clip's eval preprocessing, as data (it travels in the exported model's metadata)."""

    image_size: int
    """Side S of the square input [3, S, S]."""
    mean: tuple[float, float, float] = OPENAI_MEAN
    """Per-channel mean subtracted after scaling to [0, 1]."""
    std: tuple[float, float, float] = OPENAI_STD
    """Per-channel std divided by after the mean."""
    interpolation: str = "bicubic"
    """'bicubic' or 'bilinear' (PIL resampling, antialiased like torchvision on PIL images)."""
    resize_mode: str = "shortest"
    """'shortest' (resize short side, centre crop), 'longest' (fit, pad) or 'squash'."""
    fill_color: int = 0
    """Padding value for resize_mode 'longest'."""

    def __post_init__(self) -> None:
        for key in ("mean", "std"):  # checked before float(): 10**400 overflows it
            values = getattr(self, key)
            if not (isinstance(values, (list, tuple)) and all(is_finite_number(v) for v in values)):
                raise ValueError(f"{key}: expected 3 finite numbers, got {_shown(values)}")
            object.__setattr__(self, key, tuple(float(v) for v in values))
        if not (is_int(self.image_size) and 1 <= self.image_size <= 4096):
            raise ValueError(f"image_size: expected an int in [1, 4096], got {self.image_size!r}")
        if len(self.mean) != 3 or not all(0.0 <= m <= 1.0 for m in self.mean):
            raise ValueError(f"mean: expected 3 values in [0, 1], got {self.mean!r}")
        # pixel / std: below MIN_STD a [0, 1] pixel leaves float32's useful range (CLIP's ~0.27).
        if len(self.std) != 3 or not all(MIN_STD <= s <= 10.0 for s in self.std):
            raise ValueError(f"std: expected 3 values in [{MIN_STD:g}, 10], got {self.std!r}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation: expected bicubic or bilinear, got {self.interpolation!r}")
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"resize_mode: expected shortest, longest or squash, got {self.resize_mode!r}")
        if not (is_int(self.fill_color) and 0 <= self.fill_color <= 255):
            raise ValueError(f"fill_color: expected an int in [0, 255], got {self.fill_color!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def is_int(value: object) -> bool:
    """An int that is not a bool (JSON true would otherwise read as image_size 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """A real number that is finite as a float: JSON's 400-digit integers overflow math.isfinite
    (OverflowError), which must read as 'not finite', not crash the parse. Here, below the
    manifest that also uses it, because the manifest imports PreprocessSpec."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


@dataclass(frozen=True)
class PreprocessedBatch:
    """What preprocess_paths returns: the pixels of the usable files and why the others failed."""

    pixels: np.ndarray
    """float32 [B, 3, S, S], or uint8 [B, S, S, 3] from preprocess_paths(uint8=True);
    B = len(paths) (may be 0)."""
    paths: tuple[Path, ...]
    """The files behind pixels, in order."""
    skipped: tuple[tuple[Path, str], ...]
    """(path, short reason) for each file that could not be used."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files under folder, recursively, sorted; extensions in IMAGE_EXTENSIONS, any case.

    Symlinked directories are followed once each (by real path), so a symlink loop ends.
    Broken links and non-regular files are skipped.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"{root}: expected a directory of images, got none there", path=root,
                         reason="not a directory")
    found: list[Path] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a loop, or a second link to a folder already listed
            dirnames[:] = []
            continue
        visited.add(real)
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                found.append(path)
    return sorted(found)


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode one image file, in its own mode (conversion happens after resize).

    No EXIF transpose: open_clip does not apply one, and the pixels must match its pixels.
    Raises ImageError("{path}: {reason}") for a missing, empty, corrupt, truncated, non-image
    or decompression-bomb file.
    """
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise _image_error(path, "empty file (0 bytes)")
        if path.exists() and not path.is_file() and not path.is_dir():
            # Opening a FIFO blocks until a writer comes: refuse it (and sockets, devices) unread.
            raise _image_error(path, "not a regular file (a FIFO, socket or device)")
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                check_dimensions(opened.width, opened.height)  # header only: nothing decoded yet
                opened.load()
                # copy(): a plain in-memory image, no file handle left open (multi-frame files).
                return opened.copy()
    except ImageError as exc:
        if exc.path is None:  # check_dimensions does not know the file: name it here
            raise _image_error(path, exc.reason) from None
        raise
    except FileNotFoundError:
        raise _image_error(path, "file not found") from None
    except IsADirectoryError:
        raise _image_error(path, "is a directory, expected an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _image_error(path, f"too large (decompression bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise _image_error(path, "not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001  Pillow plugins raise OSError, SyntaxError, struct.error...
        raise _image_error(path, f"corrupt or truncated ({type(exc).__name__}: {exc})") from None


def preprocess_image(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """One PIL image (any mode) -> float32 [3, S, S], exactly as open_clip's eval transform."""
    return normalise(resize_crop(img, spec), spec)


def resize_crop(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """One PIL image (any mode) -> uint8 RGB [S, S, 3]: resize, crop or pad, convert; everything
    before normalisation (what a uint8-input graph takes, docs/design.md graph contract)."""
    resample = _RESAMPLE[spec.interpolation]
    s = spec.image_size
    check_dimensions(img.width, img.height)  # PIL images from apps never went through load_image
    target = {"shortest": _shortest_edge_size, "longest": _keep_ratio_size}.get(
        spec.resize_mode, lambda h, w, s: (s, s))(img.height, img.width, s)
    if target[0] * target[1] > MAX_RESIZE_PIXELS:
        reason = (f"resize target too large: {img.width} x {img.height} would become "
                  f"{target[1]} x {target[0]} before cropping (limit {MAX_RESIZE_PIXELS} pixels)")
        raise ImageError(reason, reason=reason)
    try:
        if spec.resize_mode == "shortest":
            img = _resize(img, target, resample)
            img = _center_crop_or_pad(img, s, fill=0)  # torchvision CenterCrop pads with 0
        elif spec.resize_mode == "longest":
            img = _resize(img, target, resample)
            img = _center_crop_or_pad(img, s, fill=spec.fill_color)
        else:  # squash
            img = _resize(img, (s, s), resample)
        img = img.convert("RGB")  # MaybeConvertMode: after resize and crop, as open_clip 3.3
    except (ValueError, OSError) as exc:  # e.g. a mode Pillow cannot resize or convert
        raise ImageError(f"cannot preprocess a {img.mode} image: {exc}") from None
    return np.asarray(img, dtype=np.uint8)


def check_dimensions(width: int, height: int) -> None:
    """Refuse sizes no photo has, before anything is decoded or resized: an empty side, more
    pixels than Pillow's decompression-bomb limit, or an aspect ratio over MAX_ASPECT_RATIO."""
    if width < 1 or height < 1:
        raise ImageError(f"image of {width} x {height} pixels", reason=f"empty image ({width} x {height})")
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        reason = f"too large: {width} x {height} pixels (decompression bomb guard, limit {limit})"
        raise ImageError(reason, reason=reason)
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        reason = (f"extreme aspect ratio {width} x {height} ({ratio:.0f}:1, limit "
                  f"{MAX_ASPECT_RATIO:.0f}:1)")
        raise ImageError(reason, reason=reason)


def image_files(items: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Command-line arguments -> (image files, skipped [(path, reason)]): folders expand to the
    images under them (list_images), files are kept when their extension is in
    IMAGE_EXTENSIONS (load_image says later whether they decode)."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in map(Path, items):
        if item.is_dir():
            files.extend(list_images(item))
        elif item.suffix.lower() in IMAGE_EXTENSIONS or not item.exists():
            files.append(item)  # a missing file gets load_image's 'file not found'
        else:
            skipped.append((item, f"extension {item.suffix or '(none)'!r} is not one of "
                                  f"{sorted(IMAGE_EXTENSIONS)}"))
    return files, skipped


def normalise(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 RGB [S, S, 3] -> float32 [3, S, S], or a batch [B, S, S, 3] -> [B, 3, S, S]:
    ToTensor (/255 in float32) then Normalize, the arithmetic open_clip does."""
    channels_first = np.moveaxis(np.asarray(pixels, dtype=np.uint8), -1, -3)
    scaled = channels_first.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)


def preprocess_paths(paths: Iterable[str | Path], spec: PreprocessSpec, *,
                     uint8: bool = False) -> PreprocessedBatch:
    """Load and preprocess files; unusable ones are listed in .skipped instead of raising.

    Returns pixels float32 [B, 3, S, S] for the B usable files (B may be 0), or with uint8=True
    the resized, cropped RGB pixels uint8 [B, S, S, 3] (not normalised).
    """
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        try:
            image = load_image(path)
            arrays.append(resize_crop(image, spec) if uint8 else preprocess_image(image, spec))
            kept.append(path)
        except ImageError as exc:
            skipped.append((path, exc.reason))
    s = spec.image_size
    empty = np.zeros((0, s, s, 3), np.uint8) if uint8 else np.zeros((0, 3, s, s), np.float32)
    pixels = np.stack(arrays) if arrays else empty
    return PreprocessedBatch(pixels=pixels, paths=tuple(kept), skipped=tuple(skipped))


def _image_error(path: Path, reason: str) -> ImageError:
    return ImageError(f"{path}: {reason}", path=path, reason=reason)


def _shortest_edge_size(h: int, w: int, s: int) -> tuple[int, int]:
    """torchvision Resize(int) on (h, w): short side -> s, long side truncated (int(), not round)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = s, int(s * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def _keep_ratio_size(h: int, w: int, s: int) -> tuple[int, int]:
    """open_clip ResizeKeepRatio(longest=1): fit the long side to s, Python round() (half-even).

    max(1, .) is ours: open_clip would ask Pillow for a 0-pixel side on a sliver image and crash.
    """
    ratio = max(h / s, w / s)
    return max(1, round(h * 1.0 / ratio)), max(1, round(w * 1.0 / ratio))


def _resize(img: Image.Image, size_hw: tuple[int, int], resample: int) -> Image.Image:
    """torchvision F.resize on PIL: no-op when the size already matches (no resampling blur)."""
    if (img.height, img.width) == tuple(size_hw):
        return img
    return img.resize((size_hw[1], size_hw[0]), resample)


def _center_crop_or_pad(img: Image.Image, s: int, fill: int) -> Image.Image:
    """open_clip center_crop_or_pad / torchvision center_crop on PIL, for an s x s output."""
    if s > img.width or s > img.height:
        pad_w, pad_h = max(s - img.width, 0), max(s - img.height, 0)
        ltrb = (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2)
        img = _pad(img, ltrb, fill)
        if img.width == s and img.height == s:
            return img
    top = int(round((img.height - s) / 2.0))
    left = int(round((img.width - s) / 2.0))
    return img.crop((left, top, left + s, top + s))


def _pad(img: Image.Image, ltrb: Sequence[int], fill: int) -> Image.Image:
    """torchvision _functional_pil.pad, constant mode: fill per band, palette kept for 'P'."""
    bands = len(img.getbands())
    fill_value: int | tuple[int, ...] = tuple([fill] * bands) if bands > 1 else fill
    if img.mode == "P":
        palette = img.getpalette()
        out = ImageOps.expand(img, border=tuple(ltrb), fill=fill_value)
        out.putpalette(palette)
        return out
    return ImageOps.expand(img, border=tuple(ltrb), fill=fill_value)
