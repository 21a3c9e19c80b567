"""Kafka messages gathered into one spool entry: the records, their partitions' offset runs, metadata.

A ``KafkaBatch`` takes the message lists of one or more ``consume`` calls (the Kafka source gathers
while the previous entry is being written and fsynced, so an entry's size follows the spool's write
latency) and makes the entry's payload. It keeps, per record, the value, the arrival time (the Kafka
timestamp, else when it was read) and, only while the stream has a Lambda step (their only reader),
the key and headers; per entry, the runs of consecutive offsets of one partition and the last offset
taken of every partition.

Which messages are taken: those without an error, of a partition still assigned, past the partition's
last offset spooled or being spooled, and (for a partition started by ``ReadFromTimestamp``) not
older than that time. Values over ``limit`` become error documents after the entry's data records.

The common case (a run of consecutive, new offsets of one partition, none too large) is taken a run
at a time with the client's accessors mapped over the messages (C loops, about a quarter of a
per-message Python loop's cost, which dominated the consumer thread); any other run goes through
the per-message path, which decides each message as above. Both give the same entry.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pybase64

from firehose.spool import entry as spool_entry

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)

#: An error document for a record over the limit: (value, arrival ms, partition, offset) -> document.
OversizeDocument = Callable[[bytes, int, int, int], bytes]


@dataclass
class KafkaBatch:
    """Records read for one spool entry (see the module's docstring); ``add`` then ``payload``."""

    topic: str
    #: Keys and headers kept (the stream has a Lambda step).
    keep: bool
    #: The largest value taken as a record; larger ones go to the error output.
    limit: int
    datas: list[bytes] = field(default_factory=list)
    #: ``len`` of every one of ``datas`` (measured once, when a run is checked against the limit).
    lengths: list[int] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)
    runs: list[list[int]] = field(default_factory=list)  # [partition, first offset, count]
    keys: list[str | None] = field(default_factory=list)
    headers: list[list[list[str | None]] | None] = field(default_factory=list)
    oversize: list[tuple[int, int, bytes, int]] = field(default_factory=list)  # (partition, offset, value, arrival)
    #: The last offset taken of each partition read into this batch.
    moved: dict[int, int] = field(default_factory=dict)
    #: Bytes of the data records and of the oversize values.
    size: int = 0

    @property
    def records(self) -> int:
        return len(self.datas) + len(self.oversize)

    def add(self, messages: Sequence[Any], *, positions: dict[int, int], assigned: set[int],
            not_before: dict[int, int], received: int, on_error: Callable[[Any], None]) -> None:
        """Take what is new of one ``consume`` call's ``messages``. ``positions``: each partition's last
        offset spooled or being spooled (this batch's own are on top); ``not_before``: partitions read
        from a time, not yet past it (a partition is removed from it once a record is at or after it)."""
        from confluent_kafka import Message

        if any(map(Message.error, messages)):
            errors = [m.error() for m in messages if m.error() is not None]
            messages = [m for m in messages if m.error() is None]
            for error in errors:
                on_error(error)
        if not messages:
            return
        partitions = list(map(Message.partition, messages))
        values = list(map(Message.value, messages))
        stamps = list(map(Message.timestamp, messages))  # (kind, ms); kind 0: TIMESTAMP_NOT_AVAILABLE, ms -1
        arrivals = list(map(_second, stamps))
        if min(arrivals) < 0:  # librdkafka gives -1 for a message without a timestamp
            arrivals = [ts if kind != 0 and ts >= 0 else received for kind, ts in stamps]
        start = 0
        for p, group in itertools.groupby(partitions):
            end = start + len(list(group))
            # Offsets of one partition come in increasing order (librdkafka's guarantee; a seek drops what was
            # fetched before it), so a run whose ends are count - 1 apart holds every offset between them.
            first, last = messages[start].offset(), messages[end - 1].offset()
            if (p in assigned and p not in not_before and first > self.moved.get(p, positions.get(p, -1))
                    and last - first == end - start - 1):
                run = values[start:end]
                try:
                    sizes = list(map(len, run))
                except TypeError:  # a tombstone (no value): the per-message path makes it an empty record
                    sizes = None
                if sizes is not None and max(sizes) <= self.limit:
                    self._take_run(p, first, messages[start:end], run, arrivals[start:end], sizes)
                    start = end
                    continue
            for i in range(start, end):
                m = messages[i]
                self._take_one(m, p, m.offset(), values[i], arrivals[i], positions=positions, assigned=assigned,
                               not_before=not_before)
            start = end

    def _take_run(self, p: int, first: int, messages: Sequence[Any], values: list[bytes], arrivals: list[int],
                  sizes: list[int]) -> None:
        count = len(values)
        self.datas += values
        self.lengths += sizes
        self.arrivals += arrivals
        self.size += sum(sizes)
        run = self.runs[-1] if self.runs else None
        if run is not None and run[0] == p and run[1] + run[2] == first:
            run[2] += count
        else:
            self.runs.append([p, first, count])
        if self.keep:
            for m in messages:
                self._keep_metadata(m)
        self.moved[p] = first + count - 1

    def _take_one(self, m: Any, p: int, offset: int, value: bytes | None, arrival: int, *,
                  positions: dict[int, int], assigned: set[int], not_before: dict[int, int]) -> None:
        if p not in assigned or offset <= self.moved.get(p, positions.get(p, -1)):
            return  # revoked meanwhile, or spooled already
        if p in not_before:
            if arrival < not_before[p]:
                return
            del not_before[p]
        self.moved[p] = offset
        if value is not None and len(value) > self.limit:  # spooled last, as an error document
            self.oversize.append((p, offset, value, arrival))
            self.size += len(value)
            return
        data = value if value is not None else b""  # a tombstone: an empty record
        self.datas.append(data)
        self.lengths.append(len(data))
        self.arrivals.append(arrival)
        self.size += len(data)
        run = self.runs[-1] if self.runs else None
        if run is not None and run[0] == p and run[1] + run[2] == offset:
            run[2] += 1
        else:
            self.runs.append([p, offset, 1])
        if self.keep:
            self._keep_metadata(m)

    def _keep_metadata(self, m: Any) -> None:
        encode = pybase64.b64encode
        key = m.key()
        self.keys.append(encode(key).decode() if key is not None else None)
        hs = m.headers()
        self.headers.append([[k, encode(v).decode() if v is not None else None] for k, v in hs] if hs else None)

    def payload(self, checkpoints: dict[int, int], oversize_document: OversizeDocument,
                error_partition: str, data_partition: str) -> list[bytes]:
        """The entry's payload; ``checkpoints``: every partition's last offset once it is spooled. Records
        over the limit follow the data records as error documents (each its own run of one offset), in
        ``error_partition``; the data records are in ``data_partition``."""
        datas, lengths, arrivals, runs = self.datas, self.lengths, self.arrivals, self.runs
        keys, headers = self.keys, self.headers
        parts: list[tuple[str, int, int]] = []
        if self.oversize:
            first = len(datas)
            datas, lengths, arrivals, runs = [*datas], [*lengths], [*arrivals], [*runs]
            keys, headers = [*keys], [*headers]
            for p, offset, value, arrival in self.oversize:
                document = oversize_document(value, arrival, p, offset)
                datas.append(document)
                lengths.append(len(document))
                arrivals.append(arrival)
                runs.append([p, offset, 1])
                if self.keep:  # never shown to a Lambda
                    keys.append(None)
                    headers.append(None)
            parts = [(data_partition, 0, first)] if first else []
            parts.append((error_partition, first, len(datas)))
        kafka: dict[str, Any] = {"topic": self.topic, "runs": runs}
        if self.keep:
            kafka["keys"] = keys
            kafka["headers"] = headers
        return spool_entry.encode_kafka(datas, arrivals, kafka, {str(p): str(o) for p, o in checkpoints.items()},
                                        parts, lengths=lengths)
