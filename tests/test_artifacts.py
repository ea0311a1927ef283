"""Atomic artifacts: temporaries of killed writers are cleaned up, live writers' are kept."""

import os
import subprocess
import sys

import pytest

from vs2_export.artifacts import atomic_pair, atomic_path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_path_removes_temporaries_of_dead_writers_only(tmp_path):
    final = tmp_path / "model.onnx"
    abandoned = tmp_path / f".model.onnx.{dead_pid()}.tmp"
    live = tmp_path / f".model.onnx.{os.getppid()}.tmp"   # our parent is alive
    other = tmp_path / f".other.onnx.{dead_pid()}.tmp"
    for path in (abandoned, live, other):
        path.write_bytes(b"half")
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole"
    assert not abandoned.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [final.name, live.name, other.name])


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    final = tmp_path / "steering.json"
    try:
        with atomic_path(final) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


# ---- a model and its sidecar (ONNX external data over 2 GB): written and replaced as a pair


def _write_pair(final, model: bytes, sidecar: bytes | None) -> None:
    with atomic_pair(final, final.name + ".data") as tmp:
        tmp.write_bytes(model)
        if sidecar is not None:
            tmp.with_name(final.name + ".data").write_bytes(sidecar)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_atomic_pair_moves_both_into_place_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "model.onnx"
    _write_pair(final, b"graph v1", b"weights v1")
    assert _files(tmp_path) == {"model.onnx": b"graph v1", "model.onnx.data": b"weights v1"}
    _write_pair(final, b"graph v2", b"weights v2")
    assert _files(tmp_path) == {"model.onnx": b"graph v2", "model.onnx.data": b"weights v2"}


def test_atomic_pair_without_sidecar_removes_the_old_one(tmp_path):
    final = tmp_path / "model.onnx"
    _write_pair(final, b"graph v1", b"weights v1")
    _write_pair(final, b"small graph with weights", None)
    assert _files(tmp_path) == {"model.onnx": b"small graph with weights"}


def test_atomic_pair_failure_while_writing_keeps_the_old_pair(tmp_path):
    final = tmp_path / "model.onnx"
    _write_pair(final, b"graph v1", b"weights v1")
    with pytest.raises(RuntimeError), atomic_pair(final, "model.onnx.data") as tmp:
        tmp.with_name("model.onnx.data").write_bytes(b"half the weights")
        raise RuntimeError("killed while writing")
    assert _files(tmp_path) == {"model.onnx": b"graph v1", "model.onnx.data": b"weights v1"}


@pytest.mark.parametrize("old_sidecar", [True, False])
def test_atomic_pair_failure_between_the_renames_never_mismatches(tmp_path, monkeypatch,
                                                                 old_sidecar):
    """The sidecar is in place, the model's rename fails: no model may meet the new sidecar."""
    final = tmp_path / "model.onnx"
    _write_pair(final, b"graph v1", b"weights v1" if old_sidecar else None)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk gone between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        _write_pair(final, b"graph v2", b"weights v2")
    left = _files(tmp_path)
    assert "model.onnx.data" not in left  # the new sidecar is gone again
    # An old graph that read a sidecar was removed before the new sidecar arrived; one whose
    # weights were inside it (no old sidecar) is still there, whole.
    assert left == ({} if old_sidecar else {"model.onnx": b"graph v1"})
