"""``testing.reset_endpoint``: moto's and LocalStack's reset paths on the daemon's and the sidecar's ports.

Used the way a suite written for moto's or LocalStack's server mode uses it:
create streams with boto3, reset with one POST, find everything gone, create
the same names again. Off by default (the paths are unknown paths then), and
refused on a listener other machines can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from firehose.errors import ConfigError
from firehose.settings import load_config
from tests.support.aws import CREDS
from tests.support.config import local_stream, write_config
from tests.support.ports import free_port

PATHS = ["/moto-api/reset", "/_localstack/state/reset", "/_localstack/state/kinesis/reset",
         "/_localstack/state/firehose/reset"]


def _kinesis(port: int) -> Any:
    return boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{port}", config=BotoConfig(
        retries={"total_max_attempts": 1}), **CREDS)


def _fill(firehose: Any, kinesis: Any, n: int) -> None:
    for i in range(n):
        firehose.create_delivery_stream(**local_stream(f"suite-{i}", interval=900))
        kinesis.create_stream(StreamName=f"suite-{i}", ShardCount=1)
    firehose.put_record(DeliveryStreamName="suite-0", Record={"Data": b"buffered, never delivered\n"})
    kinesis.put_record(StreamName="suite-0", Data=b"x", PartitionKey="k")


def test_a_reset_drops_every_stream_between_tests(start_daemon: Any, tmp_path: Path) -> None:
    kinesis_port = free_port()
    # A long buffer: the record put above is still buffered at the reset; delete.retain_hours would keep it.
    daemon = start_daemon(kinesis={"enabled": True, "port": kinesis_port}, testing={"reset_endpoint": True},
                          delete={"retain_hours": 24})
    firehose, kinesis = daemon.client(), _kinesis(kinesis_port)
    numbered = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{kinesis_port}", region_name="us-east-1",
                            aws_access_key_id="999988887777", aws_secret_access_key="x")
    for port, path in ((daemon.port, "/moto-api/reset"), (kinesis_port, "/moto-api/reset"),
                       (daemon.port, "/_localstack/state/reset"), (kinesis_port, "/_localstack/state/reset")):
        _fill(firehose, kinesis, 3)
        numbered.create_stream(StreamName="another-account", ShardCount=1)
        answer = httpx.post(f"http://127.0.0.1:{port}{path}")
        assert answer.status_code == 200
        if path == "/moto-api/reset":
            assert answer.json() == {"status": "ok"}  # moto's answer
        else:
            assert answer.content == b""  # LocalStack's route returns nothing: 200, empty
        assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []
        assert kinesis.list_streams()["StreamNames"] == []
        assert numbered.list_streams()["StreamNames"] == []
    assert not any((daemon.config.settings.state_dir / "deleted").glob("*"))  # nothing retained
    # The same names can be made again at once, and start empty.
    _fill(firehose, kinesis, 1)
    shard = kinesis.list_shards(StreamName="suite-0")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="suite-0", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert len(kinesis.get_records(ShardIterator=iterator)["Records"]) == 1


def test_one_service_at_a_time(start_daemon: Any) -> None:
    kinesis_port = free_port()
    daemon = start_daemon(kinesis={"enabled": True, "port": kinesis_port}, testing={"reset_endpoint": True})
    firehose, kinesis = daemon.client(), _kinesis(kinesis_port)
    _fill(firehose, kinesis, 1)
    assert httpx.post(f"http://127.0.0.1:{daemon.port}/_localstack/state/kinesis/reset").status_code == 200
    assert kinesis.list_streams()["StreamNames"] == []
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == ["suite-0"]
    kinesis.create_stream(StreamName="kept", ShardCount=1)
    assert httpx.post(f"http://127.0.0.1:{kinesis_port}/_localstack/state/firehose/reset").status_code == 200
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []
    assert kinesis.list_streams()["StreamNames"] == ["kept"]
    # A service that holds nothing here: nothing to do, 200 as LocalStack answers for one it does not run.
    assert httpx.post(f"http://127.0.0.1:{daemon.port}/_localstack/state/sqs/reset").status_code == 200
    assert kinesis.list_streams()["StreamNames"] == ["kept"]
    # Other methods: moto's 400 and its text; LocalStack's paths only route POST.
    moto = httpx.get(f"http://127.0.0.1:{daemon.port}/moto-api/reset")
    assert (moto.status_code, moto.json()) == (400, {"Error": "Need to POST to reset Moto"})
    assert httpx.get(f"http://127.0.0.1:{kinesis_port}/_localstack/state/reset").status_code == 405
    assert kinesis.list_streams()["StreamNames"] == ["kept"]


def test_off_by_default_the_paths_are_unknown(start_daemon: Any) -> None:
    kinesis_port = free_port()
    daemon = start_daemon(kinesis={"enabled": True, "port": kinesis_port})
    daemon.client().create_delivery_stream(**local_stream("survivor"))
    for port in (daemon.port, kinesis_port):
        for path in PATHS:
            answer = httpx.post(f"http://127.0.0.1:{port}{path}")
            assert answer.status_code == 404
            assert answer.json()["__type"] == "UnknownOperationException"
    assert daemon.client().list_delivery_streams()["DeliveryStreamNames"] == ["survivor"]


def test_refused_on_a_listener_other_machines_reach(tmp_path: Path) -> None:
    principals = [{"access_key_id": "AKIAEXAMPLE", "secret": "s", "account_id": "111122223333"}]
    for settings, what in (({"host": "0.0.0.0"}, "The Firehose API"),
                           ({"kinesis": {"enabled": True, "host": "192.0.2.7"}}, "The Kinesis API")):
        path = write_config(tmp_path / "firehose.yaml", {
            **settings, "auth": {"mode": "sigv4", "principals": principals},
            "testing": {"reset_endpoint": True}}, [])
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert f"testing.reset_endpoint is on and {what} would listen on" in str(exc.value)
    # The stand-alone sidecar's --host is checked too.
    from firehose.settings import Settings
    from firehose.streams.server import Sidecar

    settings = Settings(auth={"mode": "sigv4", "principals": principals}, testing={"reset_endpoint": True})
    with pytest.raises(ConfigError, match="testing.reset_endpoint is on and The Kinesis API would listen on ::"):
        Sidecar(settings, host="::", port=0, directory=tmp_path / "kinesis")


def test_with_authentication_on_a_reset_needs_an_operator(start_daemon: Any) -> None:
    """With ``auth.mode: sigv4`` a reset is an operator's call, as /metrics is: a bearer token of
    ``auth.bearer_tokens`` (or a signed request); anyone else gets 401 and nothing is dropped."""
    kinesis_port = free_port()
    principal = {"access_key_id": "AKIARESETTEST0000001", "secret": "reset-secret", "account_id": "123456789012",
                 "name": "suite", "policies": [{"Version": "2012-10-17", "Statement": [
                     {"Effect": "Allow", "Action": ["firehose:*", "kinesis:*"], "Resource": "*"}]}]}
    daemon = start_daemon([local_stream("kept")], kinesis={"enabled": True, "port": kinesis_port},
                          testing={"reset_endpoint": True},
                          auth={"mode": "sigv4", "principals": [principal], "bearer_tokens": ["operator-token"]})
    firehose = boto3.client("firehose", endpoint_url=daemon.endpoint, region_name="us-east-1",
                            aws_access_key_id=principal["access_key_id"], aws_secret_access_key="reset-secret")
    for port in (daemon.port, kinesis_port):
        refused = httpx.post(f"http://127.0.0.1:{port}/moto-api/reset")
        assert refused.status_code == 401
        assert refused.json()["__type"] == "MissingAuthenticationTokenException"
        assert httpx.post(f"http://127.0.0.1:{port}/_localstack/state/reset",
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == ["kept"]
    allowed = httpx.post(f"http://127.0.0.1:{daemon.port}/moto-api/reset",
                         headers={"Authorization": "Bearer operator-token"})
    assert allowed.status_code == 200
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []
