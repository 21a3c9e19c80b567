"""Enhanced (shard-level) monitoring: EnableEnhancedMonitoring / DisableEnhancedMonitoring.

A stream's enabled ``ShardLevelMetrics`` (kinesis-fidelity.md §3.3) are kept
with the stream (``streams.json``, so they survive a restart), shown in
DescribeStream / DescribeStreamSummary as ``EnhancedMonitoring``, and decide
which per-shard series ``/metrics`` carries (``StreamsMetrics``: a shard-level
series exists only while its metric is enabled; docs/metrics.md). Enable is a
union with what is enabled, Disable a difference; ``ALL`` means all seven.
The answer names the metrics before (Current) and after (Desired) the call.
"""

from __future__ import annotations

from typing import Any

from firehose.streams.addressing import stream_name
from firehose.streams.store import ShardStore

Request = dict[str, Any]


async def _set(store: ShardStore, request: Request, *, enable: bool) -> dict[str, Any]:
    name = stream_name(store, request)
    before, after = store.set_shard_metrics(name, request["ShardLevelMetrics"], enable=enable)
    if store.metrics is not None:
        store.metrics.monitor(name, after)
    return {"StreamName": name, "CurrentShardLevelMetrics": before, "DesiredShardLevelMetrics": after,
            "StreamARN": store.arn(name)}


async def enable_enhanced_monitoring(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _set(store, request, enable=True)


async def disable_enhanced_monitoring(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _set(store, request, enable=False)
