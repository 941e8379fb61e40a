"""Writing files so that a reader never sees half of one (figures, evaluation summaries, the prior-sample pool)."""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> str:
    """Write ``data`` (bytes, or a function that writes to an open binary file, e.g. ``lambda f: np.save(f, x)``)
    to ``path`` through a temp file in the same folder and ``os.replace``; parent folders are created. On failure
    the error propagates and no partial or temp file is left. Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600 files
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
