"""vs2.js keeps the Python runtime's contract (docs/js.md): the same names, the same manifest
rules, and the same refusals of damaged or tampered export folders, at the same stage.

- constants: manifest.js's names equal runtime/contract.py's.
- manifests: several hundred manifests, each the valid one with one thing edited (a key deleted,
  nulled, retyped, pushed out of range, a list emptied or padded, an unknown key added), are
  refused by checkManifest exactly when Manifest.from_dict refuses them, naming the same key.
- folders: toy exports tampered one way each are refused by loadModel / run / setClasses exactly
  where Vs2Session / run / set_classes refuse them, and an edited manifest.json changes nothing.

Needs node and node_modules (onnxruntime-node), like tests/test_js_bindings.py.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import toy_export
from onnx import numpy_helper
from test_js_bindings import ROOT, _missing_node, _skip

from vs2_export.runtime import Vs2Session, contract
from vs2_export.runtime.manifest import Manifest, ManifestError
from vs2_export.runtime.preprocess import MIN_STD
from vs2_export.runtime.tokenizer import CLEAN_MODES

SCRIPT = "tests/js/contract.mjs"


def _node(command: str, payload: object | None, tmp_path: Path) -> object:
    _skip(_missing_node())
    args = ["node", SCRIPT, command]
    if payload is not None:
        (tmp_path / "in.json").write_text(json.dumps(payload, allow_nan=False))
        args.append(str(tmp_path / "in.json"))
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_names_are_the_python_contract(tmp_path):
    js = _node("constants", None, tmp_path)
    python = {
        "METADATA_KEY": contract.METADATA_KEY, "SCHEMA_VERSION": contract.SCHEMA_VERSION,
        "PIXEL_INPUTS": list(contract.PIXEL_INPUTS), "OVERRIDABLE": list(contract.STEERING_INPUTS),
        "REQUIRED_OUTPUTS": list(contract.REQUIRED_OUTPUTS),
        "OPTIONAL_OUTPUTS": [n for n in contract.OUTPUTS if n not in contract.REQUIRED_OUTPUTS],
        "GATE_CRITERIA": list(contract.GATE_CRITERIA), "PRECISIONS": list(contract.PRECISIONS),
        "CLEAN_MODES": list(CLEAN_MODES), "MAX_SIDE": contract.MAX_SIDE, "MIN_STD": MIN_STD,
        "CLASS_EMBEDDINGS_FILE": contract.CLASS_EMBEDDINGS_FILE,
        "TEXT_MODEL_FILE": contract.TEXT_MODEL_FILE, "VOCAB_FILE": contract.VOCAB_FILE,
        "INCOMPLETE_MARKER": contract.INCOMPLETE_MARKER,
    }
    assert {k: js.get(k) for k in python} == python


# ---- manifests: one edit each


def _bases(tmp_path: Path) -> list[dict]:
    """Valid manifests that between them have every optional part (card, gate statistics, model
    weights hash, int8 re-check, no classes, each pixel input)."""
    rgb = toy_export._manifest("image_rgb", dict(S=16, d=32, n=64, k=8, E=16), 16, 0.25, "a" * 64)
    full = copy.deepcopy(rgb)
    full["model"]["weights_sha256"] = "b" * 64
    full["steering"].update(gate="rel_err", gate_stats={"pass_rate": 0.99, "p50": 0.02, "max": 0.08})
    full["card"] = {"licence": "MIT", "data": ["x"]}
    full["precision"] = "int8"
    full["int8_recheck"] = {"margin": 0.5, "gate_band": 0.0, "estimated_disagreement": 0.01,
                            "rerun_rate": 0.2, "images": 100}
    bare = toy_export._manifest("pixel_values", dict(S=16, d=32, n=64, k=8, E=16), 16, 0.25, "a" * 64)
    bare.update(classes=None, class_embeddings=None, text=None, templates=[])
    bare["outputs"].remove("logits")
    uint8 = toy_export._manifest("pixels_uint8", dict(S=16, d=32, n=64, k=8, E=16), 16, 0.25, "a" * 64)
    uint8["preprocess"].update(resize_mode="longest", fill_color=255, interpolation="bilinear")
    for m in (rgb, full, bare, uint8):
        Manifest.from_dict(m)  # each base is valid
    return [rgb, full, bare, uint8]


FREE = {("created",)}
"""Paths whose string edits only Python checks (its ISO 8601 parse; the page never reads it)."""


def _edits(value: object) -> list[object]:
    """Values to put in place of `value`: other types, bounds, neighbours."""
    out: list[object] = [None, "x", True, [], {}, -1, 0, 1, 0.5, 1e39, -1e-9]
    if isinstance(value, bool):
        return out + [False]
    if isinstance(value, int):
        return out + [value + 1, value - 1, value * 4096, value + 0.5, -value]
    if isinstance(value, float):
        return out + [value * 2, -value, value + 1e-3, value * (1 + 1e-7), math.nextafter(value, 0)]
    if isinstance(value, str):
        return out + ["", " ", value + "x", value.upper(), "\u00a0", "{}", "a {} {}", "a {:}", "a {0}",
                      "{{}} {}", "a {} }", "\u2003"]
    if isinstance(value, list):
        return out + [value[:-1], value + value[-1:], value[::-1], [*value, "x"]] if value else out
    return out


def _mutations(base: dict) -> list[tuple[str, dict]]:
    """(what was edited, the edited manifest) for every key path of base."""
    found = []

    def walk(node: object, path: tuple) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        if isinstance(node, dict):
            found.append((path + ("<unknown key>",), "add"))
        for key, child in items:
            found.append((path + (key,), "delete"))
            for value in _edits(child):
                found.append((path + (key,), value))
            walk(child, path + (key,))

    walk(base, ())
    out = []
    for path, edit in found:
        if path[:1] in FREE and isinstance(edit, str):
            continue
        m = copy.deepcopy(base)
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        if edit == "add":
            parent["surplus"] = 1
        elif edit == "delete":
            if isinstance(parent, list):
                parent.pop(path[-1])
            else:
                del parent[path[-1]]
        else:
            parent[path[-1]] = edit
        out.append((f"{'.'.join(map(str, path))} = {edit!r}", m))
    return out


def _python(m: dict) -> str | None:
    """None if the Python runtime accepts the manifest, else the key its error names."""
    try:
        Manifest.from_dict(m)
    except ManifestError as exc:
        return str(exc).split(":")[0]
    return None


def test_manifest_rules_are_the_python_rules(tmp_path):
    cases = [case for base in _bases(tmp_path) for case in _mutations(base)]
    cases += [("versions.onnx = 1", {**cases[0][1], "versions": {"onnx": 1}}),
              ("tolerances = []", {**cases[0][1], "tolerances": []})]
    js = _node("manifests", [m for _, m in cases], tmp_path)
    refused = accepted = 0
    bad = []
    for (what, m), answer in zip(cases, js, strict=True):
        python = _python(m)
        assert not answer.get("bug"), f"{what}: JS raised {answer['name']}: {answer['error']}"
        got = None if answer.get("ok") else answer["error"].split(":")[0]
        refused += python is not None
        accepted += python is None
        if (python is None) != (got is None) or (python and got != python):
            bad.append(f"{what}: Python {python or 'accepts'}, JS {got or 'accepts'}"
                       + (f" ({answer['error']})" if got else ""))
    assert not bad, f"{len(bad)} of {len(cases)} edited manifests answered differently:\n" + "\n".join(bad[:40])
    assert refused > 500 and accepted > 50, (refused, accepted)  # both answers well exercised


# ---- folders: one tampering each


def _tamper_metadata(folder: Path, edit) -> None:
    model = onnx.load(str(folder / contract.MODEL_FILE))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    edit(props)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(folder / contract.MODEL_FILE))


def _repeat_metadata(folder: Path) -> None:
    """ONNX Runtime's metadata map keeps the last of repeated keys: so must vs2.js."""
    model = onnx.load(str(folder / contract.MODEL_FILE))
    model.metadata_props.add(key=contract.METADATA_KEY, value="{}")
    onnx.save(model, str(folder / contract.MODEL_FILE))


def _edit_manifest(change):
    def edit(props):
        m = json.loads(props[contract.METADATA_KEY])
        change(m)
        props[contract.METADATA_KEY] = json.dumps(m)
    return edit


def _nan_weight(folder: Path) -> None:
    model = onnx.load(str(folder / contract.MODEL_FILE))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the trunk's weight
    array = numpy_helper.to_array(init).copy()
    array.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(folder / contract.MODEL_FILE))


def _drop_output(folder: Path, name: str, file: str = contract.MODEL_FILE) -> None:
    model = onnx.load(str(folder / file))
    kept = [o for o in model.graph.output if o.name != name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(folder / file))


def _edit_bytes(path: Path, edit) -> None:
    path.write_bytes(edit(path.read_bytes()))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dir_in_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


TAMPERINGS = {
    "untouched": (None, lambda f: None),
    "manifest.json edited": (None, lambda f: (f / "manifest.json").write_text(json.dumps(
        {**json.loads((f / "manifest.json").read_text()), "classes": ["a", "b", "c", "d", "e"]}))),
    "class_embeddings one byte changed": ("load", lambda f: _edit_bytes(
        f / contract.CLASS_EMBEDDINGS_FILE, lambda b: b[:7] + bytes([b[7] ^ 1]) + b[8:])),
    "class_embeddings cut": ("load", lambda f: _edit_bytes(f / contract.CLASS_EMBEDDINGS_FILE, lambda b: b[:-4])),
    "class_embeddings missing": ("load", lambda f: (f / contract.CLASS_EMBEDDINGS_FILE).unlink()),
    "class_embeddings a FIFO": ("load", lambda f: _fifo(f / contract.CLASS_EMBEDDINGS_FILE)),
    "export unfinished": ("load", lambda f: (f / contract.INCOMPLETE_MARKER).write_text('{"pid": 1}')),
    "metadata removed": ("load", lambda f: _tamper_metadata(f, lambda p: p.clear())),
    "metadata not JSON": ("load", lambda f: _tamper_metadata(f, lambda p: p.update(vs2_export="{oops"))),
    "metadata gamma < 0": ("load", lambda f: _tamper_metadata(
        f, _edit_manifest(lambda m: m["steering"].update(gamma=-1.0)))),
    "metadata lists a class more": ("load", lambda f: _tamper_metadata(
        f, _edit_manifest(lambda m: m["classes"].append("f")))),
    "metadata with a repeated key, the last one damaged": ("load", lambda f: _repeat_metadata(f)),
    "model.onnx cut in half": ("load", lambda f: _edit_bytes(f / contract.MODEL_FILE, lambda b: b[:len(b) // 2])),
    "model.onnx not ONNX": ("load", lambda f: (f / contract.MODEL_FILE).write_bytes(b"\x89PNG\r\n\x1a\n" * 64)),
    "model.onnx empty": ("load", lambda f: (f / contract.MODEL_FILE).write_bytes(b"")),
    "graph lacks an output the manifest lists": ("load", lambda f: _drop_output(f, contract.GATE_SCORE)),
    "a NaN weight": ("run", _nan_weight),
    "text.onnx output dropped": ("classes", lambda f: _drop_output(
        f, contract.TEXT_EMBEDDING, contract.TEXT_MODEL_FILE)),
    "text.onnx missing": ("classes", lambda f: (f / contract.TEXT_MODEL_FILE).unlink()),
    # vs2.js handed the path to ONNX Runtime unchecked: opening the FIFO blocked node for good.
    "text.onnx a FIFO": ("classes", lambda f: _fifo(f / contract.TEXT_MODEL_FILE)),
    "model.onnx a directory": ("load", lambda f: _dir_in_place(f / contract.MODEL_FILE)),
    "vocab damaged": ("classes", lambda f: (f / contract.VOCAB_FILE).write_bytes(b"\x1f\x8b\x08garbage")),
    "vocab a gzip bomb": ("classes", lambda f: (f / contract.VOCAB_FILE).write_bytes(
        gzip.compress(b"\0" * (256 << 20), compresslevel=1))),
}


def _python_stage(folder: Path, s: int) -> str:
    stage = "load"
    try:
        session = Vs2Session(folder)
        stage = "run"
        session.run(np.full((s, s, 3), 128, np.uint8))
        stage = "classes"
        session.set_classes(["cat", "dog"])
    except (ValueError, OSError) as exc:  # ModelError, InputError, ...: the runtime's refusals
        assert "Traceback" not in str(exc)
        return stage
    return "ok"


def test_tampered_folders_are_refused_where_python_refuses_them(tmp_path):
    _skip(_missing_node())
    folders = []
    for i, (_, tamper) in enumerate(TAMPERINGS.values()):
        folder = toy_export.build(tmp_path / f"case{i}", pixel_input="image_rgb")
        tamper(folder)
        folders.append(folder)
    js = _node("folders", [{"folder": str(f), "model": contract.MODEL_FILE, "image_size": 16} for f in folders],
               tmp_path)
    bad = []
    for (name, (want, _)), folder, answer in zip(TAMPERINGS.items(), folders, js, strict=True):
        want = want or "ok"
        python = _python_stage(folder, 16)
        got = answer["stage"]
        if answer.get("bug"):
            bad.append(f"{name}: JS threw {answer['name']} (not a Vs2Error): {answer['error']}")
        elif not (python == got == want):
            bad.append(f"{name}: expected refusal at {want}; Python {python}, JS {got} ({answer.get('error')})")
    assert not bad, "\n".join(bad)
    # The graph's manifest is the one both runtimes use, whatever manifest.json says.
    edited = js[list(TAMPERINGS).index("manifest.json edited")]
    assert edited["classes"] == list(toy_export.CLASSES)
