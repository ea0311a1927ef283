"""Read what the runtime must check in an .onnx file at the protobuf wire level.

runtime/ does not import the onnx package (apps install numpy, pillow and onnxruntime only), so
the one question it asks of a file before ONNX Runtime opens it, where its external data lives,
is answered by walking the wire format directly.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

log = logging.getLogger(__name__)


# ONNX protobuf messages that can hold a TensorProto, by field number (onnx/onnx.proto3):
# model.graph 7, model.functions 25; graph.node 1, .initializer 5, .sparse_initializer 15;
# function.node 7; node.attribute 5; attribute.t 5, .g 6, .tensors 10, .graphs 11,
# .sparse_tensor 22, .sparse_tensors 23; sparse.values 1, .indices 2; tensor.external_data 13.
_ONNX_CHILDREN = {
    "model": {7: "graph", 25: "function"}, "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"}, "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"}, "tensor": {13: "entry"}, "entry": {},
}


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos
        if shift > 63:
            raise ValueError("varint too long")


def _submessages(buf, start: int, end: int):
    """(field number, start, end) of every length-delimited field of one protobuf message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past its message")
            yield key >> 3, pos, pos + length
            pos += length
        elif wire in (0, 1, 5):
            pos = _varint(buf, pos)[1] if wire == 0 else pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire}")


def external_data_locations(path: Path) -> list[str]:
    """Every external_data 'location' of every tensor in an ONNX file, read from the protobuf wire
    format (runtime/ does not import onnx). Raw tensor bytes are skipped, never read. A file that
    is not valid protobuf yields what was found before the damage: ONNX Runtime then refuses it."""
    found: list[str] = []
    if path.stat().st_size == 0:
        return found
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        stack = [("model", 0, len(buf))]  # iterative: nesting depth cannot exhaust the C stack
        try:
            while stack:
                kind, start, end = stack.pop()
                if kind == "entry":
                    entry = {n: bytes(buf[s:e]) for n, s, e in _submessages(buf, start, end)}
                    if entry.get(1) == b"location":
                        found.append(entry.get(2, b"").decode("utf-8", "surrogateescape"))
                    continue
                children = _ONNX_CHILDREN[kind]
                stack.extend((children[n], s, e) for n, s, e in _submessages(buf, start, end)
                             if n in children)
        except (ValueError, IndexError) as exc:
            log.debug("%s: stopped scanning for external data (%s)", path, exc)
    return found
