"""Delivery streams of type MSKAsSource reading a real Kafka-protocol broker (Tansu) on loopback."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from firehose.settings import KafkaClusterSettings
from firehose.sources.kafka_reader import (
    MAX_RECORD_BYTES,
    MAX_RECORD_BYTES_LAMBDA,
    OFFSET_BEGINNING,
    OFFSET_END,
    RECORD_TOO_LARGE,
    consumer_config,
    offsets_at,
    record_limit,
    start_offsets,
)
from tests.support.aws import ROLE
from tests.support.config import write_config
from tests.support.delivered import delivered_records, read_local
from tests.support.kafka import CLUSTER, KafkaBroker, clusters, keyed, msk_stream
from tests.support.ports import free_port
from tests.support.transforms import write_function
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    b = KafkaBroker().start()
    yield b
    b.stop()


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


def test_the_api_creates_describes_and_refuses_as_aws(start_daemon: Any, broker: KafkaBroker) -> None:
    d = start_daemon([], kafka_clusters=clusters(broker))
    fh = d.client()
    broker.create_topic("api-topic", 1)
    body = msk_stream("viaapi", "api-topic", read_from=0)
    fh.create_delivery_stream(**body)
    desc = fh.describe_delivery_stream(DeliveryStreamName="viaapi")["DeliveryStreamDescription"]
    assert desc["DeliveryStreamType"] == "MSKAsSource"
    assert "DeliveryStreamEncryptionConfiguration" not in desc  # server-side encryption is DirectPut's only
    source = desc["Source"]["MSKSourceDescription"]
    assert source["MSKClusterARN"] == CLUSTER and source["TopicName"] == "api-topic"
    assert source["AuthenticationConfiguration"] == {"RoleARN": ROLE, "Connectivity": "PRIVATE"}
    assert source["ReadFromTimestamp"].timestamp() == 0 and source["DeliveryStartTimestamp"].timestamp() == 0
    # records come from the topic only
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.put_record(DeliveryStreamName="viaapi", Record={"Data": b"x"})
    assert "MSKAsSource" in exc.value.response["Error"]["Message"]
    # a cluster the daemon has no connection settings for is refused at creation, saying where to add it
    unknown = msk_stream("nowhere", "api-topic")
    unknown["MSKSourceConfiguration"]["MSKClusterARN"] = "arn:aws:kafka:us-east-1:123456789012:cluster/other/x"
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.create_delivery_stream(**unknown)
    assert "kafka_clusters" in exc.value.response["Error"]["Message"]
    # AWS's constraints on the members
    bad = msk_stream("badtopic", "no spaces allowed")
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.create_delivery_stream(**bad)
    assert "topicName" in exc.value.response["Error"]["Message"]
    missing = msk_stream("nosource", "api-topic")
    del missing["MSKSourceConfiguration"]
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.create_delivery_stream(**missing)
    assert "MSKSourceConfiguration" in exc.value.response["Error"]["Message"]


def test_a_daemon_killed_and_restarted_spools_no_record_twice(daemon_process: Any, broker: KafkaBroker,
                                                              tmp_path: Path) -> None:
    """The spool's checkpoint wins over the group's committed offset: with commits an hour apart, a daemon
    killed after reading has committed nothing, and would read every record again were the group's offset
    (here: none, so ReadFromTimestamp, the earliest) used."""
    broker.create_topic("restarts", 3)
    settings = {"state_dir": str(tmp_path / "state"), "buckets": {"local": {"directory": str(tmp_path / "out")}},
                "kafka_clusters": clusters(broker, commit_interval_seconds=3600)}
    d = daemon_process(write_config(tmp_path / "f.yaml", settings, [msk_stream("r", "restarts")])).start()
    first = keyed("a", 900)
    broker.produce("restarts", first)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "r/")) >= len(first), timeout=60)
    reader = d.readiness()["streams"]["r"]["source"]["reader_pid"]
    assert _alive(reader)
    d.kill()
    # the reader process sees its link close and exits: a killed daemon leaves nothing reading behind
    wait_until(lambda: not _alive(reader), timeout=15)
    assert broker.committed("firehose.123456789012.r", "restarts") == {}
    d.start()
    second = keyed("b", 900)
    broker.produce("restarts", second)
    wait_until(lambda: len(delivered_records(out, "r/")) >= len(first) + len(second), timeout=60)
    wait_until(lambda: d.idle("r"), timeout=30)
    assert sorted(delivered_records(out, "r/")) == sorted(v.rstrip(b"\n") for _k, v in first + second)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_reader_process_killed_is_started_again_from_the_spool(start_daemon: Any, broker: KafkaBroker,
                                                                 tmp_path: Path) -> None:
    """The topic is read in a process of its own; killed mid-run (as the OOM killer would), it is started
    again from the spool's checkpoints: with commits an hour apart nothing is committed, so a record read
    twice would show here."""
    broker.create_topic("crashes", 3)
    d = start_daemon([msk_stream("c", "crashes")], kafka_clusters=clusters(broker, commit_interval_seconds=3600))
    first = keyed("a", 3000)
    broker.produce("crashes", first)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "c/")) >= len(first), timeout=60)
    source = d.call(lambda: d.daemon.sources[("123456789012", "c")].describe())
    assert source["reader_restarts"] == 0 and _alive(source["reader_pid"])
    os.kill(source["reader_pid"], signal.SIGKILL)
    second = keyed("b", 3000)
    broker.produce("crashes", second)
    wait_until(lambda: len(delivered_records(out, "c/")) >= len(first) + len(second), timeout=60)
    wait_until(lambda: d.idle("c"), timeout=30)
    assert sorted(delivered_records(out, "c/")) == sorted(v.rstrip(b"\n") for _k, v in first + second)
    again = d.call(lambda: d.daemon.sources[("123456789012", "c")].describe())
    assert again["reader_restarts"] == 1 and again["reader_pid"] != source["reader_pid"]
    assert _alive(again["reader_pid"]) and not _alive(source["reader_pid"])
    assert again["records"] == len(first) + len(second) and again["partitions"] == [0, 1, 2]
    assert d.call(lambda: d.daemon.metrics.source_reader_restarts.labels("c")._value.get()) == 1


def test_read_from_timestamp_skips_older_records(start_daemon: Any, broker: KafkaBroker, tmp_path: Path) -> None:
    broker.create_topic("dated", 2)
    old = [(b"k", f"old-{i}\n".encode()) for i in range(200)]
    new = [(b"k", f"new-{i}\n".encode()) for i in range(200)]
    broker.produce("dated", old, timestamp_ms=1_600_000_000_000)  # September 2020
    broker.produce("dated", new, timestamp_ms=1_700_000_000_000)  # November 2023
    d = start_daemon([msk_stream("fromts", "dated", read_from="2022-01-01T00:00:00Z"),
                      msk_stream("fromstart", "dated", read_from=0)], kafka_clusters=clusters(broker))
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "fromstart/")) >= 400, timeout=60)
    wait_until(lambda: len(delivered_records(out, "fromts/")) >= 200, timeout=60)
    wait_until(lambda: d.idle("fromts"), timeout=30)
    assert sorted(delivered_records(out, "fromts/")) == sorted(v.rstrip(b"\n") for _k, v in new)


def test_a_lambda_transform_sees_the_kafka_record(start_daemon: Any, broker: KafkaBroker, tmp_path: Path) -> None:
    """The MSK form of the event: sourceMSKArn, kafkaRecordValue, mskRecordMetadata; the answer's kafkaRecordValue."""
    fns = tmp_path / "fns"
    write_function(fns, "meta", """
        import base64, json

        def lambda_handler(event, context):
            out = []
            for r in event["records"]:
                seen = {"source": event["sourceMSKArn"], "value": base64.b64decode(r["kafkaRecordValue"]).decode(),
                        "arrival": r["approximateArrivalTimestamp"], "meta": r["mskRecordMetadata"],
                        "has_data": "data" in r}
                out.append({"recordId": r["recordId"], "result": "Ok",
                            "kafkaRecordValue": base64.b64encode(json.dumps(seen).encode() + b"\\n").decode()})
            return {"records": out}
    """)
    broker.create_topic("meta-topic", 2)
    broker.produce("meta-topic", [(b"user-7", b"hello")], partition=1, headers=[("trace", b"abc")],
                   timestamp_ms=1_700_000_000_123)
    broker.produce("meta-topic", [(None, b"no key")], partition=0, timestamp_ms=1_700_000_000_456)
    stream = msk_stream("tx", "meta-topic", read_from=0, ProcessingConfiguration={"Enabled": True, "Processors": [
        {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn",
                                           "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:meta"},
                                          {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]})
    start_daemon([stream], kafka_clusters=clusters(broker), transforms_dir=str(fns))
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "tx/")) >= 2, timeout=60)
    seen = sorted((json.loads(line) for line in delivered_records(out, "tx/")), key=lambda s: s["value"])
    assert seen == [
        {"source": CLUSTER, "value": "hello", "arrival": 1_700_000_000_123, "has_data": False,
         "meta": {"offset": "0", "partitionId": "1", "approximateArrivalTimestamp": 1_700_000_000_123,
                  "topic": "meta-topic", "key": base64.b64encode(b"user-7").decode(),
                  "headers": [{"key": "trace", "value": base64.b64encode(b"abc").decode()}]}},
        {"source": CLUSTER, "value": "no key", "arrival": 1_700_000_000_456, "has_data": False,
         "meta": {"offset": "0", "partitionId": "0", "approximateArrivalTimestamp": 1_700_000_000_456,
                  "topic": "meta-topic"}},
    ]


def _undeliverable(name: str, topic: str) -> dict[str, Any]:
    """A stream reading ``topic`` into an HTTP endpoint nothing listens at: every delivery attempt fails
    and is retried for two hours, so nothing leaves the spool."""
    return {
        "DeliveryStreamName": name, "DeliveryStreamType": "MSKAsSource",
        "MSKSourceConfiguration": msk_stream("x", topic)["MSKSourceConfiguration"],
        "HttpEndpointDestinationConfiguration": {
            "EndpointConfiguration": {"Url": f"http://127.0.0.1:{free_port()}/", "Name": "dead"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
            "RetryOptions": {"DurationInSeconds": 7200},
            "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}},
    }


def test_a_stalled_destination_pauses_reading(start_daemon: Any, broker: KafkaBroker, tmp_path: Path) -> None:
    """Past the backlog limit the partitions are paused: the rest stays in Kafka, the spool stays bounded."""
    body = _undeliverable("stalled", "backlog")
    broker.create_topic("backlog", 2)
    broker.produce("backlog", [(None, b"x" * 1000)] * 24_000)  # 24 MB in the topic
    d = start_daemon([body], kafka_clusters=clusters(broker, max_backlog_bytes="1 MiB"),
                     delivery={"shutdown_timeout_seconds": 1})  # nothing can be delivered: do not wait at the end
    ready = lambda: httpx.get(f"{d.endpoint}/readyz").json()["streams"]["stalled"]  # noqa: E731
    wait_until(lambda: ready().get("source", {}).get("paused"), timeout=60)
    read = ready()["source"]["records"]
    time.sleep(1)  # paused: nothing more is read
    assert ready()["source"]["records"] == read
    assert ready()["source"]["partitions"] == [0, 1]  # still in the group
    # the 1 MiB limit plus at most one batch (10,000 records here) read before the check
    assert read <= 1100 + 10_000, read
    used = sum(p.stat().st_size for p in (tmp_path / "state" / "spool").rglob("*.seg"))
    assert used < 13 * 1024 * 1024, used


def test_a_source_stops_in_time_while_the_spool_is_full(start_daemon: Any, broker: KafkaBroker,
                                                         tmp_path: Path) -> None:
    """An entry the full spool does not take is given up at a stop, within half the group's session:
    the daemon stops, the reader exits, and nothing unwritten is committed."""
    body = _undeliverable("full", "fills")
    broker.create_topic("fills", 2)
    broker.produce("fills", [(None, b"x" * 1000)] * 24_000)  # 24 MB, three times the spool
    d = start_daemon([body], kafka_clusters=clusters(broker, max_backlog_bytes="1 GiB"),
                     spool={"max_bytes": "8MiB", "segment_bytes": "512KiB"},
                     delivery={"shutdown_timeout_seconds": 1})
    source = lambda: d.call(lambda: d.daemon.sources[("123456789012", "full")].describe())  # noqa: E731
    wait_until(lambda: "ServiceUnavailable" in (source()["last_error"] or ""), timeout=60)
    read, reader = source()["records"], source()["reader_pid"]
    assert 0 < read < 24_000  # the spool took what fits (an entry may pass its limit), the rest waits
    started = time.monotonic()
    d.stop()
    assert time.monotonic() - started < 3 + 10  # half the 6 s session, and the delivery's shutdown
    wait_until(lambda: not _alive(reader), timeout=5)
    committed = sum(broker.committed("firehose.123456789012.full", "fills").values())
    assert committed <= read


def test_start_positions() -> None:
    """max(spool checkpoint + 1, committed) where either is known; else ReadFromTimestamp (none found: the end)."""
    asked: list[tuple[list[int], int]] = []

    def by_time(partitions: list[int], ms: int) -> dict[int, int]:
        asked.append((partitions, ms))
        return {2: 40, 3: -1}

    starts = start_offsets([0, 1, 2, 3, 4], checkpoints={0: 99, 1: 10}, committed={0: 50, 1: 70, 4: 5},
                           read_from_ms=1_700_000_000_000, by_time=by_time)
    assert starts == {0: 100, 1: 70, 2: 40, 3: OFFSET_END, 4: 5}
    assert asked == [([2, 3], 1_700_000_000_000)]
    assert start_offsets([0], checkpoints={}, committed={}, read_from_ms=0, by_time=by_time) == {0: OFFSET_BEGINNING}
    assert start_offsets([0], checkpoints={0: -1}, committed={}, read_from_ms=0, by_time=by_time) == {0: 0}


def test_records_over_the_size_limit_go_to_the_error_output(start_daemon: Any, broker: KafkaBroker,
                                                            tmp_path: Path) -> None:
    """Over 10 MiB (6 MiB with a Lambda transform) a record is an error document with the reason, its partition
    goes on, its offset is committed, and a metric counts it."""
    fns = tmp_path / "fns"
    write_function(fns, "same", """
        def lambda_handler(event, context):
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "kafkaRecordValue": r["kafkaRecordValue"]}
                                for r in event["records"]]}
    """)
    broker.create_topic("big", 1)
    medium = b"m" * (MAX_RECORD_BYTES_LAMBDA + 1) + b"\n"  # over Lambda's limit only
    huge = b"h" * MAX_RECORD_BYTES + b"\n"  # over both
    broker.produce("big", [(b"k", b"first\n"), (b"k", medium), (b"k", huge), (b"k", b"last\n")], partition=0,
                   timestamp_ms=1_700_000_000_000)
    lambda_arn = "arn:aws:lambda:us-east-1:123456789012:function:same"
    tx = msk_stream("tx", "big", ProcessingConfiguration={"Enabled": True, "Processors": [
        {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": lambda_arn},
                                          {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]})
    d = start_daemon([msk_stream("plain", "big"), tx], kafka_clusters=clusters(broker), transforms_dir=str(fns))
    out = tmp_path / "out"

    def errors(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for key, body in read_local(out).items() if key.startswith(f"errors-{name}/")
                for line in body.splitlines()]

    wait_until(lambda: len(errors("plain")) == 1 and len(errors("tx")) == 2, timeout=60)
    wait_until(lambda: len(delivered_records(out, "plain/")) >= 3 and len(delivered_records(out, "tx/")) >= 2,
               timeout=60)
    wait_until(lambda: d.idle("plain") and d.idle("tx"), timeout=30)
    assert sorted(delivered_records(out, "plain/")) == [b"first", b"last", medium.rstrip(b"\n")]
    assert sorted(delivered_records(out, "tx/")) == [b"first", b"last"]
    for name, expected, limit in (("plain", [huge], MAX_RECORD_BYTES), ("tx", [medium, huge], MAX_RECORD_BYTES_LAMBDA)):
        docs = sorted(errors(name), key=lambda doc: doc["errorMessage"])
        assert sorted(base64.b64decode(doc["rawData"]) for doc in docs) == sorted(expected)
        for doc in docs:
            assert doc["errorCode"] == RECORD_TOO_LARGE
            assert f"over the {limit} bytes" in doc["errorMessage"] and "topic big, partition 0" in doc["errorMessage"]
            assert doc["arrivalTimestamp"] == 1_700_000_000_000
        # the partition went on past it, and every offset is committed
        wait_until(lambda name=name: broker.committed(f"firehose.123456789012.{name}", "big") == {0: 4}, timeout=20)
        source = httpx.get(f"{d.endpoint}/readyz").json()["streams"][name]["source"]
        assert source["oversize_records"] == len(expected)
        counted = d.call(lambda name=name: d.daemon.metrics.source_oversize_records.labels(name)._value.get())
        assert counted == len(expected)


def test_the_record_size_limits_are_aws() -> None:
    """limits.html: 10 MB, 6 MB with a Lambda transform (read as MiB)."""
    assert record_limit(False) == MAX_RECORD_BYTES == 10 * 1024 * 1024
    assert record_limit(True) == MAX_RECORD_BYTES_LAMBDA == 6 * 1024 * 1024


def test_partitions_that_appear_while_the_daemon_reads_are_read(start_daemon: Any, broker: KafkaBroker,
                                                                tmp_path: Path) -> None:
    """The group's subscription follows the topic's partitions: partitions that appear later are assigned and read
    from their first record after the stream's start.

    Adding partitions to a topic (CreatePartitions) is not something this broker does (its ApiVersions answer
    leaves the request out, and it closes the connection on one), so the partitions appear the other way a
    running consumer can see new ones: the topic is created, with 2 partitions, after the stream. (librdkafka
    looks a missing topic up often whatever ``metadata_refresh_interval_ms`` is; that interval, which is when
    partitions added to an existing topic are seen, is checked in the consumer's settings below.)"""
    d = start_daemon([msk_stream("later", "later-topic", read_from=None)],
                     kafka_clusters=clusters(broker, metadata_refresh_interval_ms=300))
    wait_until(lambda: httpx.get(f"{d.endpoint}/readyz").json()["streams"]["later"].get("source"), timeout=20)
    broker.create_topic("later-topic", 2)
    ready = lambda: httpx.get(f"{d.endpoint}/readyz").json()["streams"]["later"]["source"]  # noqa: E731
    wait_until(lambda: ready()["partitions"] == [0, 1], timeout=30, interval=0.2)
    records = [(None, f"p{p}-{i}\n".encode()) for p in (0, 1) for i in range(50)]
    for p in (0, 1):
        broker.produce("later-topic", records[50 * p: 50 * (p + 1)], partition=p)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "later/")) >= len(records), timeout=30)
    wait_until(lambda: d.idle("later"), timeout=30)
    assert sorted(delivered_records(out, "later/")) == sorted(v.rstrip(b"\n") for _k, v in records)


def test_partitions_are_looked_up_every_metadata_refresh_interval() -> None:
    """What makes partitions added to an existing topic seen (librdkafka's own interval is 5 minutes)."""
    assert consumer_config(KafkaClusterSettings(bootstrap_servers="127.0.0.1:9092"), group="g", client_id="c",
                           earliest=True)["topic.metadata.refresh.interval.ms"] == 30000
    assert consumer_config(KafkaClusterSettings(bootstrap_servers="127.0.0.1:9092", metadata_refresh_interval_ms=500),
                           group="g", client_id="c", earliest=True)["topic.metadata.refresh.interval.ms"] == 500


class _Offsets:
    """A consumer's offset look-ups as Kafka answers them (this test broker's ListOffsets are not reliable):
    offsets-for-times is -1 where no record is at or after the time; the high watermark is the end."""

    def __init__(self, by_time: dict[int, int], ends: dict[int, int]) -> None:
        self.by_time, self.ends = by_time, ends

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, self.by_time[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        if tp.partition not in self.ends:
            raise RuntimeError("timed out")
        return 0, self.ends[tp.partition]


def test_a_partition_with_nothing_after_read_from_starts_at_its_end_as_of_the_assignment() -> None:
    """Not at the logical end, resolved only when fetching starts: a record written in between (to a partition
    just added, say) would be skipped. Without an answer for the end, the logical end."""
    consumer = _Offsets(by_time={0: 7, 1: -1, 2: -1}, ends={0: 9, 1: 12})
    assert offsets_at(consumer, "t", [0, 1, 2], 1_700_000_000_000) == {0: 7, 1: 12, 2: -1}
    starts = start_offsets([1, 2], checkpoints={}, committed={}, read_from_ms=1_700_000_000_000,
                           by_time=lambda ps, ms: offsets_at(consumer, "t", ps, ms))
    assert starts == {1: 12, 2: OFFSET_END}
