"""The one atomic file write: a file is either its old content or its new content, never a mix.

``write_atomic`` writes the new content to a temporary file in the target's
own directory, fsyncs it, renames it over the target and fsyncs the
directory. Its invariants:

* A reader (or a restart after a crash or power loss at any point) sees the
  whole old file or the whole new one: ``rename`` within one directory is
  atomic, and the content is on disk before the name points at it.
* Once it returns, the new content survives power loss: the directory fsync
  makes the rename itself durable.
* When it raises, the target is untouched and the temporary file is removed
  (best effort). A crash can still leave the temporary file behind; its name
  is fixed per target, so the next write to the same target replaces it.

Used by everything that replaces a whole file: the catalog, the Kinesis
sidecar's stream metadata, the local directory destination's objects.

``make_dirs`` is ``mkdir -p`` with the same promise: a directory's name is an
entry of its parent, durable only once the parent is fsynced, and a power cut
that takes a directory's name takes every file in it (fsynced or not) along.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: Bytes-like pieces written back to back.
Parts = Iterable[bytes | bytearray | memoryview]


def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, rename, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents so that they survive power loss.

    Each directory it creates is made durable in its parent (an fsync of the parent) before
    anything goes into it; directories that exist are left alone, so the common case (all there)
    costs one ``stat``.
    """
    path = Path(path)
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
        fsync_dir(directory.parent)


def write_atomic(path: Path, parts: Parts, *, tmp_name: str | None = None, mode: int = 0o666,
                 drop_cache: bool = False) -> None:
    """Replace ``path`` with ``parts`` written back to back, atomically and durably.

    The parent directory is created if missing (durably, ``make_dirs``). The temporary file is
    ``tmp_name`` in the same directory (default ``<name>.tmp``): a name, not
    a path, so it cannot land on another filesystem where the rename would
    not be atomic. It is created with ``mode`` (less the umask). With
    ``drop_cache`` the written pages are dropped from the page cache after
    the fsync, for content that is not read back here (as ``dd oflag=nocache``).
    Raises ``OSError``; the old file is then left as it was.
    """
    tmp = path.with_name(tmp_name if tmp_name is not None else f"{path.name}.tmp")
    try:
        make_dirs(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.fsync(fd)
            if drop_cache:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
