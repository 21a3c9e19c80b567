"""Where a SQL application's output rows go: a delivery stream of this daemon, a Kinesis stream, or a Lambda function.

Every sink retries forever with backoff (AWS: output is retried indefinitely, and the application
backs up behind it); none drops a record.

Exactly once into a delivery stream of this daemon. The tick's records go into the stream's spool
(``Spool.append_sourced``: the PutRecordBatch path's durable append, one fsync) as entries of at most
500 records and 4 MiB, each carrying a marker ``{"analytics:<account>:<application>": "<tick>.<chunk>"}``
in its header, the way a Kinesis-sourced stream keeps its checkpoints inside its spool entries. The
application writes the checkpoint of a tick (with its output records and, per delivery stream, the
end of its raw log at that moment, ``since``) *before* it appends them, so after a crash the pending
tick is known and the entries it may have written lie at or after ``since``. ``recover`` reads the raw
log from there, collects the markers of that tick, and appends only the chunks that are missing:
every row once, whether the crash came before, between or after the appends. (The lookup needs those
entries still in the spool: they are, unless a whole spool segment filled and was delivered between
the append and the crash; that case is detected, logged, and resolved by sending again.)

Kinesis streams and Lambda functions have no such lookup: a tick pending at a crash is sent again,
so they get its rows at least once (AWS documents the same at-least-once delivery for its outputs).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import botocore.exceptions

from firehose.analytics.checkpoints import PendingOutput
from firehose.errors import ServiceUnavailableException, SpoolError
from firehose.processing.transform import (
    ANALYTICS_OUTPUT,
    MAX_PAYLOAD_BYTES,
    FunctionRef,
    InvocationError,
    TransformInput,
    WorkerPool,
)
from firehose.retry import Attempts, Backoff, retry_until
from firehose.spool import RAW, StreamSpool
from firehose.spool import entry as spool_entry

log = logging.getLogger("firehose.analytics")

_BACKOFF = Backoff(base=0.2, cap=10.0)
#: PutRecordBatch's limits, for a delivery stream's entries; PutRecords' for a Kinesis stream.
_FIREHOSE_RECORDS, _FIREHOSE_BYTES = 500, 4 * 1024 * 1024
_KINESIS_RECORDS, _KINESIS_BYTES = 500, 5 * 1024 * 1024
_SCAN_BYTES = 4 * 1024 * 1024


class Sink(Protocol):
    name: str

    def since(self) -> int | None:
        """What ``recover`` needs to know before a tick's checkpoint is written (None: nothing)."""

    async def send(self, tick: int, records: Sequence[bytes]) -> None:
        """Send a tick's records; returns once all of them were taken."""

    async def recover(self, tick: int, pending: PendingOutput) -> None:
        """Send what of a tick pending at a restart did not arrive (or all of it, at least once)."""


def chunks(records: Sequence[bytes], max_records: int, max_bytes: int) -> list[Sequence[bytes]]:
    out: list[Sequence[bytes]] = []
    start, size = 0, 0
    for i, r in enumerate(records):
        if i > start and (i - start >= max_records or size + len(r) > max_bytes):
            out.append(records[start:i])
            start, size = i, 0
        size += len(r)
    if start < len(records):
        out.append(records[start:])
    return out


def _warn(message: str, name: str, exc: Exception, attempt: int) -> None:
    if attempt <= 3 or attempt % 10 == 0:
        log.warning(message, extra={"output": name, "error": f"{type(exc).__name__}: {exc}", "attempt": attempt})


class DeliveryStreamSink:
    """A delivery stream of this daemon, exactly once (module docstring). ``resolve()`` returns its spool
    and raises LookupError while it does not exist or does not take records."""

    def __init__(self, name: str, resolve: Callable[[], StreamSpool], marker_key: str,
                 clock: Callable[[], int]) -> None:
        self.name = name
        self._resolve = resolve
        self.marker_key = marker_key
        self._clock = clock

    def since(self) -> int | None:
        try:
            return self._resolve().log.committed_next_seq
        except LookupError:
            return 0  # not there yet: whatever is written to it later is after this

    async def send(self, tick: int, records: Sequence[bytes], *, skip: frozenset[int] = frozenset()) -> None:
        for index, chunk in enumerate(chunks(records, _FIREHOSE_RECORDS, _FIREHOSE_BYTES)):
            if index not in skip:
                await self._append(chunk, f"{tick}.{index}")

    async def _append(self, chunk: Sequence[bytes], marker: str) -> None:
        async def append() -> None:
            stream = self._resolve()
            payload = spool_entry.encode_sourced(list(chunk), [self._clock()] * len(chunk), [],
                                                 {self.marker_key: marker})
            await stream.owner.append_sourced(stream, payload)

        await retry_until(append, backoff=_BACKOFF, retry_on=(ServiceUnavailableException, SpoolError, LookupError),
                          on_failure=lambda exc, n: _warn("Could not put output rows into the delivery stream",
                                                          self.name, exc, n))

    async def recover(self, tick: int, pending: PendingOutput) -> None:
        async def found() -> frozenset[int]:
            return await asyncio.to_thread(self.markers, self._resolve(), tick, pending.since or 0)

        written = await retry_until(found, backoff=_BACKOFF, retry_on=(LookupError,),
                                    on_failure=lambda exc, n: _warn("The output delivery stream is not there",
                                                                    self.name, exc, n))
        await self.send(tick, pending.records, skip=written)

    def markers(self, stream: StreamSpool, tick: int, since: int) -> frozenset[int]:
        """The chunks of ``tick`` already in the stream's raw log (blocking: read off the event loop)."""
        first = stream.log.first_seq
        if since < first:
            log.warning("Part of the output delivery stream's spool was freed since the pending tick was "
                        "written; rows of it already delivered may be delivered again.",
                        extra={"output": self.name, "tick": tick})
        prefix = f"{tick}."
        found: set[int] = set()
        seq = max(since, first)
        while stream.log.has_committed_from(seq):
            frames = stream.read_frames(RAW, seq, _SCAN_BYTES)
            if not frames:
                break
            for frame in frames:
                if frame.payload[0] == spool_entry.KIND_SOURCED:
                    marker = (spool_entry.decode(frame.seq, frame.payload).checkpoints or {}).get(self.marker_key)
                    if isinstance(marker, str) and marker.startswith(prefix):
                        found.add(int(marker[len(prefix):]))
            seq = frames[-1].seq + 1
        return frozenset(found)


class KinesisStreamSink:
    """A Kinesis stream, with PutRecords through boto3; failed entries are retried until all are taken."""

    def __init__(self, name: str, arn: str, client_factory: Callable[[], Any]) -> None:
        self.name = name
        self.arn = arn
        self._client_factory = client_factory
        self._client: Any = None

    def since(self) -> int | None:
        return None

    async def send(self, tick: int, records: Sequence[bytes]) -> None:
        for c, chunk in enumerate(chunks(records, _KINESIS_RECORDS, _KINESIS_BYTES)):
            entries = [{"Data": r, "PartitionKey": f"{tick}.{c}.{i}"} for i, r in enumerate(chunk)]
            run = Attempts(_BACKOFF)
            while entries:
                try:
                    if self._client is None:
                        self._client = await asyncio.to_thread(self._client_factory)
                    response = await asyncio.to_thread(self._client.put_records, StreamARN=self.arn, Records=entries)
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                    _warn("PutRecords to the output stream failed", self.name, exc, run.failed())
                    await run.wait()
                    continue
                entries = [e for e, result in zip(entries, response["Records"], strict=True) if "ErrorCode" in result]
                if entries:
                    run.failed()
                    await run.wait()

    async def recover(self, tick: int, pending: PendingOutput) -> None:
        await self.send(tick, pending.records)


class LambdaSink:
    """A Lambda-style function under the output delivery contract; records not ``Ok`` are sent again."""

    def __init__(self, name: str, function: FunctionRef, pool: WorkerPool, application_arn: str) -> None:
        self.name = name
        self.function = function
        self._pool = pool
        self._application_arn = application_arn

    def since(self) -> int | None:
        return None

    async def send(self, tick: int, records: Sequence[bytes]) -> None:
        left = {f"{tick}.{i}": r for i, r in enumerate(records)}
        hints = dict.fromkeys(left, 0)
        run = Attempts(_BACKOFF)
        while left:
            for ids in _payloads(left):
                inputs = [TransformInput(rid, left[rid], 0, {"lambdaDeliveryRecordMetadata": {"retryHint": hints[rid]}})
                          for rid in ids]
                head = {"invocationId": str(uuid.uuid4()),
                        "applicationArn": self._application_arn}
                try:
                    results = (await self._pool.invoke(self.function, head, inputs, contract=ANALYTICS_OUTPUT))[0]
                except InvocationError as exc:
                    results = ["DeliveryFailed"] * len(ids)
                    _warn("The output function failed", self.name, exc, run.failures + 1)
                for rid, result in zip(ids, results, strict=True):
                    if result == "Ok":
                        del left[rid]
                    else:
                        hints[rid] += 1
            if left:
                run.failed()
                await run.wait()

    async def recover(self, tick: int, pending: PendingOutput) -> None:
        await self.send(tick, pending.records)


def _payloads(records: dict[str, bytes]) -> list[list[str]]:
    """Record ids in runs whose event stays under Lambda's 6 MB request limit."""
    out: list[list[str]] = [[]]
    size = 0
    for rid, data in records.items():
        need = (len(data) + 2) // 3 * 4 + 120
        if out[-1] and size + need > MAX_PAYLOAD_BYTES - 1024:
            out.append([])
            size = 0
        out[-1].append(rid)
        size += need
    return out
