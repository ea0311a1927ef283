"""Writing artifacts so that an interrupted run never leaves a half-written file under a final name.

Every file vs2 produces goes through `atomic_path`: written under a temporary name in the same
folder, flushed, then renamed (os.replace is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import Vs2Error


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success rename it onto `final`, else delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            # Writers differ (safetensors creates 0600, open() 0666 & ~umask): every artifact
            # gets what open() gives, so the SAE is as readable as the rest.
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_pair(final: Path, sidecar: str) -> Iterator[Path]:
    """A file that may come with a sidecar it references by the relative name `sidecar` (an ONNX
    model over 2 GB and its external data): yield final's path inside a temporary folder beside
    `final`; the writer puts the file there and, if it needs one, the sidecar next to it. On
    success both move into place, so that no model under its final name ever meets a sidecar
    from another write; on any failure nothing of this write is left.

    Order: the new sidecar first, then the model. An old model that may reference the old
    sidecar (the sidecar exists) is removed before the sidecar is replaced, so a kill between
    the two renames leaves no model rather than an old model reading new weights. A new file
    without a sidecar replaces the old one first, then the old sidecar (now unreferenced) goes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(final)
    folder = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder / final.name
        _commit_pair(folder / final.name, folder / sidecar, final, final.with_name(sidecar))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _commit_pair(tmp: Path, tmp_sidecar: Path, final: Path, sidecar: Path) -> None:
    for path in (tmp, tmp_sidecar):
        if path.is_file():
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(path, 0o666 & ~_umask())  # as atomic_path: what open() gives
    if not tmp_sidecar.is_file():
        os.replace(tmp, final)
        sidecar.unlink(missing_ok=True)  # belonged to the model just replaced
        return
    if sidecar.exists():
        final.unlink(missing_ok=True)
    try:
        os.replace(tmp_sidecar, sidecar)
        os.replace(tmp, final)
    except BaseException:
        sidecar.unlink(missing_ok=True)  # whatever model is left there does not reference it
        raise


def _umask() -> int:
    """The process umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_abandoned(final: Path) -> None:
    """Delete temporaries of `final` left by a writer that was killed (kill -9 runs no cleanup):
    .NAME.PID.tmp whose PID is no longer a running process. A live writer's file is kept."""
    for tmp in final.parent.glob(f".{final.name}.*.tmp"):
        pid = tmp.name[len(final.name) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def write_json(path: Path, data: object) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: Path, what: str) -> dict:
    """Read a JSON object; a missing or corrupt file is a Vs2Error naming `what` it should be."""
    path = Path(path)
    if not path.is_file():
        raise Vs2Error(f"{what}: expected a file at {path}, found none")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Vs2Error(f"{what}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise Vs2Error(f"{what}: expected a JSON object in {path}, got {type(data).__name__}")
    return data


def claim_output(path: Path, force: bool) -> Path:
    """Refuse to overwrite an existing output unless `force` (issue: never lose work)."""
    path = Path(path)
    if path.exists() and not force:
        raise Vs2Error(f"{path} exists already; pass --force to overwrite it")
    return path


def check_output(out: Path, option: str, inputs: Iterable[Path | None], file: bool = True) -> Path:
    """Refuse an output that would overwrite what the command reads: `out` resolving to one of
    `inputs` or lying inside an input folder (a report written over model.onnx, a site built in
    the export folder). file: `out` names a file, so it needs a name ('' resolves to '.')."""
    out = Path(out)
    if file and not out.name:
        raise Vs2Error(f"{option}: expected a file name, got {str(out)!r}")
    target = out.resolve()
    for path in inputs:
        if path is not None and target.is_relative_to(Path(path).resolve()):
            raise Vs2Error(f"{option} {out}: is or lies inside {path}, an input of this "
                           "command, which it would overwrite; write it elsewhere")
    return out


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
