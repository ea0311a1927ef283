"""Graphs over 2 GB keep their weights in ONE sidecar (issue 13). Exercised on the demo model with
onnx_files.EXTERNAL_DATA_ABOVE lowered to 0, so its weights go to a sidecar like ViT-H-14's do: the
layout of every variant, the runtime, verify, bench's optimised copy, the uint8 input, the
external-data guard, and that a failed or killed export never leaves a half or mismatched pair.
(tests/test_big_models.py runs a real ViT-H-14.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile import REPO
from pipeline import build_export, noise_images

import vs2_export.export as export_module
import vs2_export.onnx_files as onnx_files
from vs2_export.config import ExportConfig, ModelSpec, VerifyConfig
from vs2_export.errors import Vs2Error
from vs2_export.export import export
from vs2_export.runtime import contract
from vs2_export.runtime.onnx_wire import external_data_locations
from vs2_export.runtime.session import ModelError, Vs2Session
from vs2_export.verify import verify
from vs2_export.web.site import ORT_WEB_FILES, SiteError, build_site

pytestmark = pytest.mark.skipif(
    not (REPO / "vs2_export" / "demo" / "vs2-demo.safetensors").is_file(),
    reason="needs the bundled demo model")
PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def work(module_tmp) -> Path:
    """SAE, steering and classes for the demo model, plus its ordinary one-file export."""
    work = module_tmp.mktemp("external")
    images = noise_images(work / "images", 48, size=72)
    build_export(work, ModelSpec(), images, ["alpha", "beta", "gamma"], k=8, epochs=2)
    return work


def config(work: Path, out: Path, **kwargs) -> ExportConfig:
    return ExportConfig(work / "sae", work / "steering.json", out, ModelSpec(),
                        work / "classes.txt", **kwargs)


def export_external(cfg: ExportConfig):
    """export() with every weight over 0 bytes going to the sidecar (as for ViT-H-14)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
        return export(cfg)


@pytest.fixture(scope="module")
def external(work) -> Path:
    """fp32, fp16 and int8 (dynamic: static int8 misses its tolerance on this tiny model)."""
    export_external(config(work, work / "ext", precisions=PRECISIONS, int8_mode="dynamic"))
    return work / "ext"


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if p.is_file()}


def test_every_variant_names_one_sidecar_beside_it(external):
    for precision in PRECISIONS:
        model = contract.model_path(external, precision)
        sidecar = model.with_name(contract.sidecar_name(model))
        assert set(external_data_locations(model)) == {sidecar.name}  # relative, one file
        assert sidecar.stat().st_size > 5 * model.stat().st_size  # the weights, not the graph
        assert Vs2Session(model, optimization="basic").manifest.precision == precision
    assert temporaries(external) == []
    assert all(contract.shipped(p.name) for p in external.iterdir())


@pytest.fixture(scope="module")
def one_file(work) -> Path:
    """The same export with the real threshold: every variant of the demo model is one file."""
    export(config(work, work / "one-file", precisions=PRECISIONS, int8_mode="dynamic"))
    return work / "one-file"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_runtime_gives_what_the_one_file_export_gives(external, one_file, precision):
    assert not any(p.name.endswith(".data") for p in one_file.iterdir())
    got_session = Vs2Session(contract.model_path(external, precision))
    ref_session = Vs2Session(contract.model_path(one_file, precision))
    size = got_session.manifest.image_size
    pixels = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
    got, ref = got_session.run(pixels), ref_session.run(pixels)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)  # the same graph
    images = sorted((external.parent / "images").iterdir())[:3]
    assert got_session.classify(images, top_k=1) == ref_session.classify(images, top_k=1)


@pytest.mark.parametrize("precision", ("fp32", "fp16", "int8"))
def test_verify_passes_on_external_variants(work, external, precision):
    """Each variant with its weights in a sidecar passes verify. int8 (dynamic, on this
    48-noise-image demo) reaches latent values 0.057: it failed the old 5e-2 limit shared with
    the top-k tie margin, and passes int8's own latent_rel (parity.py)."""
    report = verify(VerifyConfig(external, work, work / "images", precision=precision,
                                 max_images=24))
    assert report.verdict == "PASS"


def test_uint8_input_export_with_external_data(work):
    out = work / "ext-uint8"
    export_external(config(work, out, pixel_input=contract.PIXELS_UINT8))
    assert set(external_data_locations(out / "model.onnx")) == {"model.onnx.data"}
    assert verify(VerifyConfig(out, work, work / "images", max_images=16)).verdict == "PASS"


def test_image_rgb_export_with_external_data(work):
    """image_rgb graphs are edited as protobuf (image_front) before they are saved."""
    out = work / "ext-rgb"
    export_external(config(work, out, pixel_input=contract.IMAGE_RGB))
    assert set(external_data_locations(out / "model.onnx")) == {"model.onnx.data"}
    assert verify(VerifyConfig(out, work, work / "images", max_images=8)).verdict == "PASS"


def test_optimised_copy_of_an_external_graph_gets_its_own_sidecar(external, tmp_path):
    """What vs2 bench's fusion counts do (ORT cannot write an optimised graph over 2 GB as one
    file). The copy stays in a folder with the export's runtime files, as a session needs."""
    copy = tmp_path / "copy"
    shutil.copytree(external, copy)
    saved = copy / "optimized.onnx"
    Vs2Session(copy, optimized_model=saved)
    assert set(external_data_locations(saved)) == {"optimized.onnx.data"}
    size = Vs2Session(external).manifest.image_size
    pixels = np.zeros((2, 3, size, size), np.float32)
    np.testing.assert_allclose(Vs2Session(saved, optimization="disable").run(pixels)["embedding"],
                               Vs2Session(external).run(pixels)["embedding"], atol=1e-5)


def _relocate(model: Path, location: str) -> None:
    """Point every external tensor of `model` at `location` (the graph only; no data read)."""
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model.write_bytes(proto.SerializeToString())


def test_guard_refuses_a_sidecar_outside_the_folder_or_not_a_file(external, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external, copy)
    shutil.move(copy / "model.onnx.data", tmp_path / "model.onnx.data")
    _relocate(copy / "model.onnx", "../model.onnx.data")  # a file that exists, outside
    with pytest.raises(ModelError, match="inside the model's folder"):
        Vs2Session(copy)
    _relocate(copy / "model.onnx", "model.onnx.data")
    with pytest.raises(ModelError, match="no file"):  # the sidecar is missing
        Vs2Session(copy)
    os.mkfifo(copy / "model.onnx.data")  # ORT would block forever opening it
    with pytest.raises(ModelError, match="no regular file"):
        Vs2Session(copy)


def test_a_failed_export_leaves_no_half_pair(work, tmp_path, monkeypatch):
    """No temporary survives, and the folder stays marked unfinished: with --force the class
    files may already be the new export's, so the runtime refuses it until an export succeeds."""
    def broken_check(*args, **kwargs):
        raise Vs2Error("export: the written graph does not load (simulated)")

    monkeypatch.setattr(export_module, "check_graph", broken_check)
    out = tmp_path / "new"
    with pytest.raises(Vs2Error, match="simulated"):
        export_external(config(work, out))
    assert not (out / "model.onnx").exists() and not (out / "model.onnx.data").exists()
    assert temporaries(out) == [contract.INCOMPLETE_MARKER]
    old = tmp_path / "old"  # --force over a whole pair: the old pair stays, byte for byte
    monkeypatch.undo()
    export_external(config(work, old))
    before = digest(old)
    monkeypatch.setattr(export_module, "check_graph", broken_check)
    with pytest.raises(Vs2Error, match="simulated"):
        export_external(config(work, old, force=True))
    assert {k: v for k, v in digest(old).items() if k.startswith("model")} == \
        {k: v for k, v in before.items() if k.startswith("model")}
    assert temporaries(old) == [contract.INCOMPLETE_MARKER]  # refused to other processes
    monkeypatch.undo()
    export_external(config(work, old, force=True))
    assert temporaries(old) == [] and Vs2Session(old).manifest.precision == "fp32"


def test_reexport_as_one_file_removes_the_old_sidecar(work, external, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external, copy)
    export(config(work, copy, force=True))  # the real limit: the demo model fits in one file
    assert not (copy / "model.onnx.data").exists()
    assert external_data_locations(copy / "model.onnx") == []
    Vs2Session(copy)


SPAWN = """import sys
import vs2_export.onnx_files
vs2_export.onnx_files.EXTERNAL_DATA_ABOVE = 0
from vs2_export.cli import main
sys.argv = ["vs2", *sys.argv[1:]]
main()
"""


def test_text_graph_over_the_limit_has_its_sidecar_and_names_classes(external, one_file):
    """ViT-bigG-14's text tower (2.8 GB) is over 2 GB too: text.onnx goes the same way."""
    text = external / contract.TEXT_MODEL_FILE
    assert set(external_data_locations(text)) == {contract.sidecar_name(text)}
    assert not (one_file / contract.sidecar_name(text)).exists()
    got, ref = Vs2Session(external), Vs2Session(one_file)
    names = ["a red circle", "a blue square", "noise"]
    np.testing.assert_array_equal(got.set_classes(names), ref.set_classes(names))
    pixels = np.random.default_rng(1).standard_normal((2, 3, got.manifest.image_size,
                                                       got.manifest.image_size)).astype(np.float32)
    np.testing.assert_array_equal(got.run(pixels)["logits"], ref.run(pixels)["logits"])


def test_web_page_refuses_a_graph_over_2gb_and_leaves_a_big_text_graph_out(external, one_file,
                                                                           tmp_path):
    ort = tmp_path / "ort"
    ort.mkdir()
    for name in ORT_WEB_FILES:
        (ort / name).write_bytes(b"stub")
    with pytest.raises(SiteError, match="external data"):
        build_site(external, tmp_path / "big", ort)
    mixed = tmp_path / "mixed"  # one-file image graph, text graph with a sidecar
    shutil.copytree(one_file, mixed)
    for name in (contract.TEXT_MODEL_FILE, contract.sidecar_name(contract.TEXT_MODEL_FILE)):
        shutil.copyfile(external / name, mixed / name)
    site = build_site(mixed, tmp_path / "site", ort)
    assert (site / "model" / contract.MODEL_FILE).is_file()
    assert not (site / "model" / contract.TEXT_MODEL_FILE).exists()
    assert not list((site / "model").glob("*.data"))


def test_export_killed_with_the_pair_under_temporary_names_leaves_none(work, tmp_path):
    """kill -9 while the written pair is checked in its temporary folder: no final model, no
    final sidecar; the next export removes the abandoned folder and succeeds."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = ["export", "--sae", work / "sae", "--steering", work / "steering.json", "--out", out]
    with open(tmp_path / "spawn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SPAWN, *map(str, args)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not any(out.glob(".model.onnx.*.tmp/model.onnx.data")):
        assert proc.poll() is None, (tmp_path / "spawn.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the sidecar never appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "model.onnx").exists() and not (out / "model.onnx.data").exists()
    assert temporaries(out)  # the killed writer's folder, left for the next write to remove
    export_external(config(work, out))
    assert temporaries(out) == []
    assert set(external_data_locations(out / "model.onnx")) == {"model.onnx.data"}
