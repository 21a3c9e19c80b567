"""Two daemons in ``cluster.mode: fleet`` read one 8-shard Kinesis stream through a lease table in DynamoDB
(moto's server), each delivering to its own directory: they split the shards; one is killed with SIGKILL and
the other finishes every shard from the dead one's checkpoints. Nothing is lost, and the only records
delivered twice are the killed daemon's: read after the last checkpoint it wrote to the table. Restarted, it
takes its share back by graceful handoffs while records keep coming, and none of those is read twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from firehose.sources.leases import LeaseTable
from tests.support.aws import dynamodb_client
from tests.support.config import write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import delivered_records
from tests.support.kinesis_source import source_stream
from tests.support.servers import MotoServer
from tests.support.streams import unique
from tests.support.waiting import wait_until

SHARDS = 8


def lease_gauge(d: DaemonProcess) -> float | None:
    """``firehose_kinesis_source_leases`` of the shared stream, from the daemon's /metrics."""
    for family in text_string_to_metric_families(httpx.get(f"{d.endpoint}/metrics").text):
        for sample in family.samples:
            if sample.name == "firehose_kinesis_source_leases" and sample.labels.get("delivery_stream") == "shared":
                return sample.value
    return None


def test_two_daemons_split_the_shards_and_one_finishes_a_dead_ones(
        moto_server: MotoServer, start_streams_server: Any, daemon_process: Callable[..., DaemonProcess],
        tmp_path: Path) -> None:
    stream = unique("leased")
    server = start_streams_server({"kinesis": {"streams": [{"StreamName": stream, "ShardCount": SHARDS}]}})
    kinesis = server.client()
    prefix = f"{unique('t')}-"
    daemons = []
    for node in ("a", "b"):
        settings = {"state_dir": str(tmp_path / f"state-{node}"), "log_level": "INFO",
                    "buckets": {"local": {"directory": str(tmp_path / f"out-{node}")}},
                    "kinesis": {"source_endpoint_url": server.endpoint, "source_poll_interval_seconds": 0.05},
                    "cluster": {"mode": "fleet", "node_id": f"node-{node}",
                                "leases": {"endpoint_url": moto_server.endpoint, "table_prefix": prefix,
                                           "lease_duration_seconds": 2}}}
        config = write_config(tmp_path / f"{node}.yaml", settings, [source_stream("shared", stream)])
        daemons.append(daemon_process(config).start())
    a, b = daemons

    def held(d: DaemonProcess) -> list[str]:
        return list(d.readiness()["streams"]["shared"].get("source", {}).get("leases", {}).get("held", []))

    wait_until(lambda: len(held(a)) == len(held(b)) == SHARDS // 2, timeout=60, interval=0.2)
    wait_until(lambda: lease_gauge(a) == lease_gauge(b) == SHARDS // 2, timeout=10, interval=0.2)
    a_shards = held(a)
    assert not set(a_shards) & set(held(b))

    where: dict[bytes, tuple[str, int]] = {}  # record -> (shard, sequence number)

    def produce(numbers: range) -> None:
        for start in range(numbers.start, numbers.stop, 500):
            batch = [f"r-{i}\n".encode() for i in range(start, min(start + 500, numbers.stop))]
            answer = kinesis.put_records(StreamName=stream, Records=[
                {"Data": data, "PartitionKey": f"key-{i}"} for i, data in enumerate(batch, start)])
            assert answer["FailedRecordCount"] == 0
            for data, result in zip(batch, answer["Records"], strict=True):
                where[data.rstrip(b"\n")] = (result["ShardId"], int(result["SequenceNumber"]))

    def read_by(d: DaemonProcess) -> int:
        return int(d.readiness()["streams"]["shared"]["source"].get("records_read", 0))

    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"

    def delivered() -> list[bytes]:
        return delivered_records(out_a, "shared/") + delivered_records(out_b, "shared/")

    total, third = 24_000, 8_000
    produce(range(third))  # read and checkpointed by both
    wait_until(lambda: len(set(delivered())) >= third, timeout=60, interval=0.2)
    before = read_by(a)
    produce(range(third, 2 * third))  # one is killed while reading these
    wait_until(lambda: read_by(a) > before, timeout=60, interval=0.02)
    assert held(a) == a_shards
    a.kill()
    table = LeaseTable(dynamodb_client(moto_server.endpoint), f"{prefix}123456789012-shared")
    at_kill = {key: lease.checkpoint for key, lease in table.scan().items()}
    produce(range(2 * third, total))
    # the survivor takes over the dead daemon's leases once they expire, and reads them from its checkpoints
    wait_until(lambda: len(held(b)) == SHARDS, timeout=60, interval=0.2)
    wait_until(lambda: len(set(delivered())) >= total - 2 * third and b.idle("shared")
               and b.readiness()["streams"]["shared"]["source"]["millis_behind"] == 0, timeout=60, interval=0.2)
    a.start()  # restarted: delivers what it had spooled, and takes back a share by graceful handoffs
    wait_until(lambda: len(set(delivered())) >= total, timeout=60, interval=0.2)
    rebalanced = total
    while not len(held(a)) == len(held(b)) == SHARDS // 2:  # records keep coming while shards change hands
        produce(range(rebalanced, rebalanced + 500))
        rebalanced += 500
        assert rebalanced < total + 40_000, "the daemons did not rebalance"
        time.sleep(0.1)
    produce(range(rebalanced, rebalanced + 500))
    rebalanced += 500
    wait_until(lambda: len(set(delivered())) >= rebalanced, timeout=60, interval=0.2)
    wait_until(lambda: a.idle("shared") and b.idle("shared"), timeout=60)

    counts = Counter(delivered())
    assert set(counts) == {f"r-{i}".encode() for i in range(rebalanced)}  # nothing lost
    # a rebalance between live daemons hands each shard over at its last checkpoint: nothing read twice
    assert [r for r, n in counts.items() if n > 1 and int(r.removeprefix(b"r-")) >= total] == []
    for out in (out_a, out_b):  # no daemon delivers a record twice itself
        assert max(Counter(delivered_records(out, "shared/")).values()) == 1
    twice = [record for record, n in counts.items() if n > 1]
    for record in twice:  # the dead daemon's shards, after the checkpoint it last wrote
        shard, sequence = where[record]
        assert shard in a_shards, record
        assert at_kill[shard].isdigit() is False or sequence > int(at_kill[shard]), (record, at_kill[shard])
    print(f"{len(twice)} of {total} records delivered twice, all after the dead daemon's last checkpoints; "
          f"none of {rebalanced - total} records read while shards were handed over")


def test_a_fleet_daemon_reads_children_after_their_parent_ends(
        moto_server: MotoServer, start_streams_server: Any, daemon_process: Callable[..., DaemonProcess],
        tmp_path: Path) -> None:
    """Split while read: the parent's lease reaches SHARD_END and is let go; then the children's are taken."""
    stream = unique("split")
    server = start_streams_server({"kinesis": {"streams": [{"StreamName": stream, "ShardCount": 1}]}})
    kinesis = server.client()
    prefix = f"{unique('t')}-"
    settings = {"state_dir": str(tmp_path / "state"), "buckets": {"local": {"directory": str(tmp_path / "out")}},
                "kinesis": {"source_endpoint_url": server.endpoint, "source_poll_interval_seconds": 0.05},
                "cluster": {"mode": "fleet", "node_id": "node-a",
                            "leases": {"endpoint_url": moto_server.endpoint, "table_prefix": prefix,
                                       "lease_duration_seconds": 1}}}
    d = daemon_process(write_config(tmp_path / "a.yaml", settings, [source_stream("shared", stream)])).start()

    def put(numbers: range) -> None:
        kinesis.put_records(StreamName=stream, Records=[{"Data": f"r-{i}\n".encode(), "PartitionKey": f"k{i}"}
                                                        for i in numbers])

    put(range(100))
    parent = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127))
    wait_until(lambda: kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
        "StreamStatus"] == "ACTIVE", timeout=30)
    put(range(100, 200))
    wait_until(lambda: len(set(delivered_records(tmp_path / "out", "shared/"))) == 200, timeout=60, interval=0.2)
    table = LeaseTable(dynamodb_client(moto_server.endpoint), f"{prefix}123456789012-shared")
    wait_until(lambda: len(table.scan()) == 3 and sum(lease.owner == "node-a" for lease in table.scan().values()) == 2,
               timeout=30, interval=0.2)
    leases = table.scan()
    assert leases[parent].checkpoint == "SHARD_END" and leases[parent].owner is None
    children = [lease for key, lease in leases.items() if key != parent]
    assert all(lease.parents == {parent} for lease in children)
    assert sorted(d.readiness()["streams"]["shared"]["source"]["leases"]["held"]) == sorted(c.key for c in children)
    assert max(Counter(delivered_records(tmp_path / "out", "shared/")).values()) == 1


def test_a_missing_lease_table_with_create_table_off_is_reported_and_waited_for(
        moto_server: MotoServer, start_streams_server: Any, daemon_process: Callable[..., DaemonProcess],
        tmp_path: Path) -> None:
    """``cluster.leases.create_table: false`` and no table: the daemon serves, /readyz shows the source's error
    (the table and the setting), and once an operator creates the table the source reads every record."""
    stream = unique("untabled")
    server = start_streams_server({"kinesis": {"streams": [{"StreamName": stream, "ShardCount": 2}]}})
    prefix = f"{unique('t')}-"
    settings = {"state_dir": str(tmp_path / "state"), "log_level": "INFO",
                "buckets": {"local": {"directory": str(tmp_path / "out")}},
                "kinesis": {"source_endpoint_url": server.endpoint, "source_poll_interval_seconds": 0.05},
                "cluster": {"mode": "fleet", "node_id": "node-a",
                            "leases": {"endpoint_url": moto_server.endpoint, "table_prefix": prefix,
                                       "lease_duration_seconds": 2, "create_table": False}}}
    d = daemon_process(write_config(tmp_path / "a.yaml", settings, [source_stream("shared", stream)])).start()

    def source() -> dict[str, Any]:
        return dict(d.readiness()["streams"]["shared"].get("source", {}))

    wait_until(lambda: "create_table is off" in (source().get("last_error") or ""), timeout=30, interval=0.2)
    name = f"{prefix}123456789012-shared"
    assert name in source()["last_error"]
    dynamo = dynamodb_client(moto_server.endpoint)
    assert name not in dynamo.list_tables()["TableNames"]
    server.client().put_records(StreamName=stream, Records=[
        {"Data": f"r-{i}\n".encode(), "PartitionKey": f"k{i}"} for i in range(20)])
    LeaseTable(dynamo, name).ensure(create=True)  # the operator creates it
    wait_until(lambda: len(source().get("leases", {}).get("held", [])) == 2, timeout=30, interval=0.2)
    wait_until(lambda: len(delivered_records(tmp_path / "out", "shared/")) == 20, timeout=30, interval=0.2)
    assert sorted(delivered_records(tmp_path / "out", "shared/")) == sorted(f"r-{i}".encode() for i in range(20))
    assert not source().get("last_error")
