"""`vs2 doctor` (issue 5, item 6): versions, usable providers, the two ONNX Runtime traps, threads,
the demo model; exit 0 healthy, 1 not. And torch_device, the --device check of extract / train."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
import torch
from hostile import REPO, run_vs2, text
from typer.testing import CliRunner

from vs2_export import cli, doctor
from vs2_export.distributed import torch_device
from vs2_export.errors import Vs2Error

DEMO_PRESENT = (REPO / "vs2_export" / "demo" / "vs2-demo.safetensors").is_file()


def findings(report: dict) -> dict[str, dict]:
    return {f["name"]: f for f in report["findings"]}


def test_doctor_cli_json_on_this_machine():
    """The real thing, in a subprocess: the exit code follows the verdict; ORT's own red
    'failed to load library' noise from the CUDA probe is silenced."""
    done = run_vs2("doctor", "--json", timeout=120)
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["healthy"] else 1)
    assert report["healthy"] == DEMO_PRESENT  # this CPU-only machine is otherwise healthy
    assert report["providers"]["usable"]["CPUExecutionProvider"] is True
    assert report["versions"]["onnxruntime-gpu"] == ort.__version__
    assert report["threads"]["cpu_count"] >= 1 and report["threads"]["torch_threads"] >= 1
    assert "Failed to load library" not in text(done.stderr)
    assert "Traceback" not in text(done.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_provider_that_falls_back_is_reported():
    """onnxruntime-gpu here lists CUDA as available, but a session falls back to the CPU."""
    found, providers = doctor.check_providers(require_gpu=False)
    cuda = {f.name: f for f in found}["provider cuda"]
    assert providers["usable"]["CUDAExecutionProvider"] is False
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert cuda.level == "warn" and "#23372" in cuda.detail
    found, _ = doctor.check_providers(require_gpu=True)
    assert {f.name: f for f in found}["provider cuda"].level == "fail"


def test_a_build_without_cuda_is_information_only(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    found, _ = doctor.check_providers(require_gpu=False)
    assert {f.name: f for f in found}["provider cuda"].level == "info"


def test_two_onnxruntime_wheels_are_unhealthy(monkeypatch):
    monkeypatch.setattr(doctor, "_installed", lambda d: d in ("onnxruntime", "onnxruntime-gpu"))
    report = doctor.diagnose(demo=False)
    install = findings(report)["onnxruntime install"]
    assert not report["healthy"] and install["level"] == "fail"
    assert "onnxruntime and onnxruntime-gpu" in install["detail"] and "#26996" in install["detail"]


def test_no_onnxruntime_wheel_is_unhealthy(monkeypatch):
    monkeypatch.setattr(doctor, "_installed", lambda d: False)
    assert not doctor.diagnose(demo=False)["healthy"]


def test_unusable_cpu_provider_exits_1(monkeypatch):
    monkeypatch.setattr(doctor, "probe_provider", lambda p: ([], "Fail: broken build"))
    result = CliRunner().invoke(cli.app, ["doctor", "--no-demo"])
    assert result.exit_code == 1, result.output
    assert "[fail] provider cpu: does not run: Fail: broken build" in result.stdout
    assert result.stdout.rstrip().endswith("NOT healthy")


def test_demo_model_that_does_not_load_is_a_failure(monkeypatch):
    def missing(_spec):
        raise FileNotFoundError("vs2-demo.safetensors")
    monkeypatch.setattr("vs2_export.clip.load_clip", missing)
    demo = doctor.check_demo_model()
    assert demo.level == "fail" and "FileNotFoundError: vs2-demo.safetensors" in demo.detail


@pytest.mark.skipif(not DEMO_PRESENT, reason="needs the bundled demo model")
def test_demo_model_loads_and_runs():
    demo = doctor.check_demo_model()
    assert demo.level == "ok" and "64 px" in demo.detail


def test_probe_gives_the_providers_ort_really_uses():
    providers, error = doctor.probe_provider("CPUExecutionProvider")
    assert providers == ["CPUExecutionProvider"] and error == ""


def test_torch_device():
    assert torch_device("cpu").type == "cpu"
    for bad in ("tpu", "cuda:x", ""):
        with pytest.raises(Vs2Error, match="expected cpu, cuda or cuda:N"):
            torch_device(bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(Vs2Error, match="expected a CUDA GPU"):
                torch_device(name)
