"""The image_rgb front: ONE decoded RGB image of any size -> resize, crop -> pixels_uint8 [1, S, S, 3],
in plain ONNX ops, prepended to the exported uint8-input graph (fused.Uint8Pixels normalises).

    image_rgb uint8 [H, W, 3]
      -> resized size (h', w') per the model's resize_mode, in float64 ops that round exactly as
         preprocess.py's Python does (int() truncation; round() half to even)
      -> two one-axis Resizes on uint8 NHWC [1, H, W, 3] (antialias=1, cubic a=-0.5 = PIL's
         bicubic, or linear; exclude_outside=1: PIL renormalises the kernel at the border;
         half_pixel), in Pillow's pass order: horizontal first, unless the height shrinks by
         more than twice as many pixels as the width (Pillow >= 13, python-pillow/Pillow#9549;
         found by measurement, 308 random sizes); a rounded uint8 image between the passes,
         as in Pillow
      -> pad with fill ('longest') and centre crop (top = round((h' - S) / 2), half to even)
      -> pixels_uint8 [1, S, S, 3]

Why uint8: ORT's uint8 antialias kernel follows Pillow (separable passes, fixed point, a rounded
uint8 between them), measured 1 level off on ~0.01% of pixels against PIL; its float kernel was
off by up to 9 levels on ~20% of them. Built with onnx.helper rather than traced: torch.export
would specialise or approximate the size arithmetic, which must round exactly like Python.

The nodes carry a `namespace` of FRONT_SCOPE, so precision.py keeps them out of fp16 and int8
like the SAE head (they are a few cheap ops).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .runtime import contract
from .runtime.preprocess import PreprocessSpec

FRONT_SCOPE = "vs2.image_rgb: preprocess"
PREFIX = "image_rgb/"
_MODES = {"bicubic": "cubic", "bilinear": "linear"}
PIL_CUBIC_A = -0.5
"""Pillow's bicubic kernel coefficient (torch's own bicubic uses -0.75)."""


def _size_nodes(spec: PreprocessSpec) -> tuple[list, list]:
    """Nodes computing P + 'new_hw' int64 [2] from P + 'hw' int64 [2] (the image's h, w)."""
    p, s, mk = PREFIX, spec.image_size, helper.make_node
    inits = [numpy_helper.from_array(np.array(float(s)), p + "s_f64")]
    nodes = [mk("Cast", [p + "hw"], [p + "hw_f64"], to=TensorProto.DOUBLE)]
    if spec.resize_mode == "shortest":
        # int(s * long / short) on both sides: the short side gives exactly s.
        nodes += [mk("ReduceMin", [p + "hw_f64"], [p + "short"], keepdims=1),
                  mk("Mul", [p + "hw_f64", p + "s_f64"], [p + "scaled"]),
                  mk("Div", [p + "scaled", p + "short"], [p + "ratio"]),
                  mk("Floor", [p + "ratio"], [p + "new_f64"])]
    elif spec.resize_mode == "longest":
        # ratio = max(h / s, w / s); new = max(1, round(side / ratio)), half to even like Python.
        inits.append(numpy_helper.from_array(np.array(1.0), p + "one_f64"))
        nodes += [mk("Div", [p + "hw_f64", p + "s_f64"], [p + "per_side"]),
                  mk("ReduceMax", [p + "per_side"], [p + "ratio"], keepdims=1),
                  mk("Div", [p + "hw_f64", p + "ratio"], [p + "fit"]),
                  mk("Round", [p + "fit"], [p + "rounded"]),
                  mk("Max", [p + "rounded", p + "one_f64"], [p + "new_f64"])]
    else:  # squash
        nodes += [mk("Mul", [p + "hw_f64", p + "zero_f64"], [p + "zeros"]),
                  mk("Add", [p + "zeros", p + "s_f64"], [p + "new_f64"])]
        inits.append(numpy_helper.from_array(np.array(0.0), p + "zero_f64"))
    nodes.append(mk("Cast", [p + "new_f64"], [p + "new_hw"], to=TensorProto.INT64))
    return nodes, inits


def _crop_nodes(spec: PreprocessSpec, output: str) -> tuple[list, list]:
    """Nodes from P + 'resized' uint8 [1, h', w', 3] to `output` [1, S, S, 3]: pad ('longest',
    with fill_color; torchvision pads (pad // 2, (pad + 1) // 2)), then the centre crop."""
    p, s, mk = PREFIX, spec.image_size, helper.make_node
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), p + name)  # noqa: E731
    inits = [i64("s", [s, s]), i64("zero2", [0, 0]), i64("zero1", [0]), i64("axes12", [1, 2]),
             i64("two", [2, 2]), numpy_helper.from_array(np.array(2.0), p + "two_f64")]
    nodes, source, size = [], p + "resized", p + "new_hw"
    if spec.resize_mode == "longest":
        inits.append(numpy_helper.from_array(np.array(spec.fill_color, np.uint8), p + "fill"))
        nodes += [mk("Sub", [p + "s", size], [p + "short_by"]),
                  mk("Max", [p + "short_by", p + "zero2"], [p + "pad"]),
                  mk("Div", [p + "pad", p + "two"], [p + "pad_before"]),
                  mk("Sub", [p + "pad", p + "pad_before"], [p + "pad_after"]),
                  mk("Concat", [p + "zero1", p + "pad_before", p + "zero1", p + "zero1",
                                p + "pad_after", p + "zero1"], [p + "pads"], axis=0),
                  mk("Pad", [source, p + "pads", p + "fill"], [p + "padded"], mode="constant"),
                  mk("Add", [size, p + "pad"], [p + "padded_hw"])]
        source, size = p + "padded", p + "padded_hw"
    if spec.resize_mode == "squash":
        return [mk("Identity", [source], [output])], inits
    nodes += [mk("Sub", [size, p + "s"], [p + "excess"]),
              mk("Cast", [p + "excess"], [p + "excess_f64"], to=TensorProto.DOUBLE),
              mk("Div", [p + "excess_f64", p + "two_f64"], [p + "half"]),
              mk("Round", [p + "half"], [p + "top_f64"]),  # int(round(x / 2.0)): half to even
              mk("Cast", [p + "top_f64"], [p + "top_left"], to=TensorProto.INT64),
              mk("Add", [p + "top_left", p + "s"], [p + "bottom_right"]),
              mk("Slice", [source, p + "top_left", p + "bottom_right", p + "axes12"], [output])]
    return nodes, inits


def _resize_pass(spec: PreprocessSpec, source: str, axis: int, out: str) -> onnx.NodeProto:
    """One axis of Pillow's separable resize (axis 1 = height, 2 = width of [1, H, W, 3])."""
    size = PREFIX + ("new_h" if axis == 1 else "new_w")
    return helper.make_node("Resize", [source, "", "", size], [out], mode=_MODES[spec.interpolation],
                            antialias=1, cubic_coeff_a=PIL_CUBIC_A, exclude_outside=1,
                            coordinate_transformation_mode="half_pixel", axes=[axis])


def _branch(spec: PreprocessSpec, first: int, name: str) -> onnx.GraphProto:
    """If-branch: the two passes, `first` axis first (outer-scope inputs: nhwc, new_h, new_w)."""
    p, second = PREFIX + name + "/", 3 - first
    nodes = [_resize_pass(spec, PREFIX + "nhwc", first, p + "half"),
             _resize_pass(spec, p + "half", second, p + "out")]
    for node in nodes:
        node.name = p + node.output[0].rsplit("/", 1)[-1]
    return helper.make_graph(nodes, name, [], [
        helper.make_tensor_value_info(p + "out", TensorProto.UINT8, [1, None, None, 3])])


def _resize_nodes(spec: PreprocessSpec) -> tuple[list, list]:
    """[1, H, W, 3] -> P + 'resized' [1, h', w', 3]: If(vertical first) with both pass orders.
    Pillow goes vertical first iff h' < H and H - h' > 2 (W - w') (measured on Pillow 13.0)."""
    p, mk = PREFIX, helper.make_node
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), p + name)  # noqa: E731
    inits = [i64("idx0", [0]), i64("idx1", [1]), i64("two_i", 2)]
    nodes = [mk("Gather", [p + "hw", p + "idx0"], [p + "h"]), mk("Gather", [p + "hw", p + "idx1"], [p + "w"]),
             mk("Gather", [p + "new_hw", p + "idx0"], [p + "new_h"]),
             mk("Gather", [p + "new_hw", p + "idx1"], [p + "new_w"]),
             mk("Sub", [p + "h", p + "new_h"], [p + "dh"]), mk("Sub", [p + "w", p + "new_w"], [p + "dw"]),
             mk("Mul", [p + "dw", p + "two_i"], [p + "dw2"]),
             mk("Greater", [p + "dh", p + "dw2"], [p + "more_rows"]),
             mk("Greater", [p + "h", p + "new_h"], [p + "shrinks"]),
             mk("And", [p + "more_rows", p + "shrinks"], [p + "vertical_1"]),
             mk("Squeeze", [p + "vertical_1"], [p + "vertical_first"]),
             mk("If", [p + "vertical_first"], [p + "resized"],
                then_branch=_branch(spec, 1, "vertical_first"),
                else_branch=_branch(spec, 2, "horizontal_first"))]
    return nodes, inits


def front_nodes(spec: PreprocessSpec, output: str) -> tuple[list, list]:
    """(nodes, initializers): image_rgb [H, W, 3] -> `output` uint8 [1, S, S, 3]."""
    p, mk = PREFIX, helper.make_node
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), p + name)  # noqa: E731
    inits = [i64("axis0", [0]), i64("start0", [0]), i64("end2", [2])]
    nodes = [mk("Unsqueeze", [contract.IMAGE_RGB, p + "axis0"], [p + "nhwc"]),
             mk("Shape", [contract.IMAGE_RGB], [p + "hw3"]),
             mk("Slice", [p + "hw3", p + "start0", p + "end2"], [p + "hw"])]
    size_nodes, size_inits = _size_nodes(spec)
    resize_nodes, resize_inits = _resize_nodes(spec)
    crop_nodes, crop_inits = _crop_nodes(spec, output)
    nodes += size_nodes + resize_nodes + crop_nodes
    for i, node in enumerate(nodes):
        node.name = f"{p}{i}_{node.op_type}"
        helper.set_metadata_props(node, {"namespace": FRONT_SCOPE})
    used = {name for node in nodes for name in node.input}
    # Only what this resize_mode reads: ORT warns about unused initializers when it loads.
    return nodes, [i for i in inits + size_inits + resize_inits + crop_inits if i.name in used]


def prepend_image_front(model: onnx.ModelProto, spec: PreprocessSpec) -> None:
    """In place: a graph taking pixels_uint8 [B, S, S, 3] -> the same graph taking image_rgb
    [H, W, 3] (one image, any size; callers bound H and W by contract.MAX_SIDE)."""
    graph = model.graph
    names = [i.name for i in graph.input]
    if contract.PIXELS_UINT8 not in names:
        raise ValueError(f"image front: expected a graph input {contract.PIXELS_UINT8}, got {names}")
    nodes, inits = front_nodes(spec, contract.PIXELS_UINT8)
    position = names.index(contract.PIXELS_UINT8)
    graph.input.remove(graph.input[position])
    graph.input.insert(position, helper.make_tensor_value_info(
        contract.IMAGE_RGB, TensorProto.UINT8, ["height", "width", 3]))
    graph.initializer.extend(inits)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body)
