"""Delivery streams of type KinesisStreamAsSource, reading the sidecar (in-process or a separate server)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from tests.support.aws import CREDS, ROLE
from tests.support.config import local_stream, write_config
from tests.support.delivered import delivered_records
from tests.support.kinesis_source import ARN, kinesis_settings, source_stream
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def kclient(port: int) -> Any:
    return boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{port}", **CREDS)


def put(client: Any, stream: str, lines: list[bytes], keys: int = 50) -> None:
    for i in range(0, len(lines), 500):
        chunk = lines[i:i + 500]
        resp = client.put_records(StreamName=stream, Records=[{"Data": line + b"\n", "PartitionKey": f"p{j % keys}"}
                                                              for j, line in enumerate(chunk, start=i)])
        assert resp["FailedRecordCount"] == 0


def test_reads_every_shard_and_delivers_exactly_once(start_daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    d = start_daemon([source_stream("fromk", "clicks")], kinesis=kinesis_settings(port, ("clicks", 3)))
    k = kclient(port)
    sent = [f"line-{i}".encode() for i in range(3000)]
    put(k, "clicks", sent)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "fromk/")) >= len(sent), timeout=30)
    assert sorted(delivered_records(out, "fromk/")) == sorted(sent)
    # Firehose refuses direct puts to a Kinesis-sourced delivery stream
    fh = d.client()
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.put_record(DeliveryStreamName="fromk", Record={"Data": b"x"})
    assert "KinesisStreamAsSource" in exc.value.response["Error"]["Message"]
    desc = fh.describe_delivery_stream(DeliveryStreamName="fromk")["DeliveryStreamDescription"]
    assert desc["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert desc["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == ARN.format("clicks")
    ready = json_get(f"{d.endpoint}/readyz")
    assert ready["streams"]["fromk"]["source"]["kinesis_stream"] == ARN.format("clicks")


def json_get(url: str) -> Any:
    import httpx

    return httpx.get(url).json()


def test_restart_resumes_without_loss_or_duplicates(start_daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    settings = kinesis_settings(port, ("orders", 2))
    d = start_daemon([source_stream("o", "orders")], state_dir=state, kinesis=settings)
    k = kclient(port)
    first = [f"a-{i}".encode() for i in range(1000)]
    put(k, "orders", first)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "o/")) >= len(first), timeout=30)
    d.stop()
    d = start_daemon([source_stream("o", "orders")], state_dir=state, kinesis=settings)
    second = [f"b-{i}".encode() for i in range(1000)]
    put(kclient(port), "orders", second)
    wait_until(lambda: len(delivered_records(out, "o/")) >= len(first) + len(second), timeout=30)
    # Every record was read, and a shard is read in order: a record read twice was read before the last
    # one of its shard. Once the stream is idle, everything read has been delivered.
    wait_until(lambda: d.idle("o"), timeout=30)
    assert sorted(delivered_records(out, "o/")) == sorted(first + second)


def test_resharding_while_reading_keeps_every_record_and_key_order(start_daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    start_daemon([source_stream("r", "resharded")], kinesis=kinesis_settings(port, ("resharded", 2)))
    k = kclient(port)
    sent: list[bytes] = []
    for phase in range(4):
        lines = [f"{phase}-{i:04d}".encode() for i in range(400)]
        put(k, "resharded", lines, keys=7)
        sent += lines
        if phase == 0:
            k.split_shard(StreamName="resharded", ShardToSplit="shardId-000000000000",
                          NewStartingHashKey=str(2**126))
        elif phase == 1:
            k.update_shard_count(StreamName="resharded", TargetShardCount=2, ScalingType="UNIFORM_SCALING")
        elif phase == 2:
            k.update_shard_count(StreamName="resharded", TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "r/")) >= len(sent), timeout=40)
    got = delivered_records(out, "r/")
    assert sorted(got) == sorted(sent)


def test_several_delivery_streams_read_one_stream_independently(start_daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    start_daemon([source_stream("one", "shared"), source_stream("two", "shared")],
                 kinesis=kinesis_settings(port, ("shared", 2)))
    sent = [f"s-{i}".encode() for i in range(800)]
    put(kclient(port), "shared", sent)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "one/")) >= 800 and len(delivered_records(out, "two/")) >= 800,
               timeout=30)
    assert sorted(delivered_records(out, "one/")) == sorted(sent) == sorted(delivered_records(out, "two/"))


def test_kpl_aggregated_records_are_deaggregated(start_daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    start_daemon([source_stream("agg", "kpl")], kinesis=kinesis_settings(port, ("kpl", 1)))
    k = kclient(port)
    aggregator = RecordAggregator()
    sent = []
    for i in range(100):
        line = f"user-{i}\n".encode()
        sent.append(line.strip())
        aggregator.add_user_record(f"pk-{i}", line)
    pk, ehk, data = aggregator.clear_and_get().get_contents()
    k.put_record(StreamName="kpl", Data=data, PartitionKey=pk)
    k.put_record(StreamName="kpl", Data=b"plain\n", PartitionKey="x")  # not aggregated: passes through
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "agg/")) >= 101, timeout=30)
    assert sorted(delivered_records(out, "agg/")) == sorted([*sent, b"plain"])


def test_transform_sees_kinesis_metadata(start_daemon: Any, tmp_path: Path) -> None:
    fn = tmp_path / "fns" / "meta.py"
    fn.parent.mkdir()
    fn.write_text(
        "import base64, json\n"
        "def lambda_handler(event, context):\n"
        "    out = []\n"
        "    for r in event['records']:\n"
        "        doc = {'data': base64.b64decode(r['data']).decode(), 'meta': r['kinesisRecordMetadata'],\n"
        "               'source': event['sourceKinesisStreamArn']}\n"
        "        out.append({'recordId': r['recordId'], 'result': 'Ok',\n"
        "                    'data': base64.b64encode((json.dumps(doc) + '\\n').encode()).decode()})\n"
        "    return {'records': out}\n")
    port = free_port()
    processing = {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:meta"},
        {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]}
    start_daemon([source_stream("t", "meta", ProcessingConfiguration=processing)], transforms_dir=str(fn.parent),
                 kinesis=kinesis_settings(port, ("meta", 1)))
    k = kclient(port)
    seq = k.put_record(StreamName="meta", Data=b"hello", PartitionKey="pk-1")["SequenceNumber"]
    out = tmp_path / "out"
    wait_until(lambda: delivered_records(out, "t/"), timeout=30)
    doc = json.loads(delivered_records(out, "t/")[0])
    assert doc["data"] == "hello" and doc["source"] == ARN.format("meta")
    meta = doc["meta"]
    assert meta["shardId"] == "shardId-000000000000" and meta["partitionKey"] == "pk-1"
    assert meta["sequenceNumber"] == seq and meta["subsequenceNumber"] == 0
    assert isinstance(meta["approximateArrivalTimestamp"], int)


def test_reads_a_separate_server_named_by_aws_endpoint_url_kinesis(
        start_daemon: Any, start_streams_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_streams_server()
    server.client().create_stream(StreamName="remote", ShardCount=2)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", server.endpoint)
    start_daemon([source_stream("rem", "remote")], kinesis={"source_poll_interval_seconds": 0.05})
    sent = [f"r-{i}".encode() for i in range(500)]
    put(server.client(), "remote", sent)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "rem/")) >= 500, timeout=30)
    assert sorted(delivered_records(out, "rem/")) == sorted(sent)


def test_source_stream_definitions_are_validated(start_daemon: Any) -> None:
    d = start_daemon([])
    fh = d.client()
    body = local_stream("bad")
    body["DeliveryStreamType"] = "KinesisStreamAsSource"
    with pytest.raises(fh.exceptions.InvalidArgumentException) as exc:
        fh.create_delivery_stream(**body)
    assert "KinesisStreamSourceConfiguration" in exc.value.response["Error"]["Message"]


def test_kill_9_of_daemon_and_sidecar_while_reading_loses_and_repeats_nothing(
        daemon_process: Any, tmp_path: Path) -> None:
    """One process serving both the Kinesis API and the delivery stream that reads it, killed mid-stream."""
    import threading


    kport = free_port()
    out = tmp_path / "out"
    config = write_config(tmp_path / "kill.yaml", {
        "state_dir": str(tmp_path / "state"), "log_level": "WARNING",
        "buckets": {"local": {"directory": str(out)}},
        "kinesis": kinesis_settings(kport, ("events", 2))}, [source_stream("k9", "events", interval=1)])
    d = daemon_process(config).start()
    acked: list[bytes] = []
    attempted: list[bytes] = []
    stop = threading.Event()

    def produce() -> None:
        client = kclient(kport)
        batch = 0
        while not stop.is_set():
            lines = [f"{batch}-{i}".encode() for i in range(200)]
            attempted.extend(lines)
            try:
                resp = client.put_records(StreamName="events", Records=[
                    {"Data": line + b"\n", "PartitionKey": f"p{i}"} for i, line in enumerate(lines)])
            except Exception:
                return  # the server died mid-call: that batch was never acknowledged
            acked.extend(line for line, r in zip(lines, resp["Records"], strict=True) if "SequenceNumber" in r)
            batch += 1

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: len(delivered_records(out, "k9/")) > 1000, timeout=30)
    d.kill()
    stop.set()
    producer.join(30)
    d.start()
    wait_until(lambda: len(delivered_records(out, "k9/")) >= len(acked), timeout=40)
    wait_until(lambda: d.idle("k9"), timeout=40)  # a repeat comes before its shard's newer records: delivered now
    got = delivered_records(out, "k9/")
    assert len(got) == len(set(got)), "a record was delivered twice"
    assert set(acked) <= set(got), "an acknowledged record was lost"
    # the call cut short by the kill may or may not have been stored: never acknowledged, so either is right
    assert set(got) <= set(attempted)
    assert len(got) - len(acked) <= 200


def test_kinesis_endpoint_down_then_back(start_daemon: Any, start_streams_server: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_streams_server()
    server.client().create_stream(StreamName="flaky", ShardCount=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", server.endpoint)
    d = start_daemon([source_stream("fl", "flaky")], kinesis={"source_poll_interval_seconds": 0.05})
    put(server.client(), "flaky", [b"before"])
    out = tmp_path / "out"
    wait_until(lambda: delivered_records(out, "fl/"), timeout=20)
    server.stop()
    wait_until(lambda: json_get(f"{d.endpoint}/readyz")["streams"]["fl"]["source"]["last_error"], timeout=20)
    server.start()
    put(server.client(), "flaky", [b"after"])
    wait_until(lambda: len(delivered_records(out, "fl/")) >= 2, timeout=40)
    assert sorted(delivered_records(out, "fl/")) == [b"after", b"before"]


def test_a_re_created_stream_is_read_from_its_start_after_a_restart(
        start_daemon: Any, start_streams_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The Kinesis stream is deleted and created again under its name while the daemon is down: the
    checkpoint is of the old stream (GetShardIterator refuses it, as AWS does), so the new stream is read
    from its trim horizon, said in the log; nothing of either stream is lost or repeated."""
    caplog.set_level(logging.ERROR, logger="firehose.sources")
    server = start_streams_server()
    k = server.client()
    k.create_stream(StreamName="again", ShardCount=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", server.endpoint)
    d = start_daemon([source_stream("ag", "again")], kinesis={"source_poll_interval_seconds": 0.05})
    old = [f"old-{i}".encode() for i in range(50)]
    put(k, "again", old)
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "ag/")) >= len(old), timeout=20)
    wait_until(lambda: d.idle("ag"), timeout=20)  # the checkpoint after the last old record is kept
    d.stop()
    k.delete_stream(StreamName="again")
    wait_until(lambda: "again" not in k.list_streams()["StreamNames"], timeout=10)
    k.create_stream(StreamName="again", ShardCount=1)
    wait_until(lambda: k.describe_stream_summary(StreamName="again")["StreamDescriptionSummary"]["StreamStatus"]
               == "ACTIVE", timeout=10)
    new = [f"new-{i}".encode() for i in range(50)]
    put(k, "again", new)
    d = start_daemon([source_stream("ag", "again")], kinesis={"source_poll_interval_seconds": 0.05})
    wait_until(lambda: len(delivered_records(out, "ag/")) >= len(old) + len(new), timeout=20)
    wait_until(lambda: d.idle("ag"), timeout=20)
    assert sorted(delivered_records(out, "ag/")) == sorted(old + new)
    [logged] = [r for r in caplog.records if "checkpoint is not valid" in r.getMessage()]
    assert logged.levelno == logging.ERROR and logged.__dict__["shard"] == "shardId-000000000000"
    assert logged.__dict__["stream"] == "ag" and logged.__dict__["checkpoint"].isdigit()


def test_a_stalled_destination_pauses_reading_and_bounds_the_spool(start_daemon: Any, tmp_path: Path) -> None:
    """The backlog stays in the Kinesis stream, as AWS Firehose relies on the stream's retention."""
    port = free_port()
    dead = free_port()  # nothing listens here: every delivery attempt fails and is retried
    body = {
        "DeliveryStreamName": "stalled", "DeliveryStreamType": "KinesisStreamAsSource",
        "KinesisStreamSourceConfiguration": {"KinesisStreamARN": ARN.format("backlog"), "RoleARN": ROLE},
        "HttpEndpointDestinationConfiguration": {
            "EndpointConfiguration": {"Url": f"http://127.0.0.1:{dead}/", "Name": "dead"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
            "RetryOptions": {"DurationInSeconds": 7200},
            "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}},
    }
    d = start_daemon([body], kinesis=kinesis_settings(port, ("backlog", 1), source_max_backlog_bytes=1024 * 1024),
                     delivery={"shutdown_timeout_seconds": 1})  # nothing can be delivered: do not wait at the end
    k = kclient(port)
    chunk = b"x" * 1000
    for _ in range(48):  # 24 MB into the Kinesis stream
        k.put_records(StreamName="backlog", Records=[{"Data": chunk, "PartitionKey": "p"}] * 500)
    wait_until(lambda: json_get(f"{d.endpoint}/readyz")["streams"]["stalled"]["source"]["paused"], timeout=30)
    spool = tmp_path / "state" / "spool"
    used = sum(p.stat().st_size for p in spool.rglob("*.seg"))
    # the 1 MiB limit plus at most one GetRecords answer (10,000 records here) read before the check
    assert used < 12 * 1024 * 1024, used
