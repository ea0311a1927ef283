"""The install an app makes: `pip install vs2-export[cpu]`, no torch. It must classify, evaluate
and diagnose an exported model, and the torch-side commands must say which extra they need.

The venv is real (pip from the package registry, ~1 minute): an import blocker would not catch a
dependency missing from pyproject.toml or a data file missing from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib
from pipeline import build_export, noise_images

from vs2_export.config import ModelSpec

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def runtime_requirements() -> list[str]:
    """What `pip install vs2-export[cpu]` asks for, read from pyproject.toml."""
    project = PYPROJECT["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["cpu"]]


def pip(python: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runtime_venv(module_tmp) -> Path:
    """A fresh venv with `pip install REPO[cpu]` (a real, non-editable install)."""
    root = module_tmp.mktemp("runtime-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    done = pip(python, "install", "--quiet", f"{REPO}[cpu]")
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "bin"


@pytest.fixture(scope="module")
def exported(module_tmp) -> tuple[Path, Path]:
    """A demo export made with the full toolchain (this process), and its images."""
    work = module_tmp.mktemp("runtime-export")
    images = noise_images(work / "images", 24, size=72)
    return build_export(work, ModelSpec(), images, ["red", "green", "blue"], k=8), images


def run_vs2(bin_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / "vs2"), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def test_runtime_install_has_no_torch(runtime_venv):
    listed = pip(runtime_venv / "python", "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "onnxruntime" in names and "vs2-export" in names
    assert not names & {"torch", "open-clip-torch", "onnx", "onnxscript", "safetensors"}


def test_runtime_install_classifies_and_diagnoses(runtime_venv, exported, tmp_path):
    folder, images = exported
    image = sorted(images.iterdir())[0]
    done = run_vs2(runtime_venv, "classify", folder, image, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (prediction,) = json.loads(done.stdout)["predictions"]
    assert prediction["path"] == str(image) and len(prediction["top"]) == 3
    doctor = run_vs2(runtime_venv, "doctor", "--json", "--model", folder, "--rounds", "1",
                     cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "export toolchain" in doctor.stdout
    timed = {(t["provider"], t["precision"]) for t in json.loads(doctor.stdout)["timings"]}
    assert ("cpu", "fp32") in timed  # the fastest-backend timing runs without torch
    version = run_vs2(runtime_venv, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("vs2-export ")


def test_runtime_install_runs_the_python_api_without_torch(runtime_venv, exported, tmp_path):
    folder, images = exported
    code = ("import sys; from vs2_export.runtime import Vs2Session; "
            f"s = Vs2Session({str(folder)!r}); "
            f"print(s.embed([{str(sorted(images.iterdir())[0])!r}]).shape); "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    done = subprocess.run([str(runtime_venv / "python"), "-c", code], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("(1, ")


@pytest.mark.parametrize("command", [["extract", "--model", "vs2-demo", "--images", "x", "--out", "y"],
                                     ["export", "--sae", "x", "--steering", "y", "--out", "z"],
                                     ["verify", "."]])
def test_torch_side_commands_name_the_extra(runtime_venv, exported, tmp_path, command):
    folder, _ = exported
    args = [folder if a == "." else a for a in command]
    done = run_vs2(runtime_venv, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "vs2-export[export]" in line and "Traceback" not in done.stderr


@pytest.mark.parametrize("platform", ["macosx_14_0_arm64", "manylinux_2_28_aarch64",
                                      "manylinux_2_28_x86_64", "win_amd64"])
def test_runtime_install_resolves_on(platform, tmp_path):
    """Every runtime requirement has a wheel for Apple silicon, ARM Linux boxes, x86 Linux and
    Windows (resolution only: --dry-run reads metadata, downloads no wheels it need not)."""
    done = pip(Path(sys.executable), "install", "--dry-run", "--quiet", "--ignore-installed",
               "--only-binary=:all:", "--platform", platform, "--python-version", "3.11",
               "--target", str(tmp_path / "t"), "--report", str(tmp_path / "r.json"),
               *runtime_requirements(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = {i["metadata"]["name"].lower() for i in
                json.loads((tmp_path / "r.json").read_text())["install"]}
    assert {"onnxruntime", "numpy", "pillow", "typer"} <= resolved
