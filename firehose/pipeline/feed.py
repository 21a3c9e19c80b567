"""Stage 1 of a stream that processes records: raw log → processing chain → processed log.

    raw log ─read─▶ processing buffer (Lambda BufferSizeInMBs / BufferIntervalInSeconds)
            ─ready─▶ chain (built-ins, Lambda in worker processes, partition keys)
            ─▶ processed entry (fsynced, records grouped by partition, with raw_end) ─▶ release raw

The feeder reads and writes through its ``ProcessCursor`` (``spool/cursor.py``),
which states the invariant: a processed entry records ``raw_end`` in the same
fsync that makes the output durable, and processing resumes exactly there. A
crash in the middle of the chain leaves the raw records in the spool and the
batch is processed again from the start.

Batches are processed one at a time, in order, so ``raw_end`` only moves
forward. The records the processing buffer holds are charged to the process-wide
memory budget (``pipeline/memory.py``) until their batch is processed: with the
budget spent nothing more is read (the records wait in the spool) and what the
buffer holds is processed as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from firehose.pipeline.activity import ActivityLog
from firehose.pipeline.buffer import Buffer
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.memory import Charge, MemoryBudget
from firehose.processing.chain import ProcessedBatch, Processor, RawRecord
from firehose.records import Position
from firehose.spool.cursor import ProcessCursor
from firehose.spool.entry import RecordEntry, Span
from firehose.telemetry import Metrics

log = logging.getLogger("firehose.pipeline")

class Feeder:
    def __init__(self, *, name: str, cursor: ProcessCursor, config: StreamConfig,
                 processor: Processor, metrics: Metrics, activity: ActivityLog | None = None,
                 memory: MemoryBudget | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._cursor = cursor
        self.config = config
        self._processor = processor
        self._metrics = metrics
        self._activity = activity
        self._clock = clock
        self._buffer = Buffer(config.plan.buffer_bytes, config.plan.buffer_interval_s, clock)
        #: None: nothing is charged (a feeder built without the daemon's budget, in tests).
        self._memory = memory or MemoryBudget(1 << 62)
        self._charge = Charge(self._memory)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        cursor.subscribe(self._wakeup.set)
        self._memory.subscribe(self._wakeup.set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.name}")

    async def stop(self) -> None:
        """Stop taking batches; one being processed is finished (its output is kept)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._let_go()

    async def discard(self) -> None:
        """Stop at once, the batch being processed too (a deleted stream)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        self._let_go()

    def _let_go(self) -> None:
        """Give back the memory the buffer holds (its records stay in the spool)."""
        self._charge.release()
        self._memory.unsubscribe(self._wakeup.set)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._fill()
                if self._buffer.ready() or (self._buffer and self._memory.spent()):
                    await self._process(self._buffer.take())
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("Processing loop error; retrying shortly.", extra={"stream": self.name})
                self.last_error = str(exc)
                await asyncio.sleep(1)
            await self._wait()

    async def _wait(self) -> None:
        deadline = self._buffer.deadline()
        timeout = None if deadline is None else max(0.0, deadline - self._clock())
        self._wakeup.clear()
        if self._has_unread() and self._read_room() > 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _has_unread(self) -> bool:
        return self._cursor.has_unread()

    def _read_room(self) -> int:
        return min(self._buffer.size_bytes - self._buffer.bytes, self._memory.room())

    async def _fill(self) -> None:
        await self._cursor.read(self._read_room(), self._add)

    def _add(self, entry: RecordEntry, start: int) -> None:
        before = self._buffer.bytes
        self._buffer.add(entry, start)
        self._charge.add(self._buffer.bytes - before)

    async def _process(self, spans: list[Span]) -> None:
        self._busy = True
        charge = self._charge.split(sum(s.size for s in spans))
        try:
            records = await asyncio.to_thread(_raw_records, spans)
            batch = await self._processor.process(records)
            last = spans[-1]
            raw_end: Position = (last.entry.seq, last.end)
            if last.end >= last.entry.count:
                raw_end = (last.entry.seq + 1, 0)
            await self._cursor.append(sorted(batch.groups.items()), raw_end)
            self._count(batch)
            self.last_error = None
        finally:
            charge.release()
            self._busy = False

    def _count(self, batch: ProcessedBatch) -> None:
        m = self._metrics
        if batch.dropped:
            m.processing_dropped.labels(self.name).inc(batch.dropped)
        for kind, n in batch.failed.items():
            m.processing_failed.labels(self.name, kind).inc(n)
            if self._activity is not None:
                self._activity.failed(kind, n)
        records, size = batch.succeeded()
        if records:
            m.succeed_processing_records.labels(self.name).inc(records)
            m.succeed_processing_bytes.labels(self.name).inc(size)

    def oldest_arrival_ms(self) -> int | None:
        """Arrival (epoch ms) of the oldest record waiting for the chain (None when none is buffered)."""
        return self._buffer.oldest_arrival_ms()

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.bytes

    def idle(self) -> bool:
        return not self._buffer and not self._busy and not self._has_unread()


def _raw_records(spans: list[Span]) -> list[RawRecord]:
    return [RawRecord((s.entry.seq, i), bytes(s.entry.record(i)), s.entry.arrival(i),
                      _kinesis_metadata(s.entry.kinesis[i], s.entry.arrival(i)) if s.entry.kinesis else None)
            for s in spans for i in range(s.start, s.end)]


def _kinesis_metadata(meta: list[Any], arrival_ms: int) -> dict[str, Any]:
    """The Lambda event's kinesisRecordMetadata for a record read from a Kinesis stream."""
    shard_id, partition_key, sequence_number, subsequence = meta
    return {"shardId": shard_id, "partitionKey": partition_key, "approximateArrivalTimestamp": arrival_ms,
            "sequenceNumber": sequence_number, "subsequenceNumber": subsequence}


__all__ = ["Feeder"]
