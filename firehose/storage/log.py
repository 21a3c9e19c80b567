"""Append-only segment log: checksummed entries, fsync before acknowledgement.

This is the durability primitive of the daemon (and of the Kinesis shard store).
Its invariants:

* An entry is written as one frame::

      magic "FHS1" | payload length u32 | seq u64 | xxh3-64(seq + payload) u64 | payload

  in a segment file named ``<first seq, 20 digits>.seg``. Sequence numbers
  strictly increase across the log; a failed write burns its numbers, so there
  may be gaps, never repeats.
* ``write`` only puts bytes in the page cache. Readers see an entry only after
  the ``sync`` that covers it returned, so nothing un-fsynced is ever delivered
  and nothing is acknowledged before it is on disk. ``write``/``sync`` are
  called from one thread (the group committer); reads may come from any thread.
* A write or fsync error is never retried on the same file: the segment is cut
  back to its last fsynced size, closed, and the next write opens a new segment
  (an fsync that failed may have dropped dirty pages; PostgreSQL's "fsyncgate").
  A segment that held nothing durable yet is cut to empty and reused instead,
  so a disk that stays full does not leave an empty file per failed write.
* Opening a log recovers it: every frame of every segment is checked. A frame
  that is short or fails its checksum ends the valid data. In the last segment
  that is a torn tail from a crash: it is cut off, with a log line. In an older
  segment, a tail that is only an unfinished frame running to the end of the
  file (or zeros) is a write that failed and was never acknowledged (the
  segment was abandoned after it): it is cut off with an INFO line. Anything
  else there is corruption of acknowledged data: the bytes from there on are
  moved aside to ``<segment>.corrupt`` (never silently deleted), the segment
  is cut there, and it is logged as an error.
* A segment is deleted only through ``drop_before``, which the owner calls after
  it has made durable whatever says those entries are no longer needed. An
  active segment (of a quarter of its size or more) all of whose entries are
  released is not written to again
  (the next write starts a new one, so that one can go), and ``drop_before``
  may take the active segment itself (``include_active``) when every entry in
  it is released: a new active segment (empty, named for the next sequence
  number, or holding a copy of the newest entry when the owner keeps it) is
  made durable first, so space is always reclaimable and the log never loses
  its place in the sequence (a log directory is never left without a segment
  once it has had one).
* A log opened with ``index_heads`` keeps an index file per segment
  (``segindex.py``: written when a segment is sealed, when the active one has
  grown by a quarter of a segment, and at close), and opening trusts the
  prefix an index covers instead of reading it: it scans only the bytes after
  it (the active segment's tail), with the torn-tail and corruption rules
  above. Such a log keeps the sparse points of only its active segment and a
  few recently read ones in memory (the others are read from their index when
  a reader positions there), so its memory does not grow with its size. Logs
  without it (the delivery spool's) open as they always did.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import mmap
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import xxhash

from firehose.errors import SpoolError
from firehose.storage import segindex
from firehose.storage.atomic import fsync_dir, make_dirs

log = logging.getLogger("firehose.spool")

MAGIC = b"FHS1"
_HEADER = struct.Struct("<4sIQQ")
HEADER_SIZE = _HEADER.size
_SEQ = struct.Struct("<Q")
#: A sparse index point is kept at least every this many bytes of a segment, so a
#: reader positioning at an arbitrary sequence number scans little.
_INDEX_EVERY_BYTES = 256 * 1024
_INDEX_EVERY_ENTRIES = 64
_SUFFIX = ".seg"
#: Sealed segments of an indexed log whose points stay in memory after a reader needed them.
_LOADED_SEGMENTS = 2
#: The active segment's index is rewritten at most this often (for tiny segments, as in tests).
_CHECKPOINT_MIN_BYTES = 64 * 1024

#: One entry's bytes, given as parts that are written back to back.
Payload = Sequence[bytes | bytearray | memoryview]
#: An entry whose bytes depend on the sequence number it gets (sealed with it in the nonce, say): the
#: writer calls it with that number, in the writer thread, just before the entry is framed.
Deferred = Callable[[int], Payload]


class Frame(NamedTuple):
    """One committed entry as read: its payload, and the segment file and offset it lies at."""

    seq: int
    payload: memoryview
    path: str
    offset: int


def _checksum(seq: int, parts: Payload) -> int:
    """xxh3-64 over the sequence number and the payload (10x cheaper than zlib's CRC-32 here)."""
    h = xxhash.xxh3_64(_SEQ.pack(seq))
    update = h.update
    for part in parts:
        update(part)
    return h.intdigest()


@dataclass
class _Segment:
    first_seq: int
    path: Path
    #: Bytes known to be on disk (fsynced). Readers never read past it.
    committed: int = 0
    #: Bytes written (committed plus pending fsync).
    written: int = 0
    #: Last sequence number of the committed part; -1 while empty.
    last_seq: int = -1
    #: Last sequence number written (may be ahead of last_seq until sync).
    written_last_seq: int = -1
    #: Sparse (seq, offset) points for positioning readers (and, in an indexed log, the head of the
    #: entry at each point). Appended in the order heads, offsets, seqs: a reader that takes the
    #: length of ``index_seqs`` finds the other two at least as long.
    index_seqs: list[int] = field(default_factory=list)
    index_offsets: list[int] = field(default_factory=list)
    index_heads: list[bytes] = field(default_factory=list)
    sealed: bool = False
    #: Whether the points are in memory (False: a sealed segment of an indexed log; see ``_points``).
    loaded: bool = True
    #: Indexed logs: the head of the entry at offset 0 (None while the segment is empty), of the last
    #: committed entry, and of the last written one.
    first_head: bytes | None = None
    last_head: bytes = b""
    written_last_head: bytes = b""
    #: Indexed logs: bytes covered by the index file on disk (0: none), and its summary as read at open.
    indexed: int = 0
    summary: segindex.Summary | None = None

    def add_index(self, seq: int, offset: int, head: bytes | None = None) -> None:
        if not self.index_offsets or (
            offset - self.index_offsets[-1] >= _INDEX_EVERY_BYTES
            or len(self.index_seqs) * _INDEX_EVERY_ENTRIES <= seq - self.first_seq
        ):
            if head is not None:
                if offset == 0:
                    self.first_head = head
                self.index_heads.append(head)
            self.index_offsets.append(offset)
            self.index_seqs.append(seq)

    def offset_for(self, seq: int) -> int:
        """Offset of an indexed frame at or before ``seq`` (0 if none)."""
        i = bisect.bisect_right(self.index_seqs, seq) - 1
        return self.index_offsets[i] if i >= 0 else 0


class SegmentLog:
    """One directory of segments. See the module docstring for the rules."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024, uses_reserve: bool = False,
                 keep_last: bool = False, index_heads: int | None = None) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        #: With a number: keep index files (see the module docstring), and that many leading bytes of
        #: each indexed entry's payload (its owner's header), which ``seek`` and ``newest`` give back.
        self.index_heads = index_heads
        #: The active segment's index is written again once it has grown by this much: what a restart
        #: after ``kill -9`` scans per log is at most this (plus the last write).
        self._checkpoint_bytes = max(_CHECKPOINT_MIN_BYTES, segment_bytes // 16)
        #: Sealed segments whose index is still to be written (after the sync that makes them durable).
        self._unindexed: list[_Segment] = []
        #: Sealed segments whose points were read from their index, least recently used first.
        self._loaded: OrderedDict[int, _Segment] = OrderedDict()
        self._index_lock = threading.Lock()
        #: The newest entry is state its owner reads at start (a source's checkpoints, how far raw
        #: records were processed): ``drop_before`` never deletes it, it carries it over instead.
        self.keep_last = keep_last
        #: Bookkeeping that must be written even on a full disk (a ledger): the committer frees its
        #: owner's reserved space and tries once more when a write to it finds no space left.
        self.uses_reserve = uses_reserve
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._write_fd: int | None = None
        self._dirty: list[_Segment] = []
        self._dir_dirty = False
        self._next_seq = 0
        self._closed = False
        #: Held by the writer while it writes or syncs; ``drop_before`` takes the active segment only
        #: when it can have this lock at once (so it never waits for an fsync, nor races a write).
        self._writing = threading.Lock()
        #: The highest ``drop_before`` point so far: everything before it may go (see ``reclaim``).
        self.released_before = 0
        make_dirs(self.directory)
        self._recover()

    # -- recovery ---------------------------------------------------------

    def _recover(self) -> None:
        names = os.listdir(self.directory)
        paths = sorted(self.directory / n for n in names if n.endswith(_SUFFIX))
        if self.index_heads is not None:
            _remove_orphan_indexes(self.directory, names)
        found: list[_Segment] = []
        for i, path in enumerate(paths):
            try:
                first = int(path.name[: -len(_SUFFIX)])
            except ValueError:
                log.warning("Ignoring a file that is not a segment.", extra={"path": str(path)})
                continue
            seg = _Segment(first_seq=first, path=path, sealed=True)
            is_last = i == len(paths) - 1
            start = self._adopt_index(seg, is_last=is_last) if self.index_heads is not None else 0
            self._scan(seg, is_last=is_last, start=start)
            self._next_seq = max(self._next_seq, seg.last_seq + 1, first)
            found.append(seg)
        for seg in found:
            if seg.committed == 0:
                if seg is found[-1]:
                    # Kept, and written to next: its name is the log's place in the sequence.
                    seg.sealed = False
                else:
                    seg.path.unlink()  # empty: nothing to keep
                    if self.index_heads is not None:
                        segindex.remove(seg.path)
                    continue
            self._segments.append(seg)
            self._firsts.append(seg.first_seq)
        if self.index_heads is not None:
            for seg in self._segments:
                # Every segment found with entries is sealed (the next write starts a new one). Not
                # fsynced, so that a start after kill -9 does not wait for a disk flush per log: an
                # index lost to a power cut is only a scan at the next start.
                if seg.committed > seg.indexed and self._write_index(seg, durable=False) and seg.sealed:
                    _unload(seg)

    def _adopt_index(self, seg: _Segment, *, is_last: bool) -> int:
        """Take what a sound index of ``seg`` says; returns the offset from which to scan (0: no index).

        The points are read now only if the segment has bytes after the covered prefix (to be scanned
        onto them); a fully covered segment's points are read when a reader needs them.
        """
        assert self.index_heads is not None
        summary = segindex.read_summary(seg.path, seg.first_seq, self.index_heads)
        if summary is None:
            if segindex.index_path(seg.path).exists():
                log.info("A segment index is unreadable; scanning the segment and writing it again.",
                         extra={"segment": str(seg.path)})
            return 0
        size = seg.path.stat().st_size
        if summary.covered > size:
            log.info("A segment index covers more than its segment holds; scanning the segment and writing "
                     "it again.", extra={"segment": str(seg.path), "covered": summary.covered, "bytes": size})
            return 0
        if size > summary.covered:
            points = segindex.read_points(seg.path, summary, self.index_heads)
            if points is None:
                log.info("A segment index is unreadable; scanning the segment and writing it again.",
                         extra={"segment": str(seg.path)})
                return 0
            seg.index_heads, seg.index_offsets, seg.index_seqs = points.heads, points.offsets, points.seqs
        else:
            seg.loaded = False
        seg.summary = summary
        seg.first_head, seg.last_head = summary.first_head, summary.last_head
        seg.last_seq = summary.last_seq
        seg.indexed = summary.covered
        return summary.covered

    def _scan(self, seg: _Segment, *, is_last: bool, start: int = 0) -> None:
        """Check the frames of ``seg`` from ``start`` (0, or the end of what its index covers) on."""
        size = seg.path.stat().st_size
        expect_after = seg.last_seq if start else seg.first_seq - 1
        offset = start
        bad_reason = ""
        heads = self.index_heads
        if offset >= size:
            seg.committed = seg.written = offset
            seg.written_last_seq = seg.last_seq
            seg.written_last_head = seg.last_head
            return
        with open(seg.path, "rb") as f:
            f.seek(offset)
            while offset < size:
                header = f.read(HEADER_SIZE)
                if len(header) < HEADER_SIZE:
                    bad_reason = "short header"
                    break
                magic, length, seq, checksum = _HEADER.unpack(header)
                if magic != MAGIC:
                    bad_reason = "bad magic"
                    break
                payload = f.read(length)
                if len(payload) < length:
                    bad_reason = "short payload"
                    break
                if _checksum(seq, (payload,)) != checksum:
                    bad_reason = "checksum mismatch"
                    break
                if seq <= expect_after:
                    bad_reason = "sequence number out of order"
                    break
                if heads is None:
                    seg.add_index(seq, offset)
                else:
                    seg.last_head = _head((payload,), heads)
                    seg.add_index(seq, offset, seg.last_head)
                seg.last_seq = seq
                expect_after = seq
                offset += HEADER_SIZE + length
        kept = offset
        if offset < size:
            kept = self._cut(seg, offset, size, bad_reason, is_last=is_last)
        seg.committed = seg.written = kept
        seg.written_last_seq = seg.last_seq
        seg.written_last_head = seg.last_head

    def _cut(self, seg: _Segment, offset: int, size: int, reason: str, *, is_last: bool) -> int:
        """Deal with invalid bytes from ``offset`` on; returns the segment's valid length."""
        if is_last:
            log.warning(
                "Cut a torn tail off the spool after a crash; those bytes were never acknowledged.",
                extra={"segment": str(seg.path), "offset": offset, "bytes": size - offset, "reason": reason},
            )
        elif _unfinished_write(seg.path, offset, reason):
            log.info(
                "Cut an unfinished write off a spool segment; it failed (disk full or I/O error) and was "
                "never acknowledged.",
                extra={"segment": str(seg.path), "offset": offset, "bytes": size - offset, "reason": reason},
            )
        else:
            aside = seg.path.with_name(seg.path.name + ".corrupt")
            try:
                with open(seg.path, "rb") as src, open(aside, "wb") as dst:
                    src.seek(offset)
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
            except OSError as exc:
                # No room to set the bytes aside (a full disk): leave the segment as it is, read only
                # up to the bad frame, and try again at the next start. Never cut what was not saved.
                aside.unlink(missing_ok=True)
                log.error(
                    "Spool segment is corrupt; could not move the unreadable remainder aside, so it is left "
                    "in place and only the entries before it are read.",
                    extra={"segment": str(seg.path), "offset": offset, "reason": reason, "error": str(exc)},
                )
                return offset
            log.error(
                "Spool segment is corrupt; moved the unreadable remainder aside.",
                extra={"segment": str(seg.path), "offset": offset, "moved_to": str(aside), "reason": reason},
            )
        fd = os.open(seg.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        return offset

    # -- writing (group-committer thread only) ----------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def write(self, payloads: Sequence[Payload | Deferred]) -> int:
        """Write entries (no fsync); returns the first sequence number given out.

        Each payload is a list of byte strings written back to back, so callers
        need not join them first, or a ``Deferred`` that makes it from its
        sequence number. Raises SpoolError; the entries are then not in the log.
        """
        with self._writing:
            return self._write(payloads)

    def _write(self, entries: Sequence[Payload | Deferred]) -> int:
        if self._closed:
            raise SpoolError(f"spool log {self.directory} is closed")
        first_seq = self._next_seq
        payloads = [p(first_seq + i) if callable(p) else p for i, p in enumerate(entries)]
        self._next_seq += len(payloads)
        seg: _Segment | None = None
        try:
            seg = self._writable_segment(first_seq)
            iov: list[bytes | bytearray | memoryview] = []
            offsets: list[tuple[int, int]] = []
            pos = seg.written
            seq = first_seq
            heads = self.index_heads
            head_list: list[bytes] = []
            for parts in payloads:
                checksum = _checksum(seq, parts)
                length = sum(map(len, parts))
                offsets.append((seq, pos))
                if heads is not None:
                    head_list.append(_head(parts, heads))
                iov.append(_HEADER.pack(MAGIC, length, seq, checksum))
                iov.extend(parts)
                pos += HEADER_SIZE + length
                seq += 1
            assert self._write_fd is not None
            _write_all(self._write_fd, iov)
        except OSError as exc:
            self._abandon_active(exc, writing=seg)
            raise SpoolError(f"write to spool failed: {exc}") from exc
        seg.written = pos
        seg.written_last_seq = seq - 1
        if head_list:
            seg.written_last_head = head_list[-1]
            for (s, off), head in zip(offsets, head_list, strict=True):
                seg.add_index(s, off, head)
        else:
            for s, off in offsets:
                seg.add_index(s, off)
        if not self._dirty or self._dirty[-1] is not seg:
            self._dirty.append(seg)
        return first_seq

    def sync(self) -> None:
        """fsync everything written; afterwards readers see it."""
        with self._writing:
            self._sync()

    def _sync(self) -> None:
        if not self._dirty:
            return
        try:
            for seg in self._dirty:
                if seg is self._active_segment() and self._write_fd is not None:
                    os.fdatasync(self._write_fd)
                else:
                    fd = os.open(seg.path, os.O_WRONLY)
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
            if self._dir_dirty:
                fsync_dir(self.directory)
                self._dir_dirty = False
        except OSError as exc:
            self._abandon_active(exc)
            raise SpoolError(f"fsync of spool failed: {exc}") from exc
        for seg in self._dirty:
            seg.committed = seg.written
            seg.last_seq = seg.written_last_seq
            seg.last_head = seg.written_last_head
        self._dirty.clear()
        if self.index_heads is not None:
            self._index_durable()

    def _active_segment(self) -> _Segment | None:
        if self._segments and not self._segments[-1].sealed:
            return self._segments[-1]
        return None

    def _writable_segment(self, first_seq: int) -> _Segment:
        active = self._active_segment()
        # An active segment all of whose entries are released is not written to again: new entries
        # would pin it. A new segment lets the next ``drop_before`` delete it. (Not for a small one:
        # a stream that is drained after every put would make a file per put.)
        retired = (active is not None and active.written >= self.segment_bytes // 4
                   and active.written_last_seq < self.released_before)
        if active is not None and active.written < self.segment_bytes and not retired:
            if self._write_fd is None:  # kept after a failed write, or found empty at start
                self._write_fd = os.open(active.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            return active
        if active is not None:
            active.sealed = True
            self._close_write_fd()
            if self.index_heads is not None:
                self._unindexed.append(active)
        return self._new_segment(first_seq)

    def _new_segment(self, first_seq: int) -> _Segment:
        """Create and open the active segment ``<first_seq>.seg`` (durable with the next directory fsync)."""
        path = self.directory / f"{first_seq:020d}{_SUFFIX}"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        seg = _Segment(first_seq=first_seq, path=path)
        with self._lock:
            self._segments.append(seg)
            self._firsts.append(first_seq)
        self._dir_dirty = True
        return seg

    def _close_write_fd(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def _abandon_active(self, exc: OSError, writing: _Segment | None = None) -> None:
        """After a failed write/fsync: cut back to what is known durable, then seal.

        ``writing`` is the segment a failed write was going to (its bytes are not yet counted as
        written). An active segment with nothing durable in it is cut to empty and kept, not sealed:
        the next write reuses it, so a disk that stays full does not leave one empty file per attempt.
        """
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # expected on a full disk, and answered with 503
            log.warning("Spool write failed: no space left; nothing of it was kept.",
                        extra={"dir": str(self.directory), "error": str(exc)})
        else:
            log.error("Spool write failed; cut back to what was durable and sealed the segment.",
                      extra={"dir": str(self.directory), "error": str(exc)})
        cut = list(self._dirty)
        if writing is not None and writing not in cut:
            cut.append(writing)
        for seg in cut:
            seg.written = seg.committed
            seg.written_last_seq = seg.last_seq
            seg.written_last_head = seg.last_head
            _trim_index(seg)
            try:
                fd = os.open(seg.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, seg.committed)
                    # Durable, so the bytes of the failed write never come back after a power cut.
                    # An error here (after a failed fsync) changes nothing: recovery cuts them too.
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass  # recovery will cut whatever fails its checksum
        self._dirty.clear()
        active = self._active_segment()
        if active is not None and active.committed > 0:
            active.sealed = True
            if self.index_heads is not None:
                self._unindexed.append(active)  # written with the next sync that succeeds
        self._close_write_fd()

    # -- index files (indexed logs; writer thread, or at open and close) ----------

    def _index_durable(self) -> None:
        """After a sync: index the sealed segments that are now wholly durable, and the active one when
        it has grown by ``_checkpoint_bytes`` since its index was written."""
        with self._index_lock:
            durable = [seg for seg in self._unindexed if seg.committed == seg.written]
            self._unindexed = [seg for seg in self._unindexed if seg.committed != seg.written]
        for seg in durable:
            if self._write_index(seg):
                with self._index_lock:
                    _unload(seg)  # its points come from the file when a reader wants them
        active = self._active_segment()
        if active is not None and active.committed - active.indexed >= self._checkpoint_bytes:
            # Not fsynced: it is written often, and a kill -9 keeps it anyway (the page cache survives);
            # after a power cut it may be an older one, or be torn and ignored: a longer scan, no more.
            self._write_index(active, durable=False)

    def _write_index(self, seg: _Segment, *, durable: bool = True) -> bool:
        """Write the index of ``seg``'s committed bytes (fsynced if ``durable``); False (logged) if it
        could not be written."""
        assert self.index_heads is not None and seg.loaded
        committed = seg.committed
        if committed == 0 or seg.last_seq < 0 or seg.first_head is None:
            return False
        n = bisect.bisect_left(seg.index_offsets, committed)
        points = segindex.Points(seg.index_seqs[:n], seg.index_offsets[:n], seg.index_heads[:n])
        summary = segindex.Summary(seg.first_seq, committed, seg.last_seq, seg.first_head, seg.last_head)
        try:
            summary = segindex.write(seg.path, summary, points, self.index_heads, durable=durable)
        except OSError as exc:
            log.warning("Could not write a segment index; the next start scans the segment instead.",
                        extra={"segment": str(seg.path), "error": str(exc)})
            return False
        seg.indexed = committed
        seg.summary = summary
        return True

    def _forget_index(self, seg: _Segment) -> None:
        """``seg`` was deleted: delete its index too (an orphan left by a crash goes at the next open)."""
        segindex.remove(seg.path)
        with self._index_lock:
            self._loaded.pop(seg.first_seq, None)
            self._unindexed = [s for s in self._unindexed if s is not seg]

    def _offset_for(self, seg: _Segment, seq: int) -> int:
        """``seg.offset_for``, reading a sealed segment's points from its index first if need be."""
        with self._index_lock:
            return self._points(seg).offset_for(seq)

    def _points(self, seg: _Segment) -> _Segment:
        """``seg`` with its points in memory (call with ``_index_lock``); keeps ``_LOADED_SEGMENTS``.

        They come from its index file or, if that is gone or damaged, from walking the segment's frame
        headers (and the index is written again).
        """
        if seg.loaded:
            if seg.first_seq in self._loaded:
                self._loaded.move_to_end(seg.first_seq)
            return seg
        assert self.index_heads is not None
        points = None
        if seg.summary is not None:
            points = segindex.read_points(seg.path, seg.summary, self.index_heads)
        if points is None:
            log.info("A segment index is unreadable; rebuilding it from the segment's frame headers.",
                     extra={"segment": str(seg.path)})
            points = _walk_points(seg, self.index_heads)
            seg.index_heads, seg.index_offsets, seg.index_seqs = points.heads, points.offsets, points.seqs
            seg.loaded = True
            self._write_index(seg, durable=False)
        else:
            seg.index_heads, seg.index_offsets, seg.index_seqs = points.heads, points.offsets, points.seqs
            seg.loaded = True
        self._loaded[seg.first_seq] = seg
        while len(self._loaded) > _LOADED_SEGMENTS:
            _first, old = self._loaded.popitem(last=False)
            _unload(old)
        return seg

    # -- reading (any thread) ---------------------------------------------

    @property
    def committed_next_seq(self) -> int:
        """One past the last entry a reader can see."""
        with self._lock:
            for seg in reversed(self._segments):
                if seg.last_seq >= 0:
                    return seg.last_seq + 1
        return self._segments[0].first_seq if self._segments else 0

    def has_committed_from(self, seq: int) -> bool:
        """Whether a reader starting at ``seq`` finds an entry (numbers may have gaps: failed writes
        burn theirs, and a log whose entries were all released may start past them)."""
        with self._lock:
            for seg in reversed(self._segments):
                if seg.last_seq >= 0:
                    return seg.last_seq >= seq
        return False

    @property
    def first_seq(self) -> int:
        with self._lock:
            return self._firsts[0] if self._firsts else self._next_seq

    def newest(self) -> tuple[int, bytes] | None:
        """(seq, head) of the newest committed entry of an indexed log; None while it has none."""
        with self._lock:
            for seg in reversed(self._segments):
                if seg.last_seq >= 0:
                    return seg.last_seq, seg.last_head
        return None

    def seek(self, before: Callable[[bytes], bool]) -> int:
        """Where to start reading for the first entry whose head is not ``before`` (indexed logs).

        ``before`` must hold for the heads of a prefix of the log's entries and for none after it (an
        arrival time before T, when arrival times never go back). Returns the sequence number of an
        indexed entry in that prefix with at most a point's spacing of entries (64, or 256 KiB) after
        it still in the prefix, or the first sequence number when no indexed entry is ``before``.
        Reads no frames: at most one sealed segment's points, from its index.
        """
        if self.index_heads is None:
            raise TypeError("seek needs a log opened with index_heads")
        with self._lock:
            segments = [s for s in self._segments if s.first_head is not None]
            start = self._firsts[0] if self._firsts else self._next_seq
        lo, hi = 0, len(segments)
        while lo < hi:
            mid = (lo + hi) // 2
            head = segments[mid].first_head
            assert head is not None
            if before(head):
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            return start
        with self._index_lock:
            seg = self._points(segments[lo - 1])
            seqs, heads = seg.index_seqs, seg.index_heads
        n = len(seqs)
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if before(heads[mid]):
                lo = mid + 1
            else:
                hi = mid
        return seqs[lo - 1] if lo else seg.first_seq

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.written for s in self._segments)

    def read(self, from_seq: int, max_bytes: int) -> list[tuple[int, memoryview]]:
        """Committed entries with seq >= from_seq, in order, up to about max_bytes.

        Always returns at least one entry if one exists. Payloads are views into
        a buffer read from the file; keep them as long as needed.
        """
        return [(frame.seq, frame.payload) for frame in self.read_frames(from_seq, max_bytes)]

    def read_frames(self, from_seq: int, max_bytes: int) -> list[Frame]:
        """``read``, with where each payload lies on disk: a worker process can read records
        from the segment file itself instead of being sent them. The bytes there never change
        (segments are append-only), and the file stays until ``drop_before`` passes it."""
        out: list[Frame] = []
        budget = max_bytes
        while budget > 0:
            with self._lock:
                i = bisect.bisect_right(self._firsts, from_seq) - 1
                if i < 0:
                    i = 0
                if i >= len(self._segments):
                    break
                seg = self._segments[i]
                nxt = self._segments[i + 1].first_seq if i + 1 < len(self._segments) else None
                committed, last_seq = seg.committed, seg.last_seq
                start = seg.offset_for(from_seq) if self.index_heads is None else -1
            if start < 0:
                start = self._offset_for(seg, from_seq)
            if last_seq < from_seq or start >= committed:
                if nxt is None:
                    break
                from_seq = max(from_seq, nxt)
                continue
            try:
                # A fresh descriptor per read: a concurrent drop_before may unlink
                # the file, and an open descriptor keeps its data readable.
                fd = os.open(seg.path, os.O_RDONLY)
            except FileNotFoundError:
                with self._lock:
                    if seg in self._segments:
                        raise SpoolError(f"spool segment {seg.path} disappeared") from None
                continue  # dropped meanwhile; the next lookup skips it
            try:
                got = self._read_segment(fd, str(seg.path), start, committed, from_seq, budget)
            finally:
                os.close(fd)
            if not got:
                if nxt is None:
                    break
                from_seq = max(from_seq, nxt)
                continue
            out.extend(got)
            budget -= sum(len(f.payload) for f in got)
            from_seq = got[-1].seq + 1
        return out

    @staticmethod
    def _read_segment(fd: int, path: str, start: int, end: int, from_seq: int, budget: int) -> list[Frame]:
        """Map the committed region and slice frames out of it: no copy into user memory.

        The mapping stays valid while any returned view is alive, even if the
        segment is deleted meanwhile.
        """
        base = start - start % mmap.ALLOCATIONGRANULARITY
        # Map what the budget needs plus room for one large frame; prefault it in
        # one go (cheaper than a page fault per 4 KiB).
        length = min(end - base, start - base + budget + _MAP_SLACK)
        view = _map(fd, base, length)
        out: list[Frame] = []
        pos = start - base
        while pos + HEADER_SIZE <= length and budget > 0:
            _magic, size, seq, _checksum_ = _HEADER.unpack_from(view, pos)
            frame_end = pos + HEADER_SIZE + size
            if frame_end > length:
                if base + frame_end > end:
                    raise SpoolError(f"spool frame at offset {base + pos} runs past the committed end")
                if out:
                    break  # the next call maps from here
                length = frame_end
                view = _map(fd, base, length)
            if seq >= from_seq:
                out.append(Frame(seq, view[pos + HEADER_SIZE : frame_end], path, base + pos + HEADER_SIZE))
                budget -= size
            pos = frame_end
        return out

    # -- deletion ---------------------------------------------------------

    def drop_before(self, seq: int, *, include_active: bool = False) -> int:
        """Delete whole segments whose entries all have sequence numbers < seq.

        Returns the number of bytes freed. The active segment goes too only with
        ``include_active``, when every entry written to it is before ``seq`` and
        the writer is not busy with this log: it is replaced by a new, empty
        active segment (made durable first), so the next write has a home and a
        restart knows where the sequence stands. Without it the active segment
        stays (dropping it costs a file and a directory fsync, worth paying only
        when its space is wanted).
        """
        self.released_before = max(self.released_before, seq)
        freed = 0
        with self._lock:
            # The last segment stays here, even sealed: it holds the log's place (replaced below).
            while len(self._segments) > 1 and self._segments[0].sealed and self._segments[0].written_last_seq < seq:
                if self.keep_last and not any(s.written for s in self._segments[1:]):
                    break  # it holds the newest entry (a failed write left only an empty segment after it)
                seg = self._segments.pop(0)
                self._firsts.pop(0)
                freed += seg.written
                seg.path.unlink(missing_ok=True)
                if self.index_heads is not None:
                    self._forget_index(seg)
        if include_active:
            freed += self._drop_last(seq)
        return freed

    def _drop_last(self, seq: int) -> int:
        """Replace the last segment by a new one if all of it is released (see ``drop_before``).

        With ``keep_last`` the new segment holds a copy of the newest entry (same sequence number,
        same bytes) and is named for it; otherwise it is empty and named for the next sequence
        number. Either is durable before the old one is deleted: a crash in between leaves both,
        and the copy is skipped by readers and deleted with the next release.
        """
        if self._closed or not self._writing.acquire(blocking=False):
            return 0  # the writer is busy here: there is new data, or a retry comes with the next release
        try:
            with self._lock:
                if len(self._segments) != 1:
                    return 0
                last = self._segments[0]
                if not last.written or last.written_last_seq >= seq or last.written != last.committed:
                    return 0
                if self.keep_last and last.first_seq == last.last_seq:
                    return 0  # holds nothing but the entry to keep
            self._close_write_fd()
            try:
                if self.keep_last:
                    frame = self._last_frame(last)
                    fresh = self._new_segment(last.last_seq)
                    assert self._write_fd is not None
                    _write_all(self._write_fd, [frame])
                    os.fdatasync(self._write_fd)
                    fresh.written = fresh.committed = len(frame)
                    fresh.last_seq = fresh.written_last_seq = last.last_seq
                    if self.index_heads is None:
                        fresh.add_index(last.last_seq, 0)
                    else:
                        fresh.last_head = fresh.written_last_head = last.last_head
                        fresh.add_index(last.last_seq, 0, last.last_head)
                else:
                    fresh = self._new_segment(self._next_seq)
                fsync_dir(self.directory)
                self._dir_dirty = False
            except OSError as exc:
                # No inode or no room: keep the old segment for now.
                with self._lock:
                    if len(self._segments) == 2:
                        failed = self._segments.pop()
                        self._firsts.pop()
                        failed.path.unlink(missing_ok=True)
                self._close_write_fd()
                log.warning("Could not start a new spool segment to free the old one; retrying later.",
                            extra={"dir": str(self.directory), "error": str(exc)})
                return 0
            with self._lock:
                self._segments.remove(last)
                self._firsts.remove(last.first_seq)
            last.path.unlink(missing_ok=True)
            if self.index_heads is not None:
                self._forget_index(last)
            assert fresh is self._segments[0]
            return last.written - fresh.written
        finally:
            self._writing.release()

    def _last_frame(self, seg: _Segment) -> bytes:
        """The newest entry's whole frame, as it lies in ``seg``."""
        with open(seg.path, "rb") as f:
            start = self._offset_for(seg, seg.last_seq)
            f.seek(start)
            data = f.read(seg.committed - start)
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            _magic, length, s, _checksum_ = _HEADER.unpack_from(data, pos)
            if s == seg.last_seq:
                return data[pos : pos + HEADER_SIZE + length]
            pos += HEADER_SIZE + length
        raise OSError(f"the newest entry of {seg.path} was not found")

    def reclaim(self) -> int:
        """``drop_before`` the last release point again, active segment included: space wanted now."""
        return self.drop_before(self.released_before, include_active=True)

    def close(self) -> None:
        if self.index_heads is not None and not self._closed:
            # What is durable gets its index, so that the next start reads none of it.
            with self._writing:
                if not self._dirty:
                    self._index_durable()
                    active = self._active_segment()
                    if active is not None and active.committed > active.indexed:
                        self._write_index(active)
        self._closed = True
        self._close_write_fd()

    def iter_all(self, batch_bytes: int = 8 << 20) -> Iterator[tuple[int, memoryview]]:
        """Every committed entry, oldest first (used at startup to rebuild state)."""
        seq = self.first_seq
        while True:
            got = self.read(seq, batch_bytes)
            if not got:
                return
            yield from got
            seq = got[-1][0] + 1


#: Mapped (and prefaulted) beyond a read's byte budget so that its last frame usually fits. Small: a
#: mapping stays resident while any record read from it is held, and a frame that does not fit is
#: mapped on its own by the next read.
_MAP_SLACK = 256 * 1024
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def _map(fd: int, offset: int, length: int) -> memoryview:
    mm = mmap.mmap(fd, length, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=offset)
    return memoryview(mm)


_IOV_MAX = 1024


def _write_all(fd: int, iov: list[bytes | bytearray | memoryview]) -> None:
    """writev everything (no copy into one buffer), coping with short writes."""
    i = 0
    while i < len(iov):
        chunk = iov[i : i + _IOV_MAX]
        want = sum(len(b) for b in chunk)
        n = os.writev(fd, chunk)
        if n == want:
            i += len(chunk)
            continue
        # Short write: finish this chunk byte-exactly, then go on.
        for b in chunk:
            if n >= len(b):
                n -= len(b)
                continue
            view = memoryview(b)[n:]
            n = 0
            while view:
                view = view[os.write(fd, view):]
        i += len(chunk)


def _trim_index(seg: _Segment) -> None:
    """Drop the points past ``seg.committed`` (after a failed write was cut off)."""
    keep = [i for i, off in enumerate(seg.index_offsets) if off < seg.committed]
    if seg.index_heads:
        seg.index_heads = [seg.index_heads[i] for i in keep]
        if not keep:
            seg.first_head = None
    seg.index_offsets = [seg.index_offsets[i] for i in keep]
    seg.index_seqs = [seg.index_seqs[i] for i in keep]


def _head(parts: Payload, size: int) -> bytes:
    """The first ``size`` bytes of a payload (zero-padded if it is shorter)."""
    first = parts[0] if parts else b""
    if len(first) >= size:
        return bytes(first[:size])
    return b"".join(bytes(p) for p in parts)[:size].ljust(size, b"\0")


def _unload(seg: _Segment) -> None:
    """Let go of a sealed, indexed segment's points (they are read from its index when wanted)."""
    seg.loaded = False
    seg.index_seqs, seg.index_offsets, seg.index_heads = [], [], []


def _walk_points(seg: _Segment, head_bytes: int) -> segindex.Points:
    """A segment's points from its frame headers (what an index holds, without one)."""
    fresh = _Segment(first_seq=seg.first_seq, path=seg.path)
    offset = 0
    with open(seg.path, "rb") as f:
        while offset < seg.committed:
            f.seek(offset)
            header = f.read(HEADER_SIZE + head_bytes)
            if len(header) < HEADER_SIZE:
                raise SpoolError(f"spool segment {seg.path} is shorter than its committed size")
            _magic, length, seq, _checksum_ = _HEADER.unpack_from(header, 0)
            fresh.add_index(seq, offset, header[HEADER_SIZE:].ljust(head_bytes, b"\0")[:head_bytes])
            offset += HEADER_SIZE + length
    return segindex.Points(fresh.index_seqs, fresh.index_offsets, fresh.index_heads)


def _remove_orphan_indexes(directory: Path, names: list[str]) -> None:
    """Delete index files whose segment is gone (a crash between the two unlinks) and unfinished ones."""
    segments = {n[: -len(_SUFFIX)] for n in names if n.endswith(_SUFFIX)}
    for name in names:
        orphan = name.endswith(segindex.SUFFIX) and name[: -len(segindex.SUFFIX)] not in segments
        if orphan or name.endswith(segindex.SUFFIX + ".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _unfinished_write(path: Path, offset: int, reason: str) -> bool:
    """Whether the invalid bytes from ``offset`` to the end of a segment are a write that never finished.

    A write that failed (disk full, I/O error) leaves a prefix of its frames: an unfinished frame
    (or nothing but zeros) running to the end of the file, and no valid frame after it. A complete
    frame whose checksum fails, or a valid frame after the bad bytes, is damage to data that may
    have been acknowledged: corruption.
    """
    if reason not in ("short header", "short payload", "bad magic"):
        return False
    with open(path, "rb") as f:
        f.seek(offset)
        rest = f.read()
    if not rest.strip(b"\0"):
        return True
    at = rest.find(MAGIC, 1)
    while at >= 0:
        if len(rest) - at >= HEADER_SIZE:
            _magic, length, seq, checksum = _HEADER.unpack_from(rest, at)
            body = rest[at + HEADER_SIZE : at + HEADER_SIZE + length]
            if len(body) == length and _checksum(seq, (body,)) == checksum:
                return False  # a good frame after the bad bytes: they are not a failed last write
        at = rest.find(MAGIC, at + 1)
    return reason != "bad magic"
