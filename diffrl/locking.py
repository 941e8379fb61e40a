"""Exclusive locks on the folders a command writes (a training workdir, a dataset being generated).

An OS file lock (``fcntl.flock``) on ``<folder>/.diffrl.lock`` is held for the whole command, so a second process
that would write the same folder refuses at once, naming the holder's pid, instead of racing it for the same
checkpoint files. The kernel drops the lock when its process dies (also on kill -9), so a lock file left by a
dead process never blocks a new run: only a live holder does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import socket

LOCK_FILE = ".diffrl.lock"


class LockedError(ValueError):
    """Another live process holds the lock of a folder."""


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, description: str | None = None, name: str = LOCK_FILE):
    """Hold the lock ``folder/name`` (the folder is created if missing) for the ``with`` block; raise
    :class:`LockedError` at once if another process holds it. ``description`` names what is locked in that
    message (default: ``workdir <folder>``)."""
    path = pathlib.Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown pid"
            raise LockedError(f"{description or f'workdir {folder}'} is in use by another diffrl process ({holder}); "
                              "wait for it to finish or choose another") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
