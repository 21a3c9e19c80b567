"""What a SQL application reads: a Kinesis stream's shards, or the records a delivery stream of this daemon accepts.

Readers run as tasks and hand ``Fetched`` batches to a bounded queue, which the application's
tick drains: a slow application (outputs backing up) stops its readers there, and the backlog stays
in the Kinesis stream or the spool. A reader never decides what is checkpointed: each ``Fetched``
says where its shard stands after it, and the application folds that into the positions it saves
(``apply``) only for batches it pushed into the engine. A restart hands those positions back.

Kinesis (``KinesisStreamsInput``): every shard with GetRecords through boto3 (``sources.kinesis``'s
client: the configured endpoint, the AWS configuration, else the in-process sidecar), a child shard
only once its parents are read to their end (records of a key stay in order across a reshard).
Positions: ``{"start", "since_ms", "shards": {shard: last sequence number}, "finished": [...]}``. A shard
with a sequence number resumes after it; one without starts at the trim horizon (``TRIM_HORIZON``)
or at ``since_ms``, the time the application started at ``NOW`` (``AT_TIMESTAMP``): a shard that had
no record yet when the application stopped resumes where ``NOW`` was, not at the trim horizon.
KPL-aggregated records are given as they are (AWS: de-aggregate them in the preprocessor).

Delivery stream (``KinesisFirehoseInput``): the stream's raw spool log, from a position ``[seq, index]``:
the records exactly as accepted, once they are durable. While the application runs, the raw log is
held from its checkpointed position (``StreamSpool.hold_raw``), so the delivery stream never frees
records the application has not checkpointed past. A stopped application holds nothing (AWS keeps
no backlog of a delivery stream for an application either): ``LAST_STOPPED_POINT`` resumes at its
position if the spool still has it, else at the oldest record it has, and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from firehose.retry import Backoff, retry_until
from firehose.sources.lineage import ShardReading, error_code, list_all_shards, read_in_lineage
from firehose.spool import RAW, StreamSpool
from firehose.spool import entry as spool_entry

log = logging.getLogger("firehose.analytics")

NOW = "NOW"
TRIM_HORIZON = "TRIM_HORIZON"
LAST_STOPPED_POINT = "LAST_STOPPED_POINT"
#: The shard name of a delivery stream input (it has one sequence of records).
FIREHOSE_SHARD = "firehose"
_BACKOFF = Backoff(base=0.2, cap=10.0)
_READ_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class InputRecord:
    """One record as read: its bytes, the source's arrival time (ms), and what the preprocessor is told."""

    data: bytes
    arrival_ms: int
    #: The preprocessor's record id (the sequence number for a Kinesis source).
    record_id: str
    #: The preprocessing contract's metadata member (``kinesisStreamRecordMetadata`` ...), whole.
    metadata: dict[str, Any]


@dataclass(slots=True)
class Fetched:
    """Records read from one shard, and where that shard stands after them."""

    shard: str
    records: list[InputRecord]
    position: Any
    #: The shard is closed and read to its end (its children may start).
    finished: bool = False


def _millis(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value * 1000)
    return int(value.timestamp() * 1000)


class KinesisReader(ShardReading):
    """Every shard of a Kinesis stream, parents before children (see the module docstring)."""

    def __init__(self, arn: str, client_factory: Callable[[], Any], positions: dict[str, Any],
                 queue: asyncio.Queue[Fetched], *, poll_seconds: float = 0.2, name: str = "") -> None:
        super().__init__(client_factory)
        self.arn = arn
        self._positions = positions
        self._queue = queue
        self._poll = poll_seconds
        self._name = name
        self._finished: set[str] = set(positions.get("finished", []))
        self.last_error: str | None = None

    @staticmethod
    def initial(start: str, now_ms: int) -> dict[str, Any]:
        """Positions of an application starting afresh at ``NOW`` or ``TRIM_HORIZON``."""
        return {"start": start, "since_ms": now_ms, "shards": {}, "finished": []}

    @staticmethod
    def apply(positions: dict[str, Any], fetched: Fetched) -> None:
        """Fold a batch the application pushed into the positions it will checkpoint."""
        if fetched.position is not None:
            positions["shards"][fetched.shard] = fetched.position
        if fetched.finished and fetched.shard not in positions["finished"]:
            positions["finished"].append(fetched.shard)
            positions["shards"].pop(fetched.shard, None)

    def _main(self) -> Coroutine[Any, Any, None]:
        return self._run()

    def _failed(self, what: str, exc: Exception, attempt: int) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if attempt <= 3 or attempt % 10 == 0:
            log.warning(f"{what}; retrying.", extra={"application": self._name, "kinesis_stream": self.arn,
                                                     "error": self.last_error, "attempt": attempt})

    async def list_shards(self) -> list[dict[str, Any]]:
        return await list_all_shards(self._call, self.arn)

    async def _run(self) -> None:
        while True:
            shards = await retry_until(self.list_shards, backoff=_BACKOFF, on_failure=functools.partial(
                self._failed, "Could not list the input stream's shards"))
            listed = {s["ShardId"]: s for s in shards}
            await read_in_lineage(listed, self._readers, self._finished, self._read_shard)

    async def _iterator(self, shard_id: str, after: str | None) -> str:
        fresh: dict[str, Any] = {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": self._positions["since_ms"] / 1000} \
            if self._positions.get("start") == NOW else {"ShardIteratorType": TRIM_HORIZON}
        return await self._shard_iterator(self.arn, shard_id, after, fresh, {"application": self._name})

    async def _read_shard(self, shard_id: str) -> None:
        """Read one shard until it is closed and read to its end (then return), or forever."""
        after: str | None = self._positions["shards"].get(shard_id)
        iterator: str | None = None

        async def get_records() -> dict[str, Any]:
            nonlocal iterator
            while True:
                try:
                    if iterator is None:
                        iterator = await self._iterator(shard_id, after)
                    return await self._call("get_records", ShardIterator=iterator, Limit=10000)  # type: ignore[no-any-return]
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) != "ExpiredIteratorException":
                        raise
                    iterator = None

        def failed(exc: Exception, attempt: int) -> None:
            nonlocal iterator
            throttled = isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in (
                "ProvisionedThroughputExceededException", "LimitExceededException")
            if not throttled:
                iterator = None
                self._failed("GetRecords failed", exc, attempt)

        while True:
            response = await retry_until(get_records, backoff=_BACKOFF, on_failure=failed)
            self.last_error = None
            records = response.get("Records", [])
            iterator = response.get("NextShardIterator")
            if records:
                after = records[-1]["SequenceNumber"]
                batch = [InputRecord(bytes(r["Data"]), _millis(r["ApproximateArrivalTimestamp"]), r["SequenceNumber"],
                                     {"kinesisStreamRecordMetadata": {
                                         "shardId": shard_id, "partitionKey": r["PartitionKey"],
                                         "sequenceNumber": r["SequenceNumber"],
                                         "approximateArrivalTimestamp": _millis(r["ApproximateArrivalTimestamp"])}})
                         for r in records]
                await self._queue.put(Fetched(shard_id, batch, after, finished=iterator is None))
            elif iterator is None:
                await self._queue.put(Fetched(shard_id, [], after, finished=True))
            if iterator is None:
                return
            if not records or int(response.get("MillisBehindLatest", 0)) == 0:
                await asyncio.sleep(self._poll)


class FirehoseReader:
    """The records a delivery stream of this daemon accepts, from its raw spool log (module docstring)."""

    def __init__(self, stream: StreamSpool, positions: dict[str, Any], queue: asyncio.Queue[Fetched], *,
                 hold: str, poll_seconds: float = 0.2, name: str = "") -> None:
        self._stream = stream
        self._queue = queue
        self._poll = poll_seconds
        self._hold = hold
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        seq, index = positions["position"]
        first = stream.log.first_seq
        if seq < first:
            log.warning("The delivery stream no longer holds the records after the application's last position; "
                        "reading from the oldest it holds.", extra={"application": name, "position": seq,
                                                                     "oldest": first})
            seq, index = first, 0
        self._next: tuple[int, int] = (seq, index)
        #: Records before this are checkpointed; the raw log keeps the rest for the application.
        self.checkpointed: tuple[int, int] = (seq, index)

    @staticmethod
    def initial(stream: StreamSpool) -> dict[str, Any]:
        """Positions of an application starting at ``NOW``: after the newest durable record."""
        return {"position": [stream.log.committed_next_seq, 0]}

    @staticmethod
    def apply(positions: dict[str, Any], fetched: Fetched) -> None:
        positions["position"] = list(fetched.position)

    def checkpointed_at(self, positions: dict[str, Any]) -> None:
        """The application saved ``positions``: the raw log may free what lies before them."""
        seq, index = positions["position"]
        self.checkpointed = (seq, index)
        with contextlib.suppress(OSError):
            self._stream.owner.release_held(self._stream)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stream.hold_raw(self._hold, lambda: self.checkpointed)
        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self._stream.subscribe(wake)
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        self._stream.unhold_raw(self._hold)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            seq, index = self._next
            if not self._stream.log.has_committed_from(seq):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                continue
            frames = await asyncio.to_thread(self._stream.read_frames, RAW, seq, _READ_BYTES)
            for frame in frames:
                e = spool_entry.decode(frame.seq, frame.payload)
                first = index if frame.seq == seq else 0
                records = [InputRecord(bytes(e.record(i)), e.arrival(i), f"{frame.seq}.{i}",
                                       {"kinesisFirehoseRecordMetadata": {"approximateArrivalTimestamp": e.arrival(i)}})
                           for i in range(first, e.count)]
                self._next = (frame.seq + 1, 0)
                if records:
                    await self._queue.put(Fetched(FIREHOSE_SHARD, records, self._next))

