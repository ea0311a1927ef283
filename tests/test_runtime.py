"""runtime.manifest and runtime.session on a tiny fake graph that follows the export contract.

The fake graph computes checkable values from trivial ops: x = mean of pixels per channel [B, 3],
base = x @ We, steered = base + lambda (gamma - 1) (x @ Wv) where fvu = mean(x^2) <= tau,
both L2-normalised; logits = scale * embedding @ class_embeddings^T (T by default, from
class_embeddings.f32); latents = top-2 of x @ Wl. Every input is a real graph input (schema 2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from vs2_export.runtime import (
    METADATA_KEY,
    ImageError,
    InputError,
    Manifest,
    ManifestError,
    ModelError,
    PreprocessSpec,
    ProviderError,
    Vs2Session,
    preprocess_image,
)
from vs2_export.runtime import providers as providers_module

REPO = Path(__file__).resolve().parents[1]
S, E, D, N, K = 8, 4, 3, 6, 2
CLASSES = ["cat", "dog", "fox"]
GAMMA, LAM, TAU, SCALE = 1.5, 2.1, 0.3, 100.0
SHA = "ab" * 32
RNG = np.random.default_rng(0)
W_E = RNG.normal(size=(D, E)).astype(np.float32)
W_V = RNG.normal(size=(D, E)).astype(np.float32)
W_L = RNG.normal(size=(D, N)).astype(np.float32)
T = RNG.normal(size=(len(CLASSES), E)).astype(np.float32)
T /= np.linalg.norm(T, axis=1, keepdims=True)


T_BYTES = T.astype("<f4").tobytes()


def manifest_dict(classes=CLASSES) -> dict:
    """A valid schema-2 document for the fake graph."""
    return {
        "schema_version": 2,
        "model": {"id": "fake", "source": "demo", "width": D, "embed_dim": E},
        "preprocess": json.loads(json.dumps(PreprocessSpec(image_size=S).to_dict())),
        "sae": {"d": D, "n": N, "k": K, "sha256": SHA},
        "steering": {"gamma": GAMMA, "lambda": LAM, "quantile": 0.99, "tau": TAU, "sae_sha256": SHA,
                     "gate": "fvu", "gate_stats": None},
        "classes": classes,
        "templates": ["a photo of a {}."],
        "logit_scale": SCALE,
        "precision": "fp32",
        "opset": 18,
        "pixel_input": "pixel_values",
        "inputs": {"pixel_values": [None, 3, S, S],
                   "overridable": {"steer_gamma": GAMMA, "steer_lambda": LAM, "gate_tau": TAU}},
        "class_embeddings": {"file": "class_embeddings.f32", "shape": [len(classes), E],
                             "sha256": hashlib.sha256(T_BYTES).hexdigest()} if classes else None,
        "text": None,
        "outputs": ["embedding", "base_embedding"] + (["logits"] if classes else [])
                   + ["fvu", "steered", "latent_indices", "latent_values"],
        "versions": {"vs2_export": "0.1.0"},
        "tolerances": {"fp32": {"cosine": 0.99999}},
        "created": "2026-01-01T00:00:00+00:00",
    }


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def build_fake_model(classes=CLASSES, metadata: str | None = None) -> onnx.ModelProto:
    """The contract's inputs (pixels, the 3 steering scalars, class_embeddings) and outputs."""
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["pixel_values", "axes23"], ["x"], keepdims=0),
        n("MatMul", ["x", "W_e"], ["base_raw"]),
        n("MatMul", ["x", "W_v"], ["v"]),
        n("Sub", ["steer_gamma", "one"], ["g1"]),
        n("Mul", ["steer_lambda", "g1"], ["alpha"]),
        n("Mul", ["v", "alpha"], ["delta"]),
        n("Add", ["base_raw", "delta"], ["steer_raw"]),
        n("Mul", ["x", "x"], ["x2"]),
        n("ReduceMean", ["x2", "axes1"], ["fvu"], keepdims=0),
        n("LessOrEqual", ["fvu", "gate_tau"], ["steered"]),
        n("Unsqueeze", ["steered", "axes1"], ["cond"]),
        n("Where", ["cond", "steer_raw", "base_raw"], ["chosen"]),
        n("ReduceL2", ["chosen", "axes1"], ["norm"], keepdims=1),
        n("Div", ["chosen", "norm"], ["embedding"]),
        n("ReduceL2", ["base_raw", "axes1"], ["bnorm"], keepdims=1),
        n("Div", ["base_raw", "bnorm"], ["base_embedding"]),
        n("MatMul", ["x", "W_l"], ["lat"]),
        n("TopK", ["lat", "kk"], ["latent_values", "latent_indices"], axis=-1, largest=1, sorted=1),
    ]
    inits = [_const("axes23", np.array([2, 3], np.int64)), _const("axes1", np.array([1], np.int64)),
             _const("one", np.float32(1.0)), _const("W_e", W_E), _const("W_v", W_V), _const("W_l", W_L),
             _const("kk", np.array([K], np.int64))]
    f32, vi = TensorProto.FLOAT, helper.make_tensor_value_info
    inputs = [vi("pixel_values", f32, ["B", 3, S, S])] + [
        vi(name, f32, []) for name in ("steer_gamma", "steer_lambda", "gate_tau")]
    outputs = [vi("embedding", f32, ["B", E]), vi("base_embedding", f32, ["B", E])]
    if classes:
        nodes += [n("Transpose", ["class_embeddings"], ["T_t"], perm=[1, 0]),
                  n("MatMul", ["embedding", "T_t"], ["cos"]), n("Mul", ["cos", "scale"], ["logits"])]
        inits += [_const("scale", np.float32(SCALE))]
        inputs.append(vi("class_embeddings", f32, ["C", E]))
        outputs.append(vi("logits", f32, ["B", "C"]))
    outputs += [vi("fvu", f32, ["B"]), vi("steered", TensorProto.BOOL, ["B"]),
                vi("latent_indices", TensorProto.INT64, ["B", K]), vi("latent_values", f32, ["B", K])]
    graph = helper.make_graph(nodes, "fake_vs2", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what ORT 1.18+ reads
    text = Manifest.from_dict(manifest_dict(classes)).to_json() if metadata is None else metadata
    if text != "":
        helper.set_model_props(model, {METADATA_KEY: text})
    onnx.checker.check_model(model)
    return model


def expected_outputs(pixels: np.ndarray, gamma=GAMMA, lam=LAM, tau=TAU) -> dict[str, np.ndarray]:
    x = pixels.astype(np.float64).mean(axis=(2, 3))
    base = x @ W_E
    steer = base + lam * (gamma - 1) * (x @ W_V)
    fvu = (x * x).mean(axis=1)
    steered = fvu <= tau
    chosen = np.where(steered[:, None], steer, base)
    emb = chosen / np.linalg.norm(chosen, axis=1, keepdims=True)
    lat = x @ W_L
    return {"embedding": emb, "base_embedding": base / np.linalg.norm(base, axis=1, keepdims=True),
            "logits": SCALE * emb @ T.T, "fvu": fvu, "steered": steered,
            "latent_values": -np.sort(-lat, axis=1)[:, :K], "latent_indices": np.argsort(-lat, axis=1)[:, :K]}


def save_model(folder: Path, model: onnx.ModelProto) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "class_embeddings.f32").write_bytes(T_BYTES)
    return folder


@pytest.fixture(scope="module")
def model_dir(module_tmp) -> Path:
    return save_model(module_tmp.mktemp("fake") / "m", build_fake_model())


@pytest.fixture(scope="module")
def session(model_dir) -> Vs2Session:
    return Vs2Session(model_dir, threads=1)


def pixels(batch: int = 3, seed: int = 1, scale: float = 0.5) -> np.ndarray:
    """Half the rows small (fvu <= tau: steered), half large (gated off)."""
    out = np.random.default_rng(seed).normal(size=(batch, 3, S, S)).astype(np.float32) * scale
    out[::2] += 1.0  # mean ~1 per channel: fvu ~1 > tau
    return out


# ---- manifest


def test_manifest_round_trip():
    data = manifest_dict()
    m = Manifest.from_dict(data)
    assert m.to_dict() == data
    assert Manifest.from_json(m.to_json()) == m
    assert m.steering.lambda_ == LAM and m.classes == tuple(CLASSES) and m.image_size == S
    assert m.model.weights_sha256 is None and "weights_sha256" not in m.to_dict()["model"]
    checked = manifest_dict()
    checked["model"]["weights_sha256"] = "cd" * 32
    assert Manifest.from_dict(checked).to_dict() == checked
    assert Manifest.from_json(Manifest.from_dict(checked).to_json()).model.weights_sha256 == "cd" * 32
    no_classes = Manifest.from_dict(manifest_dict(classes=None))
    assert no_classes.classes is None and "logits" not in no_classes.outputs


def _set(path: str, value):
    def mutate(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return mutate


MANIFEST_ERRORS = [
    (_set("schema_version", 1), "schema_version: expected 2 (this runtime reads schema 2 only)"),
    (_set("model", KeyError), "required key(s) ['model'] missing"),
    (_set("sae.sha256", KeyError), "sae: required key(s) ['sha256']"),
    (_set("extra", 1), "unknown key(s) ['extra']"),
    (_set("model.width", "3"), "model.width: expected an int >= 1, got '3'"),
    (_set("model.embed_dim", True), "model.embed_dim"),
    (_set("logit_scale", "100"), "logit_scale: expected a number > 0, finite in float32"),
    (_set("preprocess.image_size", 0), "preprocess.image_size: expected an int in [1, 4096]"),
    (_set("preprocess.std", [0.5, 0.0, 0.5]), "preprocess.std"),
    (_set("preprocess.interpolation", "nearest"), "preprocess.interpolation"),
    (_set("sae.k", N + 1), f"sae.k: expected <= sae.n = {N}, got {N + 1}"),
    (_set("sae.d", D + 1), "sae.d: expected model.width"),
    (_set("steering.sae_sha256", "cd" * 32), "steering.sae_sha256"),
    (_set("steering.quantile", 1.5), "steering.quantile"),
    (_set("classes", ["cat", "dog", "cat"]), "duplicates ['cat']"),
    (_set("classes", ["cat", "", "fox"]), "classes[1]: expected a non-empty string"),
    (_set("classes", "cat"), "classes: expected a list"),
    (_set("classes", None), "'logits' listed if and only if classes are given (classes null)"),
    (_set("outputs", ["embedding", "base_embedding", "fvu", "steered", "latent_indices",
                      "latent_values"]), "if and only if classes are given (classes given)"),
    (_set("outputs", ["embedding"]), "outputs: expected to include"),
    (_set("templates", ["a photo"]), "templates[0]: expected a string with exactly one '{}'"),
    (_set("precision", "fp8"), "precision: expected one of ['fp32', 'fp16', 'int8'], got 'fp8'"),
    (_set("inputs.pixel_values", [None, 3, 224, 224]), "inputs.pixel_values: expected [null, 3, 8, 8]"),
    (_set("inputs.overridable.steer_gamma", 9.0), "inputs.overridable.steer_gamma"),
    (_set("inputs.overridable", {"other": 1.0}), "inputs.overridable: expected exactly the keys"),
    (_set("inputs.overridable", {"steer_gamma": GAMMA, "steer_lambda": LAM}),
     "inputs.overridable: expected exactly the keys"),
    (_set("pixel_input", "pixels_uint8"), "pixel_input: expected the pixel key of inputs"),
    (_set("pixel_input", KeyError), "required key(s) ['pixel_input'] missing"),
    (_set("inputs.max_side", 4096), "inputs: unknown key(s) ['max_side']"),
    (_set("class_embeddings", None), "class_embeddings: expected an object (classes given)"),
    (_set("class_embeddings.shape", [2, E]), "class_embeddings.shape: expected [3, 4]"),
    (_set("class_embeddings.file", "../x.f32"), "class_embeddings.file: expected 'class_embeddings.f32'"),
    (_set("class_embeddings.sha256", "XY"), "class_embeddings.sha256: expected 64 lowercase hex digits"),
    (_set("text", {"model": "text.onnx", "vocab": "tokenizer/bpe_simple_vocab_16e6.txt.gz",
                   "context_length": 1, "clean": "lower"}), "text.context_length"),
    (_set("text", {"model": "/etc/passwd", "vocab": "tokenizer/bpe_simple_vocab_16e6.txt.gz",
                   "context_length": 77, "clean": "lower"}), "text.model: expected 'text.onnx'"),
    (_set("created", "yesterday"), "created: expected an ISO 8601"),
    (_set("versions", {"torch": 2}), "versions"),
]


@pytest.mark.parametrize("mutate, message", MANIFEST_ERRORS)
def test_manifest_validation_errors(mutate, message):
    data = copy.deepcopy(manifest_dict())
    mutate(data)
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(data)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "null"])
def test_manifest_from_json_bad_documents(text):
    with pytest.raises(ManifestError, match="manifest|schema_version"):
        Manifest.from_json(text)


def test_manifest_cannot_be_built_invalid():
    m = Manifest.from_dict(manifest_dict())
    with pytest.raises(ManifestError, match="precision"):
        Manifest(**{**m.__dict__, "precision": "fp64"})


# ---- session: running


def test_session_outputs_match_the_graph_math(session):
    x = pixels()
    out = session.run(x)
    want = expected_outputs(x)
    assert set(out) == set(manifest_dict()["outputs"])
    assert out["steered"].dtype == np.bool_ and out["latent_indices"].dtype == np.int64
    assert list(out["steered"]) == [False, True, False] == list(want["steered"])
    for name in ("embedding", "base_embedding", "logits", "fvu", "latent_values"):
        np.testing.assert_allclose(out[name], want[name], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["latent_indices"], want["latent_indices"])
    assert session.providers == ["CPUExecutionProvider"] and session.manifest.classes == tuple(CLASSES)


def test_overrides_change_the_output(session):
    x = pixels()
    default = session.run(x)
    stronger = session.run(x, lambda_=5.0)
    np.testing.assert_allclose(stronger["embedding"], expected_outputs(x, lam=5.0)["embedding"], atol=1e-4)
    assert not np.allclose(stronger["embedding"][1], default["embedding"][1])  # steered row moved
    np.testing.assert_allclose(stronger["embedding"][0], default["embedding"][0])  # gated row did not
    np.testing.assert_allclose(stronger["base_embedding"], default["base_embedding"])
    gated = session.run(x, tau=0.0)
    assert not gated["steered"].any()
    np.testing.assert_allclose(gated["embedding"], gated["base_embedding"], atol=1e-6)
    np.testing.assert_allclose(session.run(x, gamma=1.0)["embedding"], default["base_embedding"], atol=1e-6)
    np.testing.assert_allclose(session.run(x)["embedding"], default["embedding"])  # nothing sticks


BAD_INPUTS = [
    (pixels().astype(np.float64), "expected dtype float32, got float64"),
    (pixels().astype(np.float16), "got float16"),
    (pixels()[0], "expected shape float32 [B, 3, 8, 8], got [3, 8, 8]"),
    (pixels()[:, :2], "got [3, 2, 8, 8]"),
    (np.zeros((1, 3, 8, 9), np.float32), "got [1, 3, 8, 9]"),
    (np.zeros((1, 3, 16, 16), np.float32), "got [1, 3, 16, 16]"),
    (np.zeros((0, 3, 8, 8), np.float32), "batch of at least 1"),
    ([[0.0]], "expected a numpy.ndarray"),
]


@pytest.mark.parametrize("value, message", BAD_INPUTS)
def test_run_input_checks(session, value, message):
    with pytest.raises(InputError) as info:
        session.run(value)
    assert message in str(info.value)


@pytest.mark.parametrize("bad, message", [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf"),
                                          (-np.inf, "0 NaN and 1 Inf")])
def test_run_refuses_non_finite(session, bad, message):
    x = pixels()
    x[1, 2, 3, 4] = bad
    with pytest.raises(InputError, match=message):
        session.run(x)


@pytest.mark.parametrize("kwargs", [{"gamma": float("nan")}, {"lambda_": float("inf")}, {"tau": "0.3"},
                                    {"tau": True}, {"gamma": None, "lambda_": [1.0]},
                                    {"gamma": 1e39}])  # finite in float64, inf in the graph's float32
def test_run_refuses_bad_overrides(session, kwargs):
    with pytest.raises(InputError, match="expected a number finite in float32"):
        session.run(pixels(), **kwargs)


def test_run_accepts_non_contiguous_arrays(session):
    x = np.asfortranarray(pixels())
    np.testing.assert_allclose(session.run(x)["fvu"], expected_outputs(x)["fvu"], atol=1e-5)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_run_property_only_input_errors(session, data):
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int64,
                                       np.uint8, np.bool_]))
    shape = data.draw(st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=8),
        st.tuples(st.integers(0, 3), st.sampled_from([1, 3]), st.sampled_from([7, 8]), st.just(8))))
    x = data.draw(hnp.arrays(dtype, shape))
    try:
        out = session.run(x)
    except InputError:
        return
    except ModelError:  # valid input the fake graph turns into NaN (a zero row's 0/0 norm, or
        assert x.dtype == np.float32 and x.shape[1:] == (3, S, S)  # overflow): refused, not shown
        return
    assert x.dtype == np.float32 and x.shape[1:] == (3, S, S) and np.isfinite(x).all()
    assert out["embedding"].shape == (x.shape[0], E)


# ---- session: images


def _png(folder: Path, name: str, seed: int) -> Path:
    arr = np.random.default_rng(seed).integers(0, 255, size=(20, 13, 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(arr).save(path)
    return path


def test_embed_and_classify_paths_and_images(session, tmp_path):
    paths = [_png(tmp_path, f"{i}.png", i) for i in range(3)]
    spec = session.manifest.preprocess
    x = np.stack([preprocess_image(Image.open(p), spec) for p in paths])
    want = session.run(x)
    np.testing.assert_allclose(session.embed(paths, batch_size=2), want["embedding"], atol=1e-6)
    np.testing.assert_allclose(session.embed(Image.open(paths[0])), want["embedding"][:1], atol=1e-6)
    top = session.classify(paths, top_k=2)
    assert len(top) == 3 and all(len(row) == 2 for row in top)
    for row, logits in zip(top, want["logits"], strict=True):
        assert row[0][0] == CLASSES[int(np.argmax(logits))] and row[0][1] >= row[1][1]
    full = session.classify([paths[0]], top_k=10)[0]
    assert len(full) == 3 and abs(sum(p for _, p in full) - 1.0) < 1e-6


def test_embed_is_strict_and_run_paths_is_lenient(session, tmp_path):
    good = _png(tmp_path, "good.png", 0)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        session.embed([good, bad])
    result = session.run_paths([good, bad, tmp_path / "missing.png"], batch_size=1)
    assert result.paths == (good,) and [p for p, _ in result.skipped] == [bad, tmp_path / "missing.png"]
    assert result.outputs["embedding"].shape == (1, E)
    empty = session.run_paths([bad])
    assert empty.outputs["embedding"].shape == (0, E) and empty.outputs["latent_indices"].dtype == np.int64
    with pytest.raises(InputError, match="at least one image"):
        session.embed([])
    with pytest.raises(InputError, match="paths or PIL images"):
        session.embed([np.zeros((3, S, S))])


def test_classify_needs_classes(tmp_path):
    s = Vs2Session(save_model(tmp_path / "m", build_fake_model(classes=None)))
    assert "logits" not in s.run(pixels())
    with pytest.raises(InputError, match="without class names"):
        s.classify([Image.new("RGB", (9, 9))])


# ---- session: loading and providers


def test_cuda_on_a_cpu_machine(model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger=providers_module.__name__):
        fallback = Vs2Session(model_dir, provider="cuda", allow_cpu_fallback=True)
    if "CUDAExecutionProvider" in fallback.providers:
        pytest.skip("CUDA works on this machine")
    assert fallback.providers == ["CPUExecutionProvider"] and "Falling back" in caplog.text
    with pytest.raises(ProviderError, match="asked for cuda"):
        Vs2Session(model_dir, provider="cuda")


def test_cuda_error_mentions_both_ort_distributions(model_dir, monkeypatch):
    monkeypatch.setattr(providers_module, "is_installed", lambda name: True)
    monkeypatch.setattr(providers_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="Both onnxruntime and onnxruntime-gpu"):
        Vs2Session(model_dir, provider="cuda")


@pytest.mark.parametrize("kwargs, error", [({"provider": "tpu"}, ProviderError),
                                           ({"threads": 0}, ValueError),
                                           ({"optimization": "max"}, ValueError)])
def test_bad_session_options(model_dir, kwargs, error):
    with pytest.raises(error):
        Vs2Session(model_dir, **kwargs)


def test_model_file_problems(tmp_path, model_dir):
    with pytest.raises(ModelError, match="no such file"):
        Vs2Session(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.onnx").write_bytes(b"\x00garbage, not a protobuf")
    with pytest.raises(ModelError, match="expected an ONNX model"):
        Vs2Session(tmp_path / "junk")
    assert Vs2Session(model_dir / "model.onnx").manifest.model.id == "fake"  # a .onnx path works too


def _tampered(kind: str) -> str:
    data = manifest_dict()
    if kind == "k_gt_n":
        data["sae"]["k"] = N + 5
    elif kind == "outputs":  # valid manifest, but it says no classes while the graph has logits
        data = manifest_dict(classes=None)
    elif kind == "schema":
        data["schema_version"] = 99
    elif kind == "classes":  # two names, but class_embeddings.f32 holds three rows
        data["classes"] = CLASSES[:2]
        data["class_embeddings"]["shape"] = [2, E]
    return json.dumps(data)


@pytest.mark.parametrize("metadata, message", [
    ("", "expected 'vs2_export' metadata"),
    ("{truncated", "invalid JSON"),
    (_tampered("k_gt_n"), "sae.k"),
    (_tampered("schema"), "schema_version"),
    (_tampered("outputs"), "do not match manifest outputs"),
    (_tampered("classes"), "expected 2 x 4 float32 (32 bytes, from the manifest), got 48 bytes"),
])
def test_missing_or_tampered_metadata_refused(tmp_path, metadata, message):
    folder = save_model(tmp_path / "m", build_fake_model(metadata=metadata))
    with pytest.raises(ModelError) as info:
        Vs2Session(folder)
    assert message in str(info.value)


def test_manifest_json_beside_the_model_is_not_trusted(tmp_path):
    folder = save_model(tmp_path / "m", build_fake_model())
    (folder / "manifest.json").write_text("{garbage")  # only the ONNX metadata counts
    assert Vs2Session(folder).manifest.sae.k == K


# ---- isolation: the runtime works with torch, open_clip, torchvision and onnx unimportable

_ISOLATED = textwrap.dedent("""
    import sys
    BLOCKED = ("torch", "torchvision", "open_clip", "onnx")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        sys.modules[name] = None
    import numpy as np
    from vs2_export.runtime import Vs2Session
    s = Vs2Session(sys.argv[1], threads=1)
    out = s.run(np.full((2, 3, s.manifest.image_size, s.manifest.image_size), 0.5, np.float32))
    assert out["embedding"].shape[0] == 2
    loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
    assert not loaded, loaded
    print("ok")
""")


def test_runtime_runs_without_torch_or_onnx(model_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _ISOLATED, str(model_dir)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
