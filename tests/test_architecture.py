"""The layout's rules, checked on the source (docs/design.md): imports point down the data flow
with no circles, the runtime imports nothing from the torch side, nothing imports the CLI, and
graph names are spelled only in runtime/contract.py."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vs2_export"
TORCH_SIDE = {"torch", "open_clip", "onnx", "onnxscript", "safetensors", "torchvision"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved), top level and
    inside functions alike."""
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def internal_graph() -> dict[str, set[str]]:
    return {name: {m for m in imports_of(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def test_no_import_cycles():
    # A package's __init__ re-exporting its modules is not a cycle of ideas: leave those out.
    graph = {name: {m for m in deps if not name.startswith(m + ".")}
             for name, deps in internal_graph().items()}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_runtime_imports_nothing_from_the_torch_side():
    for name, path in MODULES.items():
        if not name.startswith("vs2_export.runtime"):
            continue
        deps = imports_of(path)
        assert not {d.split(".")[0] for d in deps} & TORCH_SIDE, name
        outside = {d for d in deps if d.startswith("vs2_export") and
                   not d.startswith("vs2_export.runtime")}
        assert not outside, f"{name} imports {sorted(outside)} from the torch side"


def test_nothing_imports_the_cli():
    users = [name for name, deps in internal_graph().items() if "vs2_export.cli" in deps]
    assert users == []


GRAPH_NAMES = {"pixel_values", "pixels_uint8", "image_rgb", "steer_gamma", "steer_lambda",
               "gate_tau", "class_embeddings", "base_embedding", "latent_indices", "latent_values",
               "model.onnx", "manifest.json", "text.onnx"}
"""The names no other idea shares (fvu or logits are also training metrics' and reports' keys)."""


def test_graph_names_are_spelled_only_in_the_contract():
    """A string literal that IS a graph or export-file name belongs in runtime/contract.py
    (docstrings may mention them)."""
    spelled = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}"
               for path in PACKAGE.rglob("*.py") if path.name != "contract.py"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value in GRAPH_NAMES]
    assert spelled == []
