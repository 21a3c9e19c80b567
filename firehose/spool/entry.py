"""The spooled forms of records: what one log entry holds.

Two kinds of entry share one decoded shape, ``RecordEntry``:

* **Direct put** (kind 1): one accepted PutRecord/PutRecordBatch call, so
  acknowledging 500 records costs one frame and one checksum, not 500::

      kind u8 | arrival ms u64 | count u32 | count × length u32 | data

* **Processed** (kind 2): the output of the processing chain for one batch of
  raw records, grouped by partition so that each partition's records are one
  contiguous index range::

      kind u8 | count u32 | header length u32 | header (JSON) |
      count × arrival ms u64 | count × length u32 | data

  The header lists the partitions (``[[partition id, start, end], ...]``) and
  ``raw_end``, the raw position up to which the raw log has been processed
  into this and earlier entries.

``data`` is the records' bytes back to back, so an uncompressed object is a
few slices of entries, with no per-record copying.

* **Sourced** (kind 3): records read from a Kinesis stream, in the layout
  of a processed entry; the header holds each record's Kinesis metadata
  (``[shard id, partition key, sequence number, subsequence number]``) and
  the reader's checkpoint for every shard (``{shard id: sequence number}``)
  as of this entry, so the spool itself is the checkpoint store: the records
  and the position after them become durable in one fsync. Records read from
  a Kafka topic carry their partitions and offsets (``kafka_record``) instead,
  and the checkpoint of every partition (``{partition: last offset spooled}``).
  A Kafka-sourced entry may also list partition ids (``parts``, as a processed
  entry does) when some of its records are error documents already (records
  over AWS's size limit): they are the entry's last records, in an error
  partition, and go to the error output whatever the stream does to the rest.

A record's position is ``(seq, index)``: the entry's sequence number and the
record's index inside it. Positions order records exactly as they were
spooled; batch boundaries and object names derive from them.

Processed and sourced entries group records by partition id
(``firehose/partitions.py``).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any

import orjson

from firehose.partitions import DEFAULT_PARTITION
from firehose.records import FileRange, Position

KIND_DIRECT_PUT = 1
KIND_PROCESSED = 2
KIND_SOURCED = 3
_HEAD = struct.Struct("<BQI")
_PROC_HEAD = struct.Struct("<BII")
assert array("I").itemsize == 4 and array("Q").itemsize == 8


def _le(a: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder != "little":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, raw: bytes | memoryview) -> array:  # type: ignore[type-arg]
    a = array(typecode)
    a.frombytes(raw)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def direct_put_size(count: int, data_bytes: int) -> int:
    """Bytes of the direct-put entry ``encode`` makes of ``count`` records holding ``data_bytes`` bytes.

    Its head (kind, arrival ms, count), a u32 length per record, then the data;
    the spool charges an append this much before it is written.
    """
    return _HEAD.size + 4 * count + data_bytes


def encode(records: list[bytes], arrival_ms: int) -> list[bytes]:
    """Payload parts for one direct-put entry (the committer writes them contiguously)."""
    lengths = array("I", map(len, records))
    return [_HEAD.pack(KIND_DIRECT_PUT, arrival_ms, len(records)), _le(lengths), *records]


def encode_sourced(records: Sequence[bytes], arrivals: Sequence[int], kinesis: Sequence[Sequence[Any]],
                   checkpoints: Mapping[str, str]) -> list[bytes]:
    """Payload parts for a sourced entry (records read from a Kinesis stream)."""
    header = orjson.dumps({"kinesis": list(kinesis), "checkpoints": dict(checkpoints)})
    n = len(records)
    return [_PROC_HEAD.pack(KIND_SOURCED, n, len(header)), header, _le(array("Q", arrivals)),
            _le(array("I", [len(r) for r in records])), *records]


def encode_kafka(records: Sequence[bytes], arrivals: Sequence[int], kafka: Mapping[str, Any],
                 checkpoints: Mapping[str, str], parts: Sequence[tuple[str, int, int]] = (), *,
                 lengths: Sequence[int] | None = None) -> list[bytes]:
    """Payload parts for a sourced entry of records read from a Kafka topic; ``kafka`` as ``kafka_record``
    reads it, ``checkpoints``: the last offset spooled per partition; ``parts``: ``[(partition id, start,
    end)]`` when not every record is data of the default partition (none: all are); ``lengths``: the
    records' lengths, when the reader has them already."""
    head: dict[str, Any] = {"kafka": kafka, "checkpoints": dict(checkpoints)}
    if parts:
        head["parts"] = [list(p) for p in parts]
    header = orjson.dumps(head)
    # The records joined into one part: a copy of a few MiB here, on the reading thread, rather than a
    # part per record for the spool's writer to checksum, measure and hand to writev.
    return [_PROC_HEAD.pack(KIND_SOURCED, len(records), len(header)), header, _le(array("Q", arrivals)),
            _le(array("I", map(len, records) if lengths is None else lengths)), b"".join(records)]


def kafka_record(kafka: Mapping[str, Any], index: int) -> tuple[int, int, str | None, list[Any] | None]:
    """(partition, offset, key, headers) of record ``index`` of a Kafka-sourced entry.

    ``kafka`` is ``{"topic", "runs": [[partition, first offset, count]], "keys"?, "headers"?}``: records
    in runs of consecutive offsets of one partition, so an entry's header stays a few runs long;
    ``keys`` (base64 or null) and ``headers`` (``[[name, base64 value]]`` or null), one per record,
    only when they were kept.
    """
    at = index
    for partition, first, count in kafka["runs"]:
        if at < count:
            keys, headers = kafka.get("keys"), kafka.get("headers")
            return (partition, first + at, keys[index] if keys else None, headers[index] if headers else None)
        at -= count
    raise IndexError(f"record {index} is past the entry's Kafka runs")


def encode_processed(groups: Sequence[tuple[str, Sequence[tuple[bytes, int]]]], raw_end: Position) -> list[bytes]:
    """Payload parts for a processed entry: ``groups`` is [(partition id, [(data, arrival ms)])]."""
    parts_table: list[list[Any]] = []
    arrivals = array("Q")
    lengths = array("I")
    datas: list[bytes] = []
    index = 0
    for partition, records in groups:
        if not records:
            continue
        parts_table.append([partition, index, index + len(records)])
        for data, arrival in records:
            arrivals.append(arrival)
            lengths.append(len(data))
            datas.append(data)
        index += len(records)
    header = orjson.dumps({"parts": parts_table, "raw_end": list(raw_end)})
    return [_PROC_HEAD.pack(KIND_PROCESSED, index, len(header)), header, _le(arrivals), _le(lengths), *datas]


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """A decoded entry; record bytes are views into the buffer it was read from."""

    seq: int
    #: The entry's arrival; for an entry with per-record ``arrivals``, the earliest of them (batches are
    #: named by it at every seal, and an entry read from Kafka holds up to 50,000 arrivals).
    arrival_ms: int
    offsets: tuple[int, ...]  # count + 1 offsets into data
    data: memoryview
    arrivals: array | None = None  # type: ignore[type-arg]  # per record, processed entries only
    partitions: tuple[tuple[str, int, int], ...] = ()
    raw_end: Position | None = None
    #: Sourced entries: per record [shard id, partition key, sequence number, subsequence number].
    kinesis: list[list[Any]] | None = None
    #: Sourced entries read from Kafka: topic, partitions and offsets (``kafka_record``).
    kafka: dict[str, Any] | None = None
    #: Sourced entries: the reader's per-shard (per-partition) checkpoint as of this entry.
    checkpoints: dict[str, str] | None = None
    #: The segment file and offset ``data`` starts at, when the entry was read from one.
    location: tuple[str, int] | None = None

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

    def extent(self, start: int, end: int) -> FileRange | None:
        """Where records [start, end) lie on disk, or None if the entry was not read from a file."""
        if self.location is None:
            return None
        path, offset = self.location
        return FileRange(path, offset + self.offsets[start], self.offsets[end] - self.offsets[start])

    def record(self, index: int) -> memoryview:
        return self.data[self.offsets[index] : self.offsets[index + 1]]

    def arrival(self, index: int) -> int:
        return self.arrivals[index] if self.arrivals is not None else self.arrival_ms

    def first_arrival(self, start: int, end: int) -> int:
        if self.arrivals is None or end <= start or (start == 0 and end == self.count):
            return self.arrival_ms  # the whole entry's earliest arrival is its arrival_ms
        return min(self.arrivals[start:end])

    def partition_ranges(self) -> tuple[tuple[str, int, int], ...]:
        """(partition id, start, end) for every partition in the entry."""
        return self.partitions or ((DEFAULT_PARTITION, 0, self.count),)


@dataclass(slots=True)
class Span:
    """Records [start, end) of one entry: how batches name their records without copying them."""

    entry: RecordEntry
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.entry.offsets[self.end] - self.entry.offsets[self.start]


def decode(seq: int, payload: memoryview, where: tuple[str, int] | None = None) -> RecordEntry:
    """The entry in ``payload``; ``where``: the file and offset the payload was read at."""
    entry = _decode(seq, payload)
    if where is None:
        return entry
    path, offset = where
    return replace(entry, location=(path, offset + len(payload) - len(entry.data)))  # data is the payload's tail


def _decode(seq: int, payload: memoryview) -> RecordEntry:
    kind = payload[0]
    if kind == KIND_DIRECT_PUT:
        _kind, arrival_ms, count = _HEAD.unpack_from(payload, 0)
        start = _HEAD.size
        lengths = _from_le("I", payload[start : start + 4 * count])
        data = payload[start + 4 * count :]
        return _entry(seq, arrival_ms, lengths, data)
    if kind == KIND_SOURCED:
        header, entry = _with_header(seq, payload)
        parts = header.get("parts")
        return replace(entry, kinesis=header.get("kinesis"), kafka=header.get("kafka"),
                       checkpoints=header["checkpoints"],
                       partitions=tuple((p, s, e) for p, s, e in parts) if parts else ())
    if kind == KIND_PROCESSED:
        header, entry = _with_header(seq, payload)
        raw_end = header["raw_end"]
        return replace(entry, partitions=tuple((p, s, e) for p, s, e in header["parts"]),
                              raw_end=(raw_end[0], raw_end[1]))
    raise ValueError(f"spool entry {seq} has unknown kind {kind}")


def _with_header(seq: int, payload: memoryview) -> tuple[dict[str, Any], RecordEntry]:
    """The JSON header and the records of a processed or sourced entry (they share a layout)."""
    _kind, count, header_len = _PROC_HEAD.unpack_from(payload, 0)
    pos = _PROC_HEAD.size
    header = orjson.loads(payload[pos : pos + header_len])
    pos += header_len
    arrivals = _from_le("Q", payload[pos : pos + 8 * count])
    pos += 8 * count
    lengths = _from_le("I", payload[pos : pos + 4 * count])
    pos += 4 * count
    entry = _entry(seq, min(arrivals) if count else 0, lengths, payload[pos:])
    return header, RecordEntry(seq=seq, arrival_ms=entry.arrival_ms, offsets=entry.offsets, data=entry.data,
                               arrivals=arrivals)


def _entry(seq: int, arrival_ms: int, lengths: array, data: memoryview) -> RecordEntry:  # type: ignore[type-arg]
    offsets = (0, *accumulate(lengths))
    if offsets[-1] != len(data):
        raise ValueError(f"spool entry {seq} is inconsistent: lengths sum to {offsets[-1]}, data is {len(data)}")
    return RecordEntry(seq=seq, arrival_ms=arrival_ms, offsets=offsets, data=data)
