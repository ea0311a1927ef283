"""Vs2Batch refuses what is not a decoded image (runtime/ray_batch.py): the callable is run
directly, no Ray start, so these take well under a second. A float image in [0, 1] or int
pixels out of 0..255 used to be cast to uint8 silently (wrong class, no error); odd shapes,
strings and None leaked numpy's ValueError/TypeError."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime import build_fake_model, save_model

from vs2_export.runtime import InputError
from vs2_export.runtime.ray_batch import Vs2Batch


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("ray") / "m", build_fake_model())


@pytest.fixture(scope="module")
def call(model):
    return Vs2Batch(model, outputs=("embedding", "logits"))


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize(("cell", "match"), [
    (_image().astype(np.float32) / 255, r"image\[0\]: expected uint8 .* float32 .* pass uint8"),
    (np.full((20, 30, 3), np.nan, np.float32), "float32"),
    (_image().astype(np.int32) + 300, "within 0..255, got int32 values from"),
    (_image().astype(np.int16) - 300, "within 0..255"),
    (np.zeros((2, 2, 3, 1), np.uint8), r"got uint8 \[2, 2, 3, 1\]"),
    (np.zeros((20, 30, 2), np.uint8), r"got uint8 \[20, 30, 2\]"),
    (np.zeros((20, 30, 3), bool), "got bool"),
    (np.zeros((0, 30, 3), np.uint8), "empty image"),
    (np.zeros((1, 500, 3), np.uint8), "aspect ratio"),
    ("abc", "got str"),
    (None, "got NoneType"),
])
def test_a_bad_cell_is_an_input_error_naming_it(call, cell, match):
    column = np.empty(1, dtype=object)
    column[0] = cell
    with pytest.raises(InputError, match=match):
        call({"image": column})


def test_a_bad_column_is_an_input_error(call, model):
    with pytest.raises(InputError, match="got str_"):
        call({"image": np.array(["abc"])})
    with pytest.raises(InputError, match="to hold images"):
        call({"image": 5})
    with pytest.raises(InputError, match=r"\[2, 2, 3, 1\]"):
        call({"image": np.zeros((1, 2, 2, 3, 1), np.uint8)})
    with pytest.raises(InputError, match="image_column"):
        Vs2Batch(model, image_column=None)


def test_an_empty_batch_gives_empty_columns(call):
    out = call({"image": np.zeros((0, 20, 30, 3), np.uint8), "id": np.zeros(0, np.int64)})
    assert out["embedding"].shape == (0, 4) and out["label"].shape == (0,)
    assert out["logits"].shape[0] == 0 and len(out["id"]) == 0


def test_decoded_images_of_every_mode_and_integer_type_pass(call):
    img = _image()
    want = call({"image": img[None]})["embedding"]
    same = call({"image": img[None].astype(np.int32)})["embedding"]
    np.testing.assert_array_equal(same, want)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    np.testing.assert_allclose(call({"image": [rgba]})["embedding"], want, atol=1e-6)
    assert call({"image": [img[..., 0]]})["embedding"].shape == (1, 4)  # gray [H, W]
