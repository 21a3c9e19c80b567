"""DescribeLimits: the account's shard quota and how much of it, and of the on-demand stream quota, is used.

``ShardLimit`` is ``kinesis.shard_limit`` (the same quota CreateStream,
SplitShard and UpdateShardCount are held to), ``OpenShardCount`` the open
shards of every stream of the account, ``OnDemandStreamCount`` its ON_DEMAND
streams and ``OnDemandStreamCountLimit`` ``kinesis.on_demand_stream_limit``
(kinesis-fidelity.md §3.1). Streams being deleted no longer count.
"""

from __future__ import annotations

from typing import Any

from firehose.streams.store import ShardStore


async def describe_limits(store: ShardStore, request: dict[str, Any]) -> dict[str, Any]:
    return {"ShardLimit": store.options.shard_limit, "OpenShardCount": store.open_shard_count(),
            "OnDemandStreamCount": store.on_demand_count(),
            "OnDemandStreamCountLimit": store.options.on_demand_stream_limit}
