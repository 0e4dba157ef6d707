"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mnist_mlp.errors import WriteError


def atomic_write(path: str | os.PathLike, write: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``path`` by calling ``write(f)`` on a temporary file (or writing ``write`` itself,
    when it is bytes), then renaming it into place.

    The temporary file lives in the same folder (a rename is atomic only within one file
    system) and is flushed to disk first, so a crash at any point leaves either the previous
    file or the complete new one. On any exception the temporary file is removed and the
    previous file is untouched.

    Raises
    ------
    WriteError
        For any OS error (no space left, a read-only or forbidden folder, ...), in one line.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {describe(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {path}: {describe(exc)}") from None
        raise


def describe(exc: OSError) -> str:
    """An OS error in a few words, with what to do where that is clear."""
    hints = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENOENT: "the folder does not exist",
        errno.EEXIST: "a file is in the way",
    }
    return hints.get(exc.errno or 0, exc.strerror or str(exc))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
