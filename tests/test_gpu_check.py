"""benchmarks/gpu_check.py's own logic, checked on the CPU: a GPU machine is lent rarely and for
minutes, so the script must not fail there for a reason a CPU run could have shown."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hostile import REPO
from test_runtime import build_fake_model, save_model

from vs2_export.store import ActivationStore

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (benchmarks/ is not a package)


def test_steps_record_errors_and_skip_what_would_overrun(tmp_path):
    steps = gpu_check.Steps(tmp_path, seconds=30)
    steps.run("ok", 1, lambda: {"x": 1})
    steps.run("boom", 1, lambda: 1 / 0)
    steps.run("late", 60, lambda: {"never": 1})
    steps.run("capped", 1, lambda timeout: {"timeout": timeout}, timeout=600)
    got = json.loads((tmp_path / "gpu.json").read_text())
    assert got["ok"] == {"x": 1}
    assert got["boom"]["error"].startswith("ZeroDivisionError")
    assert "skipped" in got["late"] and "never" not in got["late"]
    assert got["capped"]["timeout"] <= 30  # a step's own timeout never outlives the deadline


def test_training_store_and_store_comparison(store, tmp_path):
    big = gpu_check.big_store(store, tmp_path / "big", 5000)
    assert len(ActivationStore(big)) == 5000
    assert ActivationStore(big).origin["id"] == ActivationStore(store).origin["id"]
    same = gpu_check.store_diff(store, store)
    assert same["rows"] == len(ActivationStore(store)) and same["max_abs"] == 0
    assert same["cos_min"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stores of other images"):
        gpu_check.store_diff(store, big)


def test_machine_report_on_a_machine_without_a_gpu():
    info = gpu_check.machine()
    assert info["cuda_available"] is torch.cuda.is_available() and info["cores"] >= 1
    assert ("gpu" in info) is torch.cuda.is_available()


def test_ort_levers_time_plain_runs_and_io_binding(tmp_path):
    """The IO-binding code path, on the CPU provider: both timings for each batch."""
    folder = tmp_path / "m"
    save_model(folder, build_fake_model())
    rows = gpu_check.ort_levers(folder, batches=(1, 4), rounds=2, device="cpu")
    assert set(rows) == {"fp32_b1", "fp32_b4"}
    assert all(r["run_ms_per_image"] > 0 and r["iobinding_ms_per_image"] > 0 for r in rows.values())
