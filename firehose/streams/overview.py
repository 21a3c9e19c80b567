"""The Kinesis streams as the daemon's console shows them: each stream, its shards, their lag and throughput.

Read on demand from the shard stores (streams, shards, what each shard stored since the process
started) and the sidecar's metrics (what GetRecords returned per shard, and
``IteratorAgeMilliseconds``: the age of the last record a shard's latest GetRecords returned; kept
for every shard, whether or not its stream has enabled shard-level metrics). Totals
are cumulative; the page turns two readings into a rate. Nothing here runs on the data path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from firehose.streams.metrics import ShardFigures, StreamsMetrics
from firehose.streams.store import ShardStore

#: (sample name, stream, shard id or "") → value.
_Samples = dict[tuple[str, str, str], float]


def _samples(metrics: StreamsMetrics) -> _Samples:
    out: _Samples = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            stream = sample.labels.get("stream")
            if stream is not None:
                out[(sample.name, stream, sample.labels.get("shard_id", ""))] = sample.value
    return out


def overview(stores: Iterable[tuple[str, ShardStore]], home: str, metrics: StreamsMetrics) -> dict[str, Any]:
    """``{"enabled": true, "streams": [...]}``, streams by name (another account's prefixed with it).

    Metric labels carry the stream name only, so figures of two accounts' streams of one name are
    not told apart (the shard ids are); the home account's view is the common case.
    """
    figures = _samples(metrics)
    listed = []
    for account, store in stores:
        for stream in sorted(store.streams.values(), key=lambda s: s.name):
            name = stream.name

            def fig(sample: str, shard: str = "", name: str = name) -> float:
                return figures.get((sample, name, shard), 0.0)

            shards = []
            for shard in stream.shards:
                data = stream.data.get(shard.shard_id)
                read = metrics.shard_figures.get((name, shard.shard_id), ShardFigures())
                shards.append({
                    "shard_id": shard.shard_id, "open": shard.is_open, "parent": shard.parent,
                    "iterator_age_seconds": read.iterator_age_seconds,  # None: no GetRecords on it yet
                    "incoming_records": data.records_in if data else 0,
                    "incoming_bytes": data.bytes_in if data else 0,
                    "outgoing_records": read.outgoing_records,
                    "outgoing_bytes": read.outgoing_bytes,
                })
            listed.append({
                "name": name if account == home else f"{account}/{name}",
                "status": stream.status, "mode": stream.mode, "retention_hours": stream.retention_hours,
                "open_shards": sum(1 for s in stream.shards if s.is_open),
                "incoming_records": fig("kinesis_incoming_records_total"),
                "incoming_bytes": fig("kinesis_incoming_bytes_total"),
                "write_throughput_exceeded": fig("kinesis_write_throughput_exceeded_total"),
                "read_throughput_exceeded": fig("kinesis_read_throughput_exceeded_total"),
                "shards": shards,
            })
    return {"enabled": True, "streams": listed}
