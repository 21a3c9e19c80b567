"""Where records a destination gave up on go, and the backups of record destinations.

Firehose never drops a record silently: records a record destination
(OpenSearch, Splunk, HTTP endpoint) still failed when its retry duration ran
out are written, each as an error document with the reason, to the error
output of the stream's object store (its ``S3Configuration``); with
``S3BackupMode: AllData`` every batch is also copied there. These writes must
land, so they are retried for as long as it takes, as Firehose does. A
rejection the destination's protocol keeps out of the error output (an HTTP
endpoint's 413 for a lone record) is logged and counted instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from firehose import failures
from firehose.clock import now_ms
from firehose.destinations import Failure, ObjectDestination
from firehose.encoding.builder import Encoding, ObjectBuilder
from firehose.errors import DestinationError
from firehose.pipeline.errorrecords import RecentErrors
from firehose.records import DeliveryRecord, ObjectBatch
from firehose.retry import Backoff, retry_until
from firehose.telemetry import Metrics

log = logging.getLogger("firehose.pipeline")


class ErrorOutput:
    """The error output and backups of one stream: always landed, retried until they are.

    ``on_failure(exc, attempt)`` reports a failed write (the deliverer counts and logs it like any
    failed delivery attempt, so /readyz shows an object store that is down).
    """

    def __init__(self, stream: str, builder: ObjectBuilder, metrics: Metrics, backoff: Backoff,
                 clock: Callable[[], float], recent: RecentErrors | None = None) -> None:
        self._stream = stream
        self._recent = recent or RecentErrors()
        self._builder = builder
        self._metrics = metrics
        self._backoff = backoff
        self._clock = clock

    async def failed(self, store: ObjectDestination, encoding: Encoding, key: str, error_output_type: str,
                     records: Sequence[DeliveryRecord], failed: dict[int, tuple[Failure, int]],
                     on_failure: Callable[[Exception, int], object]) -> None:
        """Write the records ``failed`` names (index → last failure, attempts) under ``key``."""
        ended = now_ms()
        docs = tuple(failures.document(raw=records[i].data, arrival_ms=records[i].arrival_ms, code=f.code or "Error",
                                       message=f.reason, attempts=attempts, ended_ms=ended,
                                       extra=dict(f.extra) if f.extra else None)
                     for i, (f, attempts) in sorted(failed.items()))
        first = min(records[i].arrival_ms for i in failed)
        obj = await self._builder.documents(encoding, key, docs, first)
        await self.store(store, obj, on_failure)
        self._metrics.error_output_records.labels(self._stream, error_output_type).inc(len(docs))
        # The stream's WARNING about it is its activity summary (at most one a window, with the reason).
        self._recent.add(error_output_type, obj.key, obj.documents)
        log.info("Records went to the error output after their retry duration.",
                    extra={"stream": self._stream, "records": len(docs), "key": obj.key})

    async def store(self, store: ObjectDestination, obj: ObjectBatch,
                    on_failure: Callable[[Exception, int], object], *, backup: bool = False) -> None:
        """Write one object (a backup, error documents) to the object store, retrying until it lands.

        A backup counts as ``BackupToS3`` (its attempts too); error documents are not deliveries.
        """
        m = self._metrics

        async def attempt() -> None:
            if backup:
                m.backup_attempts.labels(self._stream).inc()
            outcome = await store.deliver(obj)
            if not outcome.delivered_all:
                raise DestinationError("the object store did not take the object")
            if backup:
                m.backup_success.labels(self._stream).inc()

        await retry_until(attempt, backoff=self._backoff, on_failure=on_failure, clock=self._clock)
        m.objects.labels(self._stream).inc()
        if backup:
            m.backup_records.labels(self._stream).inc(obj.record_count)
            m.backup_bytes.labels(self._stream).inc(obj.size)

    def refused(self, destination: str, record: DeliveryRecord, failure: Failure) -> None:
        """A rejection the protocol keeps out of the error output (HTTP 413 for a lone record)."""
        self._metrics.refused_records.labels(self._stream, destination, failure.code).inc()
        log.error("The destination refused a record for good; as its protocol says, it is not written to the "
                  "error output (a backup mode of AllData keeps a copy).",
                  extra={"stream": self._stream, "record_id": record.record_id, "bytes": len(record.data),
                         "code": failure.code, "reason": failure.reason})
