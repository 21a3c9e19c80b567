"""The Kinesis sidecar's metrics, under the names the observability spec maps CloudWatch's AWS/Kinesis
metrics to (``docs/metrics.md``): per stream what came in and went out, and, for the shard-level
("enhanced") metrics a stream has enabled (EnableEnhancedMonitoring), the same per shard: what
came in, what GetRecords read, how old the last record it returned was (``IteratorAgeMilliseconds``,
in seconds here) and what was refused. As on CloudWatch, a shard-level series exists only while its
metric is enabled for the stream; disabling it removes the stream's series of that metric.

The operations report here (they know the stream, the shard and what the stream has enabled); the
API app reports each call's outcome and latency. Throttled records never count as incoming, as on
AWS. What each shard returned is also kept for the console whatever is enabled (``shard_figures``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STREAM = ["stream"]
_SHARD = ["stream", "shard_id"]


@dataclass
class ShardFigures:
    """What GetRecords returned from one shard since the process started, and the age of the last
    record its latest call returned (None: no call yet)."""

    outgoing_records: int = 0
    outgoing_bytes: int = 0
    iterator_age_seconds: float | None = None


class StreamsMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("kinesis_requests", "Kinesis API requests by operation and HTTP status.",
                                ["operation", "status"], registry=r)
        self.latency = Histogram("kinesis_api_request_duration_seconds", "Kinesis API latency by operation "
                                 "(GetRecords.Latency, PutRecord.Latency, PutRecords.Latency).", ["operation"],
                                 registry=r)
        self.incoming_bytes = Counter("kinesis_incoming_bytes", "IncomingBytes: bytes stored (key and data).",
                                      _STREAM, registry=r)
        self.incoming_records = Counter("kinesis_incoming_records", "IncomingRecords: records stored.", _STREAM,
                                        registry=r)
        self.outgoing_bytes = Counter("kinesis_outgoing_bytes", "OutgoingBytes (shard-level): bytes GetRecords "
                                      "returned.", _SHARD, registry=r)
        self.outgoing_records = Counter("kinesis_outgoing_records", "OutgoingRecords (shard-level): records "
                                        "GetRecords returned.", _SHARD, registry=r)
        self.shard_incoming_bytes = Counter("kinesis_shard_incoming_bytes", "IncomingBytes (shard-level): bytes "
                                            "stored in the shard.", _SHARD, registry=r)
        self.shard_incoming_records = Counter("kinesis_shard_incoming_records", "IncomingRecords (shard-level): "
                                              "records stored in the shard.", _SHARD, registry=r)
        self.shard_write_exceeded = Counter("kinesis_shard_write_throughput_exceeded",
                                            "WriteProvisionedThroughputExceeded (shard-level).", _SHARD, registry=r)
        self.shard_read_exceeded = Counter("kinesis_shard_read_throughput_exceeded",
                                           "ReadProvisionedThroughputExceeded (shard-level).", _SHARD, registry=r)
        self.get_records_iterator_age = Gauge("kinesis_get_records_iterator_age_seconds",
                                              "GetRecords.IteratorAgeMilliseconds (in seconds): the age of the "
                                              "last record the stream's latest GetRecords returned.", _STREAM,
                                              registry=r)
        self.get_records_bytes = Counter("kinesis_get_records_bytes", "GetRecords.Bytes.", _STREAM, registry=r)
        self.get_records_records = Counter("kinesis_get_records_records", "GetRecords.Records.", _STREAM, registry=r)
        self.iterator_age = Gauge("kinesis_iterator_age_seconds", "IteratorAgeMilliseconds (shard-level, in "
                                  "seconds): the age of the last record the shard's latest GetRecords returned; 0 at "
                                  "the tip.", _SHARD, registry=r)
        self.put_record_bytes = Counter("kinesis_put_record_bytes", "PutRecord.Bytes.", _STREAM, registry=r)
        self.put_records_bytes = Counter("kinesis_put_records_bytes", "PutRecords.Bytes (stored records).", _STREAM,
                                         registry=r)
        self.put_records_records = Counter("kinesis_put_records_records", "PutRecords.TotalRecords.", _STREAM,
                                           registry=r)
        self.put_records_successful = Counter("kinesis_put_records_successful_records",
                                              "PutRecords.SuccessfulRecords.", _STREAM, registry=r)
        self.put_records_failed = Counter("kinesis_put_records_failed_records", "PutRecords.FailedRecords.",
                                          _STREAM, registry=r)
        self.put_records_throttled = Counter("kinesis_put_records_throttled_records",
                                             "PutRecords.ThrottledRecords.", _STREAM, registry=r)
        self.write_exceeded = Counter("kinesis_write_throughput_exceeded", "WriteProvisionedThroughputExceeded: "
                                      "records refused (kinesis.enforce_limits).", _STREAM, registry=r)
        self.read_exceeded = Counter("kinesis_read_throughput_exceeded", "ReadProvisionedThroughputExceeded: "
                                     "GetRecords calls refused (kinesis.enforce_limits).", _STREAM, registry=r)
        #: ``<Operation>.Success`` for GetRecords, PutRecord and PutRecords: successes over attempts.
        self.success = {op: Counter(f"kinesis_{name}_success", f"{op}.Success: successful calls.", registry=r)
                        for op, name in _SUCCESS.items()}
        self.attempts = {op: Counter(f"kinesis_{name}_attempts", f"{op} calls.", registry=r)
                         for op, name in _SUCCESS.items()}
        #: (stream, shard id) → what GetRecords returned, for the console.
        self.shard_figures: dict[tuple[str, str], ShardFigures] = {}
        #: Shard-level metric name → its family.
        self._shard_level: dict[str, Counter | Gauge] = {
            "IncomingBytes": self.shard_incoming_bytes, "IncomingRecords": self.shard_incoming_records,
            "OutgoingBytes": self.outgoing_bytes, "OutgoingRecords": self.outgoing_records,
            "WriteProvisionedThroughputExceeded": self.shard_write_exceeded,
            "ReadProvisionedThroughputExceeded": self.shard_read_exceeded,
            "IteratorAgeMilliseconds": self.iterator_age,
        }
        #: (stream, shard-level metric) → the shard ids it has series for (to remove them when disabled).
        self._series: dict[tuple[str, str], set[str]] = {}

    def stored(self, stream: str, records: int, size: int, throttled: int) -> None:
        """Records a put stored (and how many it refused as throttled)."""
        if records:
            self.incoming_records.labels(stream).inc(records)
            self.incoming_bytes.labels(stream).inc(size)
        if throttled:
            self.write_exceeded.labels(stream).inc(throttled)

    def stored_in_shards(self, stream: str, enabled: Collection[str],
                         shards: Mapping[str, tuple[int, int, int]]) -> None:
        """Shard-level IncomingRecords / IncomingBytes / WriteProvisionedThroughputExceeded, as far as
        ``enabled``: shard id → (records stored, bytes stored, records refused)."""
        for shard_id, (records, size, throttled) in shards.items():
            if records:
                self._shard(enabled, "IncomingRecords", stream, shard_id, records)
                self._shard(enabled, "IncomingBytes", stream, shard_id, size)
            if throttled:
                self._shard(enabled, "WriteProvisionedThroughputExceeded", stream, shard_id, throttled)

    def read(self, stream: str, shard_id: str, records: int, size: int, age_ms: int,
             enabled: Collection[str] = ()) -> None:
        figures = self.shard_figures.get((stream, shard_id))
        if figures is None:
            figures = self.shard_figures[(stream, shard_id)] = ShardFigures()
        figures.outgoing_records += records
        figures.outgoing_bytes += size
        figures.iterator_age_seconds = age_ms / 1000
        self.get_records_records.labels(stream).inc(records)
        self.get_records_bytes.labels(stream).inc(size)
        self.get_records_iterator_age.labels(stream).set(age_ms / 1000)
        if enabled:
            self._shard(enabled, "OutgoingRecords", stream, shard_id, records)
            self._shard(enabled, "OutgoingBytes", stream, shard_id, size)
            if "IteratorAgeMilliseconds" in enabled:
                self._series.setdefault((stream, "IteratorAgeMilliseconds"), set()).add(shard_id)
                self.iterator_age.labels(stream, shard_id).set(age_ms / 1000)

    def read_refused(self, stream: str, shard_id: str | None, enabled: Collection[str] = ()) -> None:
        """A GetRecords call refused for the shard's read limits."""
        self.read_exceeded.labels(stream).inc()
        if shard_id is not None:
            self._shard(enabled, "ReadProvisionedThroughputExceeded", stream, shard_id, 1)

    def _shard(self, enabled: Collection[str], metric: str, stream: str, shard_id: str, amount: float) -> None:
        if metric in enabled:
            self._series.setdefault((stream, metric), set()).add(shard_id)
            self._shard_level[metric].labels(stream, shard_id).inc(amount)  # type: ignore[union-attr]

    def monitor(self, stream: str, enabled: Iterable[str]) -> None:
        """The stream's enabled shard-level metrics changed: series of the ones now off go."""
        on = set(enabled)
        for metric, family in self._shard_level.items():
            if metric in on:
                continue
            for shard_id in self._series.pop((stream, metric), ()):
                family.remove(stream, shard_id)

    def call(self, operation: str, succeeded: bool) -> None:
        """One call of an operation that has a ``.Success`` metric."""
        if operation in self.attempts:
            self.attempts[operation].inc()
            if succeeded:
                self.success[operation].inc()


_SUCCESS = {"GetRecords": "get_records", "PutRecord": "put_record", "PutRecords": "put_records"}
