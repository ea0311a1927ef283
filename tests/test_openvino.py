"""provider='openvino' (runtime/openvino_session.py): the same run() contract as ONNX Runtime on
the fake contract graph (test_runtime.py), overridable scalars included; bf16 as a compute
precision of model.onnx, refused where the CPU cannot compute it; verify --provider openvino on
the demo export. Skipped where the [openvino] extra is not installed (tests/extras.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from extras import import_extra
from test_runtime import build_fake_model, expected_outputs, pixels, save_model

from vs2_export.runtime import ProviderError, Vs2Session, contract
from vs2_export.runtime.providers import create_session

import_extra("openvino", "openvino")
openvino_session = import_extra("vs2_export.runtime.openvino_session", "openvino")
BF16 = "bf16" in openvino_session.cpu_precisions()


@pytest.fixture(scope="module")
def model_dir(module_tmp):
    return save_model(module_tmp.mktemp("fake-ov") / "m", build_fake_model())


@pytest.fixture(scope="module")
def session(model_dir):
    return Vs2Session(model_dir, provider="openvino", threads=1)


def test_openvino_runs_the_contract(session):
    x = pixels()
    out, want = session.run(x), expected_outputs(x)
    assert session.providers == ["OpenVINO:CPU"] and session.manifest.precision == "fp32"
    assert out["steered"].dtype == np.bool_ and out["latent_indices"].dtype == np.int64
    for name in ("embedding", "base_embedding", "logits", "fvu", "latent_values"):
        np.testing.assert_allclose(out[name], want[name], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["latent_indices"], want["latent_indices"])


def test_openvino_overrides_like_ort(session):
    """OpenVINO folds initializer-inputs into constants; the adapter lifts them back."""
    x = pixels()
    stronger = session.run(x, lambda_=5.0)
    np.testing.assert_allclose(stronger["embedding"], expected_outputs(x, lam=5.0)["embedding"],
                               atol=1e-4)
    assert not session.run(x, tau=0.0)["steered"].any()
    np.testing.assert_allclose(session.run(x)["embedding"], expected_outputs(x)["embedding"],
                               atol=1e-4)  # nothing sticks


def test_bf16_is_a_compute_precision_of_model_onnx(model_dir):
    assert contract.model_file("bf16") == contract.MODEL_FILE
    assert contract.precision_of(model_dir / contract.MODEL_FILE) == "fp32"
    assert contract.file_precision("bf16") == "fp32" and "bf16" not in contract.PRECISIONS
    with pytest.raises(ProviderError, match="openvino"):
        create_session(model_dir / contract.MODEL_FILE, "cpu", precision="bf16")
    if BF16:
        out = Vs2Session(model_dir, provider="openvino", precision="bf16").run(pixels())
        np.testing.assert_allclose(out["base_embedding"], expected_outputs(pixels())["base_embedding"],
                                   atol=2e-2)
    else:  # never an f32 run labelled bf16
        with pytest.raises(ProviderError, match="bf16"):
            Vs2Session(model_dir, provider="openvino", precision="bf16")


def test_openvino_refuses_bytes_and_fp16(tmp_path):
    with pytest.raises(ProviderError, match="model file"):
        create_session(build_fake_model().SerializeToString(), "openvino")
    fp16 = json.loads(build_fake_model().metadata_props[0].value) | {"precision": "fp16"}
    folder = save_model(tmp_path / "m", build_fake_model(metadata=json.dumps(fp16)))
    with pytest.raises(ProviderError, match="fp16"):  # the graph's manifest says fp16
        create_session(folder / contract.MODEL_FILE, "openvino")
