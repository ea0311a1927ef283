"""What a CUDA session asks ONNX Runtime for, checked without a GPU (ORT's session is faked).
The first GPU run (benchmarks/README.md, 'GPU') found both: TF32 by default failed fp32 parity on
an H100, and the torch-free runtime needs CUDA and cuDNN loaded from their pip packages."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
from test_runtime import build_fake_model, manifest_dict, save_model

from vs2_export.runtime import contract, providers


class FakeSession:
    """Records what InferenceSession was given; runs on CUDA as asked."""

    calls: list[dict] = []

    def __init__(self, source, options, providers, provider_options):
        self.providers = providers
        FakeSession.calls.append(dict(zip(providers, provider_options, strict=True)))

    def get_providers(self):
        return self.providers


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeSession.calls = []
    preloads = []
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ort, "preload_dlls", lambda: (preloads.append(1), print("ORT notice")),
                        raising=False)
    providers._preload_cuda_libraries.cache_clear()
    yield preloads
    providers._preload_cuda_libraries.cache_clear()


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", "0"), ("fp16", None), ("int8", None)])
def test_fp32_on_cuda_is_computed_in_fp32(fake_cuda, tmp_path, precision, tf32):
    """A graph whose manifest says `precision` (the runtime refuses a contradicting one)."""
    meta = manifest_dict()
    meta["precision"] = precision
    model = save_model(tmp_path / "m", build_fake_model(metadata=json.dumps(meta))) / "model.onnx"
    model = model.rename(model.with_name(contract.model_file(precision)))
    providers.create_session(model, "cuda", precision=precision)
    asked = FakeSession.calls[-1]
    assert asked["CUDAExecutionProvider"].get("use_tf32") == tf32
    assert asked["CPUExecutionProvider"] == {}


def test_a_graph_of_unknown_precision_is_computed_in_fp32(fake_cuda, tmp_path):
    """From bytes (no file name to read the variant from) nothing says fp16: strict fp32."""
    model = save_model(tmp_path / "m", build_fake_model()) / "model.onnx"
    providers.create_session(model.read_bytes(), "cuda")
    assert FakeSession.calls[-1]["CUDAExecutionProvider"] == {"use_tf32": "0"}


def test_cpu_sessions_get_no_provider_options(fake_cuda, tmp_path):
    providers.create_session(save_model(tmp_path / "m", build_fake_model()) / "model.onnx", "cpu")
    assert FakeSession.calls[-1] == {"CPUExecutionProvider": {}}
    assert fake_cuda == []  # nothing preloaded for a CPU session


def test_cuda_libraries_are_preloaded_once_and_off_stdout(fake_cuda, tmp_path, capsys):
    model = save_model(tmp_path / "m", build_fake_model()) / "model.onnx"
    providers.create_session(model, "cuda")
    providers.create_session(model, "cuda")
    out = capsys.readouterr()
    assert fake_cuda == [1] and "ORT notice" in out.err and out.out == ""
