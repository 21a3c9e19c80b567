"""Delivery streams of type MSKAsSource reading a real Kafka-protocol broker (Tansu) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.delivered import delivered_records
from tests.support.kafka import KafkaBroker
from tests.support.waiting import wait_until

CLUSTER = "arn:aws:kafka:us-east-1:123456789012:cluster/dev/abcd-1"


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    b = KafkaBroker().start()
    yield b
    b.stop()


def msk_stream(name: str, topic: str, *, read_from: Any = "1970-01-01T00:00:00Z", **extra: Any) -> dict[str, Any]:
    """A delivery stream reading ``topic`` from the start, writing under ``{name}/``."""
    body = local_stream(name, **extra)
    body["DeliveryStreamType"] = "MSKAsSource"
    source: dict[str, Any] = {"MSKClusterARN": CLUSTER, "TopicName": topic,
                              "AuthenticationConfiguration": {"RoleARN": ROLE, "Connectivity": "PRIVATE"}}
    if read_from is not None:
        source["ReadFromTimestamp"] = read_from
    body["MSKSourceConfiguration"] = source
    body["ExtendedS3DestinationConfiguration"]["Prefix"] = f"{name}/"
    body["ExtendedS3DestinationConfiguration"]["ErrorOutputPrefix"] = f"errors-{name}/"
    return body


def clusters(broker: KafkaBroker, **extra: Any) -> dict[str, Any]:
    return {CLUSTER: {"bootstrap_servers": broker.bootstrap, "session_timeout_ms": 6000,
                      "heartbeat_interval_ms": 1000, "commit_interval_seconds": 0.2, **extra}}


def keyed(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i % 97}".encode(), f"{prefix}-{i}\n".encode()) for i in range(n)]


def test_one_daemon_delivers_every_partition_exactly_once(start_daemon: Any, broker: KafkaBroker,
                                                          tmp_path: Path) -> None:
    broker.create_topic("orders", 6)
    records = keyed("o", 3000)
    broker.produce("orders", records)
    assert len([p for p, end in broker.end_offsets("orders").items() if end > 0]) == 6
    d = start_daemon([msk_stream("fromkafka", "orders")], kafka_clusters=clusters(broker))
    out = tmp_path / "out"
    want = sorted(v.rstrip(b"\n") for _k, v in records)
    wait_until(lambda: len(delivered_records(out, "fromkafka/")) >= len(want), timeout=60)
    wait_until(lambda: d.idle("fromkafka"), timeout=30)
    assert sorted(delivered_records(out, "fromkafka/")) == want
    # what is spooled is committed to the stream's group
    wait_until(lambda: broker.committed("firehose.123456789012.fromkafka", "orders") == broker.end_offsets("orders"),
               timeout=20)
