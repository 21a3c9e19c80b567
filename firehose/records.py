"""Value types handed between layers.

Plain frozen dataclasses with no behaviour beyond what their fields imply, so
they can cross threads and process pools and be read by every layer; and
``read_ranges``, for a process that is handed where bytes are rather than the
bytes themselves.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, overload

#: A record's place in a spooled log: (the entry's sequence number, the record's index in it).
#: Positions order records exactly as they were spooled.
Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ObjectBatch:
    """One object to write: an S3 key and its body, given as parts to write back to back.

    ``key`` is final (prefix and suffix rendered, sealed in the ledger), so a
    destination writes it verbatim; writing the same batch twice overwrites.
    """

    stream: str
    key: str
    parts: tuple[bytes | memoryview, ...]
    size: int
    record_count: int
    first_arrival_ms: int
    content_type: str = "application/octet-stream"
    content_encoding: str | None = None
    #: S3 user metadata (e.g. an encryption envelope); a local directory keeps the
    #: same facts in ``prelude`` instead, bytes written before the body.
    metadata: dict[str, str] | None = None
    prelude: bytes = b""
    #: Where the body's bytes lie on disk, in order, when it is nothing but spooled records
    #: (uncompressed, unencrypted): a worker process reads them there (``read_ranges``) instead
    #: of being sent the body through a pipe.
    extents: tuple[FileRange, ...] | None = None
    #: For an object of error documents: why its records went to the error output (the first
    #: reason when they differ), for the stream's log.
    reason: str = ""
    #: An error-output object: its last few error documents, unencrypted (``failures.tail``), for
    #: the console's recent error records; empty for data.
    documents: tuple[bytes, ...] = ()

    def body(self) -> bytes:
        return b"".join(self.parts)


class FileRange(NamedTuple):
    """``length`` bytes of the file at ``path`` from ``offset``: bytes that never change there."""

    path: str
    offset: int
    length: int


def read_ranges(ranges: Sequence[FileRange]) -> bytearray:
    """The ranges' bytes back to back, read straight into one buffer (the only copy made).

    OSError if a file is gone or shorter than a range says.
    """
    out = bytearray(sum(r.length for r in ranges))
    view = memoryview(out)
    pos = 0
    fds: dict[str, int] = {}
    try:
        for r in ranges:
            fd = fds.get(r.path)
            if fd is None:
                fd = fds[r.path] = os.open(r.path, os.O_RDONLY)
            done = 0
            while done < r.length:
                n = os.preadv(fd, [view[pos + done : pos + r.length]], r.offset + done)
                if n == 0:
                    raise OSError(errno.EIO, f"{r.path} ends before offset {r.offset + r.length}")
                done += n
            pos += r.length
    finally:
        for fd in fds.values():
            os.close(fd)
    return out


class DeliveryRecord(NamedTuple):
    """One record for a record destination (OpenSearch, Splunk, HTTP endpoint).

    ``record_id`` is derived from the record's spool position, so it is the same
    on every attempt and after a restart: it serves as the OpenSearch document
    id and the HTTP endpoint's per-record identity. A named tuple rather than a
    frozen dataclass: one is built per record delivered, and a tuple is built
    four times faster.
    """

    record_id: str
    data: bytes | memoryview
    arrival_ms: int


#: DeliveryRecord(id, data, arrival) from a (id, data, arrival) tuple, without a Python-level call.
_as_delivery_record = functools.partial(tuple.__new__, DeliveryRecord)


class DeliveryRecords(Sequence[DeliveryRecord]):
    """A batch's records, made on first access: their payloads (``datas``), arrival times and ids.

    The deliverer makes one from spool spans on the event loop knowing only how many records there are
    and their total size; whatever a destination needs is made in its own thread, off the event loop,
    and once: Iceberg reads only the payloads (into Arrow) and never pays for ids or record tuples.
    Each ``make_*`` returns the same values, in record order, every time it is called.
    """

    __slots__ = ("_arrivals", "_built", "_datas", "_make_arrivals", "_make_datas", "_make_ids", "count", "size")

    def __init__(self, count: int, size: int, make_datas: Callable[[], list[bytes | memoryview]],
                 make_arrivals: Callable[[], Sequence[int]], make_ids: Callable[[], Iterable[str]]) -> None:
        self.count = count
        #: Bytes of all the payloads.
        self.size = size
        self._make_datas = make_datas
        self._make_arrivals = make_arrivals
        self._make_ids = make_ids
        self._datas: list[bytes | memoryview] | None = None
        self._arrivals: Sequence[int] | None = None
        self._built: list[DeliveryRecord] | None = None

    @classmethod
    def of(cls, records: Iterable[DeliveryRecord]) -> DeliveryRecords:
        """Records already built (a retry of some of a batch's records, tests)."""
        built = list(records)
        datas = [r.data for r in built]
        made = cls(len(built), sum(map(len, datas)), lambda: datas, lambda: [r.arrival_ms for r in built],
                   lambda: [r.record_id for r in built])
        made._built = built
        return made

    @property
    def datas(self) -> list[bytes | memoryview]:
        if self._datas is None:
            self._datas = self._make_datas()
        return self._datas

    def _all(self) -> list[DeliveryRecord]:
        if self._built is None:
            if self._arrivals is None:
                self._arrivals = self._make_arrivals()
            self._built = list(map(_as_delivery_record, zip(self._make_ids(), self.datas, self._arrivals,
                                                            strict=False)))
        return self._built

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, index: int) -> DeliveryRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[DeliveryRecord]: ...

    def __getitem__(self, index: int | slice) -> DeliveryRecord | Sequence[DeliveryRecord]:
        return self._all()[index]

    def __iter__(self) -> Iterator[DeliveryRecord]:
        return iter(self._all())

    def total_bytes(self, skip: Collection[int] = ()) -> int:
        """Bytes of the payloads, leaving out the records at indexes ``skip``."""
        if not skip:
            return self.size
        return sum(len(d) for i, d in enumerate(self.datas) if i not in skip)


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records to deliver in one attempt.

    ``batch_id`` is a UUID fixed when the batch was sealed: the same on every
    retry and after a restart (the HTTP endpoint's request id).
    """

    stream: str
    batch_id: str
    records: Sequence[DeliveryRecord]
    #: The batch's partition keys: every record of a batch shares them (an Iceberg stream's route,
    #: ``processing/otf.py``); empty for the default partition.
    keys: dict[str, str] | None = None

    def total_bytes(self, skip: Collection[int] = ()) -> int:
        """Bytes of the records' data, leaving out the records at indexes ``skip``."""
        if isinstance(self.records, DeliveryRecords):
            return self.records.total_bytes(skip)
        return sum(len(r.data) for i, r in enumerate(self.records) if i not in skip)

    def payloads(self) -> Sequence[bytes | memoryview]:
        """The records' data, without building their ids when the deliverer made them lazily."""
        if isinstance(self.records, DeliveryRecords):
            return self.records.datas
        return [r.data for r in self.records]
