"""Atomic artifacts: temporaries of killed writers are cleaned up, live writers' are kept."""

import os
import subprocess
import sys

from vs2_export.artifacts import atomic_path


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
