"""Several daemons behind HAProxy (docs/scaling.md): one config file, a spool each, one bucket.

Three daemons read the same config file (only ``FIREHOSE_STATE`` differs, through ``${VAR}``)
behind a real HAProxy that health-checks ``/readyz``; boto3 clients put numbered records through
it while one daemon is killed with SIGKILL and restarted. Every acknowledged record must be in the
bucket exactly once: keys of different nodes never collide (a collision would overwrite an object
and lose its records) and the killed node delivers what it had acknowledged when it comes back.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.support.aws import CREDS
from tests.support.config import local_stream
from tests.support.daemon import DaemonProcess
from tests.support.delivered import list_objects
from tests.support.haproxy import HaproxyServer, haproxy_binary
from tests.support.killcycles import NO_RETRIES, Tally
from tests.support.ports import free_port
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")

STREAM = "fleet"


def _fleet_config(path: Path, s3_endpoint: str, bucket: str) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "state_dir": "${FIREHOSE_STATE}",
        "s3": {"endpoint_url": s3_endpoint},
        "log_level": "WARNING",
        "cluster": {"mode": "fleet"},
        "delivery_streams": [local_stream(STREAM, bucket, size_mb=1, interval=1)],
    }, sort_keys=False))
    return path


class _Load(threading.Thread):
    """PutRecordBatch of 50 new numbered records at a time through the load balancer until stopped;
    a failed call (a node killed under it) is counted and the next one goes on."""

    def __init__(self, endpoint: str, start_id: int) -> None:
        super().__init__(daemon=True)
        self.client = boto3.client("firehose", endpoint_url=endpoint, config=BotoConfig(**NO_RETRIES), **CREDS)
        self.next_id = start_id
        self.acked: list[int] = []
        self.failures = 0
        self.calls = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            ids = list(range(self.next_id, self.next_id + 50))
            self.next_id += 50
            self.calls += 1
            try:
                resp = self.client.put_record_batch(DeliveryStreamName=STREAM, Records=[
                    {"Data": json.dumps({"id": i}).encode() + b"\n"} for i in ids])
            except Exception:
                self.failures += 1
                time.sleep(0.02)
                continue
            self.acked.extend(i for i, e in zip(ids, resp["RequestResponses"], strict=True) if "RecordId" in e)


def _incoming(daemon: DaemonProcess) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{daemon.endpoint}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("firehose_incoming_records_total{") and f'delivery_stream="{STREAM}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_three_daemons_behind_haproxy_lose_and_collide_nothing_when_one_is_killed(
        tmp_path: Path, moto_server: MotoServer, bucket: str) -> None:
    config = _fleet_config(tmp_path / "fleet.yaml", moto_server.endpoint, bucket)
    nodes = [DaemonProcess(config, free_port(), tmp_path / f"node-{i}.log",
                           {"FIREHOSE_STATE": str(tmp_path / f"state-{i}")}) for i in range(3)]
    proxy: HaproxyServer | None = None
    loads: list[_Load] = []
    try:
        for node in nodes:
            node.start()
        node_ids = {node.readiness()["node"] for node in nodes}
        assert len(node_ids) == 3, f"every daemon has its own node id by default: {node_ids}"
        proxy = HaproxyServer({f"n{i}": node.port for i, node in enumerate(nodes)}, tmp_path).start()
        wait_until(lambda: set(proxy.status().values()) == {"UP"}, timeout=10)

        loads = [_Load(proxy.endpoint, start_id=k * 10_000_000) for k in range(2)]
        for load in loads:
            load.start()
        time.sleep(1.5)
        nodes[1].kill()
        wait_until(lambda: proxy.status()["n1"].startswith("DOWN"), timeout=5, interval=0.05)
        time.sleep(1.0)  # the fleet keeps taking records while a node is down
        acked_while_down = sum(len(load.acked) for load in loads)
        nodes[1].start()
        wait_until(lambda: proxy.status()["n1"] == "UP", timeout=10, interval=0.05)
        time.sleep(1.0)
        for load in loads:
            load.stopped.set()
        for load in loads:
            load.join(30)
        assert all(_incoming(node) > 0 for node in nodes), "the load balancer spread the load over every node"

        for node in nodes:
            wait_until(lambda node=node: node.idle(STREAM), timeout=60)
    finally:
        for load in loads:
            load.stopped.set()
        if proxy is not None:
            proxy.stop()
        for node in nodes:
            node.stop()

    calls = sum(load.calls for load in loads)
    failures = sum(load.failures for load in loads)
    assert failures <= calls // 4, f"{failures} of {calls} calls failed: the health check did not take the node out"
    s3 = moto_server.client()
    seen: Counter[int] = Counter()
    keys = list_objects(s3, bucket)
    for key in keys:
        assert not key.startswith(f"{STREAM}-failed"), key
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines():
            seen[json.loads(line)["id"]] += 1
    acked = [i for load in loads for i in load.acked]
    tally = Tally.of(acked, seen)
    assert tally.acknowledged > 1000 and acked_while_down > 0, "the load was too light to mean anything"
    assert not tally.lost, f"{len(tally.lost)} acknowledged records lost, e.g. {tally.lost[:5]}"
    assert tally.duplicated == 0, f"{tally.duplicated} records delivered more than once"


def test_a_fleet_refuses_api_calls_that_change_streams(tmp_path: Path, moto_server: MotoServer, bucket: str) -> None:
    config = _fleet_config(tmp_path / "fleet.yaml", moto_server.endpoint, bucket)
    node = DaemonProcess(config, free_port(), tmp_path / "node.log", {"FIREHOSE_STATE": str(tmp_path / "s")}).start()
    try:
        client = boto3.client("firehose", endpoint_url=node.endpoint, config=BotoConfig(**NO_RETRIES), **CREDS)
        for call in (lambda: client.create_delivery_stream(**local_stream("other", bucket)),
                     lambda: client.delete_delivery_stream(DeliveryStreamName=STREAM),
                     lambda: client.tag_delivery_stream(DeliveryStreamName=STREAM, Tags=[{"Key": "k", "Value": "v"}])):
            with pytest.raises(ClientError) as err:
                call()
            assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
            assert "cluster.mode: fleet" in err.value.response["Error"]["Message"]
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # Reading and putting work as on any daemon; the stream from the shared file is there.
        assert client.list_delivery_streams()["DeliveryStreamNames"] == [STREAM]
        assert client.put_record(DeliveryStreamName=STREAM, Record={"Data": b"x\n"})["RecordId"]
    finally:
        node.stop()


def test_node_ids_are_stable_per_state_directory_and_distinct_between_them(tmp_path: Path) -> None:
    from firehose.settings import Settings

    one, again, other = (Settings(state_dir=tmp_path / "a"), Settings(state_dir=tmp_path / "a"),
                         Settings(state_dir=tmp_path / "b"))
    assert one.node_id == again.node_id != other.node_id
    assert Settings(state_dir=tmp_path / "a", cluster={"node_id": "web-7"}).node_id == "web-7"
    with pytest.raises(ValueError):
        Settings(cluster={"node_id": "no spaces/allowed"})


def test_a_fleet_node_with_sql_applications_warns_that_every_node_runs_them(tmp_path: Path) -> None:
    """SQL applications are not shared between the nodes of a fleet: the daemon says so at start."""
    import yaml

    from tests.support.repo import REPO

    example = yaml.safe_load((REPO / "config" / "examples" / "sql-application.yaml").read_text())
    config = {**example, "port": free_port(), "state_dir": str(tmp_path / "state"),
              "buckets": {"stats": {"directory": str(tmp_path / "stats")}}, "cluster": {"mode": "fleet"},
              "kinesis": {**example["kinesis"], "port": free_port()}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(config))
    node = DaemonProcess(path, config["port"], tmp_path / "node.log").start()
    try:
        wait_until(lambda: "SQL applications run on every node of a fleet" in node.log_path.read_text(), timeout=10)
    finally:
        node.stop()
