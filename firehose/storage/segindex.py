"""Segment index files: what a segment log knows about a segment without reading its frames.

A ``SegmentLog`` opened with ``index_heads`` (the Kinesis shard logs) keeps next to each segment
``<first seq>.seg`` a file ``<first seq>.idx`` that describes a prefix of the segment: how many bytes
it covers, the last sequence number in them, the leading bytes ("head") of the first and of the last
entry there, and the sparse (seq, offset, head) points the log positions readers with. Opening the log
then reads these small files instead of every frame, and scans (and checksums) only what follows the
covered prefix: nothing for a sealed segment, the tail of the active one. The segment format itself is
unchanged; a log without index files opens as it always did, checking every frame.

Invariants:

* An index only describes bytes of its segment that were fsynced when it was written, and a segment is
  append-only: bytes that were fsynced are never rewritten nor cut (a failed write cuts back to what
  was fsynced, recovery cuts only bytes that fail their checksum, which fsynced bytes do not). So an
  index stays true of its segment for as long as the segment file holds at least ``covered`` bytes, and
  recovery's torn-tail rules apply unchanged to the bytes after them.
* It is written after the bytes it covers are durable, to a temporary name, then renamed over the
  previous index; a sealed segment's index is fsynced before the rename, the active segment's frequent
  ones are not. The rename is not made durable by a directory fsync: an index is an optimisation, and
  losing it (or finding it torn, or an older one) costs a scan at the next start, never data.
* An index that is missing, short, fails its checksums, names another segment, or covers more bytes
  than its segment holds is ignored: the segment is scanned and checked as without one, and its index
  is written again.
* The points are checksummed apart from the summary, so that opening reads only the fixed-size summary
  of a sealed segment; its points are read (and checked) when a reader first positions in it.

What an index does not do: bytes it covers are not checksummed again at start (reads never check
checksums either), so damage to an old segment's covered bytes is no longer found by a restart; an
entry whose bytes were damaged still reads as whatever is there.

File layout (little-endian)::

    magic "FHX1" | version u16 | head bytes u16 | first seq u64 | covered u64 | last seq i64
    | points u32 | xxh3-64 of the points u64 | first head | last head | xxh3-64 of all before u64
    | points × seq u64 | points × offset u64 | points × head
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import xxhash

MAGIC = b"FHX1"
VERSION = 1
SUFFIX = ".idx"
_FIXED = struct.Struct("<4sHHQQqIQ")
_CHECKSUM = struct.Struct("<Q")


def index_path(segment: Path) -> Path:
    return segment.with_name(segment.name.rsplit(".", 1)[0] + SUFFIX)


@dataclass(slots=True)
class Summary:
    """What opening a segment needs: its valid prefix and the entries at both ends of it."""

    first_seq: int
    covered: int
    last_seq: int
    first_head: bytes
    last_head: bytes
    points: int = 0
    points_checksum: int = 0


@dataclass(slots=True)
class Points:
    """Sparse (seq, offset, head) points of a segment, in order; the first is at offset 0."""

    seqs: list[int]
    offsets: list[int]
    heads: list[bytes]


def _header_size(head_bytes: int) -> int:
    return _FIXED.size + 2 * head_bytes + _CHECKSUM.size


def _points_bytes(points: Points, head_bytes: int) -> bytes:
    n = len(points.seqs)
    heads = b"".join(points.heads) if head_bytes else b""
    return struct.pack(f"<{n}Q{n}Q", *points.seqs, *points.offsets) + heads


def write(segment: Path, summary: Summary, points: Points, head_bytes: int, *, durable: bool = True) -> Summary:
    """Write (replace) the index of ``segment``; returns its summary as ``read_summary`` would.

    With ``durable`` the new file is fsynced before the rename (so a power cut leaves the new index
    or the old one, not a torn one); without it a power cut may leave it torn, which is then ignored.
    Raises OSError, leaving the old index or none.
    """
    body = _points_bytes(points, head_bytes)
    summary = Summary(summary.first_seq, summary.covered, summary.last_seq, summary.first_head, summary.last_head,
                      len(points.seqs), xxhash.xxh3_64_intdigest(body))
    fixed = _FIXED.pack(MAGIC, VERSION, head_bytes, summary.first_seq, summary.covered, summary.last_seq,
                        summary.points, summary.points_checksum)
    heads = summary.first_head + summary.last_head
    checksum = _CHECKSUM.pack(xxhash.xxh3_64_intdigest(fixed + heads))
    path = index_path(segment)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(b"".join((fixed, heads, checksum, body)))
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return summary


def read_summary(segment: Path, first_seq: int, head_bytes: int) -> Summary | None:
    """The summary of ``segment``'s index if it has a sound one for this segment, else None."""
    try:
        with open(index_path(segment), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_header_size(head_bytes))
    except OSError:
        return None
    if len(header) != _header_size(head_bytes):
        return None
    end = len(header) - _CHECKSUM.size
    if _CHECKSUM.unpack_from(header, end)[0] != xxhash.xxh3_64_intdigest(header[:end]):
        return None
    magic, version, heads, first, covered, last, n, points_checksum = _FIXED.unpack_from(header, 0)
    if (magic != MAGIC or version != VERSION or heads != head_bytes or first != first_seq or n < 1
            or size != len(header) + n * (16 + head_bytes) or last < first):
        return None
    at = _FIXED.size
    return Summary(first, covered, last, header[at:at + head_bytes], header[at + head_bytes:end], n,
                   points_checksum)


def read_points(segment: Path, summary: Summary, head_bytes: int) -> Points | None:
    """The points of an index whose summary was read; None if they are gone or fail their checksum."""
    n = summary.points
    try:
        with open(index_path(segment), "rb") as f:
            f.seek(_header_size(head_bytes))
            body = f.read(n * (16 + head_bytes) + 1)
    except OSError:
        return None
    if len(body) != n * (16 + head_bytes) or xxhash.xxh3_64_intdigest(body) != summary.points_checksum:
        return None
    numbers = struct.unpack_from(f"<{n}Q{n}Q", body, 0)
    at = 16 * n
    heads = [body[at + i * head_bytes: at + (i + 1) * head_bytes] for i in range(n)]
    return Points(list(numbers[:n]), list(numbers[n:]), heads)


def remove(segment: Path) -> None:
    """Delete the index of a segment being deleted (best effort: an orphan is removed at the next open)."""
    with contextlib.suppress(OSError):
        os.unlink(index_path(segment))
