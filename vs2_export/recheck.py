"""model.onnx + the static int8 graph -> ONE int8 graph that re-runs its close calls in fp32.

Static int8 moves a ViT's logits by a fraction of a logit (docs/design.md, "int8 that keeps its
answers"): on the demo a median 0.2, while one image in ten has its top two classes closer
than 0.3. Those images are the ones whose answer int8 can change, and int8 itself can spot them:
its own top-2 margin is small. The guarded graph runs the int8 trunk on the whole batch, then
the fp32 graph on only the rows whose int8 margin is below `margin` (or whose gate score is within
`gate_band` of gate_tau), and scatters their fp32 outputs over the int8 ones:

    int8 graph (pixels -> outputs)           the static QDQ graph, outputs renamed int8/NAME
    margin  = top1 - top2 of int8/logits     [B]   (top2 = -inf with one class: never re-run)
    need    = margin < MARGIN  (or |gate_score - gate_tau| < GATE_BAND)         [B] bool
    If any(need):  rows = NonZero(need); fp32 graph on pixels[rows]; NAME = ScatterND(int8/NAME,
                   rows, fp32/NAME)
    else:          NAME = int8/NAME

One graph, so every ONNX Runtime binding (Python, Node, the browser, C/C++) gets the same answers
with no code of its own; the price is the fp32 weights inside the file (about 1.2x model.onnx)
and one fp32 run per re-checked image. The margin is chosen per export from the calibration
images (margin_threshold); `vs2 export --int8-recheck off` keeps the plain, small int8 file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import Vs2Error
from .onnx_files import subgraphs
from .runtime import contract
from .runtime.manifest import Int8RecheckInfo
from .runtime.providers import create_session

log = logging.getLogger(__name__)
BUDGET = 0.002
"""Disagreement with fp32 the margin is chosen for, as estimated on the calibration images. The
target is 1% (99% top-1 agreement); the estimate is kept 5x below it because 128 calibration
images see little of the error's tail: on the demo the estimate from them was 2-3x below what
3,000 held-out images showed (benchmarks/README.md, "int8 that keeps its answers")."""
MIN_IMAGES = 32
"""Below this many calibration images the estimate resolves little (N^2 pairs): 'auto' still
chooses a margin from them but says so."""
MAX_RERUN = 0.5
"""A margin that would re-run more than half the calibration images means int8 is not worth its
file: export says so and keeps the margin at that point."""
INT8 = "int8/"
FP32 = "fp32/"
GUARD = "recheck/"


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """[N, C] -> [N] top-1 minus top-2 logit (0 for a tie); +inf with one class (nothing can
    flip); NaN where a row holds NaN. The graph computes the same (_need_nodes)."""
    if logits.shape[1] < 2:
        return np.where(np.isnan(logits).any(axis=1), np.nan, np.inf).astype(np.float32)
    top = np.sort(logits, axis=1)  # NaN sorts last: top-1 NaN, the margin NaN
    return top[:, -1] - top[:, -2]


def margin_threshold(fp32_logits: np.ndarray, int8_logits: np.ndarray,
                     budget: float = BUDGET) -> tuple[float, float, float]:
    """Calibration logits [N, C] of both graphs -> (margin, estimated disagreement, re-run share).

    An image flips when int8's error lifts its top class over the runner-up by more than int8's
    margin: delta = err[top1] - err[top2] > margin. Treating delta as independent of the margin,
    the disagreement left at threshold t is mean_i [m_i >= t] * P(delta > m_i), with P taken over
    all N images' deltas (N^2 pairs, counted in N log N: smooth where N flips alone would be 0
    or 1). The guard re-runs m < t, and NaN margins always (the graph's Not(m >= t)). Candidates
    are 0 and just above each margin, so every row can be re-run; the smallest meeting the
    budget, or re-running MAX_RERUN of the images, is returned."""
    m = top2_margin(int8_logits).astype(np.float64)
    n = len(m)
    if int8_logits.shape[1] < 2:
        return 0.0, 0.0, float(np.isnan(m).mean()) if n else 0.0
    order = np.argsort(int8_logits, axis=1)
    rows, err = np.arange(n), int8_logits - fp32_logits
    delta = np.sort(err[rows, order[:, -1]] - err[rows, order[:, -2]])
    finite = np.sort(m[np.isfinite(m)])
    flip_p = 1 - np.searchsorted(delta, finite, side="right") / n  # [F]: P(delta > m_i)
    kept_flips = np.concatenate([np.cumsum(flip_p[::-1])[::-1], [0.0]])  # rows i.. kept
    candidates = np.concatenate([[0.0], np.nextafter(finite, np.inf)])
    first_kept = np.searchsorted(finite, candidates, side="left")  # m >= t from here on
    estimates = kept_flips[first_kept] / n
    reruns = (first_kept + (n - len(finite) - np.isinf(m).sum())) / n  # NaN rows re-run always
    stop = np.flatnonzero((estimates <= budget) | (reruns >= MAX_RERUN))[0]
    if reruns[stop] >= MAX_RERUN and estimates[stop] > budget:
        log.warning("int8 re-check: %.0f%% of the calibration images are close calls (estimated "
                    "disagreement %.2f%% at that point): int8 saves little on this model",
                    100 * reruns[stop], 100 * estimates[stop])
    return float(candidates[stop]), float(estimates[stop]), float(reruns[stop])


def plan(setting: float | str, gate_band: float, fp32_path: Path, int8_path: Path,
         pixels: np.ndarray | list | None, feeds: dict[str, np.ndarray], input_name: str,
         has_logits: bool) -> Int8RecheckInfo | None:
    """The export's int8_recheck settings ('auto' / 'off' / a margin, and a gate band) -> what the
    guard is built with, or None for the plain int8 file. 'auto' runs both graphs on the
    calibration pixels (in the graph's input kind) and picks the margin (margin_threshold);
    feeds: the other inputs' defaults."""
    if not has_logits and not isinstance(setting, str) and setting > 0:
        raise Vs2Error("int8 re-check: a margin needs the logits output: export with --classes, "
                       "or use --int8-recheck-gate")
    margin, estimate, rerun, images = 0.0, None, None, 0
    if has_logits and not isinstance(setting, str):
        margin = float(setting)
    elif has_logits and setting == "auto" and (pixels is None or not len(pixels)):
        log.warning("int8 re-check: no calibration images to choose its margin on: the int8 "
                    "file re-checks nothing by margin (give --int8-recheck MARGIN)")
    elif has_logits and setting == "auto":
        fp32, int8 = (calibration_logits(p, pixels, input_name, feeds) for p in (fp32_path, int8_path))
        (margin, estimate, rerun), images = margin_threshold(fp32, int8), len(pixels)
        if images < MIN_IMAGES:
            log.warning("int8 re-check: %d calibration images are few to choose the margin on "
                        "(%d or more recommended, calibration/README.md); or give --int8-recheck "
                        "MARGIN", images, MIN_IMAGES)
        log.info("int8 re-check: margin %.4g logits, re-runs %.1f%% of %d calibration images, "
                 "estimated agreement with fp32 %.2f%%", margin, 100 * rerun, images,
                 100 * (1 - estimate))
    if margin == 0 and gate_band == 0:
        return None
    return Int8RecheckInfo(margin, gate_band, estimate, rerun, images)


def calibration_logits(path: Path, pixels: np.ndarray | list, input_name: str,
                       feeds: dict[str, np.ndarray], batch: int = 8) -> np.ndarray:
    """The graph at `path` on the calibration pixels -> logits [N, C] (ORT CPU; image_rgb
    pixels are a list of [H, W, 3], one image a run)."""
    session = create_session(path)  # the precision follows the file name (model.int8.onnx)
    batches = list(pixels) if input_name == contract.IMAGE_RGB else \
        [pixels[s:s + batch] for s in range(0, len(pixels), batch)]
    return np.concatenate([session.run([contract.LOGITS], {**feeds, input_name: b})[0]
                           for b in batches]).astype(np.float32)


def guarded_model(int8: onnx.ModelProto, fp32: onnx.ModelProto, recheck: Int8RecheckInfo,
                  pixel_input: str) -> onnx.ModelProto:
    """The int8 graph with the fp32 re-check (module docstring). Both graphs must have the same
    inputs and outputs; the fp32 weights go into the re-check branch, except those the int8 graph
    already holds unchanged (the head, LayerNorms), which the branch reads from the outer graph.
    Edits and returns `int8` (no copy of its weights: ViT-H-14's are 0.65 GB) and empties
    `fp32`'s initializers into the branch: the fp32 weights are held twice at most, never more."""
    outputs = [o.name for o in int8.graph.output]
    if outputs != [o.name for o in fp32.graph.output]:
        raise Vs2Error("int8 re-check: expected model.onnx and the int8 graph to have the same "
                       f"outputs, got {outputs} and {[o.name for o in fp32.graph.output]}")
    if recheck.margin > 0 and contract.LOGITS not in outputs:
        raise Vs2Error("int8 re-check: a margin needs the logits output (export with --classes); "
                       "without classes only --int8-recheck-gate applies")
    _rename(int8.graph.node, {o: INT8 + o for o in outputs})
    opset = next(o.version for o in int8.opset_import if o.domain in ("", "ai.onnx"))
    need = _need_nodes(recheck, contract.GATE_SCORE if contract.GATE_SCORE in outputs else contract.FVU,
                       opset)
    names = _branch_names(fp32.graph, int8.graph, pixel_input)
    then_branch = _recheck_branch(fp32.graph, outputs, pixel_input, names)
    else_branch = helper.make_graph(
        [helper.make_node("Identity", [INT8 + o], [GUARD + "else/" + o]) for o in outputs],
        "int8_answers", [], [_value(fp32.graph, o, GUARD + "else/" + o) for o in outputs])
    guard = helper.make_node("If", [GUARD + "any"], outputs, name=GUARD + "If",
                             then_branch=then_branch, else_branch=else_branch)
    int8.graph.node.extend(need + [guard])
    # The weights last, straight into the If's branch where it now sits: protobuf copies a
    # message at every make_graph / make_node / extend, which cost four copies of the fp32
    # weights at once (+1.6 GB for ViT-B-32's 0.37 GB) before they moved in here.
    _move_weights(fp32.graph, next(a.g for a in int8.graph.node[-1].attribute if a.name == "then_branch"),
                  names)
    used = _inputs(int8.graph)  # only the constants this guard reads: ORT warns about the rest
    int8.graph.initializer.extend(c for c in _need_constants(recheck) if c.name in used)
    return int8


def guard_setting(model: onnx.ModelProto) -> tuple[float, float] | None:
    """The (margin, gate_band) a guarded graph re-checks with, read from its own constants
    (an unused one was dropped: 0); None for a graph without the guard. What `vs2 verify`
    holds the manifest's int8_recheck to: a margin edited in either place shows."""
    if not any(n.name == GUARD + "If" for n in model.graph.node):
        return None
    held = {t.name: float(numpy_helper.to_array(t)) for t in model.graph.initializer
            if t.name in (GUARD + "max_margin", GUARD + "gate_band")}
    return held.get(GUARD + "max_margin", 0.0), held.get(GUARD + "gate_band", 0.0)


def _inputs(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of `graph` or of its subgraphs reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for sub in subgraphs(node):
            names |= _inputs(sub)
    return names


def _need_nodes(recheck: Int8RecheckInfo, gate: str, opset: int) -> list[onnx.NodeProto]:
    """int8/logits and int8/GATE -> GUARD+'need' [B] bool and GUARD+'any' bool scalar. The
    runner-up is the largest logit once the argmax column is masked (a tie gives margin 0, one
    class -inf: never re-run); no TopK, whose K = 2 would fail on a one-class class_embeddings fed
    at run time. Not(margin >= t) also re-runs NaN margins. top2_margin is the numpy twin."""
    g, logits, criteria, nodes = GUARD, INT8 + contract.LOGITS, [], []
    if recheck.margin > 0:
        nodes += [
            helper.make_node("ArgMax", [logits], [g + "top1_at"], axis=1, keepdims=1),
            helper.make_node("Shape", [logits], [g + "shape"]),
            helper.make_node("Gather", [g + "shape", g + "one"], [g + "classes"], axis=0),
            helper.make_node("Range", [g + "zero", g + "classes", g + "one"], [g + "columns"]),
            helper.make_node("Equal", [g + "top1_at", g + "columns"], [g + "is_top1"]),
            helper.make_node("Where", [g + "is_top1", g + "minus_inf", logits], [g + "rest"]),
            _reduce_max(logits, g + "top1", opset),
            _reduce_max(g + "rest", g + "top2", opset),
            helper.make_node("Sub", [g + "top1", g + "top2"], [g + "margin"]),
            helper.make_node("GreaterOrEqual", [g + "margin", g + "max_margin"], [g + "clear"]),
            helper.make_node("Not", [g + "clear"], [g + "close"]),
        ]
        criteria.append(g + "close")
    if recheck.gate_band > 0:  # the gate compares gate_score (or fvu) with tau: steered flips
        nodes += [
            helper.make_node("Sub", [INT8 + gate, contract.GATE_TAU], [g + "gate_gap"]),
            helper.make_node("Abs", [g + "gate_gap"], [g + "gate_dist"]),
            helper.make_node("Less", [g + "gate_dist", g + "gate_band"], [g + "near_gate"]),
        ]
        criteria.append(g + "near_gate")
    if not criteria:
        raise Vs2Error("int8 re-check: expected a margin or a gate band > 0, got neither")
    combine = helper.make_node("Or", criteria, [g + "need"]) if len(criteria) == 2 else \
        helper.make_node("Identity", criteria, [g + "need"])
    return nodes + [
        combine,
        helper.make_node("Cast", [g + "need"], [g + "need_i"], to=TensorProto.INT32),
        _reduce_max(g + "need_i", g + "any_i", opset, axis=None),
        helper.make_node("Cast", [g + "any_i"], [g + "any"], to=TensorProto.BOOL),
    ]


def _reduce_max(x: str, out: str, opset: int, axis: int | None = 1) -> onnx.NodeProto:
    """ReduceMax over `axis` (None: all), keepdims 0: axes are an input from opset 18, an
    attribute before (the exporter allows opset 17)."""
    if axis is None:
        return helper.make_node("ReduceMax", [x], [out], keepdims=0)
    if opset >= 18:
        return helper.make_node("ReduceMax", [x, GUARD + "axis1"], [out], keepdims=0)
    return helper.make_node("ReduceMax", [x], [out], keepdims=0, axes=[axis])


def _need_constants(recheck: Int8RecheckInfo) -> list[onnx.TensorProto]:
    g = GUARD
    return [numpy_helper.from_array(np.array([1], np.int64), g + "axis1"),
            numpy_helper.from_array(np.array(0, np.int64), g + "zero"),
            numpy_helper.from_array(np.array(1, np.int64), g + "one"),
            numpy_helper.from_array(np.array(-np.inf, np.float32), g + "minus_inf"),
            numpy_helper.from_array(np.array(recheck.margin, np.float32), g + "max_margin"),
            numpy_helper.from_array(np.array(recheck.gate_band, np.float32), g + "gate_band"),
            numpy_helper.from_array(np.array([-1], np.int64), g + "flat")]


def _branch_names(fp32: onnx.GraphProto, outer: onnx.GraphProto, pixel_input: str) -> dict[str, str]:
    """fp32 value name -> its name in the branch: FP32+name, except the weights the int8 graph
    holds unchanged (read from outside) and the inputs (the pixels: the gathered rows)."""
    shared = _shared_initializers(fp32, outer)
    names = {i.name: FP32 + i.name for i in fp32.initializer if i.name not in shared}
    names |= {v: FP32 + v for n in fp32.node for v in n.output}
    names[pixel_input] = GUARD + "rows_pixels" if pixel_input != contract.IMAGE_RGB else pixel_input
    return names


def _move_weights(fp32: onnx.GraphProto, branch: onnx.GraphProto, names: dict[str, str]) -> None:
    """fp32's initializers the branch reads -> branch, renamed; one at a time, each deleted from
    fp32 once copied (the rest, shared with the int8 graph, just deleted)."""
    while fp32.initializer:
        tensor = fp32.initializer[-1]
        if tensor.name in names:
            moved = branch.initializer.add()
            moved.CopyFrom(tensor)
            moved.name = names[tensor.name]
        del fp32.initializer[-1]


def _recheck_branch(fp32: onnx.GraphProto, outputs: list[str], pixel_input: str,
                    names: dict[str, str]) -> onnx.GraphProto:
    """The If's then-branch, weights still to come (_move_weights): gather the rows in need, run
    the fp32 graph on them, scatter back. image_rgb graphs hold one image: the branch runs fp32
    on it whole and replaces every output."""
    g = GUARD  # the steering inputs and class_embeddings keep their names: read from outside
    batched = pixel_input != contract.IMAGE_RGB
    body = [_renamed(n, names) for n in fp32.node]
    if batched:
        head = [helper.make_node("NonZero", [g + "need"], [g + "rows_2d"]),
                helper.make_node("Reshape", [g + "rows_2d", g + "flat"], [g + "rows"]),
                helper.make_node("Transpose", [g + "rows_2d"], [g + "rows_col"], perm=[1, 0]),
                helper.make_node("Gather", [pixel_input, g + "rows"], [g + "rows_pixels"], axis=0)]
        tail = [helper.make_node("ScatterND", [INT8 + o, g + "rows_col", FP32 + o], [g + "then/" + o])
                for o in outputs]
    else:
        head, tail = [], [helper.make_node("Identity", [FP32 + o], [g + "then/" + o]) for o in outputs]
    return helper.make_graph(head + body + tail, "fp32_recheck", [],
                             [_value(fp32, o, g + "then/" + o) for o in outputs])


def _shared_initializers(fp32: onnx.GraphProto, outer: onnx.GraphProto) -> set[str]:
    """fp32 initializers the int8 graph holds under the same name with the same bytes."""
    theirs = {t.name: t for t in outer.initializer}
    return {t.name for t in fp32.initializer if t.name in theirs
            and _same_tensor(t, theirs[t.name])}


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    return np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def _renamed(node: onnx.NodeProto, names: dict[str, str]) -> onnx.NodeProto:
    """A copy of an fp32 node for the re-check branch: its name and values under FP32."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = FP32 + node.name if node.name else ""
    _rename([copy], names)
    return copy


def _rename(nodes, names: dict[str, str]) -> None:
    """Rewrite value names in place in nodes' inputs and outputs, and in the subgraphs they hold
    (image_rgb's resize front has If branches that read outer values by name)."""
    for node in nodes:
        node.input[:] = [names.get(v, v) for v in node.input]
        node.output[:] = [names.get(v, v) for v in node.output]
        for sub in subgraphs(node):
            _rename(sub.node, names)
            for value in sub.output:  # a branch may hand an outer value straight out
                value.name = names.get(value.name, value.name)


def _value(graph: onnx.GraphProto, output: str, name: str) -> onnx.ValueInfoProto:
    """The graph output `output`'s type under a new name."""
    info = onnx.ValueInfoProto()
    info.CopyFrom(next(o for o in graph.output if o.name == output))
    info.name = name
    return info


def plain_model(guarded: onnx.ModelProto) -> onnx.ModelProto:
    """A guarded int8 graph -> the plain int8 graph inside it (what --int8-recheck off writes),
    for measuring what the re-check changes. Edits `guarded` in place and returns it."""
    graph = guarded.graph
    keep = [n for n in graph.node if n.name != GUARD + "If"
            and not (n.output and n.output[0].startswith(GUARD))]
    del graph.node[:]
    graph.node.extend(keep)
    kept = [t for t in graph.initializer if not t.name.startswith(GUARD)]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _rename(graph.node, {INT8 + o.name: o.name for o in graph.output})
    for prop in guarded.metadata_props:  # the manifest inside: no re-check any more
        if prop.key == contract.METADATA_KEY:
            meta = json.loads(prop.value)
            meta.pop("int8_recheck", None)
            prop.value = json.dumps(meta)
    return guarded
