"""The spooled form of one accepted PutRecord/PutRecordBatch call.

One call becomes one log entry, so acknowledging a batch of 500 records costs
one frame and one checksum, not 500. The payload is::

    kind u8 (1 = direct put) | arrival ms u64 | count u32 | count × length u32 | data

where ``data`` is the records' bytes back to back. Keeping the data contiguous
means an object for an uncompressed destination is a slice of the entry,
without re-copying each record.

A record's position in the spool is ``(seq, index)``: the entry's sequence
number and the record's index inside it. Positions order records exactly as
they were acknowledged and are what batch boundaries and object names derive
from.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate

KIND_DIRECT_PUT = 1
_HEAD = struct.Struct("<BQI")
assert array("I").itemsize == 4


def encode(records: list[bytes], arrival_ms: int) -> list[bytes]:
    """Payload parts for one entry (the committer writes them contiguously)."""
    lengths = array("I", [len(r) for r in records])
    if sys.byteorder != "little":
        lengths.byteswap()
    return [_HEAD.pack(KIND_DIRECT_PUT, arrival_ms, len(records)), lengths.tobytes(), *records]


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """A decoded entry; record bytes are views into the buffer it was read from."""

    seq: int
    arrival_ms: int
    offsets: tuple[int, ...]  # count + 1 offsets into data
    data: memoryview

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def size(self, start: int = 0, end: int | None = None) -> int:
        """Bytes of records [start, end)."""
        end = self.count if end is None else end
        return self.offsets[end] - self.offsets[start]

    def span(self, start: int = 0, end: int | None = None) -> memoryview:
        """Records [start, end) back to back."""
        end = self.count if end is None else end
        return self.data[self.offsets[start] : self.offsets[end]]

    def record(self, index: int) -> memoryview:
        return self.data[self.offsets[index] : self.offsets[index + 1]]


def decode(seq: int, payload: memoryview) -> RecordEntry:
    kind, arrival_ms, count = _HEAD.unpack_from(payload, 0)
    if kind != KIND_DIRECT_PUT:
        raise ValueError(f"spool entry {seq} has unknown kind {kind}")
    start = _HEAD.size
    lengths = array("I")
    lengths.frombytes(payload[start : start + 4 * count])
    if sys.byteorder != "little":
        lengths.byteswap()
    data = payload[start + 4 * count :]
    offsets = (0, *accumulate(lengths))
    if offsets[-1] != len(data):
        raise ValueError(f"spool entry {seq} is inconsistent: lengths sum to {offsets[-1]}, data is {len(data)}")
    return RecordEntry(seq=seq, arrival_ms=arrival_ms, offsets=offsets, data=data)
