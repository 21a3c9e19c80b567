"""The delivery loop of one delivery stream.

    spool (durable records) → buffer (size/interval) → seal (ledger) → destination → release

* The loop reads acknowledged records from the stream's spool log at its
  cursor, never from the ingest path, so a restart replays through the same
  code and a backlog stays on disk instead of in memory: the buffer holds at
  most one batch worth of records, and at most ``max_inflight_batches`` sealed
  batches are being delivered at once.
* When the buffer is ready (size or interval, see ``spool/buffer.py``) a batch
  is cut and *sealed*: its record range and full object key are fsynced to the
  ledger before anything is sent. The key's timestamp prefix comes from the
  arrival time of the batch's oldest record; its suffix from the seal time and
  a UUID derived from the batch's spool position. A re-delivery after a retry
  or a crash therefore writes the same key (no duplicate objects).
* A failed attempt is retried with exponential backoff and jitter for as long
  as it takes (S3 semantics: errors are retried in place); the data stays in
  the spool meanwhile and ingest is throttled only by the spool's byte limit.
* Only after the destination confirmed a batch is it marked done in the ledger,
  and only then are spool segments wholly below the low watermark deleted.

Blocking work (spool reads, object writes) runs in threads; the event loop
only moves references around.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from firehose import definitions, objectkeys
from firehose.catalog import StreamState
from firehose.definitions import ExtendedS3DestinationConfiguration
from firehose.destinations import ObjectDestination
from firehose.errors import DestinationError, SpoolError
from firehose.records import ObjectBatch
from firehose.settings import DeliverySettings
from firehose.spool import Spool, StreamSpool, entry
from firehose.spool.buffer import Buffer, Span
from firehose.spool.ledger import Position, Seal
from firehose.telemetry import Metrics

log = logging.getLogger("firehose.pipeline")

_KEY_NAMESPACE = uuid.UUID("6f1d7c3e-2b0a-4d8e-9a51-3c6b2f0e8a17")
_READ_CHUNK = 8 * 1024 * 1024


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Config:
    """The parts of a stream's definition the pipeline acts on, for one version."""

    version: int
    destination_config: ExtendedS3DestinationConfiguration
    keys: objectkeys.KeyTemplate
    size_bytes: int
    interval_s: float

    @classmethod
    def of(cls, state: StreamState) -> _Config:
        cfg = state.destination
        size, interval = definitions.buffering(cfg)
        keys = objectkeys.KeyTemplate.build(
            cfg.prefix, cfg.error_output_prefix, custom_time_zone=cfg.custom_time_zone,
            extension=definitions.file_extension(cfg),
        )
        return cls(state.version_id, cfg, keys, size, interval)


@dataclass
class DeliveryState:
    """What /readyz and logs report about a stream's delivery."""

    destination: str
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_ms: int | None = None


class Pipeline:
    def __init__(
        self,
        state: StreamState,
        spool: Spool,
        stream_spool: StreamSpool,
        destination: ObjectDestination,
        settings: DeliverySettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = state.name
        self.incarnation = state.incarnation
        self._spool = spool
        self._stream = stream_spool
        self._destination = destination
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._config = _Config.of(state)
        self._buffer = Buffer(self._config.size_bytes, self._config.interval_s, clock)
        self._cursor: Position = stream_spool.ledger.high
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._sealing = 0
        self._replay: deque[Seal] = deque(stream_spool.ledger.pending())
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.delivery = DeliveryState(destination.describe())
        stream_spool.subscribe(self._wakeup.set)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._replay:
            log.info("Re-delivering batches sealed before the last stop.",
                     extra={"stream": self.name, "batches": len(self._replay)})
        self._task = asyncio.create_task(self._run(), name=f"pipeline-{self.name}")

    def reconfigure(self, state: StreamState, destination: ObjectDestination) -> None:
        """Apply a new definition version; in-flight batches finish with the old one."""
        old = self._destination
        self._config = _Config.of(state)
        self._buffer.reconfigure(self._config.size_bytes, self._config.interval_s)
        self._destination = destination
        self.delivery.destination = destination.describe()
        if old is not destination:
            asyncio.get_running_loop().create_task(self._close_later(old))
        self._wakeup.set()

    async def _close_later(self, destination: ObjectDestination) -> None:
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await destination.aclose()

    async def stop(self, timeout: float) -> None:
        """Seal what is buffered, give deliveries ``timeout`` seconds, leave the rest spooled."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        try:
            while self._buffer:
                await self._seal_and_dispatch(self._buffer.take())
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
        await self._destination.aclose()

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                self._dispatch_replays()
                await self._fill()
                while (not self._closing and len(self._inflight) < self._settings.max_inflight_batches
                       and self._buffer.ready()):
                    await self._seal_and_dispatch(self._buffer.take())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("Delivery loop error; retrying shortly.", extra={"stream": self.name})
                self.delivery.last_error = str(exc)
                await asyncio.sleep(1)
            self._metrics.buffered_bytes.labels(self.name).set(self._buffer.bytes)
            await self._wait()

    async def _wait(self) -> None:
        timeout = None
        deadline = self._buffer.deadline()
        if deadline is not None and len(self._inflight) < self._settings.max_inflight_batches:
            timeout = max(0.0, deadline - self._clock())
        self._wakeup.clear()
        if self._has_unread() and self._buffer.bytes < self._buffer.size_bytes:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _has_unread(self) -> bool:
        return self._cursor[0] < self._stream.log.committed_next_seq

    async def _fill(self) -> None:
        """Read spooled records into the buffer, up to one batch worth."""
        room = self._buffer.size_bytes - self._buffer.bytes
        if room <= 0 or not self._has_unread():
            return
        seq, index = self._cursor
        got = await asyncio.to_thread(self._stream.log.read, seq, min(room, _READ_CHUNK))
        for s, payload in got:
            e = entry.decode(s, payload)
            self._buffer.add(e, index if s == seq else 0)
            self._cursor = (s + 1, 0)

    def _dispatch_replays(self) -> None:
        while self._replay and len(self._inflight) < self._settings.max_inflight_batches:
            seal = self._replay.popleft()
            self._start_delivery(seal, None)

    async def _seal_and_dispatch(self, spans: list[Span]) -> None:
        if not spans:
            return
        self._sealing += 1  # taken out of the buffer, not yet in flight: not idle
        try:
            await self._seal(spans)
        finally:
            self._sealing -= 1

    async def _seal(self, spans: list[Span]) -> None:
        start: Position = (spans[0].entry.seq, spans[0].start)
        last = spans[-1]
        end: Position = (last.entry.seq, last.end)
        cfg = self._config
        first_arrival = min(s.entry.arrival_ms for s in spans)
        sealed_ms = now_ms()
        unique = uuid.uuid5(_KEY_NAMESPACE, f"{self.incarnation}/{start[0]}/{start[1]}")
        key = cfg.keys.render_prefix(first_arrival) + cfg.keys.suffix(
            self.name, str(cfg.version), sealed_ms, unique)
        seal = await self._stream.ledger.seal(
            start, end, key, sealed_ms, {"version": cfg.version, "arrival_ms": first_arrival})
        self._start_delivery(seal, spans)

    def _start_delivery(self, seal: Seal, spans: list[Span] | None) -> None:
        task = asyncio.create_task(self._deliver(seal, spans), name=f"deliver-{self.name}-{seal.batch_id}")
        self._inflight[seal.batch_id] = task
        task.add_done_callback(lambda _t, bid=seal.batch_id: self._finished(bid))

    def _finished(self, batch_id: int) -> None:
        self._inflight.pop(batch_id, None)
        self._wakeup.set()

    # -- one batch ------------------------------------------------------------

    async def _deliver(self, seal: Seal, spans: list[Span] | None) -> None:
        batch: ObjectBatch | None = None
        destination = self._destination
        attempt = 0
        while True:
            try:
                if batch is None:
                    if spans is None:
                        spans = await asyncio.to_thread(self._read_sealed, seal)
                    if not spans:
                        log.error("A sealed batch's records are no longer in the spool; skipping it.",
                                  extra={"stream": self.name, "key": seal.key})
                        break
                    batch = self._object_batch(seal, spans)
                outcome = await destination.deliver(batch)
                if outcome.delivered_all:
                    break
                raise DestinationError(f"{len(outcome.retry) + len(outcome.rejected)} records not written")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self._note_failure(seal, exc, attempt)
                await asyncio.sleep(self._backoff(attempt))
                destination = self._destination
        await self._mark_done(seal)
        if batch is not None:
            self._note_success(batch)
        self._release()

    async def _mark_done(self, seal: Seal) -> None:
        attempt = 0
        while True:
            try:
                await self._stream.ledger.done([seal.batch_id])
                return
            except SpoolError as exc:
                attempt += 1
                log.error("Could not record a delivered batch in the ledger; retrying.",
                          extra={"stream": self.name, "key": seal.key, "error": str(exc)})
                await asyncio.sleep(self._backoff(attempt))

    def _read_sealed(self, seal: Seal) -> list[Span]:
        """Re-read a sealed batch's records from the spool (after a restart)."""
        spans: list[Span] = []
        seq = seal.start[0]
        added = self._clock()
        while seq <= seal.end[0]:
            got = self._stream.log.read(seq, _READ_CHUNK)
            if not got:
                break
            for s, payload in got:
                if s > seal.end[0]:
                    break
                e = entry.decode(s, payload)
                lo = seal.start[1] if s == seal.start[0] else 0
                hi = seal.end[1] if s == seal.end[0] else e.count
                if hi > lo:
                    spans.append(Span(e, lo, hi, added))
            seq = got[-1][0] + 1
        return spans

    def _object_batch(self, seal: Seal, spans: list[Span]) -> ObjectBatch:
        parts = tuple(s.entry.span(s.start, s.end) for s in spans)
        return ObjectBatch(
            stream=self.name,
            key=seal.key,
            parts=parts,
            size=sum(len(p) for p in parts),
            record_count=sum(s.end - s.start for s in spans),
            first_arrival_ms=int(seal.meta.get("arrival_ms", seal.sealed_ms)),
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        ceiling = min(self._settings.backoff_max_seconds, self._settings.backoff_base_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _note_failure(self, seal: Seal, exc: Exception, attempt: int) -> None:
        self.delivery.consecutive_failures += 1
        self.delivery.last_error = str(exc)
        self._metrics.delivery_failures.labels(self.name, self._destination.name).inc()
        if isinstance(exc, DestinationError):
            log.warning("Delivery failed; the batch stays in the spool and will be retried.",
                        extra={"stream": self.name, "key": seal.key, "attempt": attempt, "error": exc.message})
        else:
            log.error("Unexpected error while delivering; the batch will be retried.",
                      exc_info=exc, extra={"stream": self.name, "key": seal.key, "attempt": attempt})

    def _note_success(self, batch: ObjectBatch) -> None:
        if self.delivery.consecutive_failures:
            log.info("Delivery recovered.", extra={"stream": self.name, "after_failures":
                                                   self.delivery.consecutive_failures})
        self.delivery.consecutive_failures = 0
        self.delivery.last_error = None
        self.delivery.last_success_ms = now_ms()
        dest = self._destination.name
        self._metrics.delivered_records.labels(self.name, dest).inc(batch.record_count)
        self._metrics.delivered_bytes.labels(self.name, dest).inc(batch.size)
        self._metrics.delivered_objects.labels(self.name, dest).inc()

    def _release(self) -> None:
        freed = self._spool.release(self._stream, self._stream.ledger.low_watermark)
        if freed:
            log.debug("Released spool segments.", extra={"stream": self.name, "bytes": freed})

    # -- reporting ------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.bytes

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def idle(self) -> bool:
        """Nothing buffered, nothing in flight, nothing unread in the spool."""
        return (not self._buffer and not self._inflight and not self._sealing and not self._replay
                and not self._has_unread())
