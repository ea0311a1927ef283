"""The activation store: resumable / appendable extraction that records its images, and the
shard-then-buffer shuffle order."""

import json
import shutil

import numpy as np
import pytest
from pipeline import noise_images

from vs2_export.config import ExtractConfig, ModelSpec
from vs2_export.errors import Vs2Error
from vs2_export.extract import extract
from vs2_export.store import ActivationStore, epoch_order

DEMO = ModelSpec()


def by_image(folder):
    store = ActivationStore(folder)
    return dict(zip(store.images, store.take(np.arange(len(store))), strict=True))


@pytest.fixture(scope="module")
def full(module_tmp):
    """10 images extracted in one go (the reference)."""
    root = module_tmp.mktemp("ext")
    images = noise_images(root / "images", 10, size=48)
    extract(ExtractConfig(images, root / "full", DEMO, batch_size=4, shard_size=3))
    return root, images


def test_extraction_records_its_images_per_shard(full):
    root, _ = full
    meta = json.loads((root / "full" / "meta.json").read_text())
    assert meta["count"] == 10 and len(meta["images"]) == 10
    assert meta["images"] == sorted(meta["images"])
    sidecars = sorted((root / "full").glob("shard-*.npy.json"))
    assert [len(json.loads(s.read_text())["images"]) for s in sidecars] == [3, 3, 3, 1]


def test_append_extracts_only_new_images(full, tmp_path):
    root, images = full
    part = tmp_path / "images"
    part.mkdir()
    for p in sorted(images.glob("*.png"))[:6]:
        shutil.copy(p, part)
    extract(ExtractConfig(part, tmp_path / "acts", DEMO, batch_size=4, shard_size=3))
    for p in sorted(images.glob("*.png"))[6:]:
        shutil.copy(p, part)
    report = extract(ExtractConfig(part, tmp_path / "acts", DEMO, batch_size=4, shard_size=3,
                                   append=True))
    assert report.count == 10
    got, want = by_image(tmp_path / "acts"), by_image(root / "full")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_interrupted_extraction_resumes_with_append(full, tmp_path):
    root, images = full
    shutil.copytree(root / "full", tmp_path / "acts")
    (tmp_path / "acts" / "meta.json").unlink()                 # killed before meta.json ...
    for f in sorted((tmp_path / "acts").glob("shard-*"))[-3:]:  # ... and before the last shards
        f.unlink()
    with pytest.raises(Vs2Error, match="--append"):
        extract(ExtractConfig(images, tmp_path / "acts", DEMO, batch_size=4, shard_size=3))
    extract(ExtractConfig(images, tmp_path / "acts", DEMO, batch_size=4, shard_size=3, append=True))
    got, want = by_image(tmp_path / "acts"), by_image(root / "full")
    assert sorted(got) == sorted(want)


def test_append_refuses_another_model(full, tmp_path):
    root, images = full
    shutil.copytree(root / "full", tmp_path / "acts")
    with pytest.raises(Vs2Error, match="holds activations of"):
        extract(ExtractConfig(images, tmp_path / "acts", ModelSpec("ViT-B-32", "none"),
                              append=True))


def test_epoch_order_is_a_seeded_permutation_local_to_few_shards():
    counts = [100] * 20
    a, b = epoch_order(counts, 0, 0, 150), epoch_order(counts, 0, 0, 150)
    assert np.array_equal(a, b) and np.array_equal(np.sort(a), np.arange(2000))
    assert not np.array_equal(a, epoch_order(counts, 0, 1, 150))
    assert not np.array_equal(a, epoch_order(counts, 1, 0, 150))
    shards_per_batch = [len(np.unique(a[i:i + 64] // 100)) for i in range(0, 2000, 64)]
    assert max(shards_per_batch) <= 4                          # a window spans <= 3 shards + 1
