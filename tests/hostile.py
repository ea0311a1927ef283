"""The hostile image corpus (issue 5), generated on the fly: no binaries are committed.

`write_corpus(folder)` fills a folder with files scraped-from-the-wild style and returns a
Corpus saying which files must be processed (good) and which must be skipped with a reason
(bad). Folder-walking commands must process every good file and list every bad one.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow refuses (DecompressionBombError) above 2 x MAX_IMAGE_PIXELS (89.5 M); we declare ~1.6 G.
BOMB_SIDE = 40_000
NON_UTF8 = b"caf\xe9-\xff\xfe"  # Latin-1 bytes: not valid UTF-8, a legal Linux file name


@dataclass
class Corpus:
    """What write_corpus made: good files must be processed, bad ones skipped with a reason."""

    root: Path
    good: list[Path] = field(default_factory=list)
    bad: dict[Path, str] = field(default_factory=dict)
    """bad file -> a word its skip reason must contain."""


def smooth_rgb(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random RGB image (cheap to compress, never constant)."""
    low = np.random.default_rng(seed).random((4, 4, 3))
    return Image.fromarray((low * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height 1-bit grey pixels and holds one empty IDAT: a few
    hundred bytes that claim more pixels than Pillow's decompression-bomb limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def exif_rotated_jpeg(seed: int) -> bytes:
    """A landscape JPEG whose EXIF Orientation (6) says 'rotate 90 degrees to display'."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(smooth_rgb(80, 50, seed), "JPEG", exif=exif.tobytes())


def _good_files(seed: int) -> dict[str, bytes]:
    """Unusual but valid images: every one must be processed."""
    rgba = smooth_rgb(70, 60, seed).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((70, 60)))
    palette = smooth_rgb(64, 64, seed + 1).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    grey16 = Image.fromarray((np.linspace(0, 65535, 72 * 40).reshape(40, 72)).astype(np.uint16))
    return {
        "plain.png": encoded(smooth_rgb(96, 96, seed + 2), "PNG"),
        "plain.jpg": encoded(smooth_rgb(120, 90, seed + 3), "JPEG"),
        "alpha.png": encoded(rgba, "PNG"),
        "palette.png": encoded(palette, "PNG"),
        "palette_transparent.png": encoded(palette, "PNG", transparency=0),
        "grey16.png": encoded(grey16, "PNG"),
        "cmyk.jpg": encoded(smooth_rgb(64, 48, seed + 4).convert("CMYK"), "JPEG"),
        "one_pixel.png": encoded(smooth_rgb(1, 1, seed + 5), "PNG"),
        "wide_10000x300.jpg": encoded(smooth_rgb(10000, 300, seed + 6), "JPEG", quality=60),
        "exif_rotated.jpg": exif_rotated_jpeg(seed + 7),
        "UPPER.JPG": encoded(smooth_rgb(50, 50, seed + 8), "JPEG"),
        "grey.bmp": encoded(smooth_rgb(40, 40, seed + 9).convert("L"), "BMP"),
        "scan.TIFF": encoded(smooth_rgb(50, 40, seed + 11), "TIFF"),  # one extension list
        "banner_100x1.png": encoded(smooth_rgb(100, 1, seed + 12), "PNG"),  # ratio 100: kept
    }


def _bad_files(seed: int) -> dict[str, tuple[bytes, str]]:
    """Files that must be skipped, with a word the reason must contain."""
    jpeg = encoded(smooth_rgb(90, 90, seed), "JPEG")
    png = encoded(smooth_rgb(90, 90, seed + 1), "PNG")
    return {
        "zero_bytes.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "text_named.jpg": (b"<html>this is a web page, not a photo</html>\n", "not a recognised"),
        "bomb.png": (png_header_only(BOMB_SIDE, BOMB_SIDE), "decompression bomb"),
        # A few hundred bytes whose 'shortest' resize would be 224 x 22 million pixels.
        "sliver_1x100000.png": (encoded(Image.new("L", (100_000, 1)), "PNG"), "aspect ratio"),
        "sliver_2x300.png": (encoded(Image.new("RGB", (2, 300)), "PNG"), "aspect ratio"),
    }


def write_corpus(folder: Path, seed: int = 0, fifo: bool = True) -> Corpus:
    """Fill `folder` with the hostile corpus; returns which files are good and which bad."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(folder)
    for name, data in _good_files(seed).items():
        (folder / name).write_bytes(data)
        corpus.good.append(folder / name)
    for name, (data, reason) in _bad_files(seed).items():
        (folder / name).write_bytes(data)
        corpus.bad[folder / name] = reason
    # A non-UTF-8 name, good and bad: paths travel as bytes-escaped str (surrogateescape).
    weird = Path(os.fsdecode(bytes(folder) + b"/" + NON_UTF8))
    Path(f"{weird}.png").write_bytes(encoded(smooth_rgb(60, 60, seed + 10), "PNG"))
    corpus.good.append(Path(f"{weird}.png"))
    Path(f"{weird}-bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    corpus.bad[Path(f"{weird}-bad.jpg")] = "not a recognised"
    # A symlink loop (must not hang or duplicate) and a dangling link (never a file).
    os.symlink(folder, folder / "loop")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    if fifo:  # opening a FIFO blocks forever: it must never be opened
        os.mkfifo(folder / "pipe.jpg")
    return corpus


def bad_reason_words(corpus: Corpus) -> dict[str, str]:
    """str(path) -> reason word, the way reports list paths."""
    return {str(p): word for p, word in corpus.bad.items()}


# ---- running the real CLI


REPO = Path(__file__).resolve().parents[1]
ERROR_PREFIXES = ("vs2: error:", "vs2: parity", "vs2: internal error")


def run_vs2(*args: str | bytes | Path, timeout: float = 180, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[bytes]:
    """`vs2 ARGS` in a fresh interpreter, stdout strict UTF-8 (the strictest terminal a user
    may have), bytes out; a hang fails the test through the timeout instead of blocking CI."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("VS2_DEBUG", None)
    argv = [sys.executable, "-m", "vs2_export.cli",
            *[a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args]]
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=env, cwd=cwd or REPO)


def text(stream: bytes) -> str:
    """Decoded output; surrogateescape keeps any raw byte visible to asserts."""
    return stream.decode("utf-8", "surrogateescape")


def error_lines(stderr: bytes | str) -> list[str]:
    """The lines vs2 wrote as its verdict (log lines INFO/WARNING are not verdicts)."""
    out = text(stderr) if isinstance(stderr, bytes) else stderr
    return [line for line in out.splitlines() if line.startswith(ERROR_PREFIXES)]


def assert_clean_failure(done, code: int, *words: str) -> str:
    """Exit `code`, exactly one verdict line on stderr containing every word, no traceback."""
    err = text(done.stderr)
    assert done.returncode == code, f"exit {done.returncode}, expected {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1, f"expected one error line, got {lines} in {err[-2000:]}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def model_with_external_data(folder: Path, location: str, nested: bool = False) -> Path:
    """A small ONNX model (y = x + w) whose weight w lives in external data at `location`,
    optionally inside an If subgraph (where a scanner that reads only the top graph misses it).
    Writes folder/model.onnx and a valid 16-byte data file inside the folder."""
    from onnx import TensorProto, helper, numpy_helper
    folder.mkdir(parents=True, exist_ok=True)
    np.arange(4, dtype=np.float32).tofile(folder / "inside.bin")
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    vec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    if nested:
        branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=w),
                                    helper.make_node("Add", ["x", "c"], ["y"])], "branch", [],
                                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
        graph = helper.make_graph([node], "g", vec[:1], vec[1:], [cond])
    else:
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", vec[:1],
                                  vec[1:], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with open(folder / "model.onnx", "wb") as fh:  # onnx.save would try to resolve the data
        fh.write(model.SerializeToString())
    return folder / "model.onnx"


# ---- crafted ONNX files: the protobuf tricks a wire scanner must not be skipped by


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes = b"") -> bytes:
    """One protobuf field: key, then for wire type 2 the length and payload."""
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def external_tensor(location: str, name: str = "w") -> bytes:
    """A serialised TensorProto float [4] whose data lives at `location` (external data)."""
    from onnx import TensorProto, numpy_helper
    w = numpy_helper.from_array(np.zeros(4, np.float32), name)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return w.SerializeToString()


def crafted_models(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model file, word the refusal must contain). Every file hides a reference to
    ../outside.bin (or is unparseable) behind a protobuf feature a naive scanner gives up on."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "outside.bin").write_bytes(b"\0" * 16)
    good = model_with_external_data(folder / "base", "inside.bin").read_bytes()
    evil = external_tensor("../outside.bin")
    graph = field(5, 2, evil)  # GraphProto.initializer
    sparse = field(15, 2, field(1, 2, evil) + field(2, 2, external_tensor("inside.bin", "i")))
    cases = {
        # an unknown group before the graph: protobuf skips it, an old scanner stopped there
        "group_first": field(99, 3) + field(1, 0, varint(1)) + field(99, 4) + field(7, 2, graph),
        "nested_groups": field(98, 3) + field(97, 3) + field(97, 4) + field(98, 4) + field(7, 2, graph),
        "fixed64_first": field(96, 1, b"\0" * 8) + field(95, 5, b"\0" * 4) + field(7, 2, graph),
        "sparse_initializer": field(7, 2, sparse),
        "function_attribute_default": field(25, 2, field(11, 2, field(5, 2, evil))),
        "training_info": field(20, 2, field(1, 2, graph)),
        "duplicate_location": field(7, 2, field(5, 2, external_tensor("inside.bin")[:-2] + field(
            13, 2, field(1, 2, b"location") + field(2, 2, b"../outside.bin")))),
        "wire_type_7": field(7, 7) + field(7, 2, graph),
        "end_group_alone": field(99, 4) + field(7, 2, graph),
        "truncated_length": field(7, 2, graph)[:-3],
        "varint_11_bytes": b"\x08" + b"\xff" * 10 + b"\x01",
        "field_number_0": b"\x02\x00" + field(7, 2, graph),
        "deep_nesting": field(7, 2, _deep_graph(300)),
    }
    words = {"group_first": "outside.bin", "nested_groups": "outside.bin",
             "fixed64_first": "outside.bin", "sparse_initializer": "outside.bin",
             "function_attribute_default": "outside.bin", "training_info": "outside.bin",
             "duplicate_location": "outside.bin"}
    made = {}
    for name, data in cases.items():
        path = folder / name / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.arange(4, dtype=np.float32).tofile(path.parent / "inside.bin")
        path.write_bytes(good + data)  # appended fields merge into the message (protobuf rule)
        made[name] = (path, words.get(name, "well-formed protobuf"))
    return made


def _deep_graph(depth: int) -> bytes:
    """GraphProto -> node -> attribute -> graph ... `depth` times: nesting beyond any real model."""
    inner = b""
    for _ in range(depth):
        inner = field(1, 2, field(5, 2, field(6, 2, inner)))
    return inner


# ---- hostile artifacts: every file a command reads, edited the ways a file can go wrong


def hostile_meta(good: dict) -> dict[str, dict]:
    """meta.json variants (name -> document) that must be refused with one line."""
    shard = good["shards"][0]
    return {
        "shards_not_a_list": {**good, "shards": "shard-00000.npy"},
        "shard_path_traversal": {**good, "shards": [{**shard, "file": "../../etc/passwd"}]},
        "shard_absolute": {**good, "shards": [{**shard, "file": "/etc/passwd"}]},
        "negative_count": {**good, "shards": [{**shard, "count": -1}]},
        "count_is_a_string": {**good, "count": "512"},
        "huge_d": {**good, "d": 10**9},
        "d_is_bool": {**good, "d": True},
        "missing_model": {k: v for k, v in good.items() if k != "model_id"},
        "count_mismatch": {**good, "count": good["count"] + 1},
        "weights_not_hex": {**good, "model_weights_sha256": "zz"},
        "images_not_a_list": {**good, "images": 7},
    }


def hostile_sae_cfg(good: dict) -> dict[str, dict]:
    """SAE cfg.json variants that must be refused before anything is allocated."""
    return {
        "k_zero": {**good, "k": 0},
        "k_above_n": {**good, "k": 10**6},
        "k_float": {**good, "k": 8.5},
        "k_edited": {**good, "k": good["k"] - 1},
        "expansion_huge": {**good, "expansion": 10**9},
        "d_string": {**good, "d": "32"},
        "format_other": {**good, "format": "something"},
    }


def hostile_steering(good: dict) -> dict[str, dict]:
    """steering.json variants that must be refused (values go into a float32 graph)."""
    return {
        "gamma_inf32": {**good, "gamma": 1e39},
        "tau_nan": {**good, "tau": float("nan")},
        "lambda_negative": {**good, "lambda": -1.0},
        "quantile_two": {**good, "quantile": 2.0},
        "gamma_string": {**good, "gamma": "1.5"},
        "extra_key": {**good, "surprise": 1},
        "checksum_short": {**good, "sae_sha256": "abc"},
    }


CLI_NUMBERS = [
    ("train", "--batch-size", "0"), ("train", "--batch-size", "10000000000"),
    ("train", "--lr", "nan"), ("train", "--lr", "inf"), ("train", "--lr", "-1"),
    ("train", "--k", "0"), ("train", "--epochs", "-3"), ("train", "--aux-coef", "inf"),
    ("train", "--warmup-frac", "1"), ("train", "--seed", "-1"), ("train", "--k", "x"),
    ("calibrate", "--gamma", "1e39"), ("calibrate", "--gamma", "0"), ("calibrate", "--lambda", "nan"),
    ("calibrate", "--quantile", "0"), ("calibrate", "--quantile", "1.5"),
]
"""(command, option, value): numbers that must be refused with one line and exit 2."""
