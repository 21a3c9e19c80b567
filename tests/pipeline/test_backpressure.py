"""The spool's byte limit: at the limit puts answer 503 (retried by SDKs) and nothing acknowledged is touched."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tests.support.config import local_stream
from tests.support.delivered import list_objects
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until


def test_spool_full_answers_503_and_recovers_once_the_destination_drains(start_daemon: Any) -> None:
    server = MotoServer()  # not started: the destination is down from the beginning
    daemon = start_daemon(
        [local_stream("bp", "drain", size_mb=1, interval=0)],
        s3={"endpoint_url": server.endpoint, "connect_timeout_seconds": 1},
        spool={"max_bytes": "8MiB", "segment_bytes": "512KiB"},
        delivery={"backoff_base_seconds": 0.2, "backoff_max_seconds": 0.5, "shutdown_timeout_seconds": 2},
    )
    client = daemon.client(retries={"max_attempts": 1})
    acked: list[bytes] = []
    refused = None
    for i in range(1000):
        records = [b"%06d" % (i * 32 + j) + b"." * 32761 + b"\n" for j in range(32)]  # 1 MiB a call
        try:
            client.put_record_batch(DeliveryStreamName="bp", Records=[{"Data": r} for r in records])
        except ClientError as err:
            refused = err
            break
        acked.extend(records)
    assert refused is not None, "the spool never filled"
    assert refused.response["Error"]["Code"] == "ServiceUnavailableException"
    assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "spool is full" in refused.response["Error"]["Message"]
    assert 7 * 32 <= len(acked) < 8 * 32

    # The SDK's own retry policy treats this 503 as retryable.
    retrying = daemon.client(retries={"max_attempts": 3, "mode": "standard"})
    try:
        retrying.put_record_batch(DeliveryStreamName="bp", Records=[{"Data": b"y" * 1000_000}] * 2)
    except ClientError as err:
        assert err.response["ResponseMetadata"]["RetryAttempts"] >= 2
    else:
        raise AssertionError("the spool should still be full")

    server.start()
    try:
        server.client().create_bucket(Bucket="drain")
        wait_until(lambda: daemon.idle("bp"), timeout=60)
        s3 = server.client()
        delivered = b"".join(s3.get_object(Bucket="drain", Key=k)["Body"].read() for k in list_objects(s3, "drain"))
        assert sorted(delivered.splitlines(keepends=True)) == sorted(acked)
        # Space was released: ingest works again.
        assert client.put_record(DeliveryStreamName="bp", Record={"Data": b"after\n"})["RecordId"]
    finally:
        server.stop()
