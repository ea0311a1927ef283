"""export.trace_to_onnx runs the exporter's optimizer without onnxscript's SlicesSplit rule,
whose matcher is quadratic in the graph's size (export._without_rewrite_rule): the demo graph
comes out node for node the one the whole rule set gives, and the rule list is onnxscript's own
again afterwards, also when the optimizer raises."""

from __future__ import annotations

import contextlib

import onnx_ir as ir
import pytest
from onnxscript import rewriter

import vs2_export.export as export_module
from vs2_export.config import ModelSpec
from vs2_export.export import _without_rewrite_rule, trace_to_onnx
from vs2_export.fused import build_steered_clip

RULE = "SlicesSplit"


def names(rules) -> list[str]:
    return [getattr(r, "name", None) for r in rules]


def test_the_rule_is_left_out_only_inside_and_always_restored():
    before = rewriter._DEFAULT_REWRITE_RULES
    assert RULE in names(before)  # onnxscript still has it: the workaround is not dead code
    with _without_rewrite_rule(RULE):
        inside = rewriter._DEFAULT_REWRITE_RULES
        assert RULE not in names(inside) and len(inside) == len(before) - 1
    assert rewriter._DEFAULT_REWRITE_RULES is before
    with pytest.raises(RuntimeError), _without_rewrite_rule(RULE):
        raise RuntimeError("the optimizer failed")
    assert rewriter._DEFAULT_REWRITE_RULES is before


def signature(model) -> tuple:
    """What a graph is, names included: nodes in order, initializers, inputs and outputs."""
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    graph = proto.graph
    return ([(n.op_type, tuple(n.input), tuple(n.output), tuple(a.name for a in n.attribute))
             for n in graph.node],
            sorted((t.name, tuple(t.dims)) for t in graph.initializer),
            [i.name for i in graph.input], [o.name for o in graph.output])


def test_the_demo_graph_is_the_one_the_full_optimizer_gives(demo_work, monkeypatch):
    parts = build_steered_clip(ModelSpec("vs2-demo"), demo_work / "sae",
                               demo_work / "steering.json", ("cat", "dog", "car"),
                               ("a photo of a {}.",))
    ours = signature(trace_to_onnx(parts, 18))
    monkeypatch.setattr(export_module, "_without_rewrite_rule", lambda name: contextlib.nullcontext())
    assert ours == signature(trace_to_onnx(parts, 18))  # every default rule, SlicesSplit too
