"""The Kinesis sidecar's metrics, under the names the observability spec maps CloudWatch's AWS/Kinesis
metrics to (``docs/metrics.md``): per stream what came in and went out, per shard what GetRecords
read and how old the last record it returned was (``IteratorAgeMilliseconds``, in seconds here).

The operations report here (they know the stream and the shard); the API app reports each call's
outcome and latency. Throttled records never count as incoming, as on AWS.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STREAM = ["stream"]
_SHARD = ["stream", "shard_id"]


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
        self.outgoing_bytes = Counter("kinesis_outgoing_bytes", "OutgoingBytes: bytes GetRecords returned.", _SHARD,
                                      registry=r)
        self.outgoing_records = Counter("kinesis_outgoing_records", "OutgoingRecords: records GetRecords returned.",
                                        _SHARD, registry=r)
        self.get_records_bytes = Counter("kinesis_get_records_bytes", "GetRecords.Bytes.", _STREAM, registry=r)
        self.get_records_records = Counter("kinesis_get_records_records", "GetRecords.Records.", _STREAM, registry=r)
        self.iterator_age = Gauge("kinesis_iterator_age_seconds", "IteratorAgeMilliseconds (in seconds): the age "
                                  "of the last record the shard's latest GetRecords returned; 0 at the tip.", _SHARD,
                                  registry=r)
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

    def stored(self, stream: str, records: int, size: int, throttled: int) -> None:
        """Records a put stored (and how many it refused as throttled)."""
        if records:
            self.incoming_records.labels(stream).inc(records)
            self.incoming_bytes.labels(stream).inc(size)
        if throttled:
            self.write_exceeded.labels(stream).inc(throttled)

    def read(self, stream: str, shard_id: str, records: int, size: int, age_ms: int) -> None:
        self.outgoing_records.labels(stream, shard_id).inc(records)
        self.outgoing_bytes.labels(stream, shard_id).inc(size)
        self.get_records_records.labels(stream).inc(records)
        self.get_records_bytes.labels(stream).inc(size)
        self.iterator_age.labels(stream, shard_id).set(age_ms / 1000)

    def call(self, operation: str, succeeded: bool) -> None:
        """One call of an operation that has a ``.Success`` metric."""
        if operation in self.attempts:
            self.attempts[operation].inc()
            if succeeded:
                self.success[operation].inc()


_SUCCESS = {"GetRecords": "get_records", "PutRecord": "put_record", "PutRecords": "put_records"}
