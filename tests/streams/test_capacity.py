"""Capacity modes, UpdateShardCount's exact reshaping, DescribeLimits, enhanced monitoring and tagging by ARN."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from firehose.streams.capacity import OnDemandScaler
from firehose.streams.errors import LimitExceededException
from firehose.streams.store import ShardStore, StoreOptions
from tests.support.streams import StreamsServer, unique

ACCT = "123456789012"


def _code(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_create_stream_without_shard_count_is_on_demand_with_four_shards(kinesis: Any) -> None:
    for extra in ({}, {"StreamModeDetails": {"StreamMode": "ON_DEMAND"}}):
        name = unique()
        kinesis.create_stream(StreamName=name, **extra)
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert (summary["StreamModeDetails"], summary["OpenShardCount"]) == ({"StreamMode": "ON_DEMAND"}, 4)
        listed = next(s for s in kinesis.list_streams()["StreamSummaries"] if s["StreamName"] == name)
        assert listed["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}


# (open before, target, shards after: open + closed) — moto's table, verified against AWS.
TOTALS = [(2, 4, 6), (4, 5, 15), (10, 13, 37), (4, 2, 6), (5, 3, 7), (10, 3, 17)]


@pytest.mark.parametrize(("before", "target", "total"), TOTALS, ids=[f"{a}-to-{b}" for a, b, _ in TOTALS])
def test_update_shard_count_leaves_aws_totals(kinesis: Any, before: int, target: int, total: int) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=before)
    out = kinesis.update_shard_count(StreamName=name, TargetShardCount=target, ScalingType="UNIFORM_SCALING")
    assert (out["CurrentShardCount"], out["TargetShardCount"], out["StreamName"]) == (before, target, name)
    shards = kinesis.list_shards(StreamName=name)["Shards"]
    opened = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    assert (len(shards), len(opened)) == (total, target)
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(total)]
    ranges = sorted((int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
                    for s in opened)
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_update_shard_count_assigns_ids_as_aws(kinesis: Any) -> None:
    """4 → 5: shards 0-3 split into 4-11 (lower child first), then 4+5→12, 6+7→13, 8+9→14."""
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=4)
    kinesis.update_shard_count(StreamName=name, TargetShardCount=5, ScalingType="UNIFORM_SCALING")
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=name)["Shards"]}
    assert shards["shardId-000000000004"]["ParentShardId"] == "shardId-000000000000"
    assert shards["shardId-000000000011"]["ParentShardId"] == "shardId-000000000003"
    twelve = shards["shardId-000000000012"]
    assert (twelve["ParentShardId"], twelve["AdjacentParentShardId"]) == ("shardId-000000000004",
                                                                          "shardId-000000000005")
    assert twelve["HashKeyRange"] == {"StartingHashKey": "0", "EndingHashKey": str(2**126 - 1)}
    opened = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert sorted(s["ShardId"][-2:] for s in opened) == ["10", "11", "12", "13", "14"]


def test_update_stream_mode_keeps_shards_and_allows_two_switches_a_day(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=3)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["StreamModeDetails"]["StreamMode"], summary["OpenShardCount"], summary["StreamStatus"]) == (
        "ON_DEMAND", 3, "ACTIVE")
    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "PROVISIONED"})
    kinesis.update_shard_count(StreamName=name, TargetShardCount=6, ScalingType="UNIFORM_SCALING")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    assert _code(exc)[0] == "LimitExceededException"
    assert kinesis.describe_stream(StreamName=name)["StreamDescription"]["StreamModeDetails"] == {
        "StreamMode": "PROVISIONED"}


def test_describe_limits_counts_the_accounts_shards_and_on_demand_streams(kinesis: Any) -> None:
    before = kinesis.describe_limits()
    kinesis.create_stream(StreamName=unique(), ShardCount=3)
    kinesis.create_stream(StreamName=unique())
    after = kinesis.describe_limits()
    assert (after["ShardLimit"], after["OnDemandStreamCountLimit"]) == (500, 50)
    assert after["OpenShardCount"] == before["OpenShardCount"] + 7
    assert after["OnDemandStreamCount"] == before["OnDemandStreamCount"] + 1


def test_enhanced_monitoring_switches_the_shard_level_series(streams_server: StreamsServer) -> None:
    k = streams_server.client()
    name = unique()
    k.create_stream(StreamName=name, ShardCount=1)
    shard = "shardId-000000000000"

    def series(family: str) -> list[str]:
        text = httpx.get(streams_server.endpoint + "/metrics").text
        return [line for line in text.splitlines()
                if line.startswith(family + "{") and f'stream="{name}"' in line and "shard_id=" in line]

    def read_all() -> None:
        it = k.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        k.get_records(ShardIterator=it)

    k.put_record(StreamName=name, Data=b"abc", PartitionKey="k")
    read_all()
    assert series("kinesis_outgoing_records_total") == [] and series("kinesis_shard_incoming_records_total") == []
    out = k.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingRecords", "OutgoingRecords"])
    assert (out["CurrentShardLevelMetrics"], out["DesiredShardLevelMetrics"]) == (
        [], ["IncomingRecords", "OutgoingRecords"])
    assert out["StreamARN"].endswith(f":stream/{name}")
    k.put_records(StreamName=name, Records=[{"Data": b"x", "PartitionKey": "k"}] * 2)
    read_all()
    assert series("kinesis_shard_incoming_records_total") == [
        f'kinesis_shard_incoming_records_total{{shard_id="{shard}",stream="{name}"}} 2.0']
    assert series("kinesis_outgoing_records_total") == [
        f'kinesis_outgoing_records_total{{shard_id="{shard}",stream="{name}"}} 3.0']
    assert series("kinesis_shard_incoming_bytes_total") == [] and series("kinesis_iterator_age_seconds") == []
    described = k.describe_stream(StreamName=name)["StreamDescription"]["EnhancedMonitoring"]
    assert described == [{"ShardLevelMetrics": ["IncomingRecords", "OutgoingRecords"]}]
    out = k.disable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["OutgoingRecords"])
    assert (out["CurrentShardLevelMetrics"], out["DesiredShardLevelMetrics"]) == (
        ["IncomingRecords", "OutgoingRecords"], ["IncomingRecords"])
    assert series("kinesis_outgoing_records_total") == [] and len(series("kinesis_shard_incoming_records_total")) == 1
    out = k.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    assert len(out["DesiredShardLevelMetrics"]) == 7
    out = k.disable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    assert out["DesiredShardLevelMetrics"] == []
    assert series("kinesis_shard_incoming_records_total") == []
    summary = k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]


def test_tags_by_arn(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = f"arn:aws:kinesis:us-east-1:{ACCT}:stream/{name}"
    kinesis.tag_resource(ResourceARN=arn, Tags={"team": "data", "env": "dev"})
    assert kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "dev"},
                                                                        {"Key": "team", "Value": "data"}]
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["env"])
    assert kinesis.list_tags_for_stream(StreamName=name)["Tags"] == [{"Key": "team", "Value": "data"}]
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.list_tags_for_resource(ResourceARN=f"arn:aws:kinesis:us-east-1:{ACCT}:stream/{name}/consumer/c:1")
    assert _code(exc)[0] == "ResourceNotFoundException"


# -- the store itself: quotas, scaling, persistence --------------------------------------------------------


def _run(directory: Path, options: StoreOptions, body: Any) -> Any:
    async def main() -> Any:
        store = ShardStore(directory, options)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_on_demand_stream_quota(tmp_path: Path) -> None:
    async def body(store: ShardStore) -> None:
        store.create_stream("a", 4, mode="ON_DEMAND")
        store.create_stream("b", 4, mode="ON_DEMAND")
        store.create_stream("c", 1)
        for attempt in (lambda: store.create_stream("d", 4, mode="ON_DEMAND"),
                        lambda: store.switch_mode("c", "ON_DEMAND")):
            with pytest.raises(LimitExceededException) as exc:
                attempt()
            assert exc.value.message == "Limit for on-demand streams has been reached"
        assert store.on_demand_count() == 2 and store.streams["c"].mode == "PROVISIONED"

    _run(tmp_path, StoreOptions(on_demand_stream_limit=2), body)


def test_on_demand_streams_split_shards_written_beyond_a_shards_capacity(tmp_path: Path) -> None:
    """A shard that stored 1,000 records/s over the last look is split at its middle; the others stay."""
    async def body(store: ShardStore) -> None:
        stream = store.create_stream("od", 4, mode="ON_DEMAND")
        store.create_stream("prov", 1)
        scaler = OnDemandScaler(store)
        assert scaler.observe(now=100.0) == 0  # the first look only notes where the counters stand
        hot_key = 1  # a hash key in shard 0
        await store.put("od", [(b"k", b"x", hot_key)] * 1500)
        await store.put("od", [(b"k", b"x", 2**127 + 1)] * 10)  # shard 2: a trickle
        await store.put("prov", [(b"k", b"x", hot_key)] * 5000)  # provisioned streams never scale
        assert scaler.observe(now=101.0) == 1
        opened = sorted((s.start, s.shard_id) for s in stream.open_shards())
        assert [sid for _start, sid in opened] == ["shardId-000000000004", "shardId-000000000005",
                                                   "shardId-000000000001", "shardId-000000000002",
                                                   "shardId-000000000003"]
        assert opened[1][0] == 2**125  # the middle of the first quarter
        assert len(store.streams["prov"].open_shards()) == 1
        assert scaler.observe(now=102.0) == 0  # no writes since: nothing more to split

    _run(tmp_path, StoreOptions(on_demand_scaling=False), body)


def test_shard_level_metrics_and_mode_survive_a_restart(tmp_path: Path) -> None:
    async def first(store: ShardStore) -> None:
        store.create_stream("s", 2)
        store.set_shard_metrics("s", ["ALL"], enable=True)
        store.set_shard_metrics("s", ["IteratorAgeMilliseconds"], enable=False)
        store.switch_mode("s", "ON_DEMAND")

    async def second(store: ShardStore) -> tuple[list[str], str, int]:
        s = store.streams["s"]
        return s.shard_metrics, s.mode, len(s.mode_switches)

    _run(tmp_path, StoreOptions(), first)
    metrics, mode, switches = _run(tmp_path, StoreOptions(), second)
    assert metrics == ["IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
                       "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded"]
    assert (mode, switches) == ("ON_DEMAND", 1)
