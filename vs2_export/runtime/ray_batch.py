"""Batch inference at scale with Ray Data: a callable class for `Dataset.map_batches`.

    import ray
    from vs2_export.runtime.ray_batch import Vs2Batch
    ds = ray.data.read_images("s3://bucket/images/", include_paths=True, mode="RGB")
    out = ds.map_batches(Vs2Batch, fn_constructor_kwargs={"model": "exported/NAME"},
                         batch_size=64, concurrency=4, num_cpus=2)
    out.write_parquet("embeddings/")

Each Ray actor builds ONE Vs2Session (the model is loaded once per actor, not per batch) and
maps batches (dict of numpy columns, Ray's default batch format) to rows of outputs. Images come
in as a column of decoded HxWx3 uint8 arrays (`read_images`) and go through THE preprocessing
(runtime/preprocess.py), so results equal `Vs2Session.embed` on the same files. Torch-free, like
the rest of runtime/: workers need numpy, pillow, onnxruntime (or openvino) and ray only
(`pip install 'vs2-export[cpu,ray]'`). Ray itself is imported by the caller, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import contract
from .preprocess import ImageError, check_dimensions
from .session import InputError, Vs2Session

DEFAULT_OUTPUTS = (contract.EMBEDDING, contract.STEERED, contract.FVU)
"""Columns written by default: the steered embedding, the gate decision and its FVU."""


class Vs2Batch:
    """Callable for `ds.map_batches(Vs2Batch, fn_constructor_kwargs={...})`.

    model: export folder or one .onnx file in it; provider / threads: as Vs2Session
    (threads=1 with one actor per core is what Ray schedules best); image_column: the column of
    decoded images ([H, W, 3] uint8, any size); outputs: graph outputs to return as columns
    (logits adds `label`, the top-1 class name, when the model has classes). Other input
    columns (e.g. `path`) are passed through.
    """

    def __init__(self, model: str | Path, *, provider: str = "cpu", threads: int | None = 1,
                 image_column: str = "image", outputs: tuple[str, ...] = DEFAULT_OUTPUTS):
        self.session = Vs2Session(model, provider=provider, threads=threads)
        missing = sorted(set(outputs) - set(self.session.manifest.outputs))
        if missing:
            raise InputError(f"outputs: expected names among {list(self.session.manifest.outputs)}, "
                             f"got {missing}")
        if not isinstance(image_column, str):
            raise InputError(f"image_column: expected a column name (str), got {image_column!r:.80}")
        self.image_column, self.outputs = image_column, tuple(outputs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{image_column: [B] or [B, H, W, 3] uint8 images, ...} -> the other columns plus one
        column per output ([B, ...] numpy arrays)."""
        if self.image_column not in batch:
            raise InputError(f"batch: expected a column {self.image_column!r}, got {sorted(batch)}")
        column = batch[self.image_column]
        if not isinstance(column, (np.ndarray, list, tuple)) or getattr(column, "ndim", 1) == 0:
            raise InputError(f"batch: expected column {self.image_column!r} to hold images, got "
                             f"{type(column).__name__}")
        if not len(column):  # Ray may hand an actor an empty block: empty columns, not an error
            return self._columns(batch, self.session.run_paths([]).outputs)
        pixels = [self._pixels(item, f"{self.image_column}[{row}]") for row, item in enumerate(column)]
        # An image_rgb graph takes the decoded images as they are (sizes differ): a list.
        result = self.session.run(pixels if self.session.manifest.pixel_input == contract.IMAGE_RGB
                                  else np.stack(pixels))
        return self._columns(batch, result)

    def _pixels(self, item: object, where: str) -> np.ndarray:
        """One cell -> what run() takes for it; a bad image is an InputError naming the cell."""
        try:
            return self.session.preprocess(_image(item, where))
        except ImageError as exc:  # size limits (check_dimensions, the resize bound)
            raise InputError(f"{where}: {exc.reason}") from None

    def _columns(self, batch: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's other columns plus the chosen outputs (and `label` with logits)."""
        out = {k: v for k, v in batch.items() if k != self.image_column}
        out.update({name: result[name] for name in self.outputs})
        if contract.LOGITS in self.outputs and self.session.manifest.classes:
            classes = np.array(self.session.manifest.classes)
            out["label"] = classes[result[contract.LOGITS].argmax(-1)]
        return out


def _image(item: object, where: str) -> Image.Image:
    """One cell of the image column -> an RGB PIL image, or InputError naming the cell. Only
    what a decoder gives is taken: [H, W] gray, [H, W, 3] RGB or [H, W, 4] RGBA, uint8 or
    integers within 0..255. Nothing is cast: a float image in [0, 1] cast to uint8 is all 0/1
    pixels (a wrong class, no error) and an int 300 wraps to 44."""
    if not isinstance(item, np.ndarray):
        raise InputError(f"{where}: expected a decoded image (numpy uint8 [H, W, 3]), got "
                         f"{type(item).__name__}")
    shape = list(item.shape)
    if not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
        raise InputError(f"{where}: expected an image uint8 [H, W, 3], [H, W, 4] or [H, W], "
                         f"got {item.dtype} {shape}")
    if item.dtype.kind == "f":
        raise InputError(f"{where}: expected uint8 pixels 0..255, got {item.dtype} {shape}; pass "
                         "uint8 (a float image in [0, 1]: (x * 255).round().astype(np.uint8))")
    if item.dtype.kind not in "ui":
        raise InputError(f"{where}: expected uint8 pixels 0..255, got {item.dtype} {shape}")
    check_dimensions(item.shape[1], item.shape[0])  # the limits every decoded file meets
    if item.dtype != np.uint8 and (item.min() < 0 or item.max() > 255):
        raise InputError(f"{where}: expected pixels within 0..255, got {item.dtype} values from "
                         f"{item.min()} to {item.max()}")
    return Image.fromarray(item.astype(np.uint8, copy=False)).convert("RGB")
