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
forward. A batch taken from the buffer stays the feeder's until its output is
durable: a failed attempt (the spool cannot write, the chain raised) is retried
with the same records, never skipped. An unexpected error from the chain itself
is retried ``POISON_ATTEMPTS`` times (its traceback logged once); then every
record of the batch goes to the error output as ``processing-failed``, so one
batch cannot hold up the stream. Failures that heal (the spool, file
descriptors, memory) are retried for as long as they last.
The records the processing buffer holds, and the batch taken from it until its
output is durable, are charged to the process-wide memory budget
(``pipeline/memory.py``): with the budget spent nothing more is read (the
records wait in the spool) and what the buffer holds is processed as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from firehose.partitions import describe_partition
from firehose.pipeline.activity import ActivityLog
from firehose.pipeline.buffer import Buffer
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.memory import Charge, MemoryBudget
from firehose.processing.chain import ProcessedBatch, Processor, RawRecord, unprocessable
from firehose.processing.transform import msk_record_metadata
from firehose.records import Position
from firehose.retry import HEALING, POISON_ATTEMPTS
from firehose.spool.cursor import ProcessCursor
from firehose.spool.entry import RecordEntry, Span, kafka_record
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
        self._pending_charge = Charge(self._memory)  # the batch taken from the buffer
        self._wakeup = asyncio.Event()
        self._closing = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        #: The batch taken from the buffer and not yet durable, with its chain output once it ran.
        self._pending: list[Span] | None = None
        self._output: ProcessedBatch | None = None
        self._failures = 0  # failed attempts at the pending batch
        self._chain_failures = 0  # of which the chain raised an unexpected error
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
        self._pending_charge.release()
        self._memory.unsubscribe(self._wakeup.set)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._fill()
                if self._pending is None and (self._buffer.ready() or (self._buffer and self._memory.spent())):
                    self._pending = self._buffer.take()
                    self._pending_charge = self._charge.split(sum(s.size for s in self._pending))
                if self._pending is not None:
                    await self._process(self._pending)
                    self._pending, self._output, self._failures, self._chain_failures = None, None, 0, 0
                    self._pending_charge.release()
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._failures == 1:
                    log.exception("Processing failed; the batch stays in the spool and is retried shortly.",
                                  extra={"stream": self.name})
                elif self._failures <= 3 or self._failures % 10 == 0:
                    log.warning("Processing failed again; the batch stays in the spool and is retried shortly.",
                                extra={"stream": self.name, "attempt": self._failures, "error": self.last_error})
                await asyncio.sleep(1)
            await self._wait()

    async def _wait(self) -> None:
        if self._pending is not None:  # a failed attempt (after its pause): retried now, not at the next record
            return
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
        try:
            batch = self._output
            if batch is None:
                records = await asyncio.to_thread(_raw_records, spans)
                batch = await self._run_chain(records) if records else ProcessedBatch()
                spooled = await asyncio.to_thread(_spooled_failures, spans) \
                    if any(s.entry.partitions for s in spans) else []
                for error_type, document, arrival, reason in spooled:
                    batch.fail(error_type, document, arrival, reason)
                self._output = batch
            last = spans[-1]
            raw_end: Position = (last.entry.seq, last.end)
            if last.end >= last.entry.count:
                raw_end = (last.entry.seq + 1, 0)
            await self._cursor.append(sorted(batch.groups.items()), raw_end)
            self._count(batch)
            self.last_error = None
        finally:
            self._busy = False

    async def _run_chain(self, records: list[RawRecord]) -> ProcessedBatch:
        """The chain's output; after ``POISON_ATTEMPTS`` unexpected errors, every record as failed."""
        try:
            return await self._processor.process(records)
        except HEALING:
            raise
        except Exception as exc:
            self._chain_failures += 1
            if self._chain_failures < POISON_ATTEMPTS:
                raise
            message = (f"The processing chain failed on the batch {POISON_ATTEMPTS} times: "
                       f"{type(exc).__name__}: {exc}")
            log.error("Gave up processing a batch; its records go to the error output.",
                      extra={"stream": self.name, "records": len(records), "error": f"{type(exc).__name__}: {exc}"})
            return unprocessable(records, message, POISON_ATTEMPTS)

    def _count(self, batch: ProcessedBatch) -> None:
        m = self._metrics
        if batch.dropped:
            m.processing_dropped.labels(self.name).inc(batch.dropped)
        for kind, n in batch.failed.items():
            m.processing_failed.labels(self.name, kind).inc(n)
            if self._activity is not None:
                self._activity.failed(kind, n, batch.reasons.get(kind, ""))
        records, size = batch.succeeded()
        if records:
            m.succeed_processing_records.labels(self.name).inc(records)
            m.succeed_processing_bytes.labels(self.name).inc(size)

    def oldest_arrival_ms(self) -> int | None:
        """Arrival (epoch ms) of the oldest record waiting for the chain (None when none is buffered)."""
        buffered = self._buffer.oldest_arrival_ms()
        if self._pending is None:
            return buffered
        pending = min(s.entry.first_arrival(s.start, s.end) for s in self._pending)
        return pending if buffered is None else min(pending, buffered)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.bytes

    def idle(self) -> bool:
        return not self._buffer and self._pending is None and not self._busy and not self._has_unread()


def _raw_records(spans: list[Span]) -> list[RawRecord]:
    """The records the chain runs on: all of the spans' but those spooled as error documents already."""
    return [RawRecord((s.entry.seq, i), bytes(s.entry.record(i)), s.entry.arrival(i), _source_metadata(s.entry, i))
            for s in spans for i in _data_indices(s)]


def _data_indices(s: Span) -> Iterable[int]:
    if not s.entry.partitions:  # raw entries: every record is data
        return range(s.start, s.end)
    return [i for pid, lo, hi in s.entry.partitions if describe_partition(pid)[1] is None
            for i in range(max(lo, s.start), min(hi, s.end))]


def _spooled_failures(spans: list[Span]) -> list[tuple[str, bytes, int, str]]:
    """(error output type, error document, arrival, reason) of the records a source spooled as error
    documents (a Kafka record over AWS's size limit): they skip the chain and go to the error output."""
    out: list[tuple[str, bytes, int, str]] = []
    for s in spans:
        for pid, lo, hi in s.entry.partitions:
            error_type = describe_partition(pid)[1]
            for i in range(max(lo, s.start), min(hi, s.end)) if error_type is not None else ():
                document = bytes(s.entry.record(i))
                doc = orjson.loads(document)
                out.append((error_type, document, s.entry.arrival(i), f"{doc['errorCode']}: {doc['errorMessage']}"))
    return out


def _source_metadata(entry: RecordEntry, index: int) -> dict[str, Any] | None:
    """What the Lambda event tells of where record ``index`` was read (None for direct puts)."""
    if entry.kinesis:
        return _kinesis_metadata(entry.kinesis[index], entry.arrival(index))
    if entry.kafka:
        return msk_record_metadata(entry.kafka["topic"], kafka_record(entry.kafka, index), entry.arrival(index))
    return None


def _kinesis_metadata(meta: list[Any], arrival_ms: int) -> dict[str, Any]:
    """The Lambda event's kinesisRecordMetadata for a record read from a Kinesis stream."""
    shard_id, partition_key, sequence_number, subsequence = meta
    return {"shardId": shard_id, "partitionKey": partition_key, "approximateArrivalTimestamp": arrival_ms,
            "sequenceNumber": sequence_number, "subsequenceNumber": subsequence}


__all__ = ["Feeder"]
