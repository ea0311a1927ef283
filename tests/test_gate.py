"""The reliability gate's criteria, their calibration, the manifest's record of them and the
runtime's GateMonitor (docs/method.md section 4; issue 12)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from test_runtime import manifest_dict

from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, SAEConfig
from vs2_export.errors import Vs2Error
from vs2_export.runtime import GateMonitor, Manifest, ManifestError, contract
from vs2_export.sae import TopKSAE, save_sae
from vs2_export.steering import fvu_per_sample, gate_score, load_steering, sae_scores, steer
from vs2_export.store import ActivationStore


def test_criteria_are_the_documented_ratios():
    h = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    h_tilde = torch.tensor([[3.0, 3.0], [1.0, 2.0]])
    mu = torch.tensor([0.0, 2.0])
    err = torch.tensor([1.0, 4.0])
    torch.testing.assert_close(gate_score("err", h, h_tilde, mu), err)
    torch.testing.assert_close(gate_score("rel_err", h, h_tilde, mu), err / torch.tensor([25.0, 1.0]))
    torch.testing.assert_close(gate_score("fvu", h, h_tilde, mu), fvu_per_sample(h, h_tilde, mu))
    with pytest.raises(Vs2Error, match="gate: expected one of"):
        gate_score("entropy", h, h_tilde, mu)


@torch.no_grad()
def test_far_inputs_pass_fvu_but_not_rel_err():
    """FVU divides by ||h - mu||^2: scaling an input away from mu shrinks its FVU."""
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d=16, expansion=2, k=4)).eval()
    h = torch.randn(64, 16)
    far = h * 20
    s = lambda v: torch.tensor(float(v))  # noqa: E731
    for gate in contract.GATE_CRITERIA:
        out = steer(h, sae, s(1.5), s(2.1), s(0.5), gate)
        torch.testing.assert_close(out.score, gate_score(gate, h, sae(h), sae.mu))
        assert torch.equal(out.steered, out.score <= 0.5)
    assert (gate_score("fvu", far, sae(far), sae.mu).mean() <
            gate_score("fvu", h, sae(h), sae.mu).mean() * 5)
    assert (gate_score("err", far, sae(far), sae.mu).mean() >
            gate_score("err", h, sae(h), sae.mu).mean() * 50)


def test_calibrate_records_the_criterion_its_distribution_and_the_data(store, tmp_path):
    sae = TopKSAE(SAEConfig(d=32, expansion=4, k=8))
    save_sae(sae, tmp_path / "sae")
    params = calibrate(CalibrateConfig(store, tmp_path / "sae", tmp_path / "s.json",
                                       gate="rel_err", quantile=0.9))
    score = sae_scores(sae.eval(), ActivationStore(store), "rel_err")
    assert params.gate == "rel_err" and params.tau == pytest.approx(np.quantile(score, 0.9))
    assert params.gate_stats["pass_rate"] == pytest.approx(0.9, abs=1e-3)
    assert params.gate_stats["max"] == pytest.approx(score.max())
    assert params.data["count"] == 2048 and "median" in params.fvu_stats
    assert load_steering(tmp_path / "s.json") == params


def test_steering_json_from_before_issue_12_reads_as_fvu(tmp_path):
    old = {"format": "vs2-steering", "gamma": 1.5, "lambda": 2.1, "quantile": 0.99, "tau": 0.1,
           "sae_sha256": "a" * 64, "fvu_stats": {}, "n_samples": 3, "model_id": "m"}
    (tmp_path / "s.json").write_text(json.dumps(old))
    assert load_steering(tmp_path / "s.json").gate == "fvu"
    (tmp_path / "s.json").write_text(json.dumps({**old, "gate": "vibes"}))
    with pytest.raises(Vs2Error, match="gate: expected one of"):
        load_steering(tmp_path / "s.json")


def test_manifest_gate_keys_are_optional_but_checked():
    data = manifest_dict()
    for key in ("gate", "gate_stats"):
        del data["steering"][key]
    assert Manifest.from_dict(data).steering.gate == "fvu"  # an export from before issue 12
    data["steering"]["gate"] = "rel_err"
    with pytest.raises(ManifestError, match="gate_score"):  # the app could not see the score
        Manifest.from_dict(data)
    data["steering"]["gate"] = "entropy"
    with pytest.raises(ManifestError, match="steering.gate"):
        Manifest.from_dict(data)


CALIBRATED = {"pass_rate": 0.99, "p50": 0.05, "p95": 0.08, "max": 0.12}


def _stream(score: np.ndarray, tau: float = 0.1) -> dict:
    return {contract.GATE_SCORE: score.astype(np.float32), contract.STEERED: score <= tau}


def test_monitor_is_quiet_on_calibrated_traffic_and_flags_far_images():
    mon = GateMonitor(CALIBRATED, window=500, min_count=100)
    rng = np.random.default_rng(0)
    flags = mon.observe(_stream(rng.uniform(0.02, 0.09, 300)))
    assert not flags.any() and mon.summary().alarms == ()
    flags = mon.observe(_stream(np.array([0.05, 0.5])))
    assert flags.tolist() == [False, True]
    summary = mon.summary()
    assert summary.count == 302 and summary.pass_rate == pytest.approx(301 / 302)


def test_monitor_warns_once_when_traffic_drifts_and_again_after_recovery(caplog):
    mon = GateMonitor(CALIBRATED, window=200, min_count=100)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            mon.observe(_stream(np.full(100, 0.3)))  # everything fails the gate
    assert len(mon.summary().alarms) == 2  # pass rate and median
    assert len([r for r in caplog.records if "pass rate" in r.message]) == 1
    mon.observe(_stream(np.full(200, 0.05)))
    assert mon.summary().alarms == ()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        mon.observe(_stream(np.full(200, 0.3)))
    assert len([r for r in caplog.records if "pass rate" in r.message]) == 1


def test_monitor_without_calibration_never_alarms():
    mon = GateMonitor(None, min_count=1)
    assert not mon.observe({contract.FVU: np.ones(5), contract.STEERED: np.zeros(5, bool)}).any()
    assert mon.summary().alarms == () and mon.summary().count == 5
