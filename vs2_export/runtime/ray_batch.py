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
        self.image_column, self.outputs = image_column, tuple(outputs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{image_column: [B] or [B, H, W, 3] uint8 images, ...} -> the other columns plus one
        column per output ([B, ...] numpy arrays)."""
        if self.image_column not in batch:
            raise InputError(f"batch: expected a column {self.image_column!r}, got {sorted(batch)}")
        images = [Image.fromarray(np.asarray(a, dtype=np.uint8)).convert("RGB")
                  for a in batch[self.image_column]]
        pixels = [self.session.preprocess(img) for img in images]
        # An image_rgb graph takes the decoded images as they are (sizes differ): a list.
        result = self.session.run(pixels if self.session.manifest.pixel_input == contract.IMAGE_RGB
                                  else np.stack(pixels))
        out = {k: v for k, v in batch.items() if k != self.image_column}
        out.update({name: result[name] for name in self.outputs})
        if contract.LOGITS in self.outputs and self.session.manifest.classes:
            classes = np.array(self.session.manifest.classes)
            out["label"] = classes[result[contract.LOGITS].argmax(-1)]
        return out
