"""Which files a flow reads, and where each starts: files are known by identity, not by name.

An identity is (device, inode) plus a fingerprint: a hash of the file's first
bytes (up to ``FP_LEN``, growing with the file until it has that many). The
pair tells apart the cases that fool name- or inode-only tailers:

* rename + create: the renamed file keeps its identity and is read to its end
  (through the open descriptor even if the new name is outside the pattern);
  the new file is a new identity, read from its start;
* copytruncate: the truncated file's size drops below the read offset, or its
  first bytes change: a new *generation* of the same inode, read from 0. The
  copy (a new inode whose first ``FP_LEN`` bytes equal a known generation's) is
  read from the offset the original had reached, so lines that were not yet
  read before the truncation come from the copy, and nothing is sent twice;
* delete: the descriptor stays open until the file has been read to its end
  and has been idle for the flow's rotate wait;
* inode reuse: a checkpoint row for the same device and inode whose
  fingerprint does not match the file is not this file;
* symlink switches: paths are resolved, so the target's identity counts, and
  two paths to one file are one file;
* compressed rotation (``app.log.1.gz``): compressed files are never read;
  their content was shipped from the uncompressed file before it was deleted.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from itertools import count

import xxhash

from firehose.agent.checkpoints import Position, Row

log = logging.getLogger("firehose.agent")

FP_LEN = 1024
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".z", ".tgz")
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"PK\x03\x04", b"\x04\x22\x4d\x18")
#: Past generations remembered in memory for copy detection.
GHOSTS = 256

_generation_ids = count(1)


def digest(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


def head(fd: int, n: int) -> bytes:
    return os.pread(fd, n, 0)


@dataclass
class Ghost:
    """A past generation (truncated, or closed after rotation), kept to recognise its copies."""

    dev: int
    ino: int
    fp_len: int
    fp: bytes
    offset: int
    path: str


@dataclass(eq=False)
class TrackedFile:
    """One open file generation: its identity, descriptor and read offset."""

    path: str
    dev: int
    ino: int
    fd: int
    fp_len: int
    fp: bytes
    offset: int
    size: int
    key: int = field(default_factory=lambda: next(_generation_ids))
    row_id: int | None = None
    acked: int = 0
    gone_since: float | None = None
    last_change: float = 0.0

    def position(self, offset: int) -> Position:
        return Position(self.path, self.dev, self.ino, self.fp_len, self.fp, offset)

    def ghost(self, offset: int) -> Ghost:
        return Ghost(self.dev, self.ino, self.fp_len, self.fp, offset, self.path)

    def new_generation(self) -> None:
        """The file was truncated or rewritten in place: same inode, new content, new checkpoint row."""
        self.key = next(_generation_ids)
        self.row_id = None
        self.offset = self.acked = 0
        self.fp_len, self.fp = fingerprint(self.fd)


def fingerprint(fd: int) -> tuple[int, bytes]:
    data = head(fd, FP_LEN)
    return len(data), digest(data)


def is_compressed(path: str, fd: int) -> bool:
    if path.lower().endswith(COMPRESSED_SUFFIXES):
        return True
    start = os.pread(fd, 6, 0)
    return any(start.startswith(m) for m in COMPRESSED_MAGIC)


def matches(fd: int, fp_len: int, fp: bytes) -> bool:
    """Does the open file start with the bytes this fingerprint was taken over?"""
    data = head(fd, fp_len)
    return len(data) == fp_len and digest(data) == fp


def resume_offset_at_line_end(fd: int, size: int) -> int:
    """END_OF_FILE: start after the last complete line, so no half line is sent as a record."""
    if size == 0:
        return 0
    window = min(size, 64 * 1024)
    tail = os.pread(fd, window, size - window)
    nl = tail.rfind(b"\n")
    return size if nl < 0 else size - window + nl + 1


class Tracker:
    """The files of one flow: discovery by glob, identity checks, start offsets."""

    def __init__(self, pattern: str, rows: list[Row], *, start_of_file: bool) -> None:
        self.pattern = pattern
        self.rows = rows  # checkpoint rows of this flow, newest first
        self.fresh = not rows  # no checkpoint yet: initialPosition decides
        self.start_of_file = start_of_file
        self.files: dict[tuple[int, int], TrackedFile] = {}
        self.ghosts: deque[Ghost] = deque(maxlen=GHOSTS)
        self._skipped: set[tuple[int, int]] = set()
        self._first_scan = True

    def scan(self, now: float) -> list[TrackedFile]:
        """Match the pattern again: mark files that left it, open files that joined it."""
        seen: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
        for path in sorted(glob.glob(self.pattern, recursive=True)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                seen.setdefault((st.st_dev, st.st_ino), (path, st))
        for key, f in self.files.items():
            if key in seen:
                f.path, f.gone_since = seen[key][0], None
            elif f.gone_since is None:
                f.gone_since = now
        added = []
        # Files with a checkpoint first (so a copy can see its original), then oldest first, so a
        # rotated file's lines go before its successor's.
        order = sorted(seen.items(), key=lambda kv: (not self._has_row(kv[0]), kv[1][1].st_mtime, kv[1][0]))
        for key, (path, st) in order:
            if key in self.files or key in self._skipped:
                continue
            f = self._open(path, st, now)
            if f is not None:
                self.files[key] = f
                added.append(f)
        self._first_scan = False
        return added

    def _has_row(self, key: tuple[int, int]) -> bool:
        return any((r.dev, r.ino) == key for r in self.rows)

    def _open(self, path: str, st: os.stat_result, now: float) -> TrackedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc.strerror)
            return None
        st2 = os.fstat(fd)
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):  # replaced between stat and open: next scan
            os.close(fd)
            return None
        if is_compressed(path, fd):
            os.close(fd)
            self._skipped.add((st.st_dev, st.st_ino))
            log.debug("skipping compressed file %s", path)
            return None
        fp_len, fp = fingerprint(fd)
        f = TrackedFile(path, st.st_dev, st.st_ino, fd, fp_len, fp, 0, st2.st_size, last_change=now)
        offset = self._start_offset(f)
        if offset is None:  # a copy of a file still being written: decided once the original is truncated
            os.close(fd)
            return None
        f.offset = f.acked = offset
        return f

    def _start_offset(self, f: TrackedFile) -> int | None:
        for row in self.rows:
            if (row.dev, row.ino) == (f.dev, f.ino) and row.fp_len <= f.size and matches(f.fd, row.fp_len, row.fp):
                self.rows.remove(row)
                f.row_id = row.id
                if row.offset > f.size:  # truncated while the agent was away
                    log.info("%s is shorter than its checkpoint; reading it from the start", f.path)
                    return 0
                return row.offset
        live = self._live_original(f)
        if live is not None:
            log.debug("%s is a copy of %s, which has not been truncated yet; waiting", f.path, live.path)
            return None
        source = self._copy_source(f)
        if source is not None:
            log.info("%s starts like %s (a copy, e.g. copytruncate): reading it from offset %d",
                     f.path, source.path, min(source.offset, f.size))
            return min(source.offset, f.size)
        if self.fresh and self._first_scan:
            return 0 if self.start_of_file else resume_offset_at_line_end(f.fd, f.size)
        return 0

    def _live_original(self, f: TrackedFile) -> TrackedFile | None:
        """A tracked file that still starts like ``f`` and holds at least as much: ``f`` is its copy.

        Reading the copy now would send again what is still being read from the
        original; once the original is truncated (copytruncate) the copy is read
        from where the original was, and if it never is (``copy``), the copy is
        never read at all.
        """
        if f.fp_len < FP_LEN:
            return None
        for other in self.files.values():
            if other.fp_len == FP_LEN and other.fp == f.fp and other.size >= f.size and other is not f:
                return other
        return None

    def _copy_source(self, f: TrackedFile) -> Ghost | Row | None:
        """A known generation with the same full-length fingerprint on another inode, if any."""
        if f.fp_len < FP_LEN:
            return None
        candidates: list[Ghost | Row] = [g for g in reversed(self.ghosts)]
        candidates += self.rows
        for c in candidates:
            if c.fp_len == FP_LEN and c.fp == f.fp and (c.dev, c.ino) != (f.dev, f.ino):
                return c
        return None

    def forget(self, f: TrackedFile, safe_offset: int) -> None:
        """A file closed after rotation: remember it for copies, release its descriptor."""
        self.ghosts.append(f.ghost(safe_offset))
        self.files.pop((f.dev, f.ino), None)
        os.close(f.fd)

    def close(self) -> None:
        for f in self.files.values():
            os.close(f.fd)
        self.files.clear()

