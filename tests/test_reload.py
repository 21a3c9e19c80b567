"""Reload without restart: SIGHUP (``systemctl reload``) applies the config file again.

Streams declared in the file are added, changed and removed in place while records keep
arriving, and none acknowledged is lost; an invalid file is refused with a line naming it,
and the daemon runs on as it was. Principals and their keys are replaced in place too.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from tests.support.aws import REGION, firehose_client
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import read_local
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "log_level": "INFO",
            "buckets": {"local": {"directory": str(tmp_path / "out")}}, **extra}


def stream_names(daemon: DaemonProcess) -> list[str]:
    return sorted(firehose_client(daemon.endpoint).list_delivery_streams()["DeliveryStreamNames"])


def reload(daemon: DaemonProcess, expect: str) -> None:
    """SIGHUP, then wait for the log line that says what the daemon made of it."""
    seen = daemon.log_path.read_text().count(expect)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: daemon.log_path.read_text().count(expect) > seen, timeout=20)
    assert daemon.proc.poll() is None, daemon.log_path.read_text()[-2000:]


def test_sighup_applies_the_config_while_records_arrive_and_loses_none(tmp_path: Path) -> None:
    config = tmp_path / "firehose.yaml"
    write_config(config, settings(tmp_path), [local_stream("orders", size_mb=1, interval=1)])
    daemon = DaemonProcess(config, free_port(), tmp_path / "daemon.log").start()
    sent: list[bytes] = []
    stop = threading.Event()

    def load() -> None:
        client = firehose_client(daemon.endpoint)
        n = 0
        while not stop.is_set():
            batch = [b"orders-%06d\n" % (n + i) for i in range(50)]
            out = client.put_record_batch(DeliveryStreamName="orders", Records=[{"Data": r} for r in batch])
            sent.extend(r for r, res in zip(batch, out["RequestResponses"], strict=True) if "RecordId" in res)
            n += len(batch)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: len(sent) > 2000, timeout=30)
        # Added, and changed: a new version of the stream under load.
        write_config(config, settings(tmp_path), [
            local_stream("orders", size_mb=2, interval=0, Prefix="v2/"), local_stream("clicks")])
        reload(daemon, "Reloaded the config.")
        assert stream_names(daemon) == ["clicks", "orders"]
        described = firehose_client(daemon.endpoint).describe_delivery_stream(DeliveryStreamName="orders")
        dest = described["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
        assert dest["Prefix"] == "v2/" and dest["BufferingHints"]["SizeInMBs"] == 2
        firehose_client(daemon.endpoint).put_record(DeliveryStreamName="clicks", Record={"Data": b"click\n"})
        count = len(sent)
        wait_until(lambda: len(sent) > count + 2000, timeout=30)
        # Refused: the daemon runs on, every stream as it was.
        config.write_text("delivery_streams: [{DeliveryStreamName: broken, ExtendedS3DestinationConfiguration: 7}]\n")
        reload(daemon, "Reload refused")
        refusal = [line for line in daemon.log_path.read_text().splitlines() if "Reload refused" in line][-1]
        assert str(config) in refusal and "ExtendedS3DestinationConfiguration" in refusal
        assert stream_names(daemon) == ["clicks", "orders"]
        # Removed.
        write_config(config, settings(tmp_path), [local_stream("orders", size_mb=2, interval=0, Prefix="v2/")])
        reload(daemon, "Reloaded the config.")
        assert stream_names(daemon) == ["orders"]
    finally:
        stop.set()
        worker.join(30)
    try:
        wait_until(lambda: daemon.idle("orders"), timeout=30)
        out = read_local(tmp_path / "out")
        delivered = [line for key, body in out.items() if not key.startswith("clicks")
                     for line in body.splitlines(keepends=True) if line.startswith(b"orders-")]
        assert sorted(delivered) == sorted(sent), "every acknowledged record delivered, once"
        assert any(key.startswith("v2/") for key in out), "records after the reload went under the new version"
    finally:
        daemon.terminate()


def test_a_reload_replaces_the_principals_keys_in_place(tmp_path: Path) -> None:
    """A rotated secret key works after SIGHUP and the old one no longer does."""
    def auth(secret: str) -> dict[str, Any]:
        return {"mode": "sigv4", "principals": [{
            "name": "app", "access_key_id": "AKIDAPP", "secret": secret, "account_id": "123456789012",
            "policies": [{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"}]}]}]}

    config = tmp_path / "firehose.yaml"
    write_config(config, settings(tmp_path, auth=auth("old-secret")), [local_stream("orders")])
    daemon = DaemonProcess(config, free_port(), tmp_path / "daemon.log").start()
    try:
        def names(secret: str) -> list[str]:
            client = boto3.client("firehose", endpoint_url=daemon.endpoint, region_name=REGION,
                                  aws_access_key_id="AKIDAPP", aws_secret_access_key=secret)
            return list(client.list_delivery_streams()["DeliveryStreamNames"])

        assert names("old-secret") == ["orders"]
        write_config(config, settings(tmp_path, auth=auth("new-secret")), [local_stream("orders")])
        reload(daemon, "Reloaded the config.")
        assert names("new-secret") == ["orders"]
        with pytest.raises(ClientError) as refused:
            names("old-secret")
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    finally:
        daemon.terminate()


def test_sighup_makes_the_kinesis_sidecar_create_newly_declared_streams(tmp_path: Path,
                                                                         start_streams_server: Any) -> None:
    """``firehose streams serve`` reloads too: a stream added to ``kinesis.streams`` exists after
    SIGHUP, existing streams are left as they are, and an invalid declaration is refused."""
    server = start_streams_server({"kinesis": {"streams": [{"StreamName": "first", "ShardCount": 1}]}})
    assert server.config is not None and server.proc is not None
    client = server.client()
    assert client.list_streams()["StreamNames"] == ["first"]
    server.config.write_text(yaml.safe_dump({"kinesis": {"streams": [
        {"StreamName": "first", "ShardCount": 1}, {"StreamName": "second", "ShardCount": 2}]}}))
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: client.list_streams()["StreamNames"] == ["first", "second"], timeout=20)
    server.config.write_text(yaml.safe_dump({"kinesis": {"streams": [{"StreamName": "third", "ShardCount": 0}]}}))
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "Reload refused" in server.log(), timeout=20)
    assert client.list_streams()["StreamNames"] == ["first", "second"]
    assert server.proc.poll() is None
