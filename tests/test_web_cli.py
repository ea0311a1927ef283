"""`vs2 web` and the Python example: the site folder, the onnxruntime-web files a pip install
lacks, package data, and docs/examples/python_classify.py run as documented."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vs2_export.cli import app
from vs2_export.runtime import contract
from vs2_export.web import site

ROOT = Path(__file__).resolve().parent.parent


def fake_ort_dist(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in site.ORT_WEB_FILES:
        (folder / name).write_bytes(b"// stand-in")
    return folder


def test_web_builds_a_site_of_the_chosen_variant(rgb_export, tmp_path):
    dist = fake_ort_dist(tmp_path / "dist")
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["web", str(rgb_export), "--out", str(out), "--ort-dist", str(dist),
                                      "--precision", "int8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["site"] == str(out)
    for name in site.PAGE_FILES:
        assert (out / name).is_file()
    served = json.loads((out / "model" / contract.MANIFEST_FILE).read_text())
    assert served["precision"] == "int8"  # model.int8.onnx served as model/model.onnx, with its manifest
    assert (out / "model" / contract.MODEL_FILE).read_bytes() == (
        rgb_export / contract.model_file("int8")).read_bytes()
    for name in site.EXPORT_OPTIONAL:
        assert (out / "model" / name).is_file()


def test_web_without_onnxruntime_web_says_how_to_get_it(rgb_export, tmp_path, monkeypatch):
    monkeypatch.setattr(site, "CHECKOUT_ORT_DIST", tmp_path / "nowhere")
    result = CliRunner().invoke(app, ["web", str(rgb_export), "--out", str(tmp_path / "site")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"npm install onnxruntime-web@{site.ORT_WEB_VERSION}" in lines[0]


def test_pinned_onnxruntime_web_is_the_one_package_json_installs():
    package = json.loads((ROOT / "package.json").read_text())
    assert package["devDependencies"]["onnxruntime-web"] == site.ORT_WEB_VERSION


def test_every_static_file_is_package_data():
    """A pip-installed vs2 web needs the page's files inside the wheel."""
    line = re.search(r'^"vs2_export\.web" = (\[.*?\])', (ROOT / "pyproject.toml").read_text(), re.M)
    patterns = ast.literal_eval(line.group(1))  # no tomllib: Python 3.10 is supported
    static = [p.relative_to(site.STATIC.parent).as_posix() for p in site.STATIC.iterdir()]
    missing = [f for f in static if not any(fnmatch.fnmatch(f, g) for g in patterns)]
    assert static and not missing, missing


def test_python_example_runs_as_documented(rgb_export):
    image = rgb_export / contract.REFERENCE_DIR / "portrait.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "docs/examples/python_classify.py", str(rgb_export), str(image),
                          "cat", "dog"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("steered:") and "fvu" in lines[0]
    assert lines[1].startswith("with steering:") and lines[2].startswith("plain CLIP:")
    assert lines[3].startswith("cat or dog:") and "cat" in lines[3] and "dog" in lines[3]
