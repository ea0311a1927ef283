"""SAE training: it learns, it is reproducible, its recipe pieces do what docs/method.md says."""

import json

import pytest
import torch

from vs2_export.config import SAEConfig, TrainConfig
from vs2_export.errors import Vs2Error
from vs2_export.sae import TopKSAE, load_sae
from vs2_export.train import train_sae
from vs2_export.train.recipe import aux_k_loss, geometric_median, lr_factor
from vs2_export.train.sparse import select_pre, sparse_decode

pytestmark = pytest.mark.usefixtures("one_thread")



def config(store, out, **kw):
    return TrainConfig(store, out, expansion=4, k=8, batch_size=256, epochs=kw.pop("epochs", 40),
                       **kw)


def test_training_reconstructs_and_reports(store, tmp_path):
    report = train_sae(config(store, tmp_path / "sae"))
    assert report.fvu < 0.15, report.fvu
    assert report.curve[0]["fvu"] > report.fvu
    assert 0 < report.l0 <= 8
    assert 0 <= report.dead_frac < 1
    # one definition: the last curve record and the report agree
    assert report.dead_frac == report.curve[-1]["dead_frac"]
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
    residual = (h - sae(h)).detach()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:10] = True
    pre = sae.pre_activations(h).masked_fill(~dead, 0.0)
    values, indices = pre.topk(8, dim=-1)
    values = values.detach().requires_grad_()
    loss = aux_k_loss(sae, values, indices, residual, torch.tensor(1.0))
    loss.backward()
    assert loss > 0
    assert sae.W_dec.grad[10:].abs().sum() == 0 and sae.W_dec.grad[:10].abs().sum() > 0


def test_learning_rate_rule():
    cfg = TrainConfig("a", "b")
    assert cfg.learning_rate(2**14) == pytest.approx(2e-4)
    assert cfg.learning_rate(3072) == pytest.approx(2e-4 / (3072 / 2**14) ** 0.5)


def test_schedule_warms_up_holds_then_decays():
    cfg = TrainConfig("a", "b", warmup_frac=0.1, decay_frac=0.5)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(x == 1.0 for x in f[10:50])
    assert f[50] == 1.0 and f[75] == pytest.approx(0.5) and f[99] == pytest.approx(0.02)


def test_geometric_median_ignores_outliers_the_mean_follows():
    x = torch.zeros(100, 4)
    x[:10] = 1000.0
    assert geometric_median(x).abs().max() < 1e-3
    assert x.mean(0).min() == 100.0


def test_sparse_kernels_give_the_dense_autograd_gradients():
    """sparse.py's encoder/decoder backward == autograd through ReLU, topk and a dense decode."""
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d=16, expansion=3, k=5))
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.b_enc.normal_()
    h = torch.randn(20, 16)
    params = [sae.W_enc, sae.b_enc, sae.b_pre, sae.W_dec]
    values, indices = sae.encode(h)
    dense = torch.zeros(20, sae.cfg.n).scatter(1, indices, values)
    ((dense @ sae.W_dec + sae.b_pre - h).pow(2).sum()).backward()
    expected = [p.grad.clone() for p in params]
    sae.zero_grad()
    x = h - sae.b_pre.detach()
    with torch.no_grad():
        pre_v, idx = sae.pre_activations(h).topk(5, dim=-1)
    v = select_pre(sae.W_enc, sae.b_enc, sae.b_pre, x, idx, pre_v)
    ((sparse_decode(v, idx, sae.W_dec) + sae.b_pre - h).pow(2).sum()).backward()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-4)


def test_recipe_switches_apply_and_are_recorded(store, tmp_path):
    train_sae(config(store, tmp_path / "a", epochs=1, b_pre_init="mean", tied_init=False,
                     aux_coef=0.0, grad_clip=0.0))
    train_sae(config(store, tmp_path / "b", epochs=1))
    recorded = json.loads((tmp_path / "a" / "cfg.json").read_text())["train"]["config"]
    assert recorded["b_pre_init"] == "mean" and recorded["tied_init"] is False
    assert recorded["aux_coef"] == 0.0 and recorded["grad_clip"] == 0.0
    a, b = load_sae(tmp_path / "a")[0], load_sae(tmp_path / "b")[0]
    assert not torch.allclose(a.b_pre, b.b_pre)        # mean vs geometric median, then 1 epoch
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert {"fvu", "fvu_p50", "fvu_p90", "l0", "dead_frac", "dense_frac", "aux",
            "acts_per_s"} <= set(records[-1])
    assert (tmp_path / "b" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "b" / "checkpoint").exists()
