"""One process per state directory: an exclusive, advisory lock held for the process's life.

Two daemons (or two Kinesis sidecars) on the same directory would interleave
writes to the same logs and corrupt them; the second one to start refuses to,
with a message naming the directory. The lock is ``flock`` on a file in the
directory, so the kernel releases it when the process dies, ``kill -9``
included, and a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from firehose.storage.atomic import make_dirs


class DirectoryInUse(OSError):
    pass


class DirectoryLock:
    def __init__(self, directory: Path, what: str) -> None:
        make_dirs(directory)
        self.path = directory / ".lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise DirectoryInUse(f"{what} {directory} is in use by another process") from None
        try:  # for people looking; the lock itself is the flock (a full disk must not stop a start)
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
