"""Stage 1 of a stream that processes records: raw log → processing chain → processed log.

    raw log ─read─▶ processing buffer (Lambda BufferSizeInMBs / BufferIntervalInSeconds)
            ─ready─▶ chain (built-ins, Lambda in worker processes, partition keys)
            ─▶ processed entry (fsynced, records grouped by partition, with raw_end) ─▶ release raw

The processed entry records ``raw_end``, the raw position processed so far, in
the same fsync that makes the output durable: after a crash, processing
resumes exactly there, so no record is processed twice into the processed log
and none is skipped. A crash in the middle of the chain leaves the raw records
in the spool and the batch is processed again from the start.

Batches are processed one at a time, in order, so ``raw_end`` only moves
forward. Raw segments are deleted once processed, except those an earlier
mode's open seals still need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from firehose.pipeline.config import StreamConfig
from firehose.processing.chain import Processor, RawRecord
from firehose.spool import PROC, RAW, Spool, StreamSpool, entry
from firehose.spool.buffer import Buffer, Span
from firehose.spool.entry import Position
from firehose.telemetry import Metrics

log = logging.getLogger("firehose.pipeline")

_READ_CHUNK = 8 * 1024 * 1024


def resume_position(stream: StreamSpool) -> Position:
    """Where raw processing resumes: after whatever any mode already consumed."""
    ledger = stream.ledger
    candidates = [ledger.high.get(RAW, (0, 0)), ledger.low.get(RAW, (0, 0)), (stream.log.first_seq, 0)]
    last = stream.processed.committed_next_seq - 1
    if last >= 0:
        got = stream.processed.read(last, 1)
        if got:
            raw_end = entry.decode(got[0][0], got[0][1]).raw_end
            if raw_end is not None:
                candidates.append(raw_end)
    return max(candidates)


class Feeder:
    def __init__(self, *, name: str, spool: Spool, stream_spool: StreamSpool, config: StreamConfig,
                 processor: Processor, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._spool = spool
        self._stream = stream_spool
        self.config = config
        self._processor = processor
        self._metrics = metrics
        self._clock = clock
        self._buffer = Buffer(config.plan.buffer_bytes, config.plan.buffer_interval_s, clock)
        self._cursor = resume_position(stream_spool)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        stream_spool.subscribe(self._wakeup.set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.name}")

    async def stop(self) -> None:
        """Stop taking batches; one being processed is finished (its output is kept)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._fill()
                if self._buffer.ready():
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
        if self._has_unread() and self._buffer.bytes < self._buffer.size_bytes:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _has_unread(self) -> bool:
        return self._cursor[0] < self._stream.log.committed_next_seq

    async def _fill(self) -> None:
        room = self._buffer.size_bytes - self._buffer.bytes
        if room <= 0 or not self._has_unread():
            return
        seq, index = self._cursor
        got = await asyncio.to_thread(self._stream.log.read, seq, min(room, _READ_CHUNK))
        for s, payload in got:
            self._buffer.add(entry.decode(s, payload), index if s == seq else 0)
            self._cursor = (s + 1, 0)

    async def _process(self, spans: list[Span]) -> None:
        self._busy = True
        try:
            records = await asyncio.to_thread(_raw_records, spans)
            batch = await self._processor.process(records)
            last = spans[-1]
            raw_end: Position = (last.entry.seq, last.end)
            if last.end >= last.entry.count:
                raw_end = (last.entry.seq + 1, 0)
            groups = sorted(batch.groups.items())
            payload = await asyncio.to_thread(entry.encode_processed, groups, raw_end)
            await self._spool.append_processed(self._stream, payload)
            self._count(batch.dropped, batch.failed)
            self._release(raw_end)
            self.last_error = None
        finally:
            self._busy = False

    def _count(self, dropped: int, failed: dict[str, int]) -> None:
        if dropped:
            self._metrics.processing_dropped.labels(self.name).inc(dropped)
        for kind, n in failed.items():
            self._metrics.processing_failed.labels(self.name, kind).inc(n)

    def _release(self, raw_end: Position) -> None:
        held = self._stream.ledger.open_start(RAW)
        self._spool.release(self._stream, RAW, min(raw_end, held) if held else raw_end)

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


__all__ = ["PROC", "Feeder", "resume_position"]
