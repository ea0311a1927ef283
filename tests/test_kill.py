"""kill -9 at some point of extract, train and export (issue 5, item 4): afterwards no file under
a final name is corrupt (every one parses or loads), the state is the old one or a resumable
one, and a rerun (with --force where an output exists) succeeds.

Each run is a real `vs2` subprocess killed with SIGKILL: no cleanup handler can run.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import REPO, assert_clean_failure, run_vs2
from pipeline import noise_images
from safetensors.numpy import load_file

from vs2_export.calibrate import calibrate
from vs2_export.config import CalibrateConfig, ExportConfig, ExtractConfig, ModelSpec, TrainConfig, VerifyConfig
from vs2_export.errors import Vs2Error
from vs2_export.export import export
from vs2_export.extract import extract
from vs2_export.runtime import contract
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.session import Vs2Session
from vs2_export.sae import load_sae
from vs2_export.store import ActivationStore
from vs2_export.train import train_sae
from vs2_export.verify import verify

pytestmark = pytest.mark.skipif(
    not (REPO / "vs2_export" / "demo" / "vs2-demo.safetensors").is_file(),
    reason="needs the bundled demo model")
N_IMAGES = 300


@pytest.fixture(scope="module")
def work(module_tmp):
    """Two image folders, a complete store and an SAE + steering built from the first."""
    root = module_tmp.mktemp("kill")
    noise_images(root / "images", N_IMAGES, size=48, seed=0)
    noise_images(root / "images2", N_IMAGES, size=48, seed=1)
    extract(ExtractConfig(root / "images", root / "acts", ModelSpec(), batch_size=64))
    train_sae(TrainConfig(root / "acts", root / "sae", expansion=2, k=8, batch_size=128, epochs=1))
    calibrate(CalibrateConfig(root / "acts", root / "sae", root / "steering.json"))
    return root


def spawn(tmp: Path, *args) -> subprocess.Popen:
    """`vs2 ARGS` in the background; output to files (a full pipe would block the child)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp / f"spawn-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "vs2_export.cli", *map(str, args)], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as ready() holds; the test is void if proc finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command finished before the kill point: make it longer"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def new_inode(path: Path):
    """ready() for kill_when: `path` was (re)placed since now. Atomic renames make new inodes, but
    a deleted file's inode number can be reused at once: compare (inode, mtime) together."""
    def identity():
        try:
            stat = path.stat()
        except FileNotFoundError:  # between the old file's removal and the new one's rename
            return None
        return stat.st_ino, stat.st_mtime_ns
    before = identity()
    return lambda: identity() not in (None, before)


def assert_final_files_sound(folder: Path) -> None:
    """Every file under a final name (temporaries start with '.') parses or loads."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue  # an abandoned temporary: never read by vs2, replaced on the next run
        if path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":  # an append-only log: every finished line parses
            lines = path.read_text().split("\n")
            [json.loads(line) for line in lines[:-1]]
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.name == contract.TEXT_MODEL_FILE:  # the text graph: no image-model manifest
            create_session(path)
        elif path.suffix == ".onnx" and (path.parent / contract.INCOMPLETE_MARKER).exists():
            create_session(path)  # the file is whole; the folder is refused as unfinished (below)
        elif path.suffix == ".onnx":
            Vs2Session(path)  # model.onnx and any precision variant; also checks class_embeddings.f32
        elif path.suffix == ".gz":  # the tokenizer's vocab
            gzip.decompress(path.read_bytes())
        elif path.suffix == ".txt":
            path.read_text(encoding="utf-8")


def first_shard(out: Path) -> Path:
    """The first shard an extraction writes (shard-s<session>-r<rank>-<index>.npy)."""
    return out / "shard-s000-r000-00000.npy"


def test_extract_killed_after_the_first_shard_resumes(work, tmp_path):
    out = tmp_path / "acts"
    proc = spawn(tmp_path, "extract", "--model", "vs2-demo", "--images", work / "images", "--out", out,
                 "--batch-size", 8, "--shard-size", 16)
    kill_when(proc, lambda: first_shard(out).exists())
    assert_final_files_sound(out)
    assert not (out / "meta.json").exists()  # incomplete, and marked so
    with pytest.raises(Vs2Error, match="meta.json"):
        ActivationStore(out)  # what train and calibrate open: refused, clearly
    with pytest.raises(Vs2Error, match="--append"):  # never silently restarted over held shards
        extract(ExtractConfig(work / "images", out, ModelSpec()))
    done = run_vs2("extract", "--model", "vs2-demo", "--images", work / "images", "--out", out, "--append",
                   "--shard-size", 16)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(ActivationStore(out)) == N_IMAGES


def test_extract_force_killed_never_mixes_two_runs(work, tmp_path):
    """--force over a complete store, from other images, killed after the first new shard."""
    out = tmp_path / "acts"
    shutil.copytree(work / "acts", out)
    proc = spawn(tmp_path, "extract", "--model", "vs2-demo", "--images", work / "images2", "--out", out, "--force",
                 "--batch-size", 8, "--shard-size", 16)
    kill_when(proc, new_inode(first_shard(out)))
    assert_final_files_sound(out)
    with pytest.raises(Vs2Error, match="meta.json"):  # old meta over new shards would load
        ActivationStore(out)


TRAIN = ["--k", 8, "--expansion", 2, "--batch-size", 16]


def test_train_killed_after_a_checkpoint_resumes(work, tmp_path):
    out = tmp_path / "sae"
    # Resuming requires the same options: a run long enough to be killed, short enough to finish.
    args = ["train", "--acts", work / "acts", "--out", out, *TRAIN, "--epochs", 8,
            "--checkpoint-every", 20]
    proc = spawn(tmp_path, *args)
    kill_when(proc, lambda: (out / "checkpoint").is_dir() and any((out / "checkpoint").iterdir()))
    assert_final_files_sound(out)
    assert not (out / "cfg.json").exists()
    with pytest.raises(Vs2Error):
        load_sae(out)  # no half SAE: there is none yet
    done = run_vs2(*args, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    load_sae(out)


def test_train_force_killed_keeps_the_old_sae_or_refuses(work, tmp_path):
    out = tmp_path / "sae"
    shutil.copytree(work / "sae", out)
    old = load_sae(out)[1]
    proc = spawn(tmp_path, "train", "--acts", work / "acts", "--out", out, "--force", *TRAIN,
                 "--epochs", 100000)
    start = time.monotonic()
    kill_when(proc, lambda: time.monotonic() - start > 8.0)  # mid-training (startup ~5 s)
    assert_final_files_sound(out)
    with contextlib.suppress(Vs2Error):  # the old SAE, whole, or none; never a mix of two runs
        assert load_sae(out)[1] == old
    train_sae(TrainConfig(work / "acts", out, expansion=2, k=8, epochs=1, seed=1, force=True))
    assert load_sae(out)[1] != old


def _classes(work: Path) -> Path:
    (work / "classes.txt").write_text("alpha\nbeta\ngamma\n")
    return work / "classes.txt"


def _export_args(work: Path, out: Path, sae: Path, steering: Path) -> list:
    return ["export", "--sae", sae, "--steering", steering, "--out", out, "--classes",
            _classes(work)]


def test_export_killed_while_writing_the_graph_leaves_no_model(work, tmp_path):
    out = tmp_path / "exported"
    args = _export_args(work, out, work / "sae", work / "steering.json")
    proc = spawn(tmp_path, *args)
    # While the graph is written and checked under its temporary name: the riskiest moment.
    kill_when(proc, lambda: any(out.glob(".model.onnx.*")), timeout=300)
    assert_final_files_sound(out) if out.exists() else None
    assert not (out / "model.onnx").exists()
    done = run_vs2(*args)  # nothing final to protect: no --force needed
    assert done.returncode == 0, done.stderr[-2000:]
    assert Vs2Session(out).manifest.classes == ("alpha", "beta", "gamma")


def test_export_force_killed_before_the_record_is_caught_by_verify(work, tmp_path):
    """A kill after the new model.onnx but before the new record: the folder is still marked
    incomplete, so verify (and every runtime load) refuses it, saying the export did not finish,
    instead of a bare 'parity FAIL'; export without --force says so too."""
    out = tmp_path / "exported"
    export(ExportConfig(work / "sae", work / "steering.json", out, ModelSpec(),
                        _classes(work)))
    other = tmp_path / "sae2"
    train_sae(TrainConfig(work / "acts", other, expansion=2, k=8, batch_size=128, epochs=1, seed=3))
    calibrate(CalibrateConfig(work / "acts", other, tmp_path / "steering2.json"))
    proc = spawn(tmp_path, *_export_args(work, out, other, tmp_path / "steering2.json"), "--force")
    kill_when(proc, new_inode(out / "manifest.json"), timeout=300)  # after a whole export, as above
    assert_final_files_sound(out)
    assert_clean_failure(run_vs2("verify", out, "--run", work, "--images", work / "images",
                                 "--max-images", 8), 2, "did not finish")
    assert_clean_failure(run_vs2(*_export_args(work, out, other, tmp_path / "steering2.json")), 2,
                         "did not finish")
    export(ExportConfig(other, tmp_path / "steering2.json", out, ModelSpec(), _classes(work),
                        force=True))
    assert verify(VerifyConfig(out, tmp_path, work / "images", max_images=8)).verdict == "PASS"
