"""Tampered and hostile export folders against the runtime (red-team findings): each must end in
one error of the runtime's own classes, never a crash, a hang, gigabytes of memory or NaN results.

Every case builds the tiny fake contract graph of test_runtime (milliseconds), no export.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_runtime import build_fake_model, manifest_dict, pixels, save_model

from vs2_export.config import ExportConfig
from vs2_export.errors import Vs2Error
from vs2_export.runtime import InputError, Manifest, ModelError, Vs2Session, contract
from vs2_export.runtime.manifest import ManifestError
from vs2_export.runtime.onnx_wire import scan
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.tokenizer import MAX_VOCAB_BYTES, ClipTokenizer, TokenizerError


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
    (_metadata(logit_scale=1e39), "logit_scale: expected a number > 0, finite in float32"),
    (_metadata(templates=["{} {}"]), "templates[0]: expected a string with exactly one '{}'"),
    (_metadata(templates=["{x} {}"]), "templates[0]"),
    (_metadata(templates=["{!r}"]), "templates[0]"),
    (_metadata(templates=["a {"]), "templates[0]"),
    (_metadata(**{"steering.gate_stats": {"pass_rate": 1e308}}), "steering.gate_stats"),
    (_metadata(**{"steering.gate_stats": {"pass_rate": 0.9, "p50": -1.0}}), "steering.gate_stats"),
    (_metadata(**{"steering.gate_stats": {"pass_rate": 1.5}}), "steering.gate_stats.pass_rate"),
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


# ---- files that are not what they say: FIFOs hang open(), /dev/zero and sparse files never end


def _plant(path: Path, kind: str) -> None:
    """Replace path with a hostile stand-in."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "dir":
        path.mkdir()
    elif kind == "sparse":  # 8 GiB that read_bytes() would allocate; no disk used
        with open(path, "wb") as fh:
            fh.truncate(8 << 30)


@pytest.mark.parametrize("kind, message", [
    ("fifo", "as a regular file, got a FIFO"), ("devzero", "got a character device"),
    ("dir", "got a directory"), ("sparse", f"got {8 << 30} bytes")])
def test_hostile_class_embeddings_refused_before_reading(tmp_path, kind, message):
    folder = save_model(tmp_path / "m", build_fake_model())
    _plant(folder / "class_embeddings.f32", kind)
    with pytest.raises(ModelError, match=message):
        Vs2Session(folder, threads=1)


@pytest.mark.parametrize("kind", ["fifo", "devzero", "dir"])
def test_hostile_graph_files_refused_before_ort_opens_them(tmp_path, kind):
    path = tmp_path / "text.onnx"
    _plant(path, kind)
    with pytest.raises(ModelError, match="expected an ONNX model as a regular file"):
        create_session(path)


@pytest.mark.parametrize("kind, message", [
    ("fifo", "got a FIFO"), ("devzero", "got a character device"),
    ("sparse", f"at most {MAX_VOCAB_BYTES} bytes, got {8 << 30}"),
    ("bomb", f"at most {MAX_VOCAB_BYTES} bytes of text, got more")])
def test_hostile_vocab_refused_with_bounded_reads(tmp_path, kind, message):
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    if kind == "bomb":  # 9 KB that inflates to 9 MB (the red team's: 4 MB -> 8 GB)
        path.write_bytes(gzip.compress(b"\0" * (MAX_VOCAB_BYTES + 1024)))
    else:
        _plant(path, kind)
    with pytest.raises(TokenizerError, match=message):
        ClipTokenizer(path)


# ---- precision: the graph says what it is, not its file name or the caller


def _save_as(folder: Path, name: str, model) -> Path:
    save_model(folder, model)
    (folder / "model.onnx").rename(folder / name)
    return folder / name


def test_fp16_workaround_follows_the_graphs_float16_tensors(tmp_path, caplog):
    """ORT segfaults optimising our fp16 graph at level 'all' on the CPU; a copy named
    custom.onnx (or model.onnx) with an fp32 manifest must still get the workaround."""
    model = build_fake_model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(2, np.float16), "half"))
    path = _save_as(tmp_path / "m", "custom.onnx", model)
    assert scan(path).float16 and not scan(save_model(tmp_path / "n", build_fake_model()) / "model.onnx").float16
    with caplog.at_level(logging.INFO, logger="vs2_export.runtime.providers"):
        create_session(path, precision="fp32")
    assert "runs with optimization 'basic'" in caplog.text


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_asked_precision_must_match_the_manifest(tmp_path, precision):
    folder = save_model(tmp_path / "m", build_fake_model())
    with pytest.raises(ModelError, match=f"precision '{precision}' asked for, but the graph's "
                                         "manifest says 'fp32'"):
        Vs2Session(folder, precision=precision)
    assert Vs2Session(folder, precision="fp32").manifest.precision == "fp32"


def test_contract_file_names_hold_their_own_precision(tmp_path):
    """Asking for fp32 by the folder's model.onnx and getting int8 is refused, naming the file;
    without an asked precision the graph's manifest decides (a served folder, vs2 web, holds
    its variant as model.onnx), and other names may hold any."""
    model = build_fake_model(metadata=_metadata(precision="int8"))
    folder = save_model(tmp_path / "a", model)
    with pytest.raises(ModelError, match="model.onnx is the fp32 graph's file name, but its "
                                         "manifest says int8"):
        Vs2Session(folder, precision="fp32")
    assert Vs2Session(folder).manifest.precision == "int8"
    assert Vs2Session(_save_as(tmp_path / "b", "custom.onnx", model)).manifest.precision == "int8"


# ---- ORT's own log: its coloured multi-line dumps must not bury the one vs2 error line

_LOAD = """
import sys
from pathlib import Path
from vs2_export.runtime.providers import create_session
create_session(Path(sys.argv[1]))
print("loaded", file=sys.stderr)
"""


@pytest.mark.parametrize("debug", [False, True])
def test_ort_log_lines_only_when_debugging(tmp_path, debug):
    model = build_fake_model()  # an unused initializer: ORT logs a [W:onnxruntime...] line
    model.graph.initializer.append(numpy_helper.from_array(np.ones(2, np.float32), "unused"))
    path = save_model(tmp_path / "m", model) / "model.onnx"
    env = {k: v for k, v in os.environ.items() if k != "VS2_DEBUG"} | ({"VS2_DEBUG": "1"} if debug else {})
    done = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.stderr.strip().endswith("loaded"), done.stderr[-2000:]
    assert ("onnxruntime" in done.stderr) == debug, done.stderr[-2000:]


# ---- paths: a valid export in a folder whose name is not UTF-8


def test_export_in_a_non_utf8_folder_runs(tmp_path):
    folder = save_model(tmp_path / os.fsdecode(b"m_\xff"), build_fake_model())
    session = Vs2Session(folder, threads=1)
    assert session.run(pixels(2))["embedding"].shape == (2, 4)
    model = build_fake_model()
    (tmp_path / "x").mkdir()
    onnx.save(model, tmp_path / "x" / "model.onnx", save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)  # onnx.save refuses the name too
    external = (tmp_path / "x").rename(tmp_path / os.fsdecode(b"x_\xff"))
    with pytest.raises(ModelError, match="external data at a path that is not UTF-8"):
        create_session(external / "model.onnx")


# ---- arguments


def test_threads_are_bounded(tmp_path):
    folder = save_model(tmp_path / "m", build_fake_model())
    with pytest.raises(ValueError, match=r"threads: expected None or an int in \[1, 1024\]"):
        Vs2Session(folder, threads=10**9)


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data", "class_embeddings.f32",
                                  "model.fp16.onnx"])
def test_optimized_model_never_overwrites_the_export(tmp_path, name):
    folder = save_model(tmp_path / "m", build_fake_model())
    before = (folder / "model.onnx").read_bytes()
    with pytest.raises(InputError, match=f"it would overwrite {name}"):
        Vs2Session(folder, optimized_model=folder / ".." / "m" / name)
    assert (folder / "model.onnx").read_bytes() == before
    Vs2Session(folder, optimized_model=folder / "optimized.onnx")  # beside it, not over it


def test_an_empty_image_rgb_batch_is_refused_like_pixel_values():
    from vs2_export.runtime.session import _rgb_list  # noqa: PLC0415  the image_rgb input rule
    with pytest.raises(InputError, match=r"image_rgb: expected at least one image, got \[0, 10, 10, 3\]"):
        _rgb_list(np.zeros((0, 10, 10, 3), np.uint8))


# ---- a folder an export was interrupted in (contract.INCOMPLETE_MARKER)


@pytest.mark.parametrize("marker", ["other", "garbage", "fifo"])
def test_a_folder_an_export_did_not_finish_is_refused(tmp_path, marker):
    """Only the exporting process itself (its self-check) may load a marked folder."""
    folder = save_model(tmp_path / "m", build_fake_model())
    path = folder / contract.INCOMPLETE_MARKER
    if marker == "fifo":
        os.mkfifo(path)
    else:
        path.write_text('{"pid": 1}' if marker == "other" else "[")
    with pytest.raises(ModelError, match="an export into this folder did not finish"):
        Vs2Session(folder)
    path.unlink()
    path.write_text(json.dumps({"pid": os.getpid()}))
    assert Vs2Session(folder).manifest.precision == "fp32"
