"""Sending: Kinesis PutRecords with partition keys, an endpoint that goes away, progress and metrics."""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.request
from pathlib import Path

import boto3

from firehose.agent.runner import QUEUE_DEPTH
from firehose.agent.tailer import READ_SIZE
from tests.support.agent import agent_json, flow
from tests.support.aws import CREDS
from tests.support.config import local_stream, write_config
from tests.support.delivered import delivered_lines, duplicates, wait_for_lines
from tests.support.waiting import wait_until


def kinesis_records(endpoint: str, stream: str, expected: int) -> list[dict]:
    client = boto3.client("kinesis", endpoint_url=endpoint, **CREDS)
    shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    got: list[dict] = []

    def read() -> bool:
        got.clear()
        it = client.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        iterator = it["ShardIterator"]
        while iterator:
            resp = client.get_records(ShardIterator=iterator, Limit=10_000)
            got.extend(resp["Records"])
            if not resp["Records"]:
                break
            iterator = resp.get("NextShardIterator")
        return len(got) >= expected

    wait_until(read, timeout=20, interval=0.3)
    return got


def make_kinesis_stream(endpoint: str, name: str) -> None:
    client = boto3.client("kinesis", endpoint_url=endpoint, **CREDS)
    client.create_stream(StreamName=name, ShardCount=1)
    wait_until(lambda: client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] == "ACTIVE")


def test_kinesis_stream_with_deterministic_partition_keys(moto_server, run_agent, tmp_path: Path) -> None:
    make_kinesis_stream(moto_server.endpoint, "agent-deterministic")
    log = tmp_path / "app.log"
    lines = [f"event {i}\n".encode() for i in range(300)]
    log.write_bytes(b"".join(lines))
    config = {"kinesis.endpoint": moto_server.endpoint, "flows": [
        {**flow(log), "deliveryStream": None, "kinesisStream": "agent-deterministic",
         "partitionKeyOption": "DETERMINISTIC"}]}
    del config["flows"][0]["deliveryStream"]
    run_agent(config)
    records = kinesis_records(moto_server.endpoint, "agent-deterministic", 300)
    assert [r["Data"] for r in records] == lines  # one shard: in order
    assert all(r["PartitionKey"] == hashlib.md5(r["Data"]).hexdigest() for r in records)


def test_kinesis_stream_with_random_partition_keys(moto_server, run_agent, tmp_path: Path) -> None:
    make_kinesis_stream(moto_server.endpoint, "agent-random")
    log = tmp_path / "app.log"
    lines = [b"same line\n"] * 200
    log.write_bytes(b"".join(lines))
    f = flow(log)
    del f["deliveryStream"]
    run_agent({"kinesis.endpoint": moto_server.endpoint, "flows": [{**f, "kinesisStream": "agent-random"}]})
    records = kinesis_records(moto_server.endpoint, "agent-random", 200)
    assert [r["Data"] for r in records] == lines
    keys = [r["PartitionKey"] for r in records]
    assert all(0 <= float(k) < 1_000_000 for k in keys)
    assert len(set(keys)) > 190  # random per record, even for equal data


def test_endpoint_down_then_back_delivers_everything_with_bounded_memory(daemon_process, run_agent,
                                                                         tmp_path: Path) -> None:
    config = write_config(tmp_path / "firehose.yaml", {
        "state_dir": str(tmp_path / "daemon-state"), "buckets": {"local": {"directory": str(tmp_path / "out")}},
        "log_level": "WARNING"}, [local_stream("logs", interval=0)])
    daemon = daemon_process(config).start()
    log = tmp_path / "app.log"
    first = [f"before {i:06d}\n".encode() for i in range(1000)]
    log.write_bytes(b"".join(first))
    batch_bytes = 16 * 1024
    agent = run_agent(agent_json(daemon.endpoint, [flow(log, maxBufferSizeBytes=batch_bytes,
                                                        retryMaxBackoffMillis=400)]))
    wait_for_lines(tmp_path / "out", 1000)
    daemon.kill()
    stats = agent.flows[0].stats
    read_before = stats.bytes_read
    outage = [f"during {i:06d} {'x' * 80}\n".encode() for i in range(60_000)]  # about 6 MB
    with open(log, "ab") as f:
        f.write(b"".join(outage))
    wait_until(lambda: stats.send.errors >= 3, timeout=15)
    time.sleep(1)
    # The files are the buffer: while the endpoint is down the agent reads only what its queue holds.
    assert stats.bytes_read - read_before <= READ_SIZE + (QUEUE_DEPTH + 2) * batch_bytes
    daemon.start()
    lines = wait_for_lines(tmp_path / "out", 61_000, timeout=60)
    assert set(lines) == set(first + outage)
    assert duplicates(lines) <= 500  # at most the batch in flight when the daemon died


def test_progress_line_and_prometheus_metrics(start_daemon, run_agent, tmp_path: Path, caplog) -> None:
    daemon = start_daemon([local_stream("logs", interval=0)])
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(f"{i}\n".encode() for i in range(123)))
    caplog.set_level(logging.INFO, logger="firehose.agent")
    agent = run_agent(agent_json(daemon.endpoint, [flow(log)], **{"log.statusReportingPeriodSeconds": 0.2,
                                                                  "metrics.port": 0}))
    wait_for_lines(tmp_path / "out", 123)
    wait_until(lambda: any("records sent 123" in r.getMessage() for r in caplog.records))
    line = next(r.getMessage() for r in caplog.records if "records sent 123" in r.getMessage())
    assert "lines read 123" in line and f"{log} 0 B" in line
    assert line.startswith(f"flow logs <- {log}: "), "the flow is named by its stream and its files"
    assert agent.metrics is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'firehose_agent_records_sent_total{flow="fh:logs:' in text
    sent = next(x for x in text.splitlines() if x.startswith("firehose_agent_records_sent_total"))
    assert sent.endswith(" 123.0")
    assert f'firehose_agent_bytes_behind{{flow="fh:logs:{log}",path="{log}"}} 0.0' in text
    assert delivered_lines(tmp_path / "out")


def test_assume_role_credentials_come_from_sts(moto_server, run_agent, tmp_path: Path) -> None:
    make_kinesis_stream(moto_server.endpoint, "agent-role")
    log = tmp_path / "app.log"
    log.write_bytes(b"with a role\n")
    f = flow(log)
    del f["deliveryStream"]
    agent = run_agent({"kinesis.endpoint": moto_server.endpoint, "sts.endpoint": moto_server.endpoint,
                       "assumeRoleARN": "arn:aws:iam::123456789012:role/shipper", "assumeRoleExternalId": "ext",
                       "flows": [{**f, "kinesisStream": "agent-role"}]})
    assert [r["Data"] for r in kinesis_records(moto_server.endpoint, "agent-role", 1)] == [b"with a role\n"]
    creds = agent.flows[0].client.client._request_signer._credentials.get_frozen_credentials()
    assert creds.access_key != "testing"  # the role's temporary key, not the environment's
