"""Leases on a Kinesis stream's shards (``firehose.sources.leases``), against moto's DynamoDB server: daemons
split the shards, a daemon that stops renewing loses its leases to another, which resumes at their
checkpoints; stale owners are fenced off; children wait for their parents. Time is a fake clock, so the
expiry rules are exact and the tests take no lease-duration waits."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import boto3
import pytest

from firehose.sources.leases import SHARD_END, TRIM_HORIZON, LeaseCoordinator, LeaseTable, later_checkpoint
from tests.support.aws import dynamodb_client
from tests.support.servers import MotoServer

DURATION = 10.0
_tables = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shards(n: int) -> dict[str, dict[str, Any]]:
    return {f"shardId-{i:012d}": {"ShardId": f"shardId-{i:012d}",
                                  "HashKeyRange": {"StartingHashKey": str(i), "EndingHashKey": str(i)}}
            for i in range(n)}


@pytest.fixture
def table(moto_server: MotoServer) -> LeaseTable:
    t = LeaseTable(dynamodb_client(moto_server.endpoint), f"firehose-123456789012-leases-{next(_tables)}")
    t.ensure(create=True)
    return t


def coordinator(table: LeaseTable, owner: str, clock: Clock, lost: list[str] | None = None) -> LeaseCoordinator:
    return LeaseCoordinator(table=table, owner=owner, duration=DURATION, clock=clock,
                            on_lost=(lost.append if lost is not None else lambda shard: None))


async def round_of(c: LeaseCoordinator, listed: dict[str, dict[str, Any]], checkpoints: dict[str, str] | None = None
                   ) -> list[str]:
    await c.renew(checkpoints or {})
    await c.sync(listed)
    return await c.balance()


def test_checkpoints_compare_as_numbers() -> None:
    assert later_checkpoint("9", "10") == "10"
    assert later_checkpoint(None, TRIM_HORIZON) == TRIM_HORIZON
    assert later_checkpoint("49590338271490256608559692538361571095921575989136588898", TRIM_HORIZON) \
        == "49590338271490256608559692538361571095921575989136588898"
    assert later_checkpoint(None, None) is None


def test_the_table_has_the_kcl_schema(table: LeaseTable) -> None:
    listed = {"shardId-000000000002": {"ShardId": "shardId-000000000002", "ParentShardId": "shardId-000000000000",
                                       "AdjacentParentShardId": "shardId-000000000001",
                                       "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"}}}
    c = coordinator(table, "node-a", Clock())
    asyncio.run(round_of(c, listed))
    item = table.client.get_item(TableName=table.name, Key={"leaseKey": {"S": "shardId-000000000002"}},
                                 ConsistentRead=True)["Item"]
    assert item["leaseOwner"] == {"S": "node-a"}
    assert item["leaseCounter"] == {"N": "1"}
    assert item["checkpoint"] == {"S": TRIM_HORIZON}
    assert item["checkpointSubSequenceNumber"] == {"N": "0"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "1"}
    assert set(item["parentShardId"]["SS"]) == {"shardId-000000000000", "shardId-000000000001"}
    assert (item["startingHashKey"], item["endingHashKey"]) == ({"S": "0"}, {"S": "99"})
    key_schema = table.client.describe_table(TableName=table.name)["Table"]["KeySchema"]
    assert key_schema == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]


async def hand_over_all(c: LeaseCoordinator, checkpoints: dict[str, str]) -> list[str]:
    """What a daemon's source does once the readers of the shards it must hand over have stopped."""
    keys = list(c.handing_over)
    for key in keys:
        await c.hand_over(key, checkpoints.get(key))
    return keys


def test_a_daemon_that_joins_takes_its_share_one_graceful_handoff_a_round(table: LeaseTable) -> None:
    """The KCL 3.x handoff: the thief reads a stolen shard only once the victim has stopped reading it and
    written its final checkpoint, so a rebalance reads nothing twice."""
    async def run() -> None:
        clock, listed, lost_a = Clock(), shards(8), []
        a = coordinator(table, "node-a", clock, lost_a)
        assert len(await round_of(a, listed)) == 8  # alone: every lease
        spooled = {key: str(500 + i) for i, key in enumerate(sorted(listed))}  # a has read further since
        b = coordinator(table, "node-b", clock)
        rounds = 0
        while len(b.held) < 4 or b.readable() != b.held:
            rounds += 1
            assert rounds <= 8
            [stolen] = await round_of(b, listed)  # steals one per round, from the daemon with too many
            assert not b.holds(stolen) and table.get(stolen).checkpoint_owner == "node-a"  # b waits
            await round_of(b, listed)
            assert len(b.held) == rounds and not b.holds(stolen)  # no second steal while one waits
            clock.now += 1
            await a.renew(spooled)  # the victim learns at its next renewal and stops reading ...
            assert not a.holds(stolen) and a.handing_over == {stolen: "node-b"}
            assert await hand_over_all(a, spooled) == [stolen]  # ... then writes its last checkpoint
            await b.renew({})
            assert b.holds(stolen) and b.held[stolen].checkpoint == spooled[stolen]  # b reads from there
        assert rounds == 4
        await round_of(b, listed)
        assert len(b.held) == 4  # at its target: no more stealing
        await round_of(a, listed)
        assert set(a.held) | set(b.held) == set(listed)
        assert not set(a.held) & set(b.held)
        assert sorted(lost_a) == sorted(b.held)
        assert all(lease.checkpoint_owner is None for lease in table.scan().values())

    asyncio.run(run())


def test_a_thief_stops_waiting_for_a_victim_that_does_not_hand_over(table: LeaseTable) -> None:
    async def run() -> None:
        clock, listed = Clock(), shards(2)
        a = coordinator(table, "node-a", clock)
        await round_of(a, listed)
        await a.renew({key: "7" for key in listed})
        b = coordinator(table, "node-b", clock)
        [stolen] = await round_of(b, listed)
        clock.now += DURATION - 1
        await b.renew({})
        assert not b.holds(stolen)  # within a duration: still waiting for a
        clock.now += 2
        await b.renew({})
        assert b.holds(stolen) and b.held[stolen].checkpoint == "7"  # the table's checkpoint
        assert table.get(stolen).checkpoint_owner is None
        await a.renew({key: "9" for key in listed})  # a, back late, finds the lease gone: nothing to hand over
        assert stolen not in a.held and a.handing_over == {}
        assert table.get(stolen).checkpoint == "7"  # its late checkpoint never lands

    asyncio.run(run())


def test_a_dead_daemons_leases_are_taken_over_at_its_checkpoints(table: LeaseTable) -> None:
    async def run() -> None:
        clock, listed, lost_a = Clock(), shards(4), []
        a = coordinator(table, "node-a", clock, lost_a)
        await round_of(a, listed)
        checkpoints = {key: str(100 + i) for i, key in enumerate(sorted(listed))}
        await a.renew(checkpoints)  # a's records up to these are in its spool
        b = coordinator(table, "node-b", clock)
        for _ in range(3):  # a is alive: b steals, a renews and hands over
            await round_of(b, listed)
            clock.now += 1
            await a.renew(checkpoints)
            await hand_over_all(a, checkpoints)
            await b.renew({})
        assert len(b.held) == 2 and len(a.held) == 2 and b.readable() == b.held
        # a stops renewing (killed). Within a duration of b seeing its last renewal, its leases are live for b
        await round_of(b, listed)
        clock.now += DURATION - 1
        await round_of(b, listed)
        assert len(b.held) == 2
        clock.now += 2
        taken = await round_of(b, listed)
        assert sorted(taken) == sorted(a.held)
        assert {k: lease.checkpoint for k, lease in b.held.items()} == checkpoints  # resumes where a was
        # a comes back with stale state: its write is fenced off, its checkpoint never lands
        await a.renew({k: "999" for k in a.held})
        assert a.held == {} and sorted(lost_a) == sorted(listed)
        assert {lease.checkpoint for lease in table.scan().values()} == set(checkpoints.values())

    asyncio.run(run())


def test_a_lease_not_renewed_for_a_duration_is_given_up(table: LeaseTable) -> None:
    class Unreachable(LeaseTable):
        def renew(self, *args: Any) -> Any:
            raise ConnectionError("DynamoDB is unreachable")

    async def run() -> None:
        clock, listed, lost = Clock(), shards(2), []
        a = coordinator(Unreachable(table.client, table.name), "node-a", clock, lost)
        await round_of(a, listed)
        clock.now += DURATION - 1
        await a.renew({})
        assert len(a.held) == 2 and lost == []  # failures within a duration: still held
        clock.now += 2
        await a.renew({})
        assert a.held == {} and sorted(lost) == sorted(listed)

    asyncio.run(run())


def test_children_are_taken_after_their_parents_end(table: LeaseTable) -> None:
    async def run() -> None:
        clock = Clock()
        parent = {"ShardId": "shardId-000000000000"}
        listed = {"shardId-000000000000": parent,
                  **{f"shardId-00000000000{i}": {"ShardId": f"shardId-00000000000{i}",
                                                 "ParentShardId": "shardId-000000000000"} for i in (1, 2)}}
        a = coordinator(table, "node-a", clock)
        assert await round_of(a, listed) == ["shardId-000000000000"]
        assert await round_of(a, listed) == []
        await a.finish("shardId-000000000000")
        assert sorted(await round_of(a, listed)) == ["shardId-000000000001", "shardId-000000000002"]
        assert table.scan()["shardId-000000000000"].checkpoint == SHARD_END
        assert table.scan()["shardId-000000000000"].owner is None
        # once the parent is past the stream's retention (no longer listed), its finished lease goes
        del listed["shardId-000000000000"]
        await round_of(a, listed)
        assert "shardId-000000000000" not in table.scan()

    asyncio.run(run())


def test_leases_let_go_on_a_clean_stop_are_taken_at_once_and_a_restart_adopts_its_own(table: LeaseTable) -> None:
    async def run() -> None:
        clock, listed = Clock(), shards(4)
        a = coordinator(table, "node-a", clock)
        await round_of(a, listed)
        await a.release_all({key: "42" for key in listed})
        b = coordinator(table, "node-b", clock)
        assert len(await round_of(b, listed)) == 4  # no expiry to wait for
        assert {lease.checkpoint for lease in b.held.values()} == {"42"}
        # b is restarted (same node id, nothing in memory): it adopts its own leases without waiting
        b2 = coordinator(table, "node-b", clock)
        assert len(await round_of(b2, listed)) == 4
        await b.renew({})
        assert b.held == {}  # the old incarnation is fenced off

    asyncio.run(run())


def test_a_missing_table_is_created_only_when_the_settings_allow(moto_server: MotoServer) -> None:
    """``cluster.leases.create_table: false``: a missing table is an error naming the table and the setting,
    and nothing is created; with it on (the default), the table is created as the KCL creates it."""
    client = dynamodb_client(moto_server.endpoint)
    table = LeaseTable(client, f"firehose-123456789012-missing-{next(_tables)}")
    with pytest.raises(LookupError, match=rf"{table.name} does not exist \(cluster.leases.create_table is off\)"):
        table.ensure(create=False)
    assert table.name not in client.list_tables()["TableNames"]
    table.ensure(create=True)
    described = client.describe_table(TableName=table.name)["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    table.ensure(create=False)  # there now: nothing to do


@pytest.mark.parametrize("region", [None, "eu-west-1"])
def test_the_table_is_named_for_the_stream_and_kept_in_the_configured_region(
        moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, region: str | None) -> None:
    """``make_table``: ``<table_prefix><account>-<delivery stream>``, in ``cluster.leases.region`` when it is set,
    else in the Kinesis stream's region (moto's server keeps tables per region, as DynamoDB does)."""
    from firehose.settings import LeaseSettings
    from firehose.sources.leases import make_table

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)  # signed, so that the server reads the region from the signature
    prefix = f"fh{next(_tables)}-"
    settings = LeaseSettings(endpoint_url=moto_server.endpoint, region=region, table_prefix=prefix)
    table = make_table(settings, region="ap-southeast-2", account_id="123456789012", delivery_stream="orders")
    assert table.name == f"{prefix}123456789012-orders"
    table.ensure(create=True)
    expected = region or "ap-southeast-2"
    for where in ("ap-southeast-2", "eu-west-1"):
        client = boto3.client("dynamodb", endpoint_url=moto_server.endpoint, region_name=where,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        assert (table.name in client.list_tables()["TableNames"]) == (where == expected), where
