"""uint8 NHWC input with the normalisation folded into the graph (issue 4, item 3): the demo model
exported with --pixel-input pixels_uint8 takes pixels_uint8 uint8 [B, S, S, 3], gives the float
graph's outputs on the same images, passes verify and eval, and its session checks the input."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from pipeline import build_export
from typer.testing import CliRunner

from vs2_export.cli import app
from vs2_export.config import EvalConfig, ModelSpec, VerifyConfig
from vs2_export.demo.data import CLASSES, generate_labeled, generate_unlabeled
from vs2_export.evaluate import evaluate
from vs2_export.precision import uint8_normalisation_nodes
from vs2_export.runtime import (
    Manifest,
    ManifestError,
    PreprocessSpec,
    list_images,
    normalise,
    preprocess_image,
    preprocess_paths,
    resize_crop,
)
from vs2_export.runtime.contract import model_path
from vs2_export.runtime.session import InputError, Vs2Session
from vs2_export.verify import verify

DEMO = ModelSpec("vs2-demo")
S = 64


@pytest.fixture(scope="module")
def exports(module_tmp):
    """(float export, uint8 export with fp16 and int8 variants, labeled folder): same SAE and
    steering."""
    work = module_tmp.mktemp("uint8")
    unlabeled = generate_unlabeled(work / "unlabeled", 200, seed=0)
    labeled = generate_labeled(work / "labeled", 5, seed=1)
    calib = generate_unlabeled(work / "calib", 16, seed=4)
    floats = build_export(work, DEMO, unlabeled, list(CLASSES), k=8, epochs=3)
    out = work / "uint8"
    result = CliRunner().invoke(app, [str(a) for a in (
        "export", "--sae", work / "sae", "--steering", work / "steering.json", "--classes",
        work / "classes.txt", "--out", out, "--pixel-input", "pixels_uint8", "--precision", "fp16",
        "--precision", "int8", "--calibration", calib)])
    assert result.exit_code == 0, (result.output, result.exception)
    return floats, out, labeled


def test_graph_takes_pixels_uint8_nhwc(exports):
    _, out, _ = exports
    for precision in ("fp32", "fp16", "int8"):
        graph = onnx.load(str(model_path(out, precision)))
        pixels = graph.graph.input[0]
        dims = [d.dim_param or d.dim_value for d in pixels.type.tensor_type.shape.dim]
        assert pixels.name == "pixels_uint8" and dims[1:] == [S, S, 3] and isinstance(dims[0], str)
        assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        session = Vs2Session(model_path(out, precision))
        assert session.manifest.pixel_input == "pixels_uint8"
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["inputs"]["pixels_uint8"] == [None, S, S, 3] and meta["pixel_input"] == "pixels_uint8"
    assert "pixel_values" not in meta["inputs"]


def test_uint8_graph_matches_float_graph(exports):
    floats, out, labeled = exports
    u8 = preprocess_paths(list_images(labeled), Vs2Session(out).manifest.preprocess, uint8=True)
    assert u8.pixels.dtype == np.uint8 and u8.pixels.shape[1:] == (S, S, 3)
    got = Vs2Session(out).run(u8.pixels)
    ref = Vs2Session(floats).run(normalise(u8.pixels, Vs2Session(floats).manifest.preprocess))
    assert np.abs(got["embedding"] - ref["embedding"]).max() <= 1e-4
    assert np.abs(got["base_embedding"] - ref["base_embedding"]).max() <= 1e-4
    assert (got["logits"].argmax(-1) == ref["logits"].argmax(-1)).all()


def test_verify_and_eval_pass_on_uint8_export(exports):
    floats, out, labeled = exports
    run = out.parent
    assert verify(VerifyConfig(out, run, labeled, batch_size=16)).verdict == "PASS"
    for precision in ("fp16", "int8"):
        assert verify(VerifyConfig(out, run, labeled, precision=precision)).verdict == "PASS"
    report = evaluate(EvalConfig(out, labeled, batch_size=8))
    # The same numbers as eval on the float graph: same images, same predictions.
    assert report.n_images == len(list_images(labeled))
    assert report.vs2_top1 == evaluate(EvalConfig(floats, labeled, batch_size=8)).vs2_top1


def test_session_checks_the_uint8_input(exports):
    _, out, _ = exports
    session = Vs2Session(out)
    with pytest.raises(InputError, match=r"pixels_uint8: expected uint8 \[B, 64, 64, 3\].*float32"):
        session.run(np.zeros((2, S, S, 3), np.float32))
    with pytest.raises(InputError, match=r"pixels_uint8: expected shape .*got \[2, 3, 64, 64\]"):
        session.run(np.zeros((2, 3, S, S), np.uint8))
    with pytest.raises(InputError, match="numpy.ndarray"):
        session.run([[0]])
    with pytest.raises(InputError, match="at least 1"):
        session.run(np.zeros((0, S, S, 3), np.uint8))
    out_ = session.run(np.full((1, S, S, 3), 255, np.uint8))
    assert out_["embedding"].shape == (1, session.manifest.model.embed_dim)


def test_classify_and_run_paths_through_files(exports):
    floats, out, labeled = exports
    paths = list_images(labeled)[:6]
    got, ref = Vs2Session(out), Vs2Session(floats)
    assert [r[0][0] for r in got.classify(paths)] == [r[0][0] for r in ref.classify(paths)]
    result = got.run_paths([*paths, labeled / "missing.png"])
    assert result.paths == tuple(paths) and len(result.skipped) == 1
    assert np.abs(result.outputs["embedding"] - got.embed(paths)).max() == 0
    assert got.preprocess(Image.open(paths[0])).dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_resize_crop_then_normalise_is_preprocess_image(mode, resize_mode):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).convert(mode)
    spec = PreprocessSpec(32, resize_mode=resize_mode, fill_color=7)
    raw = resize_crop(img, spec)
    assert raw.dtype == np.uint8 and raw.shape == (32, 32, 3)
    assert np.array_equal(normalise(raw, spec), preprocess_image(img, spec))
    assert np.array_equal(normalise(raw[None], spec)[0], preprocess_image(img, spec))


def test_manifest_takes_exactly_one_pixel_input(exports):
    floats, out, _ = exports
    old = json.loads((floats / "manifest.json").read_text())
    assert Manifest.from_dict(old).pixel_input == "pixel_values"
    new = json.loads((out / "manifest.json").read_text())
    assert Manifest.from_dict(new).to_dict()["inputs"] == new["inputs"]
    both = {**new, "inputs": {**new["inputs"], "pixel_values": [None, 3, S, S]}}
    with pytest.raises(ManifestError, match="exactly one"):
        Manifest.from_dict(both)
    with pytest.raises(ManifestError, match="pixel_input: expected the pixel key of inputs"):
        Manifest.from_dict({**new, "pixel_input": "pixel_values"})
    wrong = {**new, "inputs": {**new["inputs"], "pixels_uint8": [None, 3, S, S]}}
    with pytest.raises(ManifestError, match=r"inputs.pixels_uint8: expected \[null, 64, 64, 3\]"):
        Manifest.from_dict(wrong)


def test_fp16_keeps_the_normalisation_in_fp32(exports):
    """No fp16 round trip between the wrapper's cast, scale and shift
    (precision._no_fp16_round_trips)."""
    _, out, _ = exports
    own = uint8_normalisation_nodes(onnx.load(str(model_path(out, "fp32"))))
    assert len(own) >= 3
    graph = onnx.load(str(model_path(out, "fp16"))).graph
    produced = {o for n in graph.node if n.name in own for o in n.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    half = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in produced
            and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    assert half, "expected the shifted pixels cast to fp16 for the fp16 trunk"
    for cast in half:  # feeds fp16 compute, not just a Cast back to fp32
        assert any(r.op_type != "Cast" for r in readers[cast.output[0]])
