"""PutRecord / PutRecordBatch through boto3 and raw HTTP: limits, per-record errors, AWS error types."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import assert_delivered_once, read_local
from tests.support.waiting import wait_until


@pytest.fixture
def daemon(start_daemon: Any) -> RunningDaemon:
    return start_daemon([local_stream("clicks", interval=0)])


def raw_call(endpoint: str, target: str | None, body: bytes, content_type: str = "application/x-amz-json-1.1",
             method: str = "POST") -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": content_type}
    if target is not None:
        headers["X-Amz-Target"] = target
    req = urllib.request.Request(endpoint + "/", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_put_record_batch_returns_a_record_id_per_record_and_delivers_in_order(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    client = daemon.client()
    records = [{"Data": f"r{i}\n".encode()} for i in range(50)]
    resp = client.put_record_batch(DeliveryStreamName="clicks", Records=records)
    assert resp["FailedPutCount"] == 0 and resp["Encrypted"] is False
    ids = [r["RecordId"] for r in resp["RequestResponses"]]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert resp["ResponseMetadata"]["RequestId"]
    one = client.put_record(DeliveryStreamName="clicks", Record={"Data": b"last\n"})
    assert one["RecordId"] not in ids
    wait_until(lambda: daemon.idle("clicks"))
    assert_delivered_once(list(read_local(tmp_path / "out").values()), [r["Data"] for r in records] + [b"last\n"])


def test_unknown_stream_is_resource_not_found(daemon: RunningDaemon) -> None:
    client = daemon.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_record_batch(DeliveryStreamName="nope", Records=[{"Data": b"x"}])
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_record(DeliveryStreamName="nope", Record={"Data": b"x"})


def test_more_than_500_records_is_invalid_argument(daemon: RunningDaemon) -> None:
    client = daemon.client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.put_record_batch(DeliveryStreamName="clicks", Records=[{"Data": b"x"}] * 501)
    assert "500" in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_over_4_mib_per_call_is_invalid_argument(daemon: RunningDaemon) -> None:
    client = daemon.client()
    record = {"Data": b"x" * 1_000_000}
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.put_record_batch(DeliveryStreamName="clicks", Records=[record] * 5)
    assert "4194304" in info.value.response["Error"]["Message"]


def test_bad_records_fail_alone_and_the_rest_are_accepted(daemon: RunningDaemon, tmp_path: Path) -> None:
    body = {
        "DeliveryStreamName": "clicks",
        "Records": [
            {"Data": b64(b"good-1\n")},
            {"Data": "not base64!!"},
            {"Data": ""},
            {"Data": b64(b"y" * 1_024_001)},
            {},
            {"Data": b64(b"good-2\n")},
        ],
    }
    status, resp, headers = raw_call(daemon.endpoint, "Firehose_20150804.PutRecordBatch", json.dumps(body).encode())
    assert status == 200
    assert resp["FailedPutCount"] == 4
    entries = resp["RequestResponses"]
    assert "RecordId" in entries[0] and "RecordId" in entries[5]
    for i, fragment in [(1, "not valid base64"), (2, "must not be empty"), (3, "limit is 1024000"),
                        (4, "Data is required")]:
        assert entries[i]["ErrorCode"] == "InvalidArgumentException"
        assert fragment in entries[i]["ErrorMessage"]
        assert entries[i]["ErrorMessage"].startswith(f"Record {i}:")
    wait_until(lambda: daemon.idle("clicks"))
    assert_delivered_once(list(read_local(tmp_path / "out").values()), [b"good-1\n", b"good-2\n"])


def test_put_record_with_a_bad_record_fails_the_call(daemon: RunningDaemon) -> None:
    client = daemon.client()
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.put_record(DeliveryStreamName="clicks", Record={"Data": b"x" * 1_024_001})
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.put_record(DeliveryStreamName="clicks", Record={"Data": b""})
    assert "empty" in info.value.response["Error"]["Message"]


def test_a_record_of_exactly_1000_kib_is_accepted(daemon: RunningDaemon) -> None:
    resp = daemon.client().put_record_batch(DeliveryStreamName="clicks", Records=[{"Data": b"z" * 1_024_000}])
    assert resp["FailedPutCount"] == 0


def test_stream_name_that_breaks_the_pattern(daemon: RunningDaemon) -> None:
    client = daemon.client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.put_record(DeliveryStreamName="bad name", Record={"Data": b"x"})
    assert "deliveryStreamName" in info.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.put_record(DeliveryStreamName="x" * 65, Record={"Data": b"x"})


@pytest.mark.parametrize(
    ("target", "body", "content_type", "status", "error"),
    [
        ("Firehose_20150804.PutRecordBatch", b"{not json", "application/x-amz-json-1.1", 400,
         "SerializationException"),
        ("Firehose_20150804.PutRecordBatch", b"[1, 2]", "application/x-amz-json-1.1", 400, "SerializationException"),
        ("Firehose_20150804.PutRecordBatch", b"", "application/x-amz-json-1.1", 400, "SerializationException"),
        ("Firehose_20150804.NoSuchOperation", b"{}", "application/x-amz-json-1.1", 400, "UnknownOperationException"),
        ("Kinesis_20131202.PutRecord", b"{}", "application/x-amz-json-1.1", 400, "UnknownOperationException"),
        (None, b"{}", "application/x-amz-json-1.1", 400, "UnknownOperationException"),
        ("Firehose_20150804.PutRecordBatch", b'{"DeliveryStreamName": "clicks"}', "application/x-amz-json-1.1",
         400, "InvalidArgumentException"),
        ("Firehose_20150804.PutRecordBatch", b'{"DeliveryStreamName": "clicks", "Records": []}',
         "application/x-amz-json-1.1", 400, "InvalidArgumentException"),
        ("Firehose_20150804.PutRecord", b'{"Record": {"Data": "eA=="}}', "application/x-amz-json-1.1", 400,
         "InvalidArgumentException"),
    ],
)
def test_malformed_requests_get_the_aws_error_envelope(
    daemon: RunningDaemon, target: str | None, body: bytes, content_type: str, status: int, error: str
) -> None:
    got_status, resp, headers = raw_call(daemon.endpoint, target, body, content_type)
    assert got_status == status
    assert resp["__type"] == error
    # a body that cannot be read is refused by its type alone, as AWS does; every other refusal says why
    assert resp == {"__type": error} if body in (b"", b"{not json") else resp["message"]
    assert headers.get("x-amzn-RequestId") or headers.get("x-amzn-requestid")
    # and the daemon keeps serving
    assert daemon.client().list_delivery_streams()["DeliveryStreamNames"] == ["clicks"]


@pytest.mark.parametrize(("method", "target", "content_type", "status", "body"), [
    ("POST", "Firehose_20150804.ListDeliveryStreams", "text/plain", 404, b"<UnknownOperationException/>\n"),
    ("POST", "ListDeliveryStreams", "text/plain", 403,
     b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n"
     b"</AccessDeniedException>\n"),
    ("POST", None, None, 403,
     b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n"
     b"</AccessDeniedException>\n"),
    ("GET", "Firehose_20150804.ListDeliveryStreams", "application/x-amz-json-1.1", 403,
     b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n"
     b"</AccessDeniedException>\n"),
    ("PUT", None, None, 403,
     b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n"
     b"</AccessDeniedException>\n"),
])
def test_requests_aws_cannot_route_are_answered_in_xml_as_aws_does(
        daemon: RunningDaemon, method: str, target: str | None, content_type: str | None, status: int,
        body: bytes) -> None:
    """A content type the API does not speak, or another method than POST, is refused before any
    JSON handling, in AWS's XML (kinesis-fidelity.md §5.1), with a request id all the same."""
    headers = {k: v for k, v in (("X-Amz-Target", target), ("Content-Type", content_type)) if v}
    answer = httpx.request(method, f"{daemon.endpoint}/", headers=headers, content=b"{}" if method != "GET" else None)
    assert (answer.status_code, answer.content) == (status, body)
    assert "content-type" not in answer.headers and answer.headers["x-amzn-requestid"]  # untyped, as AWS sends it
    assert daemon.client().list_delivery_streams()["DeliveryStreamNames"] == ["clicks"]


def test_oversized_body_is_refused_before_it_is_buffered(daemon: RunningDaemon) -> None:
    status, resp, _ = raw_call(daemon.endpoint, "Firehose_20150804.PutRecordBatch", b"x" * (9 * 1024 * 1024))
    assert status == 413
    assert resp["__type"] == "SerializationException"


def test_application_json_is_accepted_for_curl_users(daemon: RunningDaemon) -> None:
    body = json.dumps({"DeliveryStreamName": "clicks", "Record": {"Data": b64(b"curl\n")}}).encode()
    status, resp, _ = raw_call(daemon.endpoint, "Firehose_20150804.PutRecord", body, "application/json")
    assert status == 200 and resp["RecordId"]


def test_put_to_a_stream_that_is_still_creating_fails(start_daemon: Any) -> None:
    daemon = start_daemon([], create_delay_seconds=30)
    client = daemon.client()
    client.create_delivery_stream(**local_stream("slow"))
    assert client.describe_delivery_stream(DeliveryStreamName="slow")["DeliveryStreamDescription"][
        "DeliveryStreamStatus"] == "CREATING"
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.put_record(DeliveryStreamName="slow", Record={"Data": b"x"})
    assert "CREATING" in info.value.response["Error"]["Message"]


def test_health_and_readiness(daemon: RunningDaemon) -> None:
    with urllib.request.urlopen(daemon.endpoint + "/healthz") as r:
        assert r.status == 200
    with urllib.request.urlopen(daemon.endpoint + "/readyz") as r:
        ready = json.loads(r.read())
    assert ready["status"] == "ready"
    assert "clicks" in ready["streams"] and ready["spool"]["max_bytes"] > 0
    with urllib.request.urlopen(daemon.endpoint + "/metrics") as r:
        assert b"firehose_incoming_records" in r.read()


def test_unknown_path_is_404_json(daemon: RunningDaemon) -> None:
    try:
        urllib.request.urlopen(daemon.endpoint + "/nope")
    except urllib.error.HTTPError as err:
        assert err.code == 404
        assert json.loads(err.read())["__type"] == "UnknownOperationException"
    else:
        raise AssertionError("expected 404")


def test_client_error_codes_map_to_boto3_exception_classes(daemon: RunningDaemon) -> None:
    client = daemon.client()
    try:
        client.describe_delivery_stream(DeliveryStreamName="missing")
    except ClientError as err:
        assert err.response["Error"]["Code"] == "ResourceNotFoundException"
        assert isinstance(err, client.exceptions.ResourceNotFoundException)
    else:
        raise AssertionError("expected an error")


def test_a_record_that_is_not_an_object_fails_the_whole_call_before_the_stream_is_looked_up(
        daemon: RunningDaemon) -> None:
    """A record's data is checked per record (a bad one fails alone), but a record that is not a JSON object is
    a body of the wrong shape: SerializationException for the call, as AWS answers, whatever the stream."""
    good = {"Data": b64(b"fine\n")}
    for stream in ("clicks", "no-such-stream"):
        body = json.dumps({"DeliveryStreamName": stream, "Records": [good, 1, good]}).encode()
        status, resp, _ = raw_call(daemon.endpoint, "Firehose_20150804.PutRecordBatch", body)
        assert (status, resp["__type"]) == (400, "SerializationException"), resp
    body = json.dumps({"DeliveryStreamName": "clicks", "Records": [good, {"Data": "not base64!"}]}).encode()
    status, resp, _ = raw_call(daemon.endpoint, "Firehose_20150804.PutRecordBatch", body)
    assert status == 200 and resp["FailedPutCount"] == 1
    assert resp["RequestResponses"][1]["ErrorCode"] == "InvalidArgumentException"


@pytest.mark.parametrize("n", [1, 2, 500])
@pytest.mark.parametrize("encrypted", [False, True])
def test_the_all_accepted_answer_is_the_json_of_the_general_answer(n: int, encrypted: bool) -> None:
    """PutRecordBatch writes its common answer directly; it must be exactly what the dict form encodes to."""
    from firehose.api.operations import _ID_SUFFIXES, _all_accepted
    from firehose.frontdoor import wire

    base = "0a1b2c3d4e5f" + "00000000000000ff"
    general = {"FailedPutCount": 0, "Encrypted": encrypted,
               "RequestResponses": [{"RecordId": base + suffix} for suffix in _ID_SUFFIXES[:n]]}
    answer = _all_accepted(base, n, encrypted)
    assert json.loads(answer) == general
    assert wire.encode(answer, cbor=False) == wire.encode(general, cbor=False)
    assert wire.encode(answer, cbor=True) == wire.encode(general, cbor=True)
