"""Logging set-up, Prometheus metrics, and the garbage collector's tuning for a server process.

Log lines are one sentence followed by ``key=value`` fields taken from the
record's ``extra``, so they read well in a terminal and parse in a log system.
Metrics live in one registry per daemon (tests start several daemons in one
process) and are exposed at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if not fields:
            return base
        text = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        head, sep, rest = base.partition("\n")
        return f"{head} {text}{sep}{rest}"


def _quote(value: Any) -> str:
    s = str(value)
    return f'"{s}"' if (" " in s or not s) else s


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
    record's ``extra`` fields as they are (strings for what JSON cannot hold), ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        line.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at ``level``, as text (``KeyValueFormatter``) or JSON lines (``JsonFormatter``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries' own per-request lines (httpx logs every request at INFO) are noise here.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


#: CloudWatch's ``DeliveryTo<X>`` for a destination (by its name and error output type), in snake case.
_DELIVERY_FAMILY = {
    "s3": "s3", "local": "s3", "redshift": "redshift", "splunk": "splunk", "http_endpoint": "http_endpoint",
    "iceberg": "iceberg",
    "elasticsearch-failed": "elasticsearch", "AmazonOpenSearchService-failed": "amazon_opensearch_service",
    "AmazonOpenSearchServerless-failed": "amazon_opensearch_serverless",
}

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: How far back a ``…_success_ratio`` gauge looks (the spec's "last 60 s").
RATIO_WINDOW_S = 60


#: The family of a stream's source-record backup (``S3BackupMode: Enabled``): ``BackupToS3.*``, whose
#: figures are ``firehose_backup_to_s3_*`` rather than ``firehose_delivery_to_x_*``.
BACKUP = "backup_to_s3"


def _family_name(family: str) -> tuple[str, str]:
    """The Prometheus prefix and the CloudWatch prefix of a family's figures."""
    if family == BACKUP:
        return "firehose_backup_to_s3", "BackupToS3"
    return f"firehose_delivery_to_{family}", f"DeliveryTo{_CLOUDWATCH_NAMES.get(family, family)}"


def delivery_family(name: str, error_output_type: str = "") -> str:
    """The ``x`` of ``firehose_delivery_to_x_*`` for a destination (a local directory stands in for S3;
    the search destinations are told apart by their error output type)."""
    if name == "elasticsearch":
        return _DELIVERY_FAMILY.get(error_output_type, "amazon_opensearch_service")
    return _DELIVERY_FAMILY.get(name, name)


class WindowRatio:
    """Successes over attempts in the last ``RATIO_WINDOW_S`` seconds, in one-second buckets.

    With no attempt in the window it keeps the last ratio seen (``None`` before the first attempt):
    an idle stream did not start failing.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [second, successes, attempts]
        self._last: float | None = None

    def add(self, successes: float, attempts: float) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
            bucket[1] += successes
            bucket[2] += attempts
        else:
            self._buckets.append([second, successes, attempts])

    def value(self) -> float | None:
        floor = int(self._clock()) - RATIO_WINDOW_S
        while self._buckets and self._buckets[0][0] <= floor:
            self._buckets.popleft()
        attempts = sum(b[2] for b in self._buckets)
        if attempts:
            self._last = sum(b[1] for b in self._buckets) / attempts
        return self._last


@dataclass
class StreamLevels:
    """A stream's sampled levels, read on each scrape from its pipeline (no work on the hot path)."""

    #: ``x`` of ``firehose_delivery_to_x_*`` (``delivery_family``).
    destination: str
    #: Arrival (epoch ms) of the oldest record not yet delivered; None when nothing is held.
    oldest_arrival_ms: int | None
    buffered_bytes: int
    #: Dynamic partitioning only: active partitions, their limit, and whether the limit is breached.
    partitions: int | None = None
    partitions_limit: int | None = None
    partitions_exceeded: bool = False
    #: The stream's source-record backup, when it has one (its freshness is ``BackupToS3.DataFreshness``).
    backup: StreamLevels | None = None


class Delivery:
    """The ``firehose_delivery_to_x_*`` children of one stream and destination family.

    Attempt units follow CloudWatch's ``.Success``: an object PUT (S3, Redshift COPY) or one
    request (HTTP endpoint), one indexed record (OpenSearch, Splunk).
    """

    def __init__(self, metrics: Metrics, stream: str, family: str) -> None:
        f = metrics.delivery_families(family)
        self.records = f["records"].labels(stream)
        self.bytes = f["bytes"].labels(stream)
        self._success = f["success"].labels(stream)
        self._attempts = f["attempts"].labels(stream)
        self.ratio = WindowRatio()
        # The family's own figures (``_FAMILY_METRICS``), None where it has none.
        extra = {k: v.labels(stream) for k, v in f.items() if k in _OWN}
        self._processed = (extra["processed_records"], extra["processed_bytes"]) if "processed_records" in extra \
            else None
        self._judged = (extra["auth_failure"], extra["delivery_rejected"]) if "auth_failure" in extra else None
        self._ack_latency = extra.get("data_ack_latency")
        self._rows = (extra["incoming_rows"], extra["successful_rows"], extra["failed_rows"]) \
            if "incoming_rows" in extra else None

    @property
    def counts_processed(self) -> bool:
        """Whether attempts are counted as ``ProcessedRecords``/``ProcessedBytes`` (an HTTP endpoint)."""
        return self._processed is not None

    def attempted(self, successes: int, attempts: int) -> None:
        if attempts:
            self._success.inc(successes)
            self._attempts.inc(attempts)
            self.ratio.add(successes, attempts)

    def rows(self, incoming: int, successful: int) -> None:
        """An attempt's rows (Iceberg's ``IncomingRowCount`` and ``SuccessfulRowCount``)."""
        if self._rows is not None:
            self._rows[0].inc(incoming)
            self._rows[1].inc(successful)

    def rows_failed(self, failed: int) -> None:
        """Rows sent to the error output (Iceberg's ``FailedRowCount``)."""
        if self._rows is not None:
            self._rows[2].inc(failed)

    def processed(self, records: int, size: int) -> None:
        """Records and bytes an attempt sent, retries included (``DeliveryToHttpEndpoint.Processed*``)."""
        if self._processed is not None:
            self._processed[0].inc(records)
            self._processed[1].inc(size)

    def judged(self, *, auth_failed: bool, rejected: bool) -> None:
        """How the last attempt went (OpenSearch's ``AuthFailure`` and ``DeliveryRejected``, 0 or 1)."""
        if self._judged is not None:
            self._judged[0].set(1 if auth_failed else 0)
            self._judged[1].set(1 if rejected else 0)

    def acked(self, seconds: Iterable[float]) -> None:
        """Each acknowledged request's wait for its ack (Splunk's ``DataAckLatency``)."""
        if self._ack_latency is not None:
            for s in seconds:
                self._ack_latency.observe(s)


class Ingest:
    """The per-stream children PutRecord/PutRecordBatch touch, looked up once per stream."""

    def __init__(self, metrics: Metrics, stream: str) -> None:
        self.records = metrics.incoming_records.labels(stream)
        self.bytes = metrics.incoming_bytes.labels(stream)
        self.put_requests = metrics.incoming_put_requests.labels(stream)
        self.put_record_bytes = metrics.put_record_bytes.labels(stream)
        self.batch_bytes = metrics.put_record_batch_bytes.labels(stream)
        self.batch_records = metrics.put_record_batch_records.labels(stream)
        self.throttled = metrics.throttled_records.labels(stream)


class Metrics:
    """Every metric the daemon exports, in one registry, under the names of docs/metrics.md.

    The names are AWS/Firehose's CloudWatch metrics in Prometheus form (``observability`` spec §5):
    amounts are ``…_total`` counters, ``.Success`` ratios are a ``…_success_total`` and an
    ``…_attempts_total`` counter (plus a ``…_success_ratio`` gauge over the last minute), ages
    and levels are gauges in seconds, latencies histograms in seconds. The delivery stream is the
    ``delivery_stream`` label. Counters count where AWS emits the data point: ``incoming`` after
    throttling, ``delivery_to`` after the destination acknowledged (records sent to the error
    output are not delivered).
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ds = ["delivery_stream"]
        # -- ingestion (Direct PUT) ------------------------------------------------------------
        self.incoming_records = Counter(
            "firehose_incoming_records", "IncomingRecords: records accepted (durably spooled) after throttling, "
            "from PutRecord, PutRecordBatch, an HTTP endpoint delivery or a Kinesis source.", ds, registry=r)
        self.incoming_bytes = Counter(
            "firehose_incoming_bytes", "IncomingBytes: bytes of record data accepted after throttling.", ds,
            registry=r)
        self.incoming_put_requests = Counter(
            "firehose_incoming_put_requests", "IncomingPutRequests: successful PutRecord and PutRecordBatch calls.",
            ds, registry=r)
        self.throttled_records = Counter(
            "firehose_throttled_records", "ThrottledRecords: records refused with ServiceUnavailableException "
            "\"Slow down.\" by the stream's throughput quota (quotas:).", ds, registry=r)
        self.put_record_bytes = Counter(
            "firehose_put_record_bytes", "PutRecord.Bytes: bytes accepted by PutRecord.", ds, registry=r)
        self.put_record_batch_bytes = Counter(
            "firehose_put_record_batch_bytes", "PutRecordBatch.Bytes: bytes accepted by PutRecordBatch.", ds,
            registry=r)
        self.put_record_batch_records = Counter(
            "firehose_put_record_batch_records", "PutRecordBatch.Records: records accepted by PutRecordBatch.", ds,
            registry=r)
        self.failed_records = Counter(
            "firehose_failed_put_records", "Records refused one by one inside PutRecordBatch (not CloudWatch).",
            ["delivery_stream", "code"], registry=r)
        self.receiver_duplicates = Counter(
            "firehose_http_endpoint_duplicate_requests", "HTTP endpoint deliveries received again with a request "
            "id already accepted (answered without spooling twice; not CloudWatch).", ds, registry=r)
        self.api_requests = Counter(
            "firehose_api_requests", "<Operation>.Requests: API calls by operation and outcome.",
            ["operation", "outcome"], registry=r)
        self.api_duration = Histogram(
            "firehose_api_request_duration_seconds", "<Operation>.Latency: time to answer a successful call.",
            ["operation"], registry=r, buckets=_LATENCY_BUCKETS)
        # -- Kinesis Data Streams source --------------------------------------------------------
        self.kinesis_read_records = Counter(
            "firehose_data_read_from_kinesis_stream_records", "DataReadFromKinesisStream.Records.", ds, registry=r)
        self.kinesis_read_bytes = Counter(
            "firehose_data_read_from_kinesis_stream_bytes", "DataReadFromKinesisStream.Bytes.", ds, registry=r)
        self.source_throttled = Counter(
            "firehose_source_throttled_calls", "ThrottledGetRecords / ThrottledGetShardIterator / "
            "ThrottledDescribeStream: source calls answered with a throttling error.", ["delivery_stream", "operation"],
            registry=r)
        self.kinesis_behind = Gauge(
            "firehose_kinesis_behind_latest_seconds", "KinesisMillisBehindLatest (in seconds): how far the last "
            "record read lags the source's newest record, the largest over its shards.", ds, registry=r)
        self.kinesis_leases = Gauge(
            "firehose_kinesis_source_leases", "Shards of the Kinesis stream this daemon holds the lease of "
            "(cluster.mode fleet: the others' are read by other daemons).", ds, registry=r)
        # -- MSK (Kafka) source -------------------------------------------------------------------
        self.source_read_bytes = Counter(
            "firehose_data_read_from_source_bytes", "DataReadFromSource.Bytes: bytes read from a Kafka topic.", ds,
            registry=r)
        self.source_backpressured = Gauge(
            "firehose_data_read_from_source_backpressured", "DataReadFromSource.Backpressured: 1 while reading "
            "the Kafka topic is paused because the delivery backlog is over its limit.", ds, registry=r)
        self.source_oversize_records = Counter(
            "firehose_data_read_from_source_oversize_records", "Records read from a Kafka topic over the record "
            "size limit (10 MiB; 6 MiB with a Lambda transform), sent to the error output instead.", ds, registry=r)
        self.source_reader_restarts = Counter(
            "firehose_kafka_reader_restarts", "Times the process reading a stream's Kafka topic died and was started "
            "again (from the spool's checkpoints).", ds, registry=r)
        # -- processing ---------------------------------------------------------------------------
        self.processing_duration = Histogram(
            "firehose_execute_processing_duration_seconds", "ExecuteProcessing.Duration: time of each Lambda "
            "invocation.", ds, registry=r, buckets=_LATENCY_BUCKETS)
        self.processing_success = Counter(
            "firehose_execute_processing_success", "ExecuteProcessing.Success (Sum): successful Lambda invocations.",
            ds, registry=r)
        self.processing_invocations = Counter(
            "firehose_execute_processing_invocations", "ExecuteProcessing.Success (SampleCount): Lambda invocations.",
            ds, registry=r)
        self.succeed_processing_records = Counter(
            "firehose_succeed_processing_records", "SucceedProcessing.Records: records the processing chain "
            "passed on (neither dropped nor failed).", ds, registry=r)
        self.succeed_processing_bytes = Counter(
            "firehose_succeed_processing_bytes", "SucceedProcessing.Bytes: their bytes, after processing.", ds,
            registry=r)
        self.processing_dropped = Counter(
            "firehose_processing_dropped_records", "Records a transform returned as Dropped (or CWL control "
            "messages; not CloudWatch).", ds, registry=r)
        self.processing_failed = Counter(
            "firehose_processing_failed_records", "Records sent to the error output by the processing chain "
            "(not CloudWatch).", ["delivery_stream", "error_output_type"], registry=r)
        self.succeed_conversion_records = Counter(
            "firehose_succeed_conversion_records", "SucceedConversion.Records: records converted to Parquet/ORC.",
            ds, registry=r)
        self.succeed_conversion_bytes = Counter(
            "firehose_succeed_conversion_bytes", "SucceedConversion.Bytes: size of the converted objects.", ds,
            registry=r)
        self.failed_conversion_records = Counter(
            "firehose_failed_conversion_records", "FailedConversion.Records: records that failed conversion "
            "(sent to the error output).", ds, registry=r)
        self.failed_conversion_bytes = Counter(
            "firehose_failed_conversion_bytes", "FailedConversion.Bytes: size of their error output.", ds,
            registry=r)
        # -- delivery -------------------------------------------------------------------------------
        self._families: dict[str, dict[str, Any]] = {}
        self._deliveries: dict[tuple[str, str], Delivery] = {}
        self._ingest: dict[str, Ingest] = {}
        self.objects = Counter(
            "firehose_delivery_to_s3_objects", "DeliveryToS3.ObjectCount: objects written to the S3 destination "
            "or a stream's backup bucket (data, error output, backups).", ds, registry=r)
        self.backup_records = Counter(
            "firehose_backup_to_s3_records", "BackupToS3.Records: records copied to the backup bucket "
            "(S3BackupMode Enabled, AllData, AllEvents, AllDocuments).", ds, registry=r)
        self.backup_bytes = Counter(
            "firehose_backup_to_s3_bytes", "BackupToS3.Bytes.", ds, registry=r)
        self.backup_success = Counter(
            "firehose_backup_to_s3_success", "BackupToS3.Success (Sum): backup PUTs that succeeded.", ds, registry=r)
        self.backup_attempts = Counter(
            "firehose_backup_to_s3_attempts", "BackupToS3.Success (SampleCount): backup PUTs attempted.", ds,
            registry=r)
        self.error_output_records = Counter(
            "firehose_error_output_records", "Records written to the error output, by its error type "
            "(not CloudWatch; these are not counted as delivered).", ["delivery_stream", "error_output_type"],
            registry=r)
        self.refused_records = Counter(
            "firehose_destination_refused_records", "Records a destination refused for good in a way its "
            "protocol keeps out of the error output (an HTTP endpoint's 413; not CloudWatch).",
            ["delivery_stream", "destination", "code"], registry=r)
        # -- the daemon -----------------------------------------------------------------------------
        self.spool_bytes = Gauge("firehose_spool_bytes", "Bytes held in the spool.", registry=r)
        self.spool_limit = Gauge("firehose_spool_limit_bytes", "The spool's byte limit.", registry=r)
        self.spool_commits: Callable[[], float] = lambda: 0.0
        self.delivery_streams: Callable[[], int] = lambda: 0
        self.quota_limits: Callable[[str], tuple[float, float, float] | None] = lambda _stream: None
        self._levels: dict[str, Callable[[], StreamLevels]] = {}
        r.register(_Sampled(self))

    def ingest(self, stream: str) -> Ingest:
        """The ingest children of ``stream`` (cached: one dict lookup per call on the hot path)."""
        children = self._ingest.get(stream)
        if children is None:
            children = self._ingest[stream] = Ingest(self, stream)
        return children

    def delivery(self, stream: str, family: str) -> Delivery:
        """The ``firehose_delivery_to_<family>_*`` children of ``stream`` (cached)."""
        key = (stream, family)
        children = self._deliveries.get(key)
        if children is None:
            children = self._deliveries[key] = Delivery(self, stream, family)
        return children

    def delivery_families(self, family: str) -> dict[str, Any]:
        """The metric families of one destination, registered the first time a stream uses it."""
        f = self._families.get(family)
        if f is None and family == BACKUP:  # registered with the daemon: AllData backups count there too
            f = self._families[family] = {"records": self.backup_records, "bytes": self.backup_bytes,
                                          "success": self.backup_success, "attempts": self.backup_attempts}
        if f is None:
            cw = _CLOUDWATCH_NAMES.get(family, family)
            name = f"firehose_delivery_to_{family}"
            ds = ["delivery_stream"]
            f = self._families[family] = {
                "records": Counter(f"{name}_records", f"DeliveryTo{cw}.Records: records the destination "
                                   "acknowledged (error output excluded).", ds, registry=self.registry),
                "bytes": Counter(f"{name}_bytes", f"DeliveryTo{cw}.Bytes: their bytes (before compression).", ds,
                                 registry=self.registry),
                "success": Counter(f"{name}_success", f"DeliveryTo{cw}.Success (Sum): successful attempts.", ds,
                                   registry=self.registry),
                "attempts": Counter(f"{name}_attempts", f"DeliveryTo{cw}.Success (SampleCount): attempts.", ds,
                                    registry=self.registry),
            }
            if family == "http_endpoint":
                f["processed_records"] = Counter(
                    f"{name}_processed_records", f"DeliveryTo{cw}.ProcessedRecords: records sent in delivery "
                    "attempts, retries included.", ds, registry=self.registry)
                f["processed_bytes"] = Counter(
                    f"{name}_processed_bytes", f"DeliveryTo{cw}.ProcessedBytes: their bytes (before the "
                    "request's encoding).", ds, registry=self.registry)
            elif family in ("amazon_opensearch_service", "amazon_opensearch_serverless"):
                f["auth_failure"] = Gauge(
                    f"{name}_auth_failure", f"DeliveryTo{cw}.AuthFailure: 1 when the last attempt was refused "
                    "for its credentials (HTTP 401 or 403), else 0.", ds, registry=self.registry)
                f["delivery_rejected"] = Gauge(
                    f"{name}_delivery_rejected", f"DeliveryTo{cw}.DeliveryRejected: 1 when the last attempt had "
                    "documents refused for good (they go to the error output), else 0.", ds, registry=self.registry)
            elif family == "iceberg":
                f["incoming_rows"] = Counter(
                    f"{name}_incoming_rows", f"DeliveryTo{cw}.IncomingRowCount: rows attempted, retries included.",
                    ds, registry=self.registry)
                f["successful_rows"] = Counter(
                    f"{name}_successful_rows", f"DeliveryTo{cw}.SuccessfulRowCount: rows committed to tables.", ds,
                    registry=self.registry)
                f["failed_rows"] = Counter(
                    f"{name}_failed_rows", f"DeliveryTo{cw}.FailedRowCount: rows sent to the error output.", ds,
                    registry=self.registry)
            elif family == "splunk":
                f["data_ack_latency"] = Histogram(
                    f"{name}_data_ack_latency_seconds", f"DeliveryTo{cw}.DataAckLatency: time from sending a "
                    "request to its indexer acknowledgement.", ds, registry=self.registry,
                    buckets=_LATENCY_BUCKETS)
        return f

    def watch(self, stream: str, levels: Callable[[], StreamLevels]) -> None:
        """Sample ``levels`` of ``stream`` on each scrape (freshness, partitions, buffered bytes)."""
        self._levels[stream] = levels

    def forget(self, stream: str, levels: Callable[[], StreamLevels] | None = None) -> None:
        """Stop sampling ``stream`` (only if ``levels`` is still the one watched, when given)."""
        if levels is None or self._levels.get(stream) == levels:  # bound methods: equal, not identical
            self._levels.pop(stream, None)


#: The keys of ``delivery_families`` that only some families have (see ``Delivery``).
_OWN = frozenset({"processed_records", "processed_bytes", "auth_failure", "delivery_rejected", "data_ack_latency",
                  "incoming_rows", "successful_rows", "failed_rows"})

_CLOUDWATCH_NAMES = {
    "s3": "S3", "redshift": "Redshift", "splunk": "Splunk", "http_endpoint": "HttpEndpoint",
    "iceberg": "Iceberg", "elasticsearch": "Elasticsearch", "amazon_opensearch_service": "AmazonOpenSearchService",
    "amazon_opensearch_serverless": "AmazonOpenSearchServerless",
}


class _Sampled(Collector):
    """The levels computed on scrape: freshness, success ratios, partitions, limits, spool commits."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> list[Metric]:
        return []  # sampled families vary with the streams: not checked for clashes at registration

    def collect(self) -> Iterator[Metric]:
        m = self._m
        commits = CounterMetricFamily("firehose_spool_commits", "Group-commit fsync rounds so far.")
        commits.add_metric([], m.spool_commits())
        yield commits
        streams = GaugeMetricFamily("firehose_delivery_streams", "ResourceCount (AWS/Usage, DeliveryStreams): "
                                    "delivery streams the daemon hosts.")
        streams.add_metric([], m.delivery_streams())
        yield streams
        ds = ["delivery_stream"]
        buffered = GaugeMetricFamily("firehose_buffered_bytes", "Bytes waiting in memory buffers (not CloudWatch).",
                                     labels=ds)
        partitions = GaugeMetricFamily("firehose_partitions", "PartitionCount: active partitions buffered.",
                                       labels=ds)
        limit = GaugeMetricFamily("firehose_active_partitions_limit", "ActivePartitionsLimit.", labels=ds)
        exceeded = GaugeMetricFamily("firehose_partition_count_exceeded", "PartitionCountExceeded: 1 while "
                                     "records go to the error output for want of a partition.", labels=ds)
        freshness: dict[str, GaugeMetricFamily] = {}
        now = time.time() * 1000
        for stream, probe in list(m._levels.items()):
            lv = probe()
            buffered.add_metric([stream], lv.buffered_bytes)
            if lv.partitions is not None:
                partitions.add_metric([stream], lv.partitions)
                limit.add_metric([stream], lv.partitions_limit or 0)
                exceeded.add_metric([stream], 1 if lv.partitions_exceeded else 0)
            for level in (lv, lv.backup) if lv.backup is not None else (lv,):
                fam = freshness.get(level.destination)
                if fam is None:
                    name, cw = _family_name(level.destination)
                    fam = freshness[level.destination] = GaugeMetricFamily(
                        f"{name}_data_freshness_seconds",
                        f"{cw}.DataFreshness: age of the oldest record not yet delivered (0 when none).",
                        labels=ds)
                age = 0.0 if level.oldest_arrival_ms is None else max(0.0, (now - level.oldest_arrival_ms) / 1000)
                fam.add_metric([stream], age)
        yield buffered
        yield partitions
        yield limit
        yield exceeded
        yield from freshness.values()
        ratios: dict[str, GaugeMetricFamily] = {}
        for (stream, family), d in list(m._deliveries.items()):
            value = d.ratio.value()
            if value is None:
                continue
            fam = ratios.get(family)
            if fam is None:
                name, cw = _family_name(family)
                fam = ratios[family] = GaugeMetricFamily(
                    f"{name}_success_ratio",
                    f"{cw}.Success (Average) over the last {RATIO_WINDOW_S} s of attempts.", labels=ds)
            fam.add_metric([stream], value)
        yield from ratios.values()
        names = ("firehose_records_per_second_limit", "firehose_bytes_per_second_limit",
                 "firehose_put_requests_per_second_limit")
        helps = ("RecordsPerSecondLimit: the stream's record-rate quota (quotas:).",
                 "BytesPerSecondLimit: the stream's byte-rate quota.",
                 "PutRequestsPerSecondLimit: the stream's call-rate quota.")
        limits = [GaugeMetricFamily(n, h, labels=ds) for n, h in zip(names, helps, strict=True)]
        for stream in list(m._levels):
            quota = m.quota_limits(stream)
            if quota is not None:
                for fam, value in zip(limits, quota, strict=True):
                    fam.add_metric([stream], value)
        yield from limits


#: Label names that say which thing a sample is about, in the order they are looked for.
_SUBJECTS = (("delivery_stream", "delivery_streams"), ("stream", "kinesis_streams"))


def snapshot(registry: CollectorRegistry) -> dict[str, Any]:
    """The registry's current values as JSON-ready figures, grouped by what they measure.

    ``{"delivery_streams": {name: {sample: value}}, "kinesis_streams": {...}, "daemon": {...}}``.
    A sample is named as on ``/metrics``, with its other labels appended in braces
    (``firehose_api_requests_total{operation=PutRecord,outcome=success}``); a histogram gives its
    ``_sum`` and ``_count`` only (enough for an average), not its buckets.
    """
    out: dict[str, Any] = {"delivery_streams": {}, "kinesis_streams": {}, "daemon": {}}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = dict(sample.labels)
            group: dict[str, Any] = out["daemon"]
            for label, section in _SUBJECTS:
                if label in labels:
                    group = out[section].setdefault(labels.pop(label), {})
                    break
            name = sample.name
            if labels:
                name += "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
            group[name] = sample.value
    return out


#: What the console charts per delivery stream, in this order: what ``/metrics.json``'s history keeps.
CHARTED = ("incoming_records", "incoming_bytes", "delivered_records", "delivered_bytes", "freshness", "backlog",
           "errors")
#: Delivery streams whose charted figures the history keeps (the first by name); the others show their
#: current figures only. With ``CHARTED`` this bounds the history: at most 200 × 7 numbers a sample.
MAX_CHARTED_STREAMS = 200
_DELIVERED = re.compile(r"^firehose_delivery_to_[a-z0-9_]+_(records|bytes)_total$")


def charted(figures: dict[str, float]) -> array[float]:
    """A stream's ``CHARTED`` figures from its ``snapshot`` samples (the sums console.js makes of them).

    Delivered records/bytes add up every destination family's ``…_records_total``/``…_bytes_total``
    (not an HTTP endpoint's ``processed_…``, which counts attempts); errors are records sent to the
    error output plus failed delivery attempts; freshness is the oldest of the families'.
    """
    delivered = [0.0, 0.0]
    freshness = errors = attempts = successes = 0.0
    for name, value in figures.items():
        if not name.startswith("firehose_delivery_to_") and not name.startswith("firehose_error_output_records"):
            continue
        match = _DELIVERED.match(name)
        if match and "_processed_" not in name:
            delivered[match.group(1) == "bytes"] += value
        elif name.endswith("_data_freshness_seconds"):
            freshness = max(freshness, value)
        elif name.endswith("_attempts_total"):
            attempts += value
        elif name.endswith("_success_total"):
            successes += value
        elif name.startswith("firehose_error_output_records_total"):
            errors += value
    return array("d", (figures.get("firehose_incoming_records_total", 0.0),
                       figures.get("firehose_incoming_bytes_total", 0.0), delivered[0], delivered[1], freshness,
                       figures.get("firehose_buffered_bytes", 0.0), errors + max(0.0, attempts - successes)))


class MetricsHistory:
    """The last ``window_s`` seconds of the console's charted figures, one sample every ``every_s`` seconds.

    What ``/metrics.json`` serves, so that a page opened now draws the last quarter of an hour at
    once. Bounded whatever the daemon hosts: a sample keeps only the ``CHARTED`` figures of at most
    ``MAX_CHARTED_STREAMS`` delivery streams, as packed doubles (the full figures are in ``current``,
    taken on each request). Counters stay cumulative: a reader charts the difference between
    neighbouring samples.
    """

    def __init__(self, registry: CollectorRegistry, *, every_s: float = 5.0, window_s: float = 900.0,
                 max_streams: int = MAX_CHARTED_STREAMS) -> None:
        self.registry = registry
        self.every_s = every_s
        self.max_streams = max_streams
        #: (time in epoch ms, stream → its CHARTED figures).
        self.samples: deque[tuple[int, dict[str, array[float]]]] = deque(maxlen=max(1, int(window_s / every_s)))

    def sample(self) -> tuple[int, dict[str, array[float]]]:
        streams = snapshot(self.registry)["delivery_streams"]
        kept = {sys.intern(name): charted(streams[name]) for name in sorted(streams)[:self.max_streams]}
        taken = (int(time.time() * 1000), kept)
        self.samples.append(taken)
        return taken

    def document(self, *, history: bool = True) -> dict[str, Any]:
        """Current figures (all of them, taken now) and, when asked, the charted samples of the window
        before them: ``{"time_ms", "delivery_streams": {name: [figures in history_series order]}}``."""
        now = {"time_ms": int(time.time() * 1000), **snapshot(self.registry)}
        doc: dict[str, Any] = {"interval_seconds": self.every_s, "current": now}
        if history:
            doc["history_series"] = CHARTED
            doc["history"] = [{"time_ms": t, "delivery_streams": {n: a.tolist() for n, a in streams.items()}}
                              for t, streams in self.samples]
        return doc

    async def run(self) -> None:
        """Sample every ``every_s`` seconds until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

def tune_gc() -> None:
    """Collect cyclic garbage far less often than CPython's default (in the daemon and its workers).

    Delivery and ingest allocate a few container objects per record (hundreds of thousands a
    second), and with the default thresholds (700, 10, 10) the collector ran so often that it
    took two thirds of the time spent building record batches; a worker parsing a Redshift batch
    spent a tenth of its time in it. The daemon's own data makes no reference cycles to speak of;
    what it builds at start (modules, config, catalog) is frozen out of collections altogether.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
