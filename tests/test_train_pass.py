"""PASS (docs/method.md section 6): with folder-per-class labels, codes of a class move together."""

import numpy as np
import pytest
import torch

from vs2_export.config import TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import load_sae
from vs2_export.store import store_array
from vs2_export.train import train_sae

pytestmark = pytest.mark.usefixtures("one_thread")


def labeled_store(folder):
    """4 classes, each a random sparse mix of shared atoms plus a weak class direction."""
    rng = np.random.default_rng(0)
    atoms, centres = rng.standard_normal((32, 32)), rng.standard_normal((4, 32))
    y = np.repeat(np.arange(4), 256)
    codes = rng.random((1024, 32)) * (rng.random((1024, 32)) < 0.2)
    h = (codes @ atoms + 0.7 * centres[y] + 3.0).astype(np.float32)
    images = [f"class{c}/img{i:04d}.png" for i, c in enumerate(y)]
    return store_array(folder, h, "test-model", "none", shard_size=300, images=images), y


def within_class_share(sae, h, y):
    """sum_i ||c_i - mean code of class(i)||^2 / sum_i ||c_i - mean code||^2 (dense codes)."""
    with torch.no_grad():
        values, indices = sae.encode(torch.from_numpy(h))
    c = torch.zeros(len(h), sae.cfg.n).scatter(1, indices, values).double()
    within = sum(((c[y == k] - c[y == k].mean(0)) ** 2).sum() for k in np.unique(y))
    return float(within / ((c - c.mean(0)) ** 2).sum())


def test_pass_loss_pulls_codes_to_their_class_prototype(tmp_path):
    store, y = labeled_store(tmp_path / "acts")
    h = np.concatenate([np.load(p) for p in sorted(store.glob("shard-*.npy"))])
    share = {}
    for coef in (0.0, 0.8):
        out = tmp_path / f"sae{coef}"
        report = train_sae(TrainConfig(store, out, expansion=2, k=8, batch_size=128, epochs=15,
                                       labels=True, pass_coef=coef))
        assert list(report.classes) == ["class0", "class1", "class2", "class3"]
        share[coef] = within_class_share(load_sae(out)[0], h, y)
    assert share[0.8] < share[0.0] - 0.05, share      # measured: 0.81 vs 0.90


def test_labels_need_a_store_that_records_class_folders(store, tmp_path):
    with pytest.raises(Vs2Error, match="record its images"):
        train_sae(TrainConfig(store, tmp_path / "sae", k=8, epochs=1, labels=True))
