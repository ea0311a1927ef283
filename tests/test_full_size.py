"""Full-size ViT-B-32 (random weights: the architecture fixes speed and numerics): export, parity,
and a tampered graph that parity must reject."""

import shutil

import pytest
from pipeline import build_export, noise_images, tamper_one_weight

from vs2_export.config import ModelSpec, VerifyConfig
from vs2_export.errors import CheckFailed
from vs2_export.runtime.session import Vs2Session
from vs2_export.verify import verify

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def vit_b32(module_tmp):
    work = module_tmp.mktemp("vitb32")
    images = noise_images(work / "images", 24, size=224)
    exported = build_export(work, ModelSpec("ViT-B-32", "none"), images, ["cat", "dog", "car"],
                            k=64, epochs=2)
    return work, images, exported


def test_vit_b32_graph_contract(vit_b32):
    _, _, exported = vit_b32
    session = Vs2Session(exported)
    m = session.manifest
    assert (m.model.width, m.model.embed_dim, m.sae.n, m.sae.k) == (768, 512, 3072, 64)
    assert m.preprocess.image_size == 224
    import numpy as np
    out = session.run(np.zeros((3, 3, 224, 224), np.float32))
    assert out["embedding"].shape == (3, 512) and out["logits"].shape == (3, 3)
    assert out["latent_indices"].shape == (3, 64) and out["steered"].dtype == np.bool_


def test_vit_b32_parity_passes(vit_b32):
    work, images, exported = vit_b32
    report = verify(VerifyConfig(exported, work, images, batch_size=8))
    assert report.verdict == "PASS"
    cosine = {c.name: c.value for c in report.checks}["embedding.cosine_min"]
    assert cosine >= 0.99999


def test_vit_b32_tampered_weight_fails_parity(vit_b32, tmp_path):
    work, images, exported = vit_b32
    copy = tmp_path / "tampered"
    shutil.copytree(exported, copy)
    tamper_one_weight(copy / "model.onnx", "conv1")
    with pytest.raises(CheckFailed, match="parity FAIL"):
        verify(VerifyConfig(copy, work / "exports" / "exported.json", images, batch_size=8))
