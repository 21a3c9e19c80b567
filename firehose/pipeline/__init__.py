"""The pipeline of one delivery stream: feed (when records are processed) and deliver.

    raw log ─▶ [Feeder: processing chain ─▶ processed log] ─▶ Deliverer ─▶ destination

A stream whose definition processes records (a Lambda, built-in processors,
dynamic partitioning) runs in *processing* mode: the feeder turns raw records
into processed entries and the deliverer reads those. Any other stream runs in
*raw* mode: the deliverer reads the raw log directly, with no extra copy.
Conversion, compression and encryption happen per object in either mode.

With ``S3BackupMode: Enabled`` a third part, the source-record backup
(``backup.py``), reads the raw log too and writes it to the backup bucket.

A definition change that keeps the mode is applied in place
(``reconfigure``); one that changes it needs a new pipeline, which the daemon
starts once this one has stopped (sealed everything it buffered), so the
switch never loses or repeats a record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from firehose.catalog import StreamState
from firehose.definitions import delivery_stream_arn
from firehose.destinations import Destination, ObjectDestination
from firehose.encoding.builder import ObjectBuilder
from firehose.encoding.encrypt import Keyring
from firehose.pipeline.activity import ActivityLog
from firehose.pipeline.backup import SourceBackup
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.deliver import Deliverer, DeliveryState
from firehose.pipeline.feed import Feeder
from firehose.pipeline.memory import MemoryBudget
from firehose.processing.chain import Processor
from firehose.processing.transform import WorkerPool
from firehose.settings import Settings
from firehose.spool import PROC, RAW, StreamSpool
from firehose.spool.cursor import BatchCursor, ProcessCursor
from firehose.tap import Taps
from firehose.telemetry import Metrics, StreamLevels

__all__ = ["DeliveryState", "Pipeline", "StreamConfig"]


class Pipeline:
    def __init__(
        self,
        state: StreamState,
        config: StreamConfig,
        stream_spool: StreamSpool,
        destination: Destination,  # type: ignore[type-arg]
        settings: Settings,
        metrics: Metrics,
        *,
        store: ObjectDestination | None = None,
        workers: WorkerPool | None = None,
        convert_pool: Executor | None = None,
        keyring: Keyring | None = None,
        taps: Taps | None = None,
        memory: MemoryBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        backup: ObjectDestination | None = None,
    ) -> None:
        """``memory``: the process-wide budget all streams' buffers share (one of this stream's own
        when None). ``backup``: the bucket of the source-record backup, when ``config.backup`` is set."""
        self.name = state.name
        self.mode = PROC if config.plan.active else RAW
        builder = ObjectBuilder(state.name, keyring, convert_pool)
        memory = memory or MemoryBudget(settings.memory.max_buffered_bytes)
        # The backup's hold on the raw log comes first: the main readers release raw segments as they open.
        self.backup: SourceBackup | None = None
        if config.backup is not None:
            assert backup is not None, "a stream that backs up its source records has a backup bucket"
            self.backup = SourceBackup(name=state.name, incarnation=state.incarnation, stream_spool=stream_spool,
                                       config=config.backup, destination=backup, builder=builder,
                                       settings=settings, metrics=metrics, memory=memory, clock=clock)
        else:
            SourceBackup.forget(stream_spool)
        self.activity = ActivityLog(state.name, settings.log.summary_seconds)
        self.deliverer = Deliverer(
            name=state.name, incarnation=state.incarnation,
            cursor=BatchCursor(stream_spool, self.mode), config=config,
            destination=destination, builder=builder, store=store, settings=settings, metrics=metrics,
            activity=self.activity, taps=taps, memory=memory, clock=clock)
        self.feeder: Feeder | None = None
        if self.mode == PROC:
            arn = delivery_stream_arn(settings.region, state.account_id, state.name)
            kinesis = state.definition.kinesis_stream_source_configuration
            msk = state.definition.msk_source_configuration
            source_arn = msk.msk_cluster_arn if msk else kinesis.kinesis_stream_arn if kinesis else None
            duration = metrics.processing_duration.labels(state.name)
            invocations = metrics.processing_invocations.labels(state.name)
            successes = metrics.processing_success.labels(state.name)

            def invoked(seconds: float, ok: bool) -> None:
                duration.observe(seconds)
                invocations.inc()
                if ok:
                    successes.inc()

            processor = Processor(config.plan, config.keys, workers, stream_arn=arn, region=settings.region,
                                  source_arn=source_arn, source_is_msk=msk is not None, on_invocation=invoked)
            self.feeder = Feeder(name=state.name, cursor=ProcessCursor(stream_spool), config=config,
                                 processor=processor, metrics=metrics, activity=self.activity, memory=memory,
                                 clock=clock)

    def start(self, *, deliver_after: Awaitable[object] | None = None) -> None:
        """``deliver_after``: what delivery waits for first (the worker processes it needs)."""
        if self.feeder is not None:
            self.feeder.start()
        self.deliverer.start(after=deliver_after)
        if self.backup is not None:
            self.backup.start()

    def can_reconfigure(self, config: StreamConfig) -> bool:
        """Whether a new version can be applied in place (same mode, same processing)."""
        return (PROC if config.plan.active else RAW) == self.mode and (
            self.feeder is None or config.plan == self.feeder.config.plan) and (
            (config.backup is None) == (self.backup is None))

    def reconfigure(self, config: StreamConfig, destination: Destination,  # type: ignore[type-arg]
                    store: ObjectDestination | None = None, backup: ObjectDestination | None = None) -> None:
        self.deliverer.reconfigure(config, destination, store)
        if self.backup is not None and config.backup is not None and backup is not None:
            self.backup.reconfigure(config.backup, backup)

    async def discard(self) -> None:
        """Stop at once without delivering what is left (the stream was deleted, its spool goes)."""
        if self.feeder is not None:
            await self.feeder.discard()
        await self.deliverer.discard()
        if self.backup is not None:
            await self.backup.discard()
        self.activity.flush()

    async def stop(self, timeout: float) -> None:
        if self.feeder is not None:
            await self.feeder.stop()
        if self.backup is not None:  # side by side: a stop gives each of them ``timeout``, not the sum
            await asyncio.gather(self.deliverer.stop(timeout), self.backup.stop(timeout))
        else:
            await self.deliverer.stop(timeout)
        self.activity.flush()

    @property
    def delivery(self) -> DeliveryState:
        return self.deliverer.delivery

    @property
    def buffered_bytes(self) -> int:
        return (self.deliverer.buffered_bytes + (self.feeder.buffered_bytes if self.feeder else 0)
                + (self.backup.buffered_bytes if self.backup else 0))

    @property
    def inflight(self) -> int:
        return self.deliverer.inflight

    def levels(self) -> StreamLevels:
        """The deliverer's levels, with the oldest record still waiting for the processing chain."""
        levels = self.deliverer.levels()
        waiting = self.feeder.oldest_arrival_ms() if self.feeder is not None else None
        if waiting is not None and (levels.oldest_arrival_ms is None or waiting < levels.oldest_arrival_ms):
            levels.oldest_arrival_ms = waiting
        levels.buffered_bytes = self.buffered_bytes
        if self.backup is not None:
            levels.backup = self.backup.levels()
        return levels

    def idle(self) -> bool:
        return self.deliverer.idle() and (self.feeder is None or self.feeder.idle()) and (
            self.backup is None or self.backup.idle())
