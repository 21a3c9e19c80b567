"""Stage 2 of a stream: spooled records → partition buffers → sealed batches → destination.

    cursor ─read─▶ buffer per partition ─ready─▶ seal (cursor: fsynced) ─▶ objects ─▶ destination
                                                                            │ confirmed
                                                       done (cursor: ledger, then release) ◀─┘

The deliverer keeps buffers, attempts and retries, and nothing else:

* It reads through its ``BatchCursor`` (``spool/cursor.py``), which owns the
  sealed-batch protocol: where reading resumes after a restart, which records
  earlier seals hold, the low watermark, and when spool segments go. The
  deliverer reports only the oldest record it holds in a buffer.
* Memory holds the partition buffers and the batches being delivered (their
  records, and the bodies built from them where those are not views of the
  records: compressed, encrypted, converted), charged
  to the process-wide ``MemoryBudget`` (``memory.max_buffered_bytes``,
  ``pipeline/memory.py``) and, per stream, bounded by
  ``processing.max_buffered_bytes``. A stream reads from its cursor only while
  the budget has room, no batch it sealed waits for a slot, and it can seal
  what it reads (a free slot, or no buffer ready yet); everything else stays
  in the spool. With the budget spent a stream cuts its fullest buffer as it
  is, and one that has no free slot seals it to wait for one without its
  records (it is read again when it gets one, like a batch left by a restart).
  A batch holds its records only while an attempt runs: after a failure it
  gives them back and reads them again for the next attempt, and the retries
  of one stream run one at a time, so a stream whose destination is down
  holds at most one batch.
* Each partition has its own size/interval buffer; a
  partition that would exceed ``max_active_partitions`` does not get one: its
  records go to the error output, named one by one in their seal.
* When a buffer is ready a batch is cut, named (``naming.py``) and sealed
  before anything is sent, so a re-delivery writes the same key.
* Failed attempts are retried with backoff for as long as it takes (or the
  destination's retry duration); only after the destination confirmed every
  object of a batch is it marked done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from itertools import repeat

from firehose import failures, tap
from firehose.clock import now_ms
from firehose.destinations import Destination, Failure, ObjectDestination, Outcome
from firehose.encoding.builder import DATA, OVERFLOW, RECORDS, ObjectBuilder
from firehose.errors import DestinationError, SpoolError
from firehose.partitions import describe_partition
from firehose.pipeline.activity import ActivityLog
from firehose.pipeline.buffer import Buffer
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.erroroutput import ErrorOutput
from firehose.pipeline.errorrecords import RecentErrors
from firehose.pipeline.memory import Charge, MemoryBudget, reclaim_after_failure
from firehose.pipeline.naming import OVERFLOW_PARTITION, name_batch, unbuilt_key
from firehose.pipeline.spans import SpanRecords
from firehose.records import DeliveryRecords, ObjectBatch, Position, RecordBatch
from firehose.retry import (
    HEALING,
    POISON_ATTEMPTS,
    Attempts,
    Backoff,
    Deadline,
    RetryExpired,
    forget_frames,
    retry_until,
)
from firehose.settings import Settings
from firehose.spool.cursor import BatchCursor, Seal
from firehose.spool.entry import RecordEntry, Span
from firehose.tap import Taps
from firehose.telemetry import Delivery, Metrics, StreamLevels, delivery_family

log = logging.getLogger("firehose.pipeline")

#: errorCodes of the records of a batch that could not be built.
INTERNAL_CONVERSION_ERROR = "DataFormatConversion.InternalError"
INTERNAL_PROCESSING_ERROR = "Processing.InternalError"


def _delivery_records(incarnation: str, source: str, spans: list[Span]) -> DeliveryRecords:
    """Records with ids from their spool position: the same on every attempt and after a restart.

    Only counted here, on the event loop; their payloads, arrival times and ids are sliced and made if
    and when the destination asks for them, in its thread (``DeliveryRecords``), with ``map`` over C
    callables (slicing, string concatenation), once per record.
    """
    def datas() -> list[bytes | memoryview]:
        out: list[bytes | memoryview] = []
        for s in spans:
            offsets, data = s.entry.offsets, s.entry.data
            out.extend(map(data.__getitem__, map(slice, offsets[s.start:s.end], offsets[s.start + 1:s.end + 1])))
        return out

    def arrivals() -> list[int]:
        out: list[int] = []
        for s in spans:
            e = s.entry
            out.extend(repeat(e.arrival_ms, s.end - s.start) if e.arrivals is None else e.arrivals[s.start:s.end])
        return out

    def ids() -> Iterator[str]:
        for s in spans:
            yield from map(f"{incarnation}-{source[0]}{s.entry.seq}-".__add__, map(str, range(s.start, s.end)))

    count = sum(s.end - s.start for s in spans)
    size = sum(s.entry.offsets[s.end] - s.entry.offsets[s.start] for s in spans)
    return DeliveryRecords(count, size, datas, arrivals, ids)


@dataclass
class DeliveryState:
    """What /readyz and logs report about a stream's delivery."""

    destination: str
    consecutive_failures: int = 0
    last_error: str | None = None
    #: When a batch was last delivered (epoch ms), whole or with its failures in the error output.
    last_success_ms: int | None = None


class _Records:
    """A sealed batch's records (and the objects built from them) while an attempt needs them,
    charged to the memory budget.

    ``drop`` gives them (and their charge) back between attempts; ``spans`` reads them again from
    the spool when they were dropped: the seal names exactly its records, so it is the same batch.
    """

    def __init__(self, cursor: BatchCursor, seal: Seal, spans: list[Span] | None, charge: Charge) -> None:
        self._cursor = cursor
        self._seal = seal
        self._spans = spans
        self._charge = charge

    async def spans(self) -> list[Span]:
        if self._spans is None:
            self._spans = await self._cursor.read_sealed(self._seal)
            self._charge.add(sum(s.size for s in self._spans))
        return self._spans

    def hold(self, objects: list[ObjectBatch]) -> None:
        """Charge what the objects built from these records hold of their own: a compressed,
        encrypted or converted body, or error documents (``bytes`` parts). Parts that are views of
        the records cost nothing more. ``drop`` gives it back with the records."""
        self._charge.add(sum(len(p) for obj in objects for p in obj.parts if not isinstance(p, memoryview)))

    def drop(self) -> None:
        self._spans = None
        self._charge.release()


class Deliverer:
    def __init__(
        self,
        *,
        name: str,
        incarnation: str,
        cursor: BatchCursor,
        config: StreamConfig,
        destination: Destination,  # type: ignore[type-arg]
        builder: ObjectBuilder,
        store: ObjectDestination | None = None,
        settings: Settings,
        metrics: Metrics,
        activity: ActivityLog | None = None,
        taps: Taps | None = None,
        memory: MemoryBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        family: str | None = None,
    ) -> None:
        """``family``: the figures its deliveries count in, when not its destination's own
        (``telemetry.BACKUP`` for a source-record backup)."""
        self.name = name
        self._family = family
        self.incarnation = incarnation
        self._config = config
        self._destination = destination
        self._store = store  # record destinations: where backups and error output go
        self._builder = builder
        self._settings = settings.delivery
        self._backoff = Backoff(settings.delivery.backoff_base_seconds, settings.delivery.backoff_max_seconds)
        self._max_partitions = settings.processing.max_active_partitions
        self._max_buffered = max(settings.processing.max_buffered_bytes, config.size_bytes)
        self._metrics = metrics
        self._activity = activity or ActivityLog(name, settings.log.summary_seconds)
        self._taps = taps or Taps()
        self._clock = clock
        #: The newest error documents written to the error output (the console's error records).
        self.error_records = RecentErrors()
        self._errors = ErrorOutput(name, builder, metrics, self._backoff, clock, self.error_records)
        self._buffers: dict[str, Buffer] = {}
        self._memory = memory or MemoryBudget(settings.memory.max_buffered_bytes)
        self._buffered = Charge(self._memory)  # what the partition buffers hold
        #: A failing stream retries one batch at a time: between attempts a batch holds no records.
        self._retry_gate = asyncio.Lock()
        self._cursor = cursor
        cursor.holding(self._oldest_buffered)
        self.source = self._cursor.source
        self._inflight: dict[int, asyncio.Task[None]] = {}
        #: Arrival (epoch ms) of the first record of each batch in flight or waiting to be re-delivered.
        self._held_arrivals: dict[int, int] = {}
        self._unread_since_ms: int | None = None
        self._figure_cache: dict[tuple[str, str], Delivery] = {}
        self._sealing = 0
        self._replay = self._cursor.pending()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._waiting = False  # for what delivery waits for before it begins (Deliverer.start)
        self._task: asyncio.Task[None] | None = None
        self.delivery = DeliveryState(destination.describe())
        self._cursor.subscribe(self._wakeup.set)
        self._memory.subscribe(self._wakeup.set)
        for seal in self._replay:
            self._held_arrivals[seal.batch_id] = _arrival_of(seal)

    # -- lifecycle ------------------------------------------------------------

    def start(self, *, after: Awaitable[object] | None = None) -> None:
        """Start delivering, once ``after`` (if given) is done."""
        if self._replay:
            log.info("Re-delivering batches sealed before the last stop.",
                     extra={"stream": self.name, "batches": len(self._replay)})
        self._task = asyncio.create_task(self._run(after), name=f"deliver-{self.name}")

    def reconfigure(self, config: StreamConfig, destination: Destination,  # type: ignore[type-arg]
                    store: ObjectDestination | None = None) -> None:
        """A new definition version; in-flight batches finish as they were sealed."""
        old = self._destination
        self._config = config
        self._store = store
        self._max_buffered = max(self._max_buffered, config.size_bytes)
        for buf in self._buffers.values():
            buf.reconfigure(config.size_bytes, config.interval_s)
        self._destination = destination
        self.delivery.destination = destination.describe()

        if old is not destination:
            asyncio.get_running_loop().create_task(self._close_later(old))
        self._wakeup.set()

    async def _close_later(self, destination: Destination) -> None:  # type: ignore[type-arg]
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await destination.aclose()

    async def stop(self, timeout: float) -> None:
        """Seal what is buffered, give deliveries ``timeout`` seconds, leave the rest spooled."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            if self._waiting:  # stopped before delivery began: nothing is in flight
                self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        try:
            for pid in list(self._buffers):
                while self._buffers.get(pid):
                    await self._seal_and_dispatch(pid, self._buffers[pid].take())
        except Exception as exc:
            log.warning("Could not seal the last buffered records; they stay in the spool.",
                        extra={"stream": self.name, "error": str(exc)})
        pending = list(self._inflight.values())
        if pending:
            _done, not_done = await asyncio.wait(pending, timeout=timeout)
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.gather(*not_done, return_exceptions=True)
                log.warning("Left undelivered batches in the spool; they are delivered after the next start.",
                            extra={"stream": self.name, "batches": len(not_done)})
        self._let_go()
        await self._destination.aclose()

    async def discard(self) -> None:
        """Stop at once, sealing nothing and cancelling every attempt in flight (a deleted stream:
        its spool goes with it, so nothing is left to deliver later)."""
        self._closing = True
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._buffers.clear()
        self._let_go()
        await self._destination.aclose()

    def _let_go(self) -> None:
        """Give the memory budget back what the buffers still hold (they stay in the spool)."""
        self._buffered.release()
        self._memory.unsubscribe(self._wakeup.set)

    # -- the loop -------------------------------------------------------------

    async def _run(self, after: Awaitable[object] | None) -> None:
        if after is not None:
            self._waiting = True
            await asyncio.shield(after)  # shared with other streams: a stop must not cancel it for them
            self._waiting = False
        while not self._closing:
            try:
                self._dispatch_replays()
                await self._fill()
                await self._seal_ready()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("Delivery loop error; retrying shortly.", extra={"stream": self.name})
                self.delivery.last_error = str(exc)
                await asyncio.sleep(1)
            await self._wait()

    def _slots(self) -> int:
        return self._settings.max_inflight_batches - len(self._inflight)

    async def _wait(self) -> None:
        timeout = None
        deadlines = [d for b in self._buffers.values() if (d := b.deadline()) is not None]
        if deadlines and self._slots() > 0:
            timeout = max(0.0, min(deadlines) - self._clock())
        self._wakeup.clear()
        if self._has_unread() and self._read_room() > 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _has_unread(self) -> bool:
        return self._cursor.has_unread()

    async def _fill(self) -> None:
        """Read spooled records into partition buffers, up to the memory budget."""
        await self._cursor.read(self._read_room(), self._add)

    def _read_room(self) -> int:
        """How much may be read now: nothing while a sealed batch waits for a slot or a ready buffer
        cannot be sealed (reading more would only hold it in memory), else what the stream's share
        and the process-wide budget leave."""
        if self._replay or (self._slots() <= 0 and any(b.ready() for b in self._buffers.values())):
            return 0
        return min(self._max_buffered - self.buffered_bytes, self._memory.room())

    def _add(self, pid: str, e: RecordEntry, start: int, end: int) -> None:
        buf = self._buffers.get(pid)
        if buf is None:
            keys, error_type = describe_partition(pid.split("#")[0])
            if error_type is None and self._active_data_partitions() >= self._max_partitions:
                pid = OVERFLOW_PARTITION
            buf = self._buffer_for(pid)
        before = buf.bytes
        buf.add(e, start, end)
        self._buffered.add(buf.bytes - before)

    def _buffer_for(self, pid: str) -> Buffer:
        buf = self._buffers.get(pid)
        if buf is None:
            buf = self._buffers[pid] = Buffer(self._config.size_bytes, self._config.interval_s, self._clock)
        return buf

    def _active_data_partitions(self) -> int:
        return sum(1 for pid, b in self._buffers.items() if b and pid.startswith('{"k"'))

    async def _seal_ready(self) -> None:
        while not self._closing:
            # With no free slot a batch is sealed only to give its memory back (the budget is spent).
            parking = self._slots() <= 0
            if parking and not self._memory.spent():
                return
            pid = self._next_ready()
            if pid is None:
                return
            buf = self._buffers[pid]
            spans = buf.take()
            if not buf:
                del self._buffers[pid]
            if parking:
                await self._park(pid, spans)
            else:
                await self._seal_and_dispatch(pid, spans)

    def _next_ready(self) -> str | None:
        """A ready partition; when memory is full, the fullest one even if it is not ready."""
        for pid, buf in self._buffers.items():
            if buf.ready():
                return pid
        full = self.buffered_bytes >= self._max_buffered or self._memory.spent()
        if full and self._buffers:
            return max(self._buffers, key=lambda p: self._buffers[p].bytes)
        return None

    # -- sealing --------------------------------------------------------------

    def _oldest_buffered(self) -> Position | None:
        """The oldest record taken from the cursor and not yet sealed (it holds the low watermark)."""
        return min((p for b in self._buffers.values() if (p := b.oldest()) is not None), default=None)

    async def _seal_and_dispatch(self, pid: str, spans: list[Span]) -> None:
        if not spans:
            return
        seal, charge = await self._seal_taken(pid, spans)
        self._start_delivery(seal, spans, charge)

    async def _park(self, pid: str, spans: list[Span]) -> None:
        """Seal a batch that has no slot yet and let its records go: it waits, on disk, with the
        batches a restart left (``_replay``), and is read again when a slot frees."""
        if not spans:
            return
        seal, charge = await self._seal_taken(pid, spans)
        charge.release()
        self._held_arrivals[seal.batch_id] = _arrival_of(seal)
        self._replay.append(seal)

    async def _seal_taken(self, pid: str, spans: list[Span]) -> tuple[Seal, Charge]:
        """Seal a batch just taken out of a buffer; its share of the buffers' memory charge moves with it.

        A batch that cannot be sealed (e.g. the ledger's disk is full) goes back into its buffer, with
        its charge: it keeps holding the low watermark there and is sealed on a later round.
        """
        size = sum(s.size for s in spans)
        charge = self._buffered.split(size)
        self._sealing += 1  # taken out of a buffer, not yet in flight: not idle
        try:
            return await self._seal(pid, spans), charge
        except BaseException:
            charge.release()
            self._buffer_for(pid).restore(spans)
            self._buffered.add(size)
            raise
        finally:
            self._sealing -= 1

    async def _seal(self, pid: str, spans: list[Span]) -> Seal:
        sealed_ms = now_ms()
        name = name_batch(self._config, stream=self.name, incarnation=self.incarnation, source=self.source,
                          partition=pid, spans=spans, sealed_ms=sealed_ms,
                          error_output_type=self._destination.error_output_type, max_partitions=self._max_partitions)
        return await self._cursor.seal(pid, (spans[0].entry.seq, spans[0].start), (spans[-1].entry.seq, spans[-1].end),
                                       name.key, sealed_ms, name.meta, positions=name.positions)

    def _dispatch_replays(self) -> None:
        while self._replay and self._slots() > 0:
            self._start_delivery(self._replay.pop(0), None)

    def _start_delivery(self, seal: Seal, spans: list[Span] | None, charge: Charge | None = None) -> None:
        self._held_arrivals[seal.batch_id] = _arrival_of(seal)
        records = _Records(self._cursor, seal, spans, charge or Charge(self._memory))
        task = asyncio.create_task(self._deliver(seal, records), name=f"deliver-{self.name}-{seal.batch_id}")
        self._inflight[seal.batch_id] = task
        task.add_done_callback(lambda _t, bid=seal.batch_id: self._finished(bid))

    def _finished(self, batch_id: int) -> None:
        self._inflight.pop(batch_id, None)
        self._held_arrivals.pop(batch_id, None)
        self._wakeup.set()

    # -- one batch ------------------------------------------------------------

    async def _deliver(self, seal: Seal, records: _Records) -> None:
        try:
            if seal.meta.get("kind") == RECORDS:
                await self._deliver_records(seal, records)
            else:
                await self._deliver_objects(seal, records)
        finally:
            records.drop()
        await self._mark_done(seal)

    async def _spans(self, seal: Seal, records: _Records) -> list[Span]:
        spans = await records.spans()
        if not spans:
            log.error("A sealed batch's records are no longer in the spool; skipping it.",
                      extra={"stream": self.name, "key": seal.key})
        return spans

    def _gate(self, retry: bool) -> contextlib.AbstractAsyncContextManager[object]:
        """A retry waits for the stream's other retries: one failing batch in memory at a time."""
        return self._retry_gate if retry else contextlib.nullcontext()

    async def _deliver_objects(self, seal: Seal, records: _Records) -> None:
        """S3, a local directory, Redshift: the batch's objects, retried until every one landed
        (or a destination's retry duration ran out: Redshift files the batch for a manual load).

        Between attempts the batch holds neither its records nor its objects; each retry reads and
        builds them again (the same objects, under the same keys)."""
        objects: list[ObjectBatch] | None = None
        spans: list[Span] = []
        sent: set[str] = set()
        destination = self._destination
        attempts = 0
        built = False
        build_failures = 0
        #: The error output type, when the batch could not be built and its records went there instead.
        unbuilt: str | None = None

        async def build() -> list[ObjectBatch] | None:
            nonlocal spans, built, build_failures, unbuilt
            spans = await self._spans(seal, records)
            if not spans:
                return None
            built = True
            try:
                made = await self._builder.build(
                    self._config.encoding, str(seal.meta.get("kind", DATA)), seal.key, SpanRecords(spans),
                    error_key=seal.meta.get("error_key"), reason=str(seal.meta.get("reason", "")))
                records.hold(made)
                return made
            except HEALING:
                raise
            except Exception as exc:
                build_failures += 1
                if build_failures < POISON_ATTEMPTS or seal.meta.get("kind", DATA) != DATA:
                    raise
                unbuilt, documents = await self._unbuildable(seal, spans, exc, build_failures)
                records.hold(documents)
                return documents

        async def attempt() -> bool:
            nonlocal objects, spans, attempts
            attempts += 1
            async with self._gate(attempts > 1):
                try:
                    return await send()
                except BaseException:
                    objects, spans = None, []  # hold nothing between attempts
                    records.drop()
                    raise

        async def send() -> bool:
            nonlocal objects
            if objects is None:
                objects = await build()
                if objects is None:
                    return False
            for obj in objects:
                if obj.key in sent:
                    continue
                # Error output (of a converting batch, or records the chain failed) goes to the object
                # store, the data to the destination.
                target = self._target(seal, obj, destination)
                figures = self._figures(target.name, target.error_output_type)
                try:
                    outcome = await target.deliver(obj)
                except BaseException:
                    figures.attempted(0, 1)
                    raise
                figures.attempted(1 if outcome.delivered_all else 0, 1)
                if not outcome.delivered_all:
                    raise DestinationError(f"{len(outcome.retry) + len(outcome.rejected)} records not written")
                sent.add(obj.key)
            return True

        def deadline() -> Deadline | None:
            """A destination's retry duration counts once there is something to give up on."""
            limit = destination.retry_seconds
            return Deadline(limit) if limit is not None and built else None

        try:
            if not await retry_until(attempt, backoff=self._backoff, deadline=deadline,
                                     on_failure=self._failure_of(seal), clock=self._clock):
                return
        except RetryExpired as exc:
            objects = objects or await build()
            assert objects
            await destination.expired(objects[0], str(exc.last))
            log.error("Gave up on a batch after its retry duration; it was filed for a manual load.",
                      extra={"stream": self.name, "key": seal.key, "error": str(exc.last)})
            return
        self._note_recovered()
        kind = seal.meta.get("kind", DATA)
        for obj in objects or []:
            self._count_object(seal, obj, self._target(seal, obj, destination), unbuilt)
            if unbuilt is not None:
                self._activity.failed(unbuilt, obj.record_count, obj.reason)
            elif kind == OVERFLOW:
                self._activity.failed(failures.PARTITIONING_FAILED, obj.record_count)
            elif kind == DATA and obj.key != seal.key:
                self._activity.failed(failures.FORMAT_CONVERSION_FAILED, obj.record_count, obj.reason)
            elif kind == DATA:
                self._activity.delivered(self._destination.name, obj.key, obj.record_count, obj.size)
        if spans and self._taps.watching(self.name):  # firehose tap: the records as the destination got them
            delivered = kind == DATA and any(obj.key == seal.key for obj in objects or [])
            self._taps.publish(self.name, tap.DELIVERED if delivered else tap.ERROR, SpanRecords(spans).each())

    def _target(self, seal: Seal, obj: ObjectBatch, destination: Destination) -> Destination:  # type: ignore[type-arg]
        """Where an object of a batch goes: data to the destination, error output to the object store."""
        if self._store is None or (obj.key == seal.key and seal.meta.get("kind", DATA) == DATA):
            return destination
        return self._store

    async def _unbuildable(self, seal: Seal, spans: list[Span], exc: Exception,
                           attempts: int) -> tuple[str, list[ObjectBatch]]:
        """A data batch whose objects could not be built ``attempts`` times (a bug, or a conversion
        worker that died on it): its records, as error documents with the reason, under the error
        output (``format-conversion-failed`` for a converting stream, else ``processing-failed``),
        so that one batch cannot hold up the stream. Raises if even those cannot be built."""
        conversion = self._config.encoding.conversion
        error_type = failures.FORMAT_CONVERSION_FAILED if conversion is not None else failures.PROCESSING_FAILED
        key = str(seal.meta.get("error_key") or "") or unbuilt_key(
            self._config, stream=self.name, batch_key=seal.key, arrival_ms=_arrival_of(seal),
            sealed_ms=seal.sealed_ms, version=int(seal.meta.get("version", self._config.version)),
            error_type=error_type)
        message = f"The batch could not be built after {attempts} attempts: {type(exc).__name__}: {exc}"
        records = SpanRecords(spans)
        ended = now_ms()
        if conversion is not None:
            docs = tuple(failures.conversion_document(
                raw=d, arrival_ms=a, message=message, table=conversion.table, ended_ms=ended,
                code=INTERNAL_CONVERSION_ERROR) for d, a in zip(records.each(), records.arrivals(), strict=True))
        else:
            docs = tuple(failures.document(raw=d, arrival_ms=a, code=INTERNAL_PROCESSING_ERROR, message=message,
                                           attempts=attempts, ended_ms=ended)
                         for d, a in zip(records.each(), records.arrivals(), strict=True))
        obj = await self._builder.documents(self._config.encoding, key, docs, records.first_arrival_ms)
        log.error("Gave up building a batch; its records go to the error output.",
                  extra={"stream": self.name, "key": seal.key, "error_key": key, "records": len(docs),
                         "attempts": attempts, "error": f"{type(exc).__name__}: {exc}"})
        code = INTERNAL_CONVERSION_ERROR if conversion is not None else INTERNAL_PROCESSING_ERROR
        return error_type, [replace(obj, reason=f"{code}: {message}")]

    async def _deliver_records(self, seal: Seal, records: _Records) -> None:
        """OpenSearch, Splunk, HTTP endpoint: only the records that failed are retried, until the
        destination's retry duration runs out; then they go to the error output, with the reason.

        Between attempts the batch holds no records; each retry reads them again (the same
        records, with the same ids)."""
        spans = await self._spans(seal, records)
        if not spans:
            return
        batch_records = _delivery_records(self.incarnation, seal.source, spans)
        destination = self._destination
        pending = list(range(len(batch_records)))
        failed: dict[int, tuple[Failure, int]] = {}
        run = Attempts(self._backoff, clock=self._clock)
        while pending:
            async with self._gate(run.failures > 0):
                if not batch_records:
                    spans = await self._spans(seal, records)
                    batch_records = _delivery_records(self.incarnation, seal.source, spans)
                    if len(batch_records) <= pending[-1]:  # the spool lost it meanwhile (logged)
                        return
                subset = batch_records if len(pending) == len(batch_records) else \
                    DeliveryRecords.of(batch_records[i] for i in pending)
                batch = RecordBatch(self.name, str(seal.meta["batch_id"]), subset,
                                    describe_partition(seal.partition)[0] or None)
                outcome = await self._attempt(destination, batch)
            attempts = run.failures + 1  # this one included
            for f in outcome.rejected:
                if f.error_output:
                    failed[pending[f.index]] = (f, attempts)
                else:
                    self._errors.refused(destination.name, batch.records[f.index], f)
            retry = {pending[f.index]: f for f in outcome.retry}
            self._count_records(destination, batch, outcome)
            delivered = len(pending) - len(retry) - len(outcome.rejected)
            if delivered:
                not_ok = retry.keys() | {pending[f.index] for f in outcome.rejected}
                if self._taps.watching(self.name):
                    self._taps.publish(self.name, tap.DELIVERED,
                                       (batch_records.datas[i] for i in pending if i not in not_ok))
                size = batch_records.total_bytes(not_ok) if len(pending) == len(batch_records) else \
                    sum(len(batch_records.datas[i]) for i in pending if i not in not_ok)
                self._activity.delivered(destination.name, str(seal.meta["batch_id"]), delivered, size)
            if not retry:
                break
            pending = [i for i in pending if i in retry]
            run.failed()
            some = next(iter(retry.values()))
            self._note_failure(seal, DestinationError(f"{some.code or 'error'}: {some.reason}"), attempts)
            limit = destination.retry_seconds
            if run.expired(Deadline(limit, destination.retry_clock) if limit is not None else None):
                failed.update({i: (retry[i], attempts) for i in pending})
                break
            del batch  # hold no record between attempts
            batch_records, spans = DeliveryRecords.of(()), []
            records.drop()
            await run.wait()
            destination = self._destination
        on_failure = self._failure_of(seal)
        if failed:
            assert self._store is not None, "record destinations have an object store"
            await self._errors.failed(self._store, self._config.encoding, str(seal.meta["error_key"]),
                                      self._destination.error_output_type, batch_records, failed, on_failure)
            self._figures(self._destination.name, self._destination.error_output_type).rows_failed(len(failed))
            some = next(iter(failed.values()))[0]
            self._activity.failed(self._destination.error_output_type, len(failed),
                                  f"{some.code or 'error'}: {some.reason}")
            if self._taps.watching(self.name):
                self._taps.publish(self.name, tap.ERROR, (batch_records.datas[i] for i in sorted(failed)))
        if self._config.backup_all:
            assert self._store is not None, "record destinations have an object store"
            backup = await self._builder.backup(self._config.encoding, seal.key, SpanRecords(spans))
            await self._errors.store(self._store, backup, on_failure, backup=True)
        if not failed:
            self._note_recovered()

    async def _attempt(self, destination: Destination, batch: RecordBatch) -> Outcome:  # type: ignore[type-arg]
        try:
            return await destination.deliver(batch)
        except asyncio.CancelledError:
            raise
        except DestinationError as exc:
            reason, code = exc.message, exc.code or "DeliveryFailed"
            forget_frames(exc)
        except Exception as exc:  # a bug in a destination must not lose the batch: retry it
            log.exception("Unexpected error while delivering; the batch will be retried.",
                          extra={"stream": self.name})
            reason, code = f"{type(exc).__name__}: {exc}", "InternalError"
            forget_frames(exc)
        return Outcome(retry=tuple(Failure(i, reason, code=code) for i in range(len(batch.records))))

    async def _mark_done(self, seal: Seal) -> None:
        def failed(exc: Exception, _attempt: int) -> None:
            log.error("Could not record a delivered batch in the ledger; retrying.",
                      extra={"stream": self.name, "key": seal.key, "error": str(exc)})

        await retry_until(functools.partial(self._cursor.done, seal), backoff=self._backoff, on_failure=failed,
                          retry_on=(SpoolError,), clock=self._clock)

    def _failure_of(self, seal: Seal) -> Callable[[Exception, int], None]:
        return functools.partial(self._note_failure, seal)

    def _note_failure(self, seal: Seal, exc: Exception, attempt: int) -> None:
        """Count and log a failed attempt: an unexpected error's traceback once (at a batch's first
        failure), and then, like any failure, the first three attempts and every tenth after."""
        reclaim_after_failure()
        self.delivery.consecutive_failures += 1
        self.delivery.last_error = str(exc)
        if not isinstance(exc, DestinationError) and attempt == 1:
            log.error("Unexpected error while delivering; the batch will be retried.",
                      exc_info=exc, extra={"stream": self.name, "key": seal.key, "attempt": attempt})
            return
        if attempt > 3 and attempt % 10:  # a long outage logs every tenth attempt, not every one
            return
        error = exc.message if isinstance(exc, DestinationError) else f"{type(exc).__name__}: {exc}"
        log.warning("Delivery failed; the batch stays in the spool and will be retried.",
                    extra={"stream": self.name, "key": seal.key, "attempt": attempt, "error": error})

    def _note_recovered(self) -> None:
        if self.delivery.consecutive_failures:
            log.info("Delivery recovered.", extra={"stream": self.name, "after_failures":
                                                   self.delivery.consecutive_failures})
        self.delivery.consecutive_failures = 0
        self.delivery.last_error = None
        self.delivery.last_success_ms = now_ms()

    # -- figures (docs/metrics.md) -------------------------------------------------

    def _figures(self, name: str, error_output_type: str) -> Delivery:
        """The counters of a destination (cached per deliverer: no ``.labels()`` per batch)."""
        key = (name, error_output_type)
        figures = self._figure_cache.get(key)
        if figures is None:
            figures = self._figure_cache[key] = self._metrics.delivery(
                self.name, self._family or delivery_family(name, error_output_type))
        return figures

    def _count_records(self, destination: Destination, batch: RecordBatch,  # type: ignore[type-arg]
                       outcome: Outcome) -> None:
        """One attempt of a record destination: an HTTP endpoint's ``.Success`` counts the request,
        OpenSearch's and Splunk's each record; ``.Records``/``.Bytes`` count what it acknowledged."""
        figures = self._figures(destination.name, destination.error_output_type)
        n = len(batch.records)
        not_taken = {f.index for f in outcome.retry} | {f.index for f in outcome.rejected}
        if destination.name == "http_endpoint":
            figures.attempted(0 if not_taken else 1, 1)
        else:
            figures.attempted(n - len(not_taken), n)
        figures.rows(n, n - len(not_taken))
        if figures.counts_processed:
            figures.processed(n, batch.total_bytes())
        figures.judged(auth_failed=outcome.auth_failed, rejected=bool(outcome.rejected))
        figures.acked(outcome.ack_seconds)
        if len(not_taken) < n:
            figures.records.inc(n - len(not_taken))
            figures.bytes.inc(batch.total_bytes(not_taken))

    def _count_object(self, seal: Seal, obj: ObjectBatch, target: Destination,  # type: ignore[type-arg]
                      unbuilt: str | None = None) -> None:
        """An object the destination confirmed: data is delivered; error output is not. ``unbuilt``:
        the error output type the records of a batch that could not be built went to."""
        m = self._metrics
        family = delivery_family(target.name, target.error_output_type)
        if family == "s3":
            m.objects.labels(self.name).inc()
        kind = seal.meta.get("kind", DATA)
        converting = self._config.encoding.conversion is not None
        if unbuilt == failures.PROCESSING_FAILED:
            m.error_output_records.labels(self.name, unbuilt).inc(obj.record_count)
            return
        if kind == DATA and obj.key == seal.key:
            figures = self._figures(target.name, target.error_output_type)
            figures.records.inc(obj.record_count)
            figures.bytes.inc(obj.size)
            if converting:
                m.succeed_conversion_records.labels(self.name).inc(obj.record_count)
                m.succeed_conversion_bytes.labels(self.name).inc(obj.size)
            return
        if kind == DATA:  # the error documents of a converting batch
            error_type = failures.FORMAT_CONVERSION_FAILED
            m.failed_conversion_records.labels(self.name).inc(obj.record_count)
            m.failed_conversion_bytes.labels(self.name).inc(obj.size)
        elif kind == OVERFLOW:
            error_type = failures.PARTITIONING_FAILED
        else:
            error_type = describe_partition(seal.partition.split("#")[0])[1] or failures.PROCESSING_FAILED
        m.error_output_records.labels(self.name, error_type).inc(obj.record_count)
        self.error_records.add(error_type, obj.key, obj.documents)

    def levels(self) -> StreamLevels:
        """What a scrape samples: the oldest record not yet delivered, buffers and partitions.

        The oldest record is the oldest of the partition buffers and of the batches sealed and not
        yet confirmed. Records still unread in the spool are not looked at (that would mean reading
        it): while there are some and nothing older is held, their age counts from when the
        deliverer first saw unread records, which may be younger than they are.
        """
        oldest = min(self._held_arrivals.values(), default=None)
        for buf in self._buffers.values():
            arrival = buf.oldest_arrival_ms()
            if arrival is not None and (oldest is None or arrival < oldest):
                oldest = arrival
        if self._has_unread():
            if self._unread_since_ms is None:
                self._unread_since_ms = now_ms()
            if oldest is None:
                oldest = self._unread_since_ms
        else:
            self._unread_since_ms = None
        levels = StreamLevels(self._family or delivery_family(self._destination.name,
                                                              self._destination.error_output_type),
                              oldest, self.buffered_bytes)
        if self._config.plan.dynamic_partitioning:
            levels.partitions = self._active_data_partitions()
            levels.partitions_limit = self._max_partitions
            levels.partitions_exceeded = bool(self._buffers.get(OVERFLOW_PARTITION))
        return levels

    # -- reporting ------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return sum(b.bytes for b in self._buffers.values())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def idle(self) -> bool:
        """Nothing buffered, nothing in flight, nothing unread in the spool."""
        return (not any(self._buffers.values()) and not self._inflight and not self._sealing
                and not self._replay and not self._has_unread())


def _arrival_of(seal: Seal) -> int:
    """The arrival of a sealed batch's oldest record (sealed in its meta; its seal time for old seals)."""
    return int(seal.meta.get("arrival_ms", seal.sealed_ms))
