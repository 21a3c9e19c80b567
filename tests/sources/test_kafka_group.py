"""Several daemons serving one MSKAsSource stream share its topic through the stream's consumer group; a daemon
killed with SIGKILL loses nothing, and the only records delivered twice are its uncommitted window."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import delivered_records
from tests.support.kafka import KafkaBroker, clusters, msk_stream
from tests.support.waiting import wait_until

PARTITIONS = 6
GROUP = "firehose.123456789012.shared"


@pytest.fixture
def broker() -> Iterator[KafkaBroker]:
    b = KafkaBroker().start()
    yield b
    b.stop()


def record(i: int) -> tuple[int, bytes, bytes]:
    """Record ``i``: its partition (i mod 6: so its offset there is i div 6, the producer being alone and in
    order), its key, its value."""
    return i % PARTITIONS, f"key-{i % 1000}".encode(), f"r-{i}\n".encode()


def where(value: bytes) -> tuple[int, int]:
    i = int(value.removeprefix(b"r-"))
    return i % PARTITIONS, i // PARTITIONS


def run_kill_test(broker: KafkaBroker, daemon_process: Callable[..., DaemonProcess], tmp_path: Path,
                  total: int) -> None:
    broker.create_topic("events", PARTITIONS)
    daemons = []
    for name in ("a", "b"):
        settings = {"state_dir": str(tmp_path / f"state-{name}"), "log_level": "INFO",
                    "buckets": {"local": {"directory": str(tmp_path / f"out-{name}")}},
                    # commits a second apart (the default): a kill leaves an uncommitted window
                    "kafka_clusters": clusters(broker, commit_interval_seconds=1.0)}
        config = write_config(tmp_path / f"{name}.yaml", settings, [msk_stream("shared", "events")])
        daemons.append(daemon_process(config).start())
    a, b = daemons

    def partitions(d: DaemonProcess) -> list[int]:
        return list(d.readiness()["streams"]["shared"].get("source", {}).get("partitions", []))

    wait_until(lambda: len(partitions(a)) == len(partitions(b)) == PARTITIONS // 2, timeout=60, interval=0.2)

    def produce(numbers: range) -> None:
        for p in range(PARTITIONS):
            broker.produce("events", ((k, v) for i in numbers for q, k, v in [record(i)] if q == p), partition=p)

    # a first third, read and committed by both; a second third, during which one is killed (its offsets
    # committed up to a second before); the last third while the survivor is alone and after
    third = total // 3
    produce(range(third))
    owned = partitions(a)
    wait_until(lambda: all(broker.committed(GROUP, "events").get(p, 0) >= third // PARTITIONS for p in owned),
               timeout=60, interval=0.2)
    read_before = a.readiness()["streams"]["shared"]["source"]["records"]
    produce(range(third, 2 * third))
    wait_until(lambda: a.readiness()["streams"]["shared"]["source"]["records"] > read_before, timeout=60,
               interval=0.02)
    assert partitions(a) == owned
    a.kill()
    committed_at_kill = broker.committed(GROUP, "events")
    produce(range(2 * third, total))
    # the survivor takes over the dead daemon's partitions once its session expires
    wait_until(lambda: len(partitions(b)) == PARTITIONS, timeout=60, interval=0.2)
    a.start()  # restarted: delivers what it had spooled, and rejoins the group
    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"

    def delivered() -> list[bytes]:
        return delivered_records(out_a, "shared/") + delivered_records(out_b, "shared/")

    wait_until(lambda: len(set(delivered())) >= total, timeout=180, interval=0.5)
    wait_until(lambda: a.idle("shared") and b.idle("shared"), timeout=60)
    got = delivered()
    counts = Counter(got)
    assert set(counts) == {record(i)[2].rstrip(b"\n") for i in range(total)}  # nothing lost
    twice = [v for v, n in counts.items() if n > 1]
    assert all(counts[v] == 2 for v in twice)
    # no daemon delivers a record twice itself (its spool's checkpoint is authoritative) ...
    for out in (out_a, out_b):
        own = Counter(delivered_records(out, "shared/"))
        assert max(own.values()) == 1
    # ... and the duplicates are the killed daemon's uncommitted window: records of its partitions at or after
    # the offset committed when it died
    for value in twice:
        partition, offset = where(value)
        assert partition in owned, value
        assert offset >= committed_at_kill.get(partition, 0), (value, committed_at_kill)
        assert third <= int(value.removeprefix(b"r-")) < 2 * third  # committed before; the dead read no more
    by_partition = Counter(where(v)[0] for v in twice)
    print(f"{len(twice)} duplicates of {total} records; by partition {dict(by_partition)}; "
          f"committed at the kill {committed_at_kill}")


def test_two_daemons_share_partitions_and_survive_a_kill(broker: KafkaBroker, daemon_process: Any,
                                                         tmp_path: Path) -> None:
    """200,000 keyed records over 6 partitions; about 20 s, most of it the broker's rebalances."""
    run_kill_test(broker, daemon_process, tmp_path, total=200_000)
