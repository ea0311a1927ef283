"""int8 that keeps its answers (issue 11, item 2): model.int8.onnx re-runs in fp32, inside the
graph, the images whose int8 top-2 logit margin is small (recheck.py). Those rows get exactly
model.onnx's outputs, the others exactly the plain int8 graph's; the margin is chosen on the
calibration images and recorded; --int8-recheck off / MARGIN and the gate band do what they say."""

import dataclasses
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from extras import import_extra
from pipeline import export_demo

from vs2_export import onnx_files
from vs2_export.config import DEMO_MODEL, ExportConfig, ModelSpec, VerifyConfig
from vs2_export.demo.data import generate_labeled
from vs2_export.errors import CheckFailed, Vs2Error
from vs2_export.export import export
from vs2_export.precision import default_feeds
from vs2_export.recheck import BUDGET, guarded_model, margin_threshold, plain_model, plan, top2_margin
from vs2_export.runtime import contract
from vs2_export.runtime.manifest import Int8RecheckInfo, Manifest, ManifestError
from vs2_export.runtime.preprocess import list_images, preprocess_paths
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.session import Vs2Session
from vs2_export.verify import verify

CALIBRATION = 64


@pytest.fixture(scope="module")
def exports(demo_work, module_tmp):
    """The demo SAE exported with the default re-check (auto margin), and beside it the plain
    graph inside that file (what --int8-recheck off writes: same calibration, same quantiser)
    and the same graph re-guarded with a margin of 1e6 (every image re-run); and 200 labeled
    target-domain images none of them was calibrated on. One export: the settings' paths to
    these graphs are recheck.plan's, tested on their own below."""
    work = module_tmp.mktemp("recheck")
    auto = export_demo(demo_work, work / "auto", precisions=("int8",),
                       calibration=demo_work / "unlabeled", calibration_max=CALIBRATION)
    folders = {"auto": auto}
    for name, margin in (("off", None), ("all", 1e6)):
        folders[name] = _with_int8(auto, work / name, margin)
    generate_labeled(work / "target", 20, "target", seed=7)
    spec = Vs2Session(auto).manifest.preprocess
    return folders, preprocess_paths(list_images(work / "target"), spec).pixels


def _with_int8(folder, out, margin):
    """A copy of `folder` whose model.int8.onnx is its plain graph (margin None) or that graph
    guarded by `margin`, the manifest saying so, as plan() would have built it."""
    shutil.copytree(folder, out)
    path = contract.model_path(out, "int8")
    model = plain_model(onnx.load(str(path)))
    if margin is not None:
        info = Int8RecheckInfo(margin, 0.0, None, None, 0)
        model = guarded_model(model, onnx.load(str(out / contract.MODEL_FILE)), info,
                              contract.PIXEL_VALUES)
        meta = json.loads(next(p.value for p in model.metadata_props if p.key == contract.METADATA_KEY))
        meta["int8_recheck"] = dataclasses.asdict(info)
        onnx.helper.set_model_props(model, {contract.METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(path))
    return out


def _outputs(folder, precision, pixels, batch=50, **overrides):
    session = Vs2Session(contract.model_path(folder, precision))
    runs = [session.run(pixels[s:s + batch], **overrides) for s in range(0, len(pixels), batch)]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _if_nodes(path):
    return [n for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "If"]


def test_auto_margin_is_chosen_and_recorded(exports):
    folders, _ = exports
    recheck = Vs2Session(contract.model_path(folders["auto"], "int8")).manifest.int8_recheck
    assert recheck is not None and recheck.margin > 0 and recheck.gate_band == 0
    assert recheck.images == CALIBRATION and 0 < recheck.rerun_rate < 0.5
    assert recheck.estimated_disagreement <= BUDGET
    on_disk = json.loads((folders["auto"] / contract.manifest_file("int8")).read_text())
    assert on_disk["int8_recheck"]["margin"] == recheck.margin
    assert len(_if_nodes(contract.model_path(folders["auto"], "int8"))) == 1
    # off: the plain graph, no guard in it or in its manifest, and the smaller file
    off = contract.model_path(folders["off"], "int8")
    assert not _if_nodes(off) and Vs2Session(off).manifest.int8_recheck is None
    sizes = {name: contract.model_path(folders[name], "int8").stat().st_size for name in ("auto", "off")}
    assert sizes["off"] < contract.model_path(folders["auto"], "fp32").stat().st_size < sizes["auto"]


def test_rerun_rows_get_fp32_outputs_and_the_rest_int8(exports):
    folders, pixels = exports
    margin = Vs2Session(contract.model_path(folders["auto"], "int8")).manifest.int8_recheck.margin
    fp32 = _outputs(folders["auto"], "fp32", pixels)
    plain, guarded = _outputs(folders["off"], "int8", pixels), _outputs(folders["auto"], "int8", pixels)
    rerun = top2_margin(plain["logits"]) < margin
    assert 0 < rerun.sum() < len(pixels) // 2, rerun.sum()
    for name, got in guarded.items():
        np.testing.assert_allclose(got[rerun], fp32[name][rerun], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(got[~rerun], plain[name][~rerun], err_msg=name)
    # every image int8 answered differently from fp32 was a close call: the guard catches them
    # all here, or leaves only images whose int8 margin was above the threshold
    agree = {k: (v["logits"].argmax(1) == fp32["logits"].argmax(1)) for k, v in
             (("plain", plain), ("guarded", guarded))}
    assert agree["guarded"].sum() >= agree["plain"].sum()
    assert not (~agree["guarded"] & rerun).any()


@pytest.mark.parametrize("batch", [1, 7])
def test_margin_that_reruns_everything_answers_like_fp32(exports, batch):
    folders, pixels = exports
    fp32 = _outputs(folders["all"], "fp32", pixels[:21], batch)
    every = _outputs(folders["all"], "int8", pixels[:21], batch, lambda_=0.5)
    reference = _outputs(folders["all"], "fp32", pixels[:21], batch, lambda_=0.5)
    for name in fp32:  # overrides reach the fp32 branch too: it reads the same graph inputs
        np.testing.assert_allclose(every[name], reference[name], rtol=0, atol=1e-6, err_msg=name)
    recheck = Vs2Session(contract.model_path(folders["all"], "int8")).manifest.int8_recheck
    assert recheck.margin == 1e6 and recheck.images == 0 and recheck.estimated_disagreement is None


def test_one_class_fed_at_run_time_never_reruns(exports):
    """A runner-up is the largest logit once the top one is masked: with one class there is none
    (-inf), and the graph must not fail the way TopK(K=2) would."""
    folders, pixels = exports
    guarded = Vs2Session(contract.model_path(folders["auto"], "int8"))
    plain = Vs2Session(contract.model_path(folders["off"], "int8"))
    for session in (guarded, plain):
        session.set_classes(["circle"])
    got, want = guarded.run(pixels[:8]), plain.run(pixels[:8])
    assert got["logits"].shape == (8, 1)
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_tie_for_the_top_class_is_rerun(exports):
    """Every class row twice: each image's top class ties exactly with its twin, margin 0, so
    every image is re-run (masking every tied maximum would have compared with the next class)."""
    folders, pixels = exports
    feeds = default_feeds(folders["auto"], Vs2Session(folders["auto"]).manifest)
    feeds[contract.CLASS_EMBEDDINGS] = np.repeat(feeds[contract.CLASS_EMBEDDINGS], 2, axis=0)
    feeds[contract.PIXEL_VALUES] = pixels[:6]
    got, want = ({o.name: v for o, v in zip(s.get_outputs(), s.run(None, feeds), strict=True)}
                 for s in (create_session(contract.model_path(folders["auto"], p)) for p in ("int8", "fp32")))
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)


def test_openvino_runs_the_guard(exports):
    """The guard is plain ONNX: OpenVINO compiles the If too, and a margin that re-runs every
    image gives model.onnx's answers there, within fp32's tolerances."""
    import_extra("openvino", "openvino")
    folders, pixels = exports
    got = Vs2Session(contract.model_path(folders["all"], "int8"), provider="openvino").run(pixels[:9])
    want = _outputs(folders["auto"], "fp32", pixels[:9])
    for name in ("embedding", "base_embedding", "logits", "fvu", "latent_values"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(got["latent_indices"], want["latent_indices"])


def test_guarded_graph_with_its_weights_in_a_sidecar(exports, tmp_path, monkeypatch):
    """Over 2 GB the fp32 weights inside the If branch go to the sidecar like every other."""
    folders, pixels = exports
    copy = tmp_path / "big"
    shutil.copytree(folders["auto"], copy)
    path = contract.model_path(copy, "int8")
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
    onnx_files.save_onnx(onnx.load(str(path)), path)
    assert (copy / contract.sidecar_name(path.name)).stat().st_size > path.stat().st_size
    got, want = _outputs(copy, "int8", pixels[:50]), _outputs(folders["auto"], "int8", pixels[:50])
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_settings_choose_the_graph(exports, tmp_path):
    """recheck.plan: off and a margin of 0 build nothing, a margin is taken as given, auto
    without calibration images or without classes falls back to the plain file, and a margin
    without logits is refused (the gate band still applies)."""
    folders, pixels = exports
    fp32 = contract.model_path(folders["auto"], "fp32")
    int8 = contract.model_path(folders["off"], "int8")
    feeds = default_feeds(folders["auto"], Vs2Session(fp32).manifest)
    args = (fp32, int8, pixels[:16], feeds, contract.PIXEL_VALUES)
    assert plan("off", 0.0, *args, True) is None and plan(0.0, 0.0, *args, True) is None
    assert plan(0.7, 0.0, *args, True) == Int8RecheckInfo(0.7, 0.0, None, None, 0)
    assert plan("auto", 0.0, fp32, int8, None, feeds, contract.PIXEL_VALUES, True) is None
    assert plan("auto", 0.0, *args, False) is None
    assert plan("auto", 0.01, *args, False) == Int8RecheckInfo(0.0, 0.01, None, None, 0)
    chosen = plan("auto", 0.0, *args, True)
    assert chosen.images == 16 and chosen.margin > 0 and chosen.estimated_disagreement <= BUDGET
    with pytest.raises(Vs2Error, match="logits"):
        plan(0.5, 0.0, *args, False)


def test_without_classes_only_the_gate_band_applies(demo_work, exports, tmp_path):
    _, pixels = exports
    band = 0.01
    export(ExportConfig(demo_work / "sae", demo_work / "steering.json", tmp_path / "gate",
                        model=ModelSpec(DEMO_MODEL), precisions=("int8",), int8_recheck_gate=band,
                        calibration=demo_work / "unlabeled", calibration_max=16))
    recheck = Vs2Session(contract.model_path(tmp_path / "gate", "int8")).manifest.int8_recheck
    assert recheck.margin == 0 and recheck.gate_band == band
    plain = _with_int8(tmp_path / "gate", tmp_path / "plain", None)
    fp32, guarded = _outputs(tmp_path / "gate", "fp32", pixels), _outputs(tmp_path / "gate", "int8", pixels)
    plain = _outputs(plain, "int8", pixels)
    assert contract.LOGITS not in guarded
    tau = Vs2Session(tmp_path / "gate").manifest.steering.tau
    near = np.abs(plain.get("gate_score", plain["fvu"]) - tau) < band
    assert 0 < near.sum() < len(pixels)
    for name in guarded:
        np.testing.assert_allclose(guarded[name][near], fp32[name][near], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(guarded[name][~near], plain[name][~near], err_msg=name)


def test_margin_threshold_meets_its_budget():
    rng = np.random.default_rng(0)
    fp32 = rng.normal(0, 2, (400, 10)).astype(np.float32)
    small = fp32 + rng.normal(0, 0.02, fp32.shape).astype(np.float32)
    large = fp32 + rng.normal(0, 0.3, fp32.shape).astype(np.float32)
    t_small, est_small, rerun_small = margin_threshold(fp32, small)
    t_large, est_large, rerun_large = margin_threshold(fp32, large)
    assert est_small <= BUDGET and est_large <= BUDGET
    assert t_small < t_large and rerun_small < rerun_large  # larger error: wider margin
    # what the threshold leaves alone flips rarely: measured on these very logits
    kept = top2_margin(large) >= t_large
    assert (fp32.argmax(1) != large.argmax(1))[kept].mean() <= 5 * BUDGET
    # the same graph twice: nothing to re-check; one class: nothing can flip
    assert margin_threshold(fp32, fp32)[0] == 0.0
    assert margin_threshold(fp32[:, :1], large[:, :1])[0] == 0.0
    # one image that flips: the margin returned re-runs it (the guard re-runs m < margin)
    one = margin_threshold(np.array([[0.0, 0.5]], np.float32), np.array([[0.6, 0.5]], np.float32))
    assert one[0] > 0.1 and one[2] == 1.0
    # ties are margin 0, NaN rows count as re-run (the graph's Not(m >= t))
    assert top2_margin(np.array([[1, 1, 0]], np.float32))[0] == 0
    nan = large.copy()
    nan[:40] = np.nan
    assert margin_threshold(fp32, nan)[2] >= 0.1


@pytest.mark.parametrize("bad", ["abc", -0.1, "nan", float("inf"), "1e39"])
def test_recheck_settings_are_validated(tmp_path, bad):
    with pytest.raises(Vs2Error, match="int8_recheck"):
        ExportConfig(tmp_path, tmp_path / "s.json", tmp_path / "out", int8_recheck=bad)
    with pytest.raises(Vs2Error, match="off"):  # 'off' is the plain file: a gate band contradicts it
        ExportConfig(tmp_path, tmp_path / "s.json", tmp_path / "out", int8_recheck="off",
                     int8_recheck_gate=0.01)


def test_recheck_setting_parses_text_and_gate(tmp_path):
    cfg = ExportConfig(tmp_path, tmp_path / "s.json", tmp_path / "out", int8_recheck="0.25")
    assert cfg.int8_recheck == 0.25 and ExportConfig(tmp_path, tmp_path / "s.json", tmp_path / "o",
                                                      int8_recheck="off").int8_recheck == "off"
    with pytest.raises(Vs2Error, match="int8_recheck_gate"):
        ExportConfig(tmp_path, tmp_path / "s.json", tmp_path / "out", int8_recheck_gate=-1.0)


def test_manifest_refuses_a_recheck_it_cannot_mean(exports):
    folders, _ = exports
    good = json.loads((folders["auto"] / contract.manifest_file("int8")).read_text())
    Manifest.from_dict(good)
    cases = [({"precision": "fp32"}, "only in an int8"),
             ({"int8_recheck": {**good["int8_recheck"], "margin": -1.0}}, "margin"),
             ({"int8_recheck": {**good["int8_recheck"], "margin": 0.0}}, "margin or gate_band"),
             ({"int8_recheck": {**good["int8_recheck"], "rerun_rate": 2.0}}, "rerun_rate"),
             ({"int8_recheck": {"margin": 0.3}}, "int8_recheck"),
             ({"int8_recheck": {**good["int8_recheck"], "margin": 10**400}}, "margin")]
    for change, message in cases:
        with pytest.raises(ManifestError, match=message):
            Manifest.from_dict({**good, **change})


def _set_margin(path, margin):
    """Edit the guard's margin constant in the graph; the manifest keeps what it said."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "recheck/max_margin":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(margin, np.float32), init.name))
    onnx.save(model, str(path))


def test_verify_holds_the_manifest_to_the_guard_in_the_graph(demo_work, exports, tmp_path):
    """The re-check setting no source fixes: verify compares the manifest's with the graph's, so
    a guard switched off (margin edited to 0) or hidden from the manifest fails, naming it."""
    folders, _ = exports
    record = contract.record_path(demo_work, "auto")
    report = verify(VerifyConfig(folders["auto"], record, precision="int8", max_images=8))
    assert next(m for m in report.metadata if m.name == "manifest.int8_recheck").passed
    off = tmp_path / "auto"
    shutil.copytree(folders["auto"], off)
    _set_margin(contract.model_path(off, "int8"), 0.0)
    with pytest.raises(CheckFailed, match="manifest.int8_recheck differs"):
        verify(VerifyConfig(off, record, precision="int8", max_images=8))
    hidden = tmp_path / "hidden"  # the guard kept, the manifest silent about it
    shutil.copytree(folders["auto"], hidden)
    model = onnx.load(str(contract.model_path(hidden, "int8")))
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == contract.METADATA_KEY))
    del meta["int8_recheck"]
    onnx.helper.set_model_props(model, {contract.METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(contract.model_path(hidden, "int8")))
    with pytest.raises(CheckFailed, match="manifest.int8_recheck differs"):
        verify(VerifyConfig(hidden, record, precision="int8", max_images=8))
    fifo = tmp_path / "fifo"  # the guard is read before the session: a FIFO must not block it
    shutil.copytree(folders["auto"], fifo)
    contract.model_path(fifo, "int8").unlink()
    os.mkfifo(contract.model_path(fifo, "int8"))
    with pytest.raises(Vs2Error, match="regular file, got a FIFO"):
        verify(VerifyConfig(fifo, record, precision="int8", max_images=8))
