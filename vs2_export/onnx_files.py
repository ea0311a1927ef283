"""Writing ONNX graphs of any size: one file, or over 2 GB the graph and ONE sidecar beside it.

Protobuf cannot serialise a message of 2 GiB, so a graph whose weights exceed EXTERNAL_DATA_ABOVE
(ViT-H-14's 2.5 GB and up) is written as NAME.onnx, holding the graph and the small tensors, and
contract.sidecar_name(NAME.onnx) = NAME.onnx.data, holding every other weight, which the graph
names by that relative path. The two are written and replaced as a pair (artifacts.atomic_pair).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from .artifacts import atomic_pair
from .runtime import contract

log = logging.getLogger(__name__)
EXTERNAL_DATA_ABOVE = 2**31 - 2**27
"""Weights over this many bytes go to the sidecar: protobuf cannot serialise 2 GiB, and 128 MiB
are left for the graph itself (ViT-H-14's graph without weights is a few MB). Tests lower it to
put a small model's weights in a sidecar."""
INLINE_TENSOR_BYTES = 1024
"""Tensors up to this size stay in the graph when the weights go to a sidecar (shapes, scalars)."""


def tensor_bytes(model: ir.Model | onnx.ModelProto) -> int:
    """Bytes of the graph's initializers, without serialising anything (ModelProto.ByteSize
    fails on a message over 2 GiB: 'Failed to serialize proto')."""
    if isinstance(model, ir.Model):
        return sum(v.const_value.nbytes for v in model.graph.initializers.values()
                   if v.const_value is not None)
    return sum(int(np.prod(t.dims, dtype=np.int64))
               * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in _initializers(model.graph))


def _initializers(graph: onnx.GraphProto):
    """The graph's initializers and those of its subgraphs (the int8 re-check's If branch holds
    the fp32 weights), at any depth."""
    yield from graph.initializer
    for node in graph.node:
        for sub in subgraphs(node):
            yield from _initializers(sub)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds in its attributes (If's branches, Loop's body)."""
    return [g for a in node.attribute for g in [a.g] * a.HasField("g") + list(a.graphs)]


def save_onnx(model: ir.Model | onnx.ModelProto, path: Path) -> None:
    """Write `model` to `path`: one file, or, when its weights exceed EXTERNAL_DATA_ABOVE, the
    graph there and the weights in ONE sidecar beside it (contract.sidecar_name). An ir.Model
    (the dynamo exporter's program.model) is written from the torch tensors it views: no
    ModelProto copy of the weights is made. `path` must be alone in its folder (atomic_pair's)."""
    big = tensor_bytes(model) > EXTERNAL_DATA_ABOVE
    location = contract.sidecar_name(path) if big else None
    if isinstance(model, ir.Model):
        ir.save(model, path, external_data=location, size_threshold_bytes=INLINE_TENSOR_BYTES)
    else:
        # Moves each tensor's bytes to the sidecar and clears them in `model` as it goes.
        onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                        location=location, size_threshold=INLINE_TENSOR_BYTES,
                        convert_attribute=False)
    if big:
        log.info("%s: weights in the sidecar %s", Path(path).name, location)


def write_onnx(model: ir.Model | onnx.ModelProto, final: Path,
               check: Callable[[Path], None] | None = None) -> Path:
    """save_onnx under a temporary name, then into place with its sidecar (atomic_pair).
    check(temporary path), if given, runs on the written pair first; a failure keeps neither.
    A `model` the caller passed without keeping a reference is freed before the check."""
    with atomic_pair(final, contract.sidecar_name(final)) as tmp:
        save_onnx(model, tmp)
        del model
        if check is not None:
            check(tmp)
    return Path(final)


def onnx_mb(path: Path) -> float:
    """Size of an .onnx file and of its sidecar, if it has one, in MB."""
    sidecar = Path(path).with_name(contract.sidecar_name(path))
    return (Path(path).stat().st_size + (sidecar.stat().st_size if sidecar.is_file() else 0)) / 1e6
