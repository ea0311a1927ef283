"""SAE training: it learns, it is reproducible, its recipe pieces do what METHOD.md says."""

import pytest
import torch

from vs2_export.config import SAEConfig, TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import TopKSAE, load_sae
from vs2_export.train import aux_k_loss, train_sae


def config(store, out, **kw):
    return TrainConfig(store, out, expansion=4, k=8, batch_size=256, epochs=kw.pop("epochs", 40),
                       **kw)


def test_training_reconstructs_and_reports(store, tmp_path):
    report = train_sae(config(store, tmp_path / "sae"))
    assert report["fvu"] < 0.15, report["fvu"]
    assert report["curve"][0]["fvu"] > report["fvu"]
    assert 0 < report["l0"] <= 8
    assert 0 <= report["dead_frac"] < 1
    sae, _ = load_sae(tmp_path / "sae")
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(sae.cfg.n))
    assert (tmp_path / "sae" / "train_report.json").is_file()


def test_same_seed_gives_the_same_weights(store, tmp_path):
    train_sae(config(store, tmp_path / "a", epochs=2))
    train_sae(config(store, tmp_path / "b", epochs=2))
    train_sae(config(store, tmp_path / "c", epochs=2, seed=1))
    a, b, c = (load_sae(tmp_path / x)[0].state_dict() for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["W_enc"], c["W_enc"])


def test_existing_output_needs_force(store, tmp_path):
    train_sae(config(store, tmp_path / "sae", epochs=1))
    with pytest.raises(Vs2Error, match="--force"):
        train_sae(config(store, tmp_path / "sae", epochs=1))
    train_sae(config(store, tmp_path / "sae", epochs=1, force=True))


def test_aux_k_loss_uses_only_dead_latents():
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d=16, expansion=2, k=4))
    h = torch.randn(32, 16)
    pre = sae.pre_activations(h)
    residual = (h - sae(h)).detach()
    none_dead = torch.zeros(32, dtype=torch.bool)
    assert aux_k_loss(sae, pre, residual, none_dead, 8) == 0
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:10] = True
    loss = aux_k_loss(sae, pre, residual, dead, 8)
    loss.backward()
    assert loss > 0
    assert sae.W_dec.grad[10:].abs().sum() == 0 and sae.W_dec.grad[:10].abs().sum() > 0


def test_learning_rate_rule():
    cfg = TrainConfig("a", "b")
    assert cfg.learning_rate(2**14) == pytest.approx(2e-4)
    assert cfg.learning_rate(3072) == pytest.approx(2e-4 / (3072 / 2**14) ** 0.5)
