"""`vs2 doctor` (issue 5, item 6): versions, usable providers, the two ONNX Runtime traps, threads,
the demo model; exit 0 healthy, 1 not. And torch_device, the --device check of extract / train."""

from __future__ import annotations

import json
import shutil

import onnxruntime as ort
import pytest
import torch
from hostile import REPO, run_vs2, text
from typer.testing import CliRunner

from vs2_export import cli, doctor
from vs2_export.distributed import torch_device
from vs2_export.errors import Vs2Error
from vs2_export.runtime import openvino_session, timing

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


def test_doctor_times_every_backend_on_an_export(rgb_export):
    """--model: every backend x precision that runs here is timed against ORT fp32 in the same
    rounds, and the fastest lossless path is named at each batch size."""
    report = doctor.diagnose(demo=False, model=rgb_export, rounds=2)
    timed = {(t["provider"], t["precision"]): t for t in report["timings"]}
    expected = {("cpu", "fp32"), ("cpu", "int8")}
    if openvino_session.available():
        expected |= {("openvino", p) for p in openvino_session.cpu_precisions()}
    assert set(timed) == expected
    base = timed["cpu", "fp32"]
    assert base["speedup"] == {1: 1.0, 8: 1.0} and base["cosine_min"] == pytest.approx(1.0)
    assert all(ms > 0 for t in timed.values() for ms in t["ms_per_image"].values())
    assert timed["cpu", "int8"]["cosine_min"] < 1.0  # int8 really ran, not the fp32 file
    found = findings(report)
    for batch in (1, 8):
        fastest = min(timed.values(), key=lambda t: t["ms_per_image"][batch])
        lossless = min((t for t in timed.values() if t["lossless"]),
                       key=lambda t: t["ms_per_image"][batch])
        assert f"--provider {lossless['provider']} --precision {lossless['precision']}" in \
            found[f"fastest at batch {batch}"]["detail"]
        assert (f"fastest at batch {batch}, lossy" in found) == (not fastest["lossless"])


def test_fastest_lossless_is_named_apart_from_a_faster_lossy_path(monkeypatch):
    def fake(model, rounds, cuda):
        t = lambda prov, prec, ms, cos: timing.BackendTiming(prov, prec, {1: ms}, {1: 10.0 / ms}, cos)
        return timing.Timings((t("cpu", "int8", 4.0, 0.995), t("openvino", "bf16", 5.0, 0.99995),
                               t("cpu", "fp32", 10.0, 1.0)), {})
    monkeypatch.setattr(timing, "time_backends", fake)
    found = {f.name: f.detail for f in doctor.check_speed(REPO, cuda=False, rounds=1)[0]}
    assert found["fastest at batch 1"].startswith("openvino bf16 (--provider openvino "
                                                  "--precision bf16): 5.00 ms/image, 2.00x")
    assert found["fastest at batch 1, lossy"].startswith("onnxruntime int8")
    assert "vs2 verify --precision int8" in found["fastest at batch 1, lossy"]


def test_doctor_model_that_is_not_an_export_exits_2(tmp_path):
    done = run_vs2("doctor", "--no-demo", "--model", tmp_path / "missing", timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(text(done.stderr).strip().splitlines()) == 1 and "Traceback" not in text(done.stderr)


def test_model_timing_without_onnxruntime_is_a_finding_not_a_crash(monkeypatch):
    def broken(_require_gpu):
        raise ImportError("libonnxruntime.so: cannot open shared object file")
    monkeypatch.setattr(doctor, "check_providers", broken)
    report = doctor.diagnose(demo=False, model=REPO)
    assert not report["healthy"] and report["timings"] == []
    assert findings(report)["fastest"]["level"] == "fail"


def test_a_damaged_variant_is_listed_not_timed(rgb_export, tmp_path):
    folder = shutil.copytree(rgb_export, tmp_path / "export")
    (folder / "model.int8.onnx").write_bytes(b"not a graph")
    report = doctor.diagnose(demo=False, model=folder, rounds=1)
    found = findings(report)
    assert found["not timed cpu int8"]["level"] == "warn"
    assert "protobuf" in found["not timed cpu int8"]["detail"]
    assert ("cpu", "int8") not in {(t["provider"], t["precision"]) for t in report["timings"]}
    assert found["fastest at batch 1"]["level"] == "ok"  # the rest still ran and were ranked
