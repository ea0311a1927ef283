"""Read what the runtime must check in an .onnx file at the protobuf wire level.

runtime/ does not import the onnx package (apps install numpy, pillow and onnxruntime only), so
the one question it asks of a file before ONNX Runtime opens it, where its external data lives,
is answered by parsing the wire format directly.

The parse is complete or it fails: every field of every message on the way to a TensorProto is
decoded by the protobuf wire rules (varints, fixed 32/64, length-delimited, groups), and any
byte sequence a protobuf parser would reject, or that this parser cannot account for, raises
WireError. A scanner that stopped at the first surprise and returned what it had found so far
could be skipped by putting the surprise in front of the external-data entry.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path


class WireError(ValueError):
    """A file that is not a protobuf message this parser can account for, byte for byte."""


# ONNX protobuf messages that can hold a TensorProto, by field number (onnx/onnx.proto3):
# ModelProto: graph 7, training_info 20, functions 25.
# TrainingInfoProto: initialization 1, algorithm 2 (graphs).
# GraphProto: node 1, initializer 5, sparse_initializer 15.
# FunctionProto: node 7, attribute_proto 11.
# NodeProto: attribute 5.
# AttributeProto: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23.
# SparseTensorProto: values 1, indices 2.   TensorProto: external_data 13.
# StringStringEntryProto: key 1, value 2.   ModelProto: metadata_props 14 (entries).
# TensorProto: data_type 2 (a varint; FLOAT16 = 10).
_CHILDREN = {
    "model": {7: "graph", 14: "meta", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
    "meta": {},
}
_FLOAT16 = 10
MAX_DEPTH = 256
"""Nesting (sub-messages and groups) beyond this is refused: real graphs nest a few levels per
subgraph, and protobuf's own default limit is 100."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at pos; at most 10 bytes, inside [pos, end)."""
    value = 0
    for i in range(10):
        if pos + i >= end:
            raise WireError(f"varint at byte {pos} runs past the end of its message")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value >= 1 << 64:
                raise WireError(f"varint at byte {pos} exceeds 64 bits")
            return value, pos + i + 1
    raise WireError(f"varint at byte {pos} is longer than 10 bytes")


def _fields(buf, start: int, end: int, depth: int):
    """(field number, wire type, start, end) of every field of one message in [start, end).
    Groups (wire types 3/4, deprecated but legal) are skipped whole; anything else that is not
    a valid field raises WireError."""
    pos = start
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number >= 1 << 29:
            raise WireError(f"field number {number} at byte {key_at} is out of range")
        if wire == 0:
            value_at = pos
            pos = _varint(buf, pos, end)[1]
            yield number, wire, value_at, pos
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise WireError(f"fixed field at byte {key_at} runs past the end of its message")
            pos += size
            yield number, wire, pos - size, pos
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"field {number} at byte {key_at} declares {length} bytes, "
                                f"its message has {end - pos} left")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 3:
            pos = _skip_group(buf, pos, end, number, depth + 1)
        else:  # 4 (an end-group without its start), 6, 7
            raise WireError(f"wire type {wire} at byte {key_at} is not valid here")


def _skip_group(buf, pos: int, end: int, number: int, depth: int) -> int:
    """Position after the end-group that closes group `number`, nested groups included."""
    open_groups = [number]
    while open_groups:
        if len(open_groups) + depth > MAX_DEPTH:
            raise WireError(f"groups nest deeper than {MAX_DEPTH}")
        key_at = pos
        key, pos = _varint(buf, pos, end)
        inner, wire = key >> 3, key & 7
        if inner == 0:
            raise WireError(f"field number 0 at byte {key_at}")
        if wire == 4:
            if inner != open_groups.pop():
                raise WireError(f"end-group {inner} at byte {key_at} closes another group")
        elif wire == 3:
            open_groups.append(inner)
        elif wire == 0:
            pos = _varint(buf, pos, end)[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            pos += length
        else:
            raise WireError(f"wire type {wire} at byte {key_at} is not valid")
        if pos > end:
            raise WireError(f"group {number} runs past the end of its message")
    return pos


def _entry(buf, start: int, end: int, depth: int) -> tuple[bytes, bytes]:
    """(key, value) of a StringStringEntryProto (last one of each wins, as in protobuf)."""
    entry: dict[int, bytes] = {}
    for number, wire, s, e in _fields(buf, start, end, depth):
        if number in (1, 2) and wire == 2:
            entry[number] = bytes(buf[s:e])
    return entry.get(1, b""), entry.get(2, b"")


@dataclass(frozen=True)
class WireScan:
    """What the runtime needs from an .onnx file before ONNX Runtime opens it."""

    locations: list[str]
    """Every external_data 'location' of every tensor, in file order (repeats kept)."""
    float16: bool
    """Some tensor is stored as float16: what the graph holds, whatever its name or manifest."""
    metadata: dict[str, str]
    """ModelProto.metadata_props (the manifest sits under contract.METADATA_KEY)."""


def scan(source: Path | bytes) -> WireScan:
    """Walk every tensor of an ONNX file or serialised model (graph initializers, sparse
    initializers, node attributes, subgraphs at any depth, functions, training info) and its
    metadata_props.

    Raw tensor bytes are skipped by length, never read. Raises WireError for bytes that are not
    a well-formed protobuf message down to every tensor: the caller must refuse such a file,
    because what ONNX Runtime would make of it is unknown."""
    if isinstance(source, (bytes, bytearray)):
        return _walk(memoryview(source))
    if source.stat().st_size == 0:
        return WireScan([], False, {})
    with open(source, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _walk(buf)


def _walk(buf) -> WireScan:
    found: list[str] = []
    float16 = False
    metadata: dict[str, str] = {}
    stack = [("model", 0, len(buf), 0)]  # iterative: nesting cannot exhaust the C stack
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WireError(f"messages nest deeper than {MAX_DEPTH}")
        if kind in ("entry", "meta"):
            key, value = _entry(buf, start, end, depth)
            text = value.decode("utf-8", "surrogateescape")
            if kind == "meta":
                metadata[key.decode("utf-8", "surrogateescape")] = text
            elif key == b"location":
                found.append(text)
            continue
        children = _CHILDREN[kind]
        for number, wire, s, e in _fields(buf, start, end, depth):
            # A known field with another wire type is an unknown field to protobuf too.
            if wire == 2 and number in children:
                stack.append((children[number], s, e, depth + 1))
            elif kind == "tensor" and number == 2 and wire == 0:
                float16 |= _varint(buf, s, e)[0] == _FLOAT16
    return WireScan(found, float16, metadata)


def external_data_locations(path: Path) -> list[str]:
    """Every external_data 'location' of every tensor in an ONNX file (scan)."""
    return scan(path).locations
