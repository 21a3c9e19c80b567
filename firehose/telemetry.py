"""Logging set-up, Prometheus metrics, and the garbage collector's tuning for a server process.

Log lines are one sentence followed by ``key=value`` fields taken from the
record's ``extra``, so they read well in a terminal and parse in a log system.
Metrics live in one registry per daemon (tests start several daemons in one
process) and are exposed at ``/metrics``.
"""

from __future__ import annotations

import gc
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class Metrics:
    """Every metric the daemon exports, in one registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.incoming_records = Counter(
            "firehose_incoming_records", "Records accepted (durably spooled).", ["stream"], registry=r)
        self.incoming_bytes = Counter(
            "firehose_incoming_bytes", "Bytes of record data accepted.", ["stream"], registry=r)
        self.requests = Counter(
            "firehose_requests", "API requests by operation and result.", ["operation", "result"], registry=r)
        self.failed_records = Counter(
            "firehose_failed_put_records", "Records refused inside PutRecordBatch.", ["stream", "code"],
            registry=r)
        self.throttled_records = Counter(
            "firehose_throttled_records", "Records refused with ServiceUnavailableException \"Slow down.\" by the "
            "stream's throughput quota (quotas:).", ["stream"], registry=r)
        self.receiver_duplicates = Counter(
            "firehose_http_endpoint_duplicate_requests", "HTTP endpoint deliveries received again with a request "
            "id already accepted (answered without spooling twice).", ["stream"], registry=r)
        self.put_latency = Histogram(
            "firehose_put_latency_seconds", "Time to durably accept a put.", ["operation"], registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.delivered_records = Counter(
            "firehose_delivered_records", "Records delivered.", ["stream", "destination"], registry=r)
        self.delivered_bytes = Counter(
            "firehose_delivered_bytes", "Bytes delivered (before compression).", ["stream", "destination"],
            registry=r)
        self.delivered_objects = Counter(
            "firehose_delivered_objects", "Objects/batches delivered.", ["stream", "destination"], registry=r)
        self.delivery_failures = Counter(
            "firehose_delivery_failures", "Failed delivery attempts.", ["stream", "destination"], registry=r)
        self.refused_records = Counter(
            "firehose_destination_refused_records", "Records a destination refused for good in a way its "
            "protocol keeps out of the error output (an HTTP endpoint's 413).", ["stream", "destination", "code"],
            registry=r)
        self.processing_dropped = Counter(
            "firehose_processing_dropped_records", "Records a transform returned as Dropped (or CWL control "
            "messages).", ["stream"], registry=r)
        self.processing_failed = Counter(
            "firehose_processing_failed_records", "Records sent to the error output by the processing chain.",
            ["stream", "error_output_type"], registry=r)
        self.buffered_bytes = Gauge(
            "firehose_buffered_bytes", "Bytes waiting in memory buffers.", ["stream"], registry=r)
        self.spool_bytes = Gauge("firehose_spool_bytes", "Bytes held in the spool.", registry=r)
        self.spool_limit = Gauge("firehose_spool_limit_bytes", "The spool's byte limit.", registry=r)
        self.spool_commits = Gauge("firehose_spool_commits", "Group-commit fsync rounds so far.", registry=r)


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
