"""VS2 steering math and gate (docs/method.md sections 3 and 4)."""

import numpy as np
import pytest
import torch

from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, SAEConfig
from vs2_export.sae import TopKSAE, save_sae
from vs2_export.steering import fvu_per_sample, load_steering, sae_fvu, steer
from vs2_export.store import ActivationStore


def scalar(x):
    return torch.tensor(float(x))


@pytest.fixture
def sae():
    torch.manual_seed(1)
    model = TopKSAE(SAEConfig(d=32, expansion=4, k=8))
    with torch.no_grad():
        model.b_pre.normal_()
        model.mu.normal_()
    return model.eval()


@torch.no_grad()
@pytest.mark.parametrize("gamma, lam", [(1.0, 2.1), (1.5, 0.0)])
def test_gamma_one_or_lambda_zero_is_a_no_op(sae, gamma, lam):
    h = torch.randn(6, 32)
    out = steer(h, sae, scalar(gamma), scalar(lam), scalar(1e9))
    assert out.steered.all()
    torch.testing.assert_close(out.h, h, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_steering_preserves_the_norm_and_moves_h(sae):
    h = torch.randn(6, 32) * 5
    out = steer(h, sae, scalar(1.5), scalar(2.1), scalar(1e9))
    torch.testing.assert_close(out.h.norm(dim=-1), h.norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert (out.h - h).abs().max() > 1e-2


@torch.no_grad()
def test_matches_the_closed_form(sae):
    """h + lam v = h + alpha (h - b_pre) + alpha eps(h), alpha = lam (gamma - 1) (section 3)."""
    h = torch.randn(4, 32)
    gamma, lam = 1.5, 2.1
    alpha = lam * (gamma - 1)
    moved = h + alpha * (h - sae.b_pre) + alpha * (sae(h) - h)
    expected = moved * h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True)
    out = steer(h, sae, scalar(gamma), scalar(lam), scalar(1e9))
    torch.testing.assert_close(out.h, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_gate_falls_back_to_plain_h_above_tau(sae):
    h = torch.randn(8, 32)
    fvu = fvu_per_sample(h, sae(h), sae.mu)
    tau = fvu.median()
    out = steer(h, sae, scalar(1.5), scalar(2.1), tau)
    assert torch.equal(out.steered, fvu <= tau)
    assert torch.equal(out.h[~out.steered], h[~out.steered])
    assert not torch.equal(out.h[out.steered], h[out.steered])
    torch.testing.assert_close(out.fvu, fvu)


def test_fvu_is_error_over_spread_around_mu():
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    h_tilde = torch.tensor([[1.0, 1.0], [3.0, 6.0]])
    mu = torch.tensor([0.0, 0.0])
    torch.testing.assert_close(fvu_per_sample(h, h_tilde, mu), torch.tensor([1 / 5, 4 / 25]))


def test_calibrate_tau_is_the_quantile_of_training_fvu(store, sae, tmp_path):
    big = TopKSAE(SAEConfig(d=32, expansion=4, k=8))
    checksum = save_sae(big, tmp_path / "sae")
    params = calibrate(CalibrateConfig(store, tmp_path / "sae", tmp_path / "s.json", quantile=0.9,
                                       gate="fvu"))
    fvu = sae_fvu(big.eval(), ActivationStore(store))
    assert params.tau == pytest.approx(float(np.quantile(fvu, 0.9)))
    assert params.sae_sha256 == checksum and params.n_samples == 2048
    assert load_steering(tmp_path / "s.json") == params
