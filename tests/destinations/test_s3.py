"""Delivery to a real S3-compatible server (moto in server mode, on loopback), driven through boto3."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.config import local_stream
from tests.support.delivered import assert_delivered_once, list_objects
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until

KEY_RE = re.compile(
    r"^(?P<prefix>(?:.*/)?)(?P<stream>[A-Za-z0-9_.-]+)-(?P<version>\d+)-"
    r"(?P<ts>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)-"
    r"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


def test_put_record_batch_lands_in_s3_with_firehose_keys_and_exact_content(
    start_daemon: Any, moto_server: MotoServer, bucket: str
) -> None:
    daemon = start_daemon([local_stream("clicks", bucket, size_mb=1, interval=1)],
                          s3={"endpoint_url": moto_server.endpoint})
    client = daemon.client()
    before = datetime.now(UTC)
    sent = []
    for batch in range(4):
        records = [f'{{"id": {batch * 100 + i}}}\n'.encode() for i in range(100)]
        resp = client.put_record_batch(DeliveryStreamName="clicks", Records=[{"Data": r} for r in records])
        assert resp["FailedPutCount"] == 0
        sent.extend(records)
    s3 = moto_server.client()
    wait_until(lambda: daemon.idle("clicks") and list_objects(s3, bucket))
    keys = list_objects(s3, bucket)
    for key in keys:
        m = KEY_RE.match(key)
        assert m, key
        assert m["stream"] == "clicks" and m["version"] == "1"
        prefix_time = datetime.strptime(m["prefix"], "%Y/%m/%d/%H/").replace(tzinfo=UTC)
        assert before.replace(minute=0, second=0, microsecond=0) <= prefix_time <= datetime.now(UTC)
    assert_delivered_once([s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys], sent)


def test_endpoint_and_credentials_come_from_the_standard_aws_configuration(
    start_daemon: Any, moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    daemon = start_daemon([local_stream("env", bucket, interval=0)])  # no s3 settings at all
    daemon.client().put_record(DeliveryStreamName="env", Record={"Data": b"via env\n"})
    s3 = moto_server.client()
    [key] = wait_until(lambda: list_objects(s3, bucket))
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"via env\n"


def test_custom_prefix_with_timestamp_and_random_string(
    start_daemon: Any, moto_server: MotoServer, bucket: str
) -> None:
    stream = local_stream("p", bucket, interval=0, Prefix="year=!{timestamp:yyyy}/r=!{firehose:random-string}/",
                          ErrorOutputPrefix="errors/!{firehose:error-output-type}/")
    daemon = start_daemon([stream], s3={"endpoint_url": moto_server.endpoint})
    daemon.client().put_record(DeliveryStreamName="p", Record={"Data": b"x"})
    [key] = wait_until(lambda: list_objects(moto_server.client(), bucket))
    assert re.match(rf"year={datetime.now(UTC).year}/r=[0-9a-f]{{8}}-[0-9a-f]{{2}}/p-1-", key), key


def test_large_objects_go_up_as_multipart_uploads(start_daemon: Any, moto_server: MotoServer, bucket: str) -> None:
    daemon = start_daemon([local_stream("big", bucket, size_mb=16, interval=1)],
                          s3={"endpoint_url": moto_server.endpoint, "multipart_threshold_bytes": "5MiB",
                              "multipart_chunk_bytes": "5MiB"})
    client = daemon.client()
    sent = b""
    for i in range(3):
        records = [bytes([97 + i]) * 900_000 + b"\n" for _ in range(4)]
        client.put_record_batch(DeliveryStreamName="big", Records=[{"Data": r} for r in records])
        sent += b"".join(records)
    s3 = moto_server.client()
    wait_until(lambda: daemon.idle("big") and list_objects(s3, bucket))
    keys = list_objects(s3, bucket)
    assert len(keys) == 1
    head = s3.head_object(Bucket=bucket, Key=keys[0])
    assert re.search(r"-\d+\"?$", head["ETag"]), head["ETag"]  # a multipart ETag ends in -<parts>
    assert s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read() == sent
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_kms_encryption_configuration_is_applied_to_objects(
    start_daemon: Any, moto_server: MotoServer, bucket: str
) -> None:
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    stream = local_stream("enc", bucket, interval=0,
                          EncryptionConfiguration={"KMSEncryptionConfig": {"AWSKMSKeyARN": key_arn}})
    daemon = start_daemon([stream], s3={"endpoint_url": moto_server.endpoint})
    daemon.client().put_record(DeliveryStreamName="enc", Record={"Data": b"secret"})
    s3 = moto_server.client()
    [key] = wait_until(lambda: list_objects(s3, bucket))
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn


def test_s3_outage_keeps_data_in_the_spool_and_delivers_after_recovery(start_daemon: Any) -> None:
    server = MotoServer().start()
    try:
        server.client().create_bucket(Bucket="outage")
        daemon = start_daemon([local_stream("o", "outage", interval=0)],
                              s3={"endpoint_url": server.endpoint, "connect_timeout_seconds": 1,
                                  "read_timeout_seconds": 2},
                              delivery={"backoff_base_seconds": 0.2, "backoff_max_seconds": 1})
        client = daemon.client()
        client.put_record(DeliveryStreamName="o", Record={"Data": b"before\n"})
        wait_until(lambda: list_objects(server.client(), "outage"))
        server.stop()

        sent = [f"during-{i}\n".encode() for i in range(30)]
        for r in sent:
            assert client.put_record(DeliveryStreamName="o", Record={"Data": r})["RecordId"]

        def failing() -> bool:
            with urllib.request.urlopen(daemon.endpoint + "/readyz") as resp:
                return json.loads(resp.read())["streams"]["o"]["consecutive_failures"] >= 2

        wait_until(failing)
        spool_dir = daemon.config.settings.state_dir / "spool"
        assert sum(p.stat().st_size for p in spool_dir.rglob("*.seg")) > 0
        time.sleep(0.5)

        server.start()  # same port; moto starts empty, so the bucket is created again
        server.client().create_bucket(Bucket="outage")
        wait_until(lambda: daemon.idle("o"), timeout=30)
        s3 = server.client()
        bodies = [s3.get_object(Bucket="outage", Key=k)["Body"].read() for k in list_objects(s3, "outage")]
        assert_delivered_once(bodies, sent)
    finally:
        server.stop()


def test_bucket_server_side_encryption_and_content_encoding(
    start_daemon: Any, moto_server: MotoServer, bucket: str
) -> None:
    """SSE-S3 from the bucket's settings; a GZIP stream's objects say Content-Encoding: gzip."""
    import gzip

    daemon = start_daemon([local_stream("sse", bucket, interval=0, CompressionFormat="GZIP")],
                          s3={"endpoint_url": moto_server.endpoint},
                          buckets={bucket: {"server_side_encryption": "AES256"}})
    daemon.client().put_record(DeliveryStreamName="sse", Record={"Data": b"sealed at rest\n"})
    s3 = moto_server.client()
    [key] = wait_until(lambda: list_objects(s3, bucket))
    assert key.endswith(".gz")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentEncoding"] == "gzip"
    assert gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == b"sealed at rest\n"
