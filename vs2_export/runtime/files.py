"""Open the files of an export folder that may come from anyone: regular files of bounded size only.

A folder from elsewhere can hold a FIFO (open() blocks forever), a symlink to /dev/zero (read()
never ends), or a sparse file of terabytes (read() allocates it). Every runtime file is checked
here, on the descriptor that is then read, before a byte of it is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


@contextmanager
def open_regular(path: Path, what: str, *, max_size: int | None = None,
                 error: type[Exception] = ValueError) -> Iterator[tuple[BinaryIO, int]]:
    """(binary file, its size) of a regular file (symlinks followed), raising `error` with one
    line naming `what` otherwise, or when it is over max_size bytes. O_NONBLOCK: opening a FIFO
    returns at once instead of waiting for a writer, and fstat then refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{path}: expected {what}, cannot read it ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    problem = (f"as a regular file, got a {_kind(info.st_mode)}" if not stat.S_ISREG(info.st_mode)
               else f"of at most {max_size} bytes, got {info.st_size}"
               if max_size is not None and info.st_size > max_size else None)
    if problem:
        os.close(fd)
        raise error(f"{path}: expected {what} {problem}")
    with os.fdopen(fd, "rb") as fh:
        yield fh, info.st_size


def check_regular(path: Path, what: str, *, error: type[Exception] = ValueError) -> None:
    """For files another library opens by name (ONNX Runtime): refuse what open_regular would."""
    with open_regular(path, what, error=error):
        pass
