"""One shard: an append-only, checksummed, fsynced log of records, and how to find a position in it.

The shard's data is a ``storage.log.SegmentLog`` (the same log the delivery spool uses:
checksummed frames, fsync before acknowledgement, torn tails cut on
recovery). One log entry holds the records one PutRecord/PutRecords call
routed to this shard, all with the same arrival time::

    arrival ms u64 | count u16 | count × key length u16 | count × data length u32 | keys | data

so a 500-record call costs one frame, one checksum and one fsync per shard,
and a record's position is (entry, index in entry). An entry of a stream
that is encrypted keeps ``arrival ms | count`` in the clear and seals the
rest (``encryption.py``); readers open it before decoding. Sequence numbers are
derived from positions (``sequence.py``), so nothing else is stored.

Arrival times never go backwards within a shard (the store clamps them), so
the log's sparse index points, which keep each indexed entry's header
(``arrival ms | count``, ``index_heads``), find the first record at or after a
time with a short scan: that serves both ``AT_TIMESTAMP`` and retention
trimming. The log keeps them in an index file per segment, so opening a shard
reads those and the active segment's tail, not its records, and the points in
memory do not grow with the shard's size. Only the entry header is indexed:
the records after it may be stored in any form.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from firehose.storage.log import SegmentLog
from firehose.streams import sequence
from firehose.streams.encryption import StreamKeys, is_sealed

_HEAD = struct.Struct("<QH")
#: Bytes a reader asks the log for when it only needs entry headers.
_SCAN_BYTES = 1 << 20

Position = tuple[int, int]


def encode_entry(arrival_ms: int, keys: list[bytes], datas: list[bytes]) -> list[bytes]:
    n = len(datas)
    return [_HEAD.pack(arrival_ms, n), struct.pack(f"<{n}H", *map(len, keys)),
            struct.pack(f"<{n}I", *map(len, datas)), *keys, *datas]


def entry_arrival(payload: memoryview) -> int:
    return int(_HEAD.unpack_from(payload, 0)[0])


class Entry(NamedTuple):
    arrival_ms: int
    keys: list[str]
    datas: list[bytes]


def decode_entry(payload: memoryview, start: int = 0, stop: int | None = None) -> Entry:
    """Records [start, stop) of an entry (all by default)."""
    arrival, n = _HEAD.unpack_from(payload, 0)
    pos = _HEAD.size
    key_lens = struct.unpack_from(f"<{n}H", payload, pos)
    pos += 2 * n
    data_lens = struct.unpack_from(f"<{n}I", payload, pos)
    pos += 4 * n
    stop = n if stop is None else min(stop, n)
    key_pos = pos + sum(key_lens[:start])
    data_pos = pos + sum(key_lens) + sum(data_lens[:start])
    keys: list[str] = []
    datas: list[bytes] = []
    for i in range(start, stop):
        kl, dl = key_lens[i], data_lens[i]
        keys.append(str(payload[key_pos:key_pos + kl], "utf-8"))
        datas.append(bytes(payload[data_pos:data_pos + dl]))
        key_pos += kl
        data_pos += dl
    return Entry(arrival, keys, datas)


def entry_count(payload: memoryview) -> int:
    return int(_HEAD.unpack_from(payload, 0)[1])


class ReadRecord(NamedTuple):
    sequence_number: str
    arrival_ms: int
    partition_key: str
    data: bytes
    #: Stored encrypted (``encryption.py``): GetRecords reports ``EncryptionType: KMS``.
    sealed: bool = False


@dataclass
class ReadResult:
    records: list[ReadRecord]
    next: Position
    #: Arrival of the first record not returned (None when the reader is at the end).
    behind_arrival_ms: int | None
    at_end: bool


@dataclass
class ShardData:
    """The log of one shard plus what is derived from it in memory."""

    log: SegmentLog
    prefix: int
    last_arrival_ms: int = 0
    last_position: Position | None = None
    #: Records and bytes (keys and data) stored since the process started, for the console's per-shard
    #: incoming throughput (AWS's shard-level IncomingRecords/IncomingBytes).
    records_in: int = 0
    bytes_in: int = 0
    #: Encryption at rest (``encryption.py``): the shard's index in its stream, its stream's data keys, and
    #: the sequence number the log gives the next entry appended (set by the store as it opens the shard).
    shard_index: int = 0
    keys: StreamKeys | None = field(default=None, repr=False)
    next_entry: int = 0
    #: Readers waiting for what comes next (fan-out subscribers), woken once it is durable: an empty list
    #: (nobody subscribed) costs the append path one truth test.
    waiting: list[asyncio.Future[None]] = field(default_factory=list, repr=False)
    #: What the shard's fan-out subscribers share (``subscriptions.Subscribers``); opaque here.
    subscribers: object = field(default=None, repr=False)

    @classmethod
    def open(cls, directory: Path, prefix: int, *, segment_bytes: int) -> ShardData:
        """Open a shard's log: its index files and the active segment's tail, not its records."""
        shard = cls(SegmentLog(directory, segment_bytes=segment_bytes, index_heads=_HEAD.size), prefix)
        newest = shard.log.newest()
        if newest is not None:
            seq, head = newest
            shard.note(seq, entry_arrival(memoryview(head)), entry_count(memoryview(head)))
        return shard

    def note(self, entry: int, arrival_ms: int, count: int) -> None:
        """Record that ``entry`` is durable (called in log order)."""
        self.last_arrival_ms = max(self.last_arrival_ms, arrival_ms)
        self.last_position = (entry, count - 1)

    def sequence_number(self, position: Position) -> str:
        return sequence.encode(self.prefix, *position)

    @property
    def end(self) -> Position:
        """The position just after the last durable record."""
        return (self.log.committed_next_seq, 0)

    def first_at_or_after(self, arrival_ms: int) -> Position:
        """Position of the first record that arrived at or after ``arrival_ms`` (the end if none)."""
        start = self.log.seek(lambda head: entry_arrival(memoryview(head)) < arrival_ms)
        for seq, payload in self._scan(start):
            if entry_arrival(payload) >= arrival_ms:
                return (seq, 0)
        return self.end

    def _scan(self, start: int) -> Iterator[tuple[int, memoryview]]:
        while True:
            got = self.log.read(start, _SCAN_BYTES)
            if not got:
                return
            yield from got
            start = got[-1][0] + 1

    def read(self, position: Position, *, limit: int, max_bytes: int, cutoff_ms: int) -> ReadResult:
        """Up to ``limit`` records and about ``max_bytes`` (at least one record) from ``position``.

        Records that arrived before ``cutoff_ms`` are past retention and skipped.
        """
        entry, index = position
        records: list[ReadRecord] = []
        budget = max_bytes
        full = False
        while not full:
            got = self.log.read(entry, min(budget, 8 << 20) if records else 8 << 20)
            if not got:
                break
            for seq, payload in got:
                if seq != entry:
                    entry, index = seq, 0
                arrival = entry_arrival(payload)
                count = entry_count(payload)
                if arrival < cutoff_ms or index >= count:
                    entry, index = seq + 1, 0
                    continue
                sealed = is_sealed(payload)
                if sealed:
                    payload = self._unseal(seq, payload)
                decoded = decode_entry(payload, index, index + limit - len(records))
                encode, prefix = sequence.encode, self.prefix
                for key, data in zip(decoded.keys, decoded.datas, strict=True):
                    size = len(data) + len(key)
                    if records and size > budget:
                        full = True
                        break
                    records.append(ReadRecord(encode(prefix, seq, index), arrival, key, data, sealed))
                    budget -= size
                    index += 1
                if index >= count:
                    entry, index = seq + 1, 0
                if full or len(records) >= limit:
                    full = True
                    break
        behind: int | None = None
        nxt = self.log.read(entry, 1) if (entry, index) < self.end else []
        if nxt:
            behind = entry_arrival(nxt[0][1])
        return ReadResult(records, (entry, index), behind, behind is None)

    def _unseal(self, seq: int, payload: memoryview) -> memoryview:
        if self.keys is None:
            raise AssertionError("a sealed entry in a shard opened without its stream's keys")
        return memoryview(self.keys.open(self.shard_index, seq, payload))

    def trim_before(self, arrival_ms: int) -> int:
        """Delete whole segments holding only records older than ``arrival_ms``; bytes freed."""
        return self.log.drop_before(self.first_at_or_after(arrival_ms)[0])

    def wake(self) -> None:
        """Wake every waiting reader: a new entry is durable, or the shard or its stream changed."""
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        self.log.close()
