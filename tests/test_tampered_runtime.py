"""Tampered and hostile export folders against the runtime (red-team findings): each must end in
one error of the runtime's own classes, never a crash, a hang, gigabytes of memory or NaN results.

Every case builds the tiny fake contract graph of test_runtime (milliseconds), no export.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper
from test_runtime import build_fake_model, manifest_dict, pixels, save_model

from vs2_export.config import ExportConfig
from vs2_export.errors import Vs2Error
from vs2_export.runtime import InputError, Manifest, ModelError, Vs2Session
from vs2_export.runtime.manifest import ManifestError


def _metadata(**changes) -> str:
    """The fake graph's manifest with dotted keys replaced ('steering.tau': 1e39)."""
    data = manifest_dict()
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return json.dumps(data)


# ---- manifest values that passed the parse and crashed or misled later


@pytest.mark.parametrize("text, message", [
    (_metadata(**{"preprocess.mean": [10**400, 0, 0]}), "preprocess.mean: expected 3 finite numbers"),
    (_metadata(**{"preprocess.std": [1e-300] * 3}), "preprocess.std: expected 3 values in [0.001, 10]"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    (_metadata(**{"steering.tau": 1e39, "inputs.overridable.gate_tau": 1e39}), "steering.tau"),
    (_metadata(**{"steering.gamma": 1e39, "inputs.overridable.steer_gamma": 1e39}), "steering.gamma"),
    (_metadata(**{"steering.lambda": 1e300, "inputs.overridable.steer_lambda": 1e300}),
     "steering.lambda"),
    (_metadata(templates=["{} {}"]), "templates[0]: expected a string with exactly one '{}'"),
    (_metadata(templates=["{x} {}"]), "templates[0]"),
    (_metadata(templates=["{!r}"]), "templates[0]"),
    (_metadata(templates=["a {"]), "templates[0]"),
])
def test_tampered_manifest_values_refused(text, message):
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(text)
    assert message in str(info.value)


def test_literal_braces_in_a_template_are_fine():
    assert Manifest.from_json(_metadata(templates=["{{a}} photo of a {}."])).templates[0].startswith("{{")


@pytest.mark.parametrize("templates", [["{} {}"], ["{x} {}"], ["{0:>3}"], ["}{}"]])
def test_set_classes_and_config_refuse_bad_templates(tmp_path, templates):
    session = Vs2Session(save_model(tmp_path / "m", build_fake_model()), threads=1)
    with pytest.raises(InputError, match="templates\\[0\\]: expected a string with exactly one"):
        session.set_classes(["a", "b"], templates)
    with pytest.raises(Vs2Error, match="template: expected a string with exactly one"):
        ExportConfig(sae=tmp_path, steering=tmp_path / "s.json", out=tmp_path / "o",
                     templates=tuple(templates))


# ---- outputs


def _with_weight(name: str, value: float):
    model = build_fake_model()
    for init in model.graph.initializer:
        if init.name == name:
            array = numpy_helper.to_array(init).copy()
            array[...] = value
            init.CopyFrom(numpy_helper.from_array(array, name))
    return model


@pytest.mark.parametrize("weight, value, output", [
    ("W_e", np.nan, "embedding"), ("W_l", np.inf, "latent_values")])
def test_non_finite_outputs_are_a_model_error(tmp_path, weight, value, output):
    session = Vs2Session(save_model(tmp_path / "m", _with_weight(weight, value)), threads=1)
    with pytest.raises(ModelError, match=f"NaN/inf in output {output} \\(rows 0, 1, 2\\).*tampered"):
        session.run(pixels(3))
