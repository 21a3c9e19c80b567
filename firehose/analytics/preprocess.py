"""A SQL application's Lambda preprocessor (``InputProcessingConfiguration.InputLambdaProcessor``).

The function runs in the daemon's transform workers (``processing.transform``: resolved by ARN through
``functions:`` / ``transforms_dir`` like a Firehose transform), under Kinesis Data Analytics' preprocessing
contract: the event is ``{invocationId, applicationArn, streamArn, records: [{recordId, data,
kinesisStreamRecordMetadata | kinesisFirehoseRecordMetadata}]}`` and each answer record is ``Ok`` (its
``data`` may hold several JSON documents or CSV rows: it is mapped as one record), ``Dropped`` or
``ProcessingFailed``. ``approximateArrivalTimestamp`` in the metadata is epoch milliseconds (the AWS
event models type it as a Long; the unit is not documented).

An invocation that fails (the function raises, times out, or answers against the contract: an
unknown, repeated or missing record id) is retried three times with backoff, as Firehose retries a
transform; then every record of it is a preprocessing failure. Failures go to the in-application
error stream (``Failure``), never to the application's SQL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from firehose.analytics.inputs import InputRecord
from firehose.processing.transform import (
    ANALYTICS_INPUT,
    MAX_PAYLOAD_BYTES,
    FunctionRef,
    InvocationError,
    TransformInput,
    WorkerPool,
)
from firehose.retry import Backoff, RetryExpired, retry_until

log = logging.getLogger("firehose.analytics")

RETRIES = 3


@dataclass(frozen=True, slots=True)
class Failure:
    """A record the preprocessor did not turn into data: its original bytes and why."""

    data: bytes
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Preprocessed:
    """Ok records (new data, the source record's arrival time and index in the batch), then failures."""

    records: list[tuple[bytes, int, int]]
    failures: list[Failure]
    dropped: int


class Preprocessor:
    def __init__(self, function: FunctionRef, pool: WorkerPool, *, application_arn: str, stream_arn: str,
                 backoff: Backoff | None = None) -> None:
        self.function = function
        self._pool = pool
        self._head = {"applicationArn": application_arn, "streamArn": stream_arn}
        self._backoff = backoff or Backoff(0.2, 5.0)

    async def run(self, records: Sequence[InputRecord]) -> Preprocessed:
        ok: list[tuple[bytes, int, int]] = []
        failures: list[Failure] = []
        dropped = 0
        for start, chunk in _chunks(records):
            results = await self._invoke(chunk)
            if isinstance(results, Failure):
                failures.extend(Failure(r.data, results.name, results.message) for r in chunk)
                continue
            statuses, datas = results
            for i, (record, status, data) in enumerate(zip(chunk, statuses, datas, strict=True)):
                if status == "Ok":
                    ok.append((data, record.arrival_ms, start + i))
                elif status == "Dropped":
                    dropped += 1
                else:
                    failures.append(Failure(record.data, "Lambda_ProcessingFailed",
                                            "The preprocessing function marked the record ProcessingFailed."))
        return Preprocessed(ok, failures, dropped)

    async def _invoke(self, chunk: Sequence[InputRecord]) -> tuple[list[str], list[bytes]] | Failure:
        ids = [r.record_id for r in chunk]
        if len(set(ids)) != len(ids):  # sequence numbers repeat across shards of some servers
            ids = [f"{rid}.{i}" for i, rid in enumerate(ids)]
        inputs = [TransformInput(rid, r.data, r.arrival_ms, r.metadata) for rid, r in zip(ids, chunk, strict=True)]
        head = {"invocationId": str(uuid.uuid4()), **self._head}

        async def invoke() -> tuple[list[str], list[bytes]]:
            statuses, datas, _meta, _codes, _messages = await self._pool.invoke(self.function, head, inputs,
                                                                                contract=ANALYTICS_INPUT)
            return statuses, datas

        def failed(exc: Exception, attempt: int) -> None:
            log.warning("The preprocessing function failed.", extra={
                "function": self.function.arn, "attempt": attempt, "error": str(exc)})

        try:
            return await retry_until(invoke, backoff=self._backoff, max_attempts=RETRIES + 1,
                                     retry_on=(InvocationError,), on_failure=failed)
        except RetryExpired as gave_up:
            last = gave_up.last
            code = last.code if isinstance(last, InvocationError) else type(last).__name__
            return Failure(b"", code.replace(".", "_"), f"Preprocessing failed: {last}")


def _chunks(records: Sequence[InputRecord]) -> list[tuple[int, Sequence[InputRecord]]]:
    """Runs of records whose event stays under Lambda's 6 MB request limit (base64 and some JSON each)."""
    out: list[tuple[int, Sequence[InputRecord]]] = []
    start, size = 0, 0
    for i, r in enumerate(records):
        need = (len(r.data) + 2) // 3 * 4 + 300
        if i > start and size + need > MAX_PAYLOAD_BYTES - 1024:
            out.append((start, records[start:i]))
            start, size = i, 0
        size += need
    if start < len(records):
        out.append((start, records[start:]))
    return out
