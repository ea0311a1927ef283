"""A toy export folder with the issue-9 graph contract, built with onnx.helper (no torch).

It proves the JS bindings (vs2.js on onnxruntime-node and onnxruntime-web) until the exporter
writes real folders with this contract. Same I/O names, dtypes and shapes as the contract:

    model.onnx   pixel input (pixel_values f32 [B,3,S,S] | pixels_uint8 u8 [B,S,S,3] |
                 image_rgb u8 [H,W,3]), steer_gamma / steer_lambda / gate_tau f32 [],
                 class_embeddings f32 [C,E]
                 -> embedding, base_embedding [B,E], logits [B,C], fvu [B], steered [B] bool,
                    latent_indices [B,k] i64, latent_values [B,k] f32, gate_score [B] f32
                    (issue 12; the toy gates on the fvu criterion, so gate_score = fvu)
    text.onnx    input_ids i64 [N,L] -> text_embedding f32 [N,E] (L2-normalised)
    class_embeddings.f32   [C,E] little-endian float32, row-major
    manifest.json          (also in model.onnx metadata_props["vs2_export"])
    tokenizer/bpe_simple_vocab_16e6.txt.gz

The math is VS2's shape with random weights: a linear "trunk" h = 3 tanh(W x), a top-k SAE,
gate fvu <= tau, steering h' = (h + lambda (gamma-1) W_dec c) * |h| / |h + ...|, a projection.
For image_rgb the graph resizes (shortest side, antialiased bicubic) and centre-crops itself.

    python tests/toy_export.py OUT_DIR [--pixel-input image_rgb] [--context-length 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vs2_export.runtime.tokenizer import ClipTokenizer, TokenizerSpec, open_clip_vocab

PIXEL_INPUTS = ("pixel_values", "pixels_uint8", "image_rgb")
CLASSES = ("circle", "square", "triangle", "star", "crescent")
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.")
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
OPSET = 18
IR_VERSION = 8
"""The lowest IR version opset 18 allows; onnx 1.2x writes newer ones that ORT may not read yet."""


def build(out: str | Path, *, pixel_input: str = "image_rgb", image_size: int = 16, width: int = 32,
          n_latents: int = 64, k: int = 8, embed_dim: int = 16, context_length: int = 16,
          seed: int = 0) -> Path:
    """Write the toy export folder to `out` and return it."""
    if pixel_input not in PIXEL_INPUTS:
        raise ValueError(f"pixel_input: expected one of {PIXEL_INPUTS}, got {pixel_input!r}")
    out = Path(out)
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dims = dict(S=image_size, d=width, n=n_latents, k=k, E=embed_dim)
    image = _image_graph(pixel_input, dims, rng)
    text = _text_graph(context_length, embed_dim, rng)
    onnx.save(text, out / "text.onnx")
    shutil.copyfile(open_clip_vocab(), out / TokenizerSpec().vocab)
    tokenizer = ClipTokenizer(out / TokenizerSpec().vocab, context_length)
    class_emb = class_embeddings(ort.InferenceSession(str(out / "text.onnx")), tokenizer,
                                 CLASSES, TEMPLATES)
    class_emb.astype("<f4").tofile(out / "class_embeddings.f32")
    tau = _median_fvu(image, pixel_input, image_size, class_emb, rng)
    manifest = _manifest(pixel_input, dims, context_length, tau,
                         hashlib.sha256((out / "class_embeddings.f32").read_bytes()).hexdigest())
    onnx.helper.set_model_props(image, {"vs2_export": json.dumps(manifest)})
    onnx.checker.check_model(image)
    onnx.save(image, out / "model.onnx")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def class_embeddings(text_session: ort.InferenceSession, tokenizer: ClipTokenizer,
                     classes, templates) -> np.ndarray:
    """[C, E]: per class, the normalised prompt embeddings averaged over templates, renormalised."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = text_session.run(["text_embedding"], {"input_ids": tokenizer(prompts)})[0]
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    mean = emb.reshape(len(classes), len(templates), -1).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(np.float32)


def _manifest(pixel_input: str, dims: dict, context_length: int, tau: float, class_sha: str) -> dict:
    """A schema-2 manifest (Vs2Session loads the toy too)."""
    s = dims["S"]
    shapes = {"pixel_values": [None, 3, s, s], "pixels_uint8": [None, s, s, 3],
              "image_rgb": [None, None, 3]}
    return {
        "schema_version": 2,
        "model": {"id": "toy", "source": "none", "width": dims["d"], "embed_dim": dims["E"]},
        "preprocess": {"image_size": s, "mean": list(MEAN), "std": list(STD),
                       "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0},
        "sae": {"d": dims["d"], "n": dims["n"], "k": dims["k"], "sha256": "0" * 64},
        "steering": {"gamma": 1.5, "lambda": 2.1, "quantile": 0.5, "tau": tau, "sae_sha256": "0" * 64,
                     "gate": "fvu"},
        "classes": list(CLASSES),
        "templates": list(TEMPLATES),
        "logit_scale": 100.0,
        "precision": "fp32",
        "opset": OPSET,
        "pixel_input": pixel_input,
        "inputs": {pixel_input: shapes[pixel_input],
                   **({"max_side": 8192} if pixel_input == "image_rgb" else {}),
                   "overridable": {"steer_gamma": 1.5, "steer_lambda": 2.1, "gate_tau": tau}},
        "class_embeddings": {"file": "class_embeddings.f32", "shape": [len(CLASSES), dims["E"]],
                             "sha256": class_sha},
        "outputs": ["embedding", "base_embedding", "logits", "fvu", "steered", "latent_indices",
                    "latent_values", "gate_score"],
        "text": {"model": "text.onnx", "context_length": context_length,
                 "vocab": TokenizerSpec().vocab, "clean": "lower"},
        "versions": {"onnx": onnx.__version__},
        "tolerances": {},
        "created": "2026-01-01T00:00:00+00:00",
    }


def _median_fvu(model: onnx.ModelProto, pixel_input: str, s: int, class_emb: np.ndarray,
                rng: np.random.Generator) -> float:
    """A gate threshold that steers about half of random images."""
    session = ort.InferenceSession(model.SerializeToString())
    fvus = []
    for _ in range(16):
        feeds = {"steer_gamma": np.array(1.5, np.float32), "steer_lambda": np.array(2.1, np.float32),
                 "gate_tau": np.array(np.inf, np.float32), "class_embeddings": class_emb,
                 pixel_input: _random_pixels(pixel_input, s, rng)}
        fvus.append(session.run(["fvu"], feeds)[0])
    return float(np.median(np.concatenate(fvus)))


def _random_pixels(pixel_input: str, s: int, rng: np.random.Generator) -> np.ndarray:
    if pixel_input == "pixel_values":
        return rng.standard_normal((2, 3, s, s)).astype(np.float32)
    if pixel_input == "pixels_uint8":
        return rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    return rng.integers(0, 256, (s + 5, s + 2, 3), dtype=np.uint8)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _image_graph(pixel_input: str, dims: dict, rng: np.random.Generator) -> onnx.ModelProto:
    s, d, n, k, e = dims["S"], dims["d"], dims["n"], dims["k"], dims["E"]
    f32 = np.float32
    inits = [
        _init("c0", np.asarray(0.0, f32)),
        _init("c1", np.asarray(1.0, f32)), _init("c3", np.asarray(3.0, f32)),
        _init("W1", (rng.standard_normal((3 * s * s, d)) / np.sqrt(3 * s * s)).astype(f32)),
        _init("b_pre", (0.1 * rng.standard_normal(d)).astype(f32)),
        _init("mu", (0.1 * rng.standard_normal(d)).astype(f32)),
        _init("W_enc", (rng.standard_normal((d, n)) / np.sqrt(d)).astype(f32)),
        _init("b_enc", (0.01 * rng.standard_normal(n)).astype(f32)),
        _init("W_dec", _unit_rows(rng.standard_normal((n, d))).astype(f32)),
        _init("P", (rng.standard_normal((d, e)) / np.sqrt(d)).astype(f32)),
        _init("logit_scale", np.asarray(100.0, f32)),
        _init("k", np.asarray([k], np.int64)), _init("axis1", np.asarray([1], np.int64)),
    ]
    nodes = _pixels_nodes(pixel_input, s, inits)
    mk = helper.make_node
    nodes += [
        mk("Flatten", ["x"], ["x_flat"], axis=1),
        mk("MatMul", ["x_flat", "W1"], ["h_lin"]), mk("Tanh", ["h_lin"], ["h_tanh"]),
        mk("Mul", ["h_tanh", "c3"], ["h"]),
        # top-k SAE encode, sorted (DESIGN.md: export sorted, compare index sets)
        mk("Sub", ["h", "b_pre"], ["h_c"]), mk("MatMul", ["h_c", "W_enc"], ["pre"]),
        mk("Add", ["pre", "b_enc"], ["pre_b"]), mk("Relu", ["pre_b"], ["z"]),
        mk("TopK", ["z", "k"], ["latent_values", "latent_indices"], axis=-1, largest=1, sorted=1),
        mk("Mul", ["z", "c0"], ["zeros"]),
        mk("ScatterElements", ["zeros", "latent_indices", "latent_values"], ["codes"], axis=1),
        mk("MatMul", ["codes", "W_dec"], ["dec"]), mk("Add", ["dec", "b_pre"], ["recon"]),
        # fvu = |h - recon|^2 / |h - mu|^2 ; steered = fvu <= tau
        mk("Sub", ["h", "recon"], ["err"]), mk("Mul", ["err", "err"], ["err2"]),
        mk("ReduceSum", ["err2", "axis1"], ["err_ss"], keepdims=0),
        mk("Sub", ["h", "mu"], ["dev"]), mk("Mul", ["dev", "dev"], ["dev2"]),
        mk("ReduceSum", ["dev2", "axis1"], ["dev_ss"], keepdims=0),
        mk("Div", ["err_ss", "dev_ss"], ["fvu"]),
        mk("Identity", ["fvu"], ["gate_score"]),  # the fvu criterion (manifest steering.gate)
        mk("LessOrEqual", ["gate_score", "gate_tau"], ["steered"]),
        # VS2: v = (gamma - 1) W_dec c ; h' = (h + lambda v) |h| / |h + lambda v|
        mk("Sub", ["steer_gamma", "c1"], ["gm1"]), mk("Mul", ["dec", "gm1"], ["v"]),
        mk("Mul", ["v", "steer_lambda"], ["lv"]), mk("Add", ["h", "lv"], ["hp"]),
        mk("ReduceL2", ["h", "axis1"], ["h_norm"], keepdims=1),
        mk("ReduceL2", ["hp", "axis1"], ["hp_norm"], keepdims=1),
        mk("Div", ["hp", "hp_norm"], ["hp_unit"]), mk("Mul", ["hp_unit", "h_norm"], ["hs"]),
        mk("Unsqueeze", ["steered", "axis1"], ["steered_col"]),
        mk("Where", ["steered_col", "hs", "h"], ["h_final"]),
        mk("MatMul", ["h_final", "P"], ["emb_raw"]),
        mk("ReduceL2", ["emb_raw", "axis1"], ["emb_norm"], keepdims=1),
        mk("Div", ["emb_raw", "emb_norm"], ["embedding"]),
        mk("MatMul", ["h", "P"], ["base_raw"]),
        mk("ReduceL2", ["base_raw", "axis1"], ["base_norm"], keepdims=1),
        mk("Div", ["base_raw", "base_norm"], ["base_embedding"]),
        mk("Transpose", ["class_embeddings"], ["class_t"], perm=[1, 0]),
        mk("MatMul", ["embedding", "class_t"], ["cos"]),
        mk("Mul", ["cos", "logit_scale"], ["logits"]),
    ]
    pixel_info = {
        "pixel_values": helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["B", 3, s, s]),
        "pixels_uint8": helper.make_tensor_value_info("pixels_uint8", TensorProto.UINT8, ["B", s, s, 3]),
        "image_rgb": helper.make_tensor_value_info("image_rgb", TensorProto.UINT8, ["H", "W", 3]),
    }[pixel_input]
    scalar = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [])  # noqa: E731
    inputs = [pixel_info, scalar("steer_gamma"), scalar("steer_lambda"), scalar("gate_tau"),
              helper.make_tensor_value_info("class_embeddings", TensorProto.FLOAT, ["C", e])]
    b = "B" if pixel_input != "image_rgb" else 1
    outputs = [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [b, e]),
        helper.make_tensor_value_info("base_embedding", TensorProto.FLOAT, [b, e]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, "C"]),
        helper.make_tensor_value_info("fvu", TensorProto.FLOAT, [b]),
        helper.make_tensor_value_info("steered", TensorProto.BOOL, [b]),
        helper.make_tensor_value_info("latent_indices", TensorProto.INT64, [b, k]),
        helper.make_tensor_value_info("latent_values", TensorProto.FLOAT, [b, k]),
        helper.make_tensor_value_info("gate_score", TensorProto.FLOAT, [b]),
    ]
    graph = helper.make_graph(nodes, "vs2_toy", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="vs2-export toy (tests/toy_export.py)",
                             ir_version=IR_VERSION)


def _pixels_nodes(pixel_input: str, s: int, inits: list) -> list:
    """Nodes that turn the pixel input into x float32 [B, 3, S, S], normalised."""
    mk = helper.make_node
    if pixel_input == "pixel_values":
        return [mk("Identity", ["pixel_values"], ["x"])]
    inits += [_init("mean", np.asarray(MEAN, np.float32).reshape(1, 3, 1, 1)),
              _init("std", np.asarray(STD, np.float32).reshape(1, 3, 1, 1)),
              _init("c255", np.asarray(255.0, np.float32))]
    if pixel_input == "pixels_uint8":
        return [mk("Cast", ["pixels_uint8"], ["u_f"], to=TensorProto.FLOAT),
                mk("Transpose", ["u_f"], ["u_nchw"], perm=[0, 3, 1, 2]),
                mk("Div", ["u_nchw", "c255"], ["u01"]), mk("Sub", ["u01", "mean"], ["u_c"]),
                mk("Div", ["u_c", "std"], ["x"])]
    # image_rgb [H, W, 3]: shortest side -> S (antialiased bicubic), round to uint8 like PIL,
    # centre crop, normalise.
    inits += [_init("S", np.asarray(s, np.int64)), _init("two", np.asarray(2, np.int64)),
              _init("nc", np.asarray([1, 3], np.int64)), _init("i0", np.asarray([0], np.int64)),
              _init("i2", np.asarray([2], np.int64)), _init("axes23", np.asarray([2, 3], np.int64))]
    return [
        mk("Cast", ["image_rgb"], ["rgb_f"], to=TensorProto.FLOAT),
        mk("Transpose", ["rgb_f"], ["chw"], perm=[2, 0, 1]),
        mk("Unsqueeze", ["chw", "i0"], ["nchw"]),
        mk("Shape", ["image_rgb"], ["hwc"]), mk("Slice", ["hwc", "i0", "i2"], ["hw"]),
        mk("ReduceMin", ["hw"], ["short"], keepdims=1),
        mk("Mul", ["hw", "S"], ["hw_s"]), mk("Div", ["hw_s", "short"], ["new_hw"]),
        mk("Concat", ["nc", "new_hw"], ["sizes"], axis=0),
        mk("Resize", ["nchw", "", "", "sizes"], ["resized"], mode="cubic", antialias=1,
           cubic_coeff_a=-0.5, coordinate_transformation_mode="half_pixel"),
        mk("Round", ["resized"], ["rounded"]), mk("Clip", ["rounded", "c0", "c255"], ["clipped"]),
        mk("Sub", ["new_hw", "S"], ["excess"]), mk("Div", ["excess", "two"], ["top_left"]),
        mk("Add", ["top_left", "S"], ["bottom_right"]),
        mk("Slice", ["clipped", "top_left", "bottom_right", "axes23"], ["cropped"]),
        mk("Div", ["cropped", "c255"], ["c01"]), mk("Sub", ["c01", "mean"], ["c_c"]),
        mk("Div", ["c_c", "std"], ["x"]),
    ]


def _unit_rows(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _text_graph(context_length: int, embed_dim: int, rng: np.random.Generator) -> onnx.ModelProto:
    vocab, w = 49408, 8
    f32 = np.float32
    inits = [_init("tok_emb", (0.5 * rng.standard_normal((vocab, w))).astype(f32)),
             _init("pos_emb", (0.1 * rng.standard_normal((context_length, w))).astype(f32)),
             _init("proj", rng.standard_normal((w, embed_dim)).astype(f32)),
             _init("axis1", np.asarray([1], np.int64)), _init("axis_last", np.asarray([-1], np.int64))]
    mk = helper.make_node
    nodes = [mk("Gather", ["tok_emb", "input_ids"], ["tok"], axis=0),
             mk("Add", ["tok", "pos_emb"], ["tok_pos"]),
             mk("ReduceMean", ["tok_pos", "axis1"], ["pooled"], keepdims=0),
             mk("MatMul", ["pooled", "proj"], ["raw"]), mk("Tanh", ["raw"], ["act"]),
             mk("ReduceL2", ["act", "axis_last"], ["norm"], keepdims=1),
             mk("Div", ["act", "norm"], ["text_embedding"])]
    graph = helper.make_graph(
        nodes, "vs2_toy_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", context_length])],
        [helper.make_tensor_value_info("text_embedding", TensorProto.FLOAT, ["N", embed_dim])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--pixel-input", default="image_rgb", choices=PIXEL_INPUTS)
    parser.add_argument("--context-length", type=int, default=16)
    args = parser.parse_args()
    print(build(args.out, pixel_input=args.pixel_input, context_length=args.context_length))


if __name__ == "__main__":
    main()
