"""Ray Data batch inference (runtime/ray_batch.py) on a local Ray instance: `map_batches` with
the Vs2Batch actor gives what Vs2Session.embed gives on the same files (CI installs the [ray]
extra; elsewhere a missing one skips, tests/extras.py); the callable itself (Ray's batch format,
columns, errors) is tested everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from extras import import_extra
from test_runtime import build_fake_model, save_model

from vs2_export.demo.data import generate_unlabeled
from vs2_export.runtime import InputError, Vs2Session, list_images
from vs2_export.runtime.ray_batch import Vs2Batch


@pytest.fixture(scope="module")
def local_ray():
    ray = import_extra("ray", "ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_map_batches_equals_the_session(local_ray, tmp_path):
    ray = local_ray
    model = save_model(tmp_path / "m", build_fake_model())
    images = generate_unlabeled(tmp_path / "images", 6, seed=3)
    paths = [str(p) for p in list_images(images)]
    ds = ray.data.read_images(paths, include_paths=True, mode="RGB")
    rows = ds.map_batches(Vs2Batch, fn_constructor_kwargs={"model": str(model)}, batch_size=4,
                          concurrency=1, num_cpus=1).take_all()
    assert len(rows) == 6 and {"path", "embedding", "steered", "fvu"} <= set(rows[0])
    got = {r["path"]: r["embedding"] for r in rows}
    want = Vs2Session(model).embed(paths)
    for path, emb in zip(paths, want, strict=True):
        key = next(k for k in got if path.endswith(k) or k.endswith(path.lstrip("/")))
        np.testing.assert_allclose(got[key], emb, atol=1e-5)


def test_batch_callable_checks_its_columns(tmp_path):
    model = save_model(tmp_path / "m", build_fake_model())
    with pytest.raises(InputError, match="outputs"):
        Vs2Batch(model, outputs=("nope",))
    call = Vs2Batch(model, outputs=("embedding", "logits"))
    with pytest.raises(InputError, match="column 'image'"):
        call({"pixels": np.zeros((1, 8, 8, 3), np.uint8)})
    out = call({"image": np.zeros((2, 20, 30, 3), np.uint8), "id": np.array([7, 8])})
    assert out["embedding"].shape == (2, 4) and list(out["id"]) == [7, 8]
    assert out["label"].shape == (2,)
