"""Secrets end to end through the daemon: boto3 creates the stream and puts the records, moto's Secrets
Manager server holds the secret, the HTTP endpoint receiver checks the key. A rotated secret is picked up
after the endpoint refuses the old key; a secret that cannot be read ends, after the retry duration, in
the error output with the reason; and no secret value shows in logs, descriptions, metrics or errors.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.aws import CREDS, ROLE
from tests.support.delivered import read_local
from tests.support.receivers.http_endpoint import HttpEndpointReceiver
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}
MISSING_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf"


def http_stream(name: str, url: str, arn: str, *, retry: int = 60) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": url, "Name": "sink"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry},
        "SecretsManagerConfiguration": {"Enabled": True, "SecretARN": arn, "RoleARN": ROLE},
        "S3Configuration": S3}}


def error_docs(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for key, body in read_local(root).items() if key.startswith("http-endpoint-failed/")
            for line in body.splitlines()]


def put(d: Any, stream: str, *records: bytes) -> None:
    assert d.client().put_record_batch(DeliveryStreamName=stream,
                                       Records=[{"Data": r} for r in records])["FailedPutCount"] == 0


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def test_a_rotated_secret_is_picked_up_and_no_value_shows_anywhere(
        start_daemon: Any, moto_server: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="firehose")
    secrets = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint, **CREDS)
    arn = secrets.create_secret(Name=f"hooks/{uuid.uuid4().hex[:8]}",
                                SecretString=json.dumps({"api_key": "first-key-a1b2"}))["ARN"]
    with HttpEndpointReceiver(access_key="first-key-a1b2") as receiver:
        d = start_daemon([http_stream("hooks", receiver.url, arn, retry=1)],
                         secrets_manager={"endpoint_url": moto_server.endpoint}, **FAST)
        put(d, "hooks", b"one")
        wait_until(lambda: receiver.accepted() == [b"one"] and d.idle("hooks"), timeout=20)

        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "second-key-c3d4"}))
        receiver.access_key = "second-key-c3d4"
        put(d, "hooks", b"two")
        wait_until(lambda: receiver.accepted() == [b"one", b"two"] and d.idle("hooks"), timeout=20)
        assert [r.status for r in receiver.requests] == [200, 401, 200]

        receiver.access_key = "a-key-no-secret-holds"  # now every key is refused: the error output
        put(d, "hooks", b"three")
        wait_until(lambda: error_docs(tmp_path / "out"), timeout=20)
        wait_until(lambda: d.idle("hooks"), timeout=20)
        described = d.client().describe_delivery_stream(DeliveryStreamName="hooks")["DeliveryStreamDescription"]
        with urllib.request.urlopen(f"{d.endpoint}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(f"{d.endpoint}/readyz", timeout=5) as r:
            readyz = r.read().decode()
    [doc] = error_docs(tmp_path / "out")
    assert base64.b64decode(doc["rawData"]) == b"three"
    assert doc["errorCode"] == "HttpEndpoint.DestinationException" and "HTTP 401" in doc["errorMessage"]
    [destination] = described["Destinations"]
    assert destination["HttpEndpointDestinationDescription"]["SecretsManagerConfiguration"] == {
        "Enabled": True, "SecretARN": arn, "RoleARN": ROLE}
    shown = "\n".join([json.dumps(described, default=str), metrics, readyz, everything_logged(caplog),
                       json.dumps(read_local(tmp_path / "out"), default=str)])
    assert "first-key" not in shown and "second-key" not in shown


def test_a_secret_that_cannot_be_read_ends_in_the_error_output_with_the_reason_after_the_retry_duration(
        start_daemon: Any, moto_server: MotoServer, tmp_path: Path) -> None:
    with HttpEndpointReceiver() as receiver:
        d = start_daemon([http_stream("hooks", receiver.url, MISSING_ARN, retry=1)],
                         secrets_manager={"endpoint_url": moto_server.endpoint}, **FAST)
        put(d, "hooks", b"a", b"b")
        wait_until(lambda: len(error_docs(tmp_path / "out")) == 2, timeout=20)
        docs = error_docs(tmp_path / "out")
    assert receiver.requests == []  # nothing was sent without the key
    assert sorted(base64.b64decode(doc["rawData"]) for doc in docs) == [b"a", b"b"]
    assert {doc["errorCode"] for doc in docs} == {"SecretsManager.ResourceNotFound"}
    assert all(MISSING_ARN in doc["errorMessage"] and "ResourceNotFoundException" in doc["errorMessage"]
               for doc in docs)
    assert all(doc["attemptsMade"] > 1 for doc in docs)  # retried, with backoff, for the retry duration
    assert docs[0]["attemptEndingTimestamp"] - docs[0]["arrivalTimestamp"] >= 1000


def test_create_refuses_an_enabled_configuration_without_a_secret_and_any_snowflake_destination(
        start_daemon: Any) -> None:
    d = start_daemon()
    client = d.client()
    stream = http_stream("hooks", "https://hooks.example/in", MISSING_ARN)
    del stream["HttpEndpointDestinationConfiguration"]["SecretsManagerConfiguration"]["SecretARN"]
    with pytest.raises(ClientError) as no_arn:
        client.create_delivery_stream(**stream)
    assert no_arn.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "needs SecretARN when Enabled is true" in no_arn.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as snowflake:
        client.create_delivery_stream(DeliveryStreamName="snow", SnowflakeDestinationConfiguration={
            "AccountUrl": "https://acme.snowflakecomputing.com", "Database": "db", "Schema": "s", "Table": "t",
            "RoleARN": ROLE, "S3Configuration": S3,
            "SecretsManagerConfiguration": {"Enabled": True, "SecretARN": MISSING_ARN}})
    assert snowflake.value.response["Error"]["Code"] == "InvalidArgumentException"
    message = snowflake.value.response["Error"]["Message"]
    assert "cannot be tested here" in message and "HTTP endpoint destination" in message
    assert client.list_delivery_streams()["DeliveryStreamNames"] == []
