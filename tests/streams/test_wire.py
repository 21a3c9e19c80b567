"""The Kinesis API's other wire forms: CBOR bodies (the Java SDK's default) and HTTP/2 over cleartext
(the JavaScript SDK v3's default), against the real sidecar process."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

import cbor2
import httpx
import orjson
import pytest

from tests.support.jssdk import kinesis_client_script
from tests.support.streams import StreamsServer, unique

CBOR = "application/x-amz-cbor-1.1"


def cbor_call(server: StreamsServer, operation: str, body: dict[str, Any],
              client: httpx.Client | None = None) -> tuple[int, Any, httpx.Response]:
    headers = {"X-Amz-Target": f"Kinesis_20131202.{operation}", "Content-Type": CBOR,
               "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261122/us-east-1/kinesis/aws4_request"}
    resp = (client or httpx).post(server.endpoint, content=cbor2.dumps(body), headers=headers)  # type: ignore[attr-defined]
    assert resp.headers["content-type"] == CBOR
    return resp.status_code, _loads(resp.content) if resp.content else None, resp


def _loads(raw: bytes) -> Any:
    """Decode as the Java SDK does: tag 1 carries epoch milliseconds."""
    import io

    return cbor2.CBORDecoder(io.BytesIO(raw), semantic_decoders={1: lambda value, _imm: ("millis", value)}).decode()


def test_cbor_put_and_get_with_binary_data_and_millisecond_timestamps(streams_server: StreamsServer) -> None:
    name = unique("cbor")
    assert cbor_call(streams_server, "CreateStream", {"StreamName": name, "ShardCount": 1})[0] == 200
    payloads = [bytes([i]) * (i + 1) + b"\x00\xff" for i in range(20)]
    before = int(time.time() * 1000)
    status, out, _ = cbor_call(streams_server, "PutRecords", {
        "StreamName": name, "Records": [{"Data": p, "PartitionKey": f"k{i}"} for i, p in enumerate(payloads)]})
    assert status == 200 and out["FailedRecordCount"] == 0 and len(out["Records"]) == 20
    status, it, _ = cbor_call(streams_server, "GetShardIterator", {
        "StreamName": name, "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP",
        "Timestamp": cbor2.CBORTag(1, before - 1000)})  # milliseconds, as the Java SDK sends them
    assert status == 200
    status, got, _ = cbor_call(streams_server, "GetRecords", {"ShardIterator": it["ShardIterator"]})
    assert status == 200
    assert [r["Data"] for r in got["Records"]] == payloads  # byte strings, not base64
    kind, millis = got["Records"][0]["ApproximateArrivalTimestamp"]
    assert kind == "millis" and before - 1000 <= millis <= time.time() * 1000 + 1000
    _, summary, _ = cbor_call(streams_server, "DescribeStreamSummary", {"StreamName": name})
    assert summary["StreamDescriptionSummary"]["StreamCreationTimestamp"][0] == "millis"


def test_operations_without_output_answer_an_empty_body(streams_server: StreamsServer) -> None:
    """The model gives CreateStream, AddTagsToStream, DeleteStream ... no output, and AWS answers them "with an
    empty HTTP body" (clients that parse strictly, and kinesalite's recordings, expect ''), in JSON and CBOR."""
    name = unique()

    def call(operation: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(streams_server.endpoint, content=orjson.dumps(body), headers={
            "X-Amz-Target": f"Kinesis_20131202.{operation}", "Content-Type": "application/x-amz-json-1.1"})

    for operation, body in (("CreateStream", {"StreamName": name, "ShardCount": 1}),
                            ("AddTagsToStream", {"StreamName": name, "Tags": {"a": "1"}}),
                            ("IncreaseStreamRetentionPeriod", {"StreamName": name, "RetentionPeriodHours": 48})):
        answer = call(operation, body)
        assert (answer.status_code, answer.content) == (200, b""), operation
        assert answer.headers["content-type"] == "application/x-amz-json-1.1"
        assert answer.headers["content-length"] == "0" and answer.headers["x-amzn-requestid"]
    summary = call("DescribeStreamSummary", {"StreamName": name})
    assert orjson.loads(summary.content)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    assert call("ListTagsForStream", {"StreamName": name}).json()["Tags"] == [{"Key": "a", "Value": "1"}]
    status, out, answer = cbor_call(streams_server, "DeleteStream", {"StreamName": name})
    assert (status, out, answer.content) == (200, None, b"")
    # an error still has its body
    status, out, _ = cbor_call(streams_server, "DeleteStream", {"StreamName": name + "-nope"})
    assert status == 400 and out["__type"] == "ResourceNotFoundException"


EMPTY_BODY_CASES = [  # (content type, target) -> (answer's content type, __type): kinesalite's connection.js
    (None, None, CBOR, "UnknownOperationException"),
    ("application/x-amz-json-1.0", None, CBOR, "UnknownOperationException"),
    ("application/x-amz-json-1.1asdf", None, CBOR, "UnknownOperationException"),
    (None, "Kinesis_20131202.ListStream", CBOR, "UnknownOperationException"),
    (None, "Whatever.Whatever", CBOR, "UnknownOperationException"),
    (None, "Kinesis_20131202.ListStreams", CBOR, "SerializationException"),
    ("application/x-amz-json-1.1", None, "application/x-amz-json-1.1", "UnknownOperationException"),
    ("application/json", None, CBOR, "UnknownOperationException"),
    ("application/json", "Kinesis_20131202.ListStreams", CBOR, "SerializationException"),
    ("application/x-amz-json-1.1", "Kinesis_20131202.ListStreams", "application/x-amz-json-1.1",
     "SerializationException"),
    (CBOR, "Kinesis_20131202.ListStreams", CBOR, "SerializationException"),
]


@pytest.mark.parametrize(("content_type", "target", "answer_type", "refusal"), EMPTY_BODY_CASES)
def test_an_empty_body_is_refused_before_the_content_type_is_looked_at(
        streams_server: StreamsServer, content_type: str | None, target: str | None, answer_type: str,
        refusal: str) -> None:
    """AWS refuses an empty body first: its __type alone, in JSON only for a JSON 1.1 request, else CBOR."""
    headers = {k: v for k, v in (("Content-Type", content_type), ("X-Amz-Target", target)) if v}
    answer = httpx.post(streams_server.endpoint, content=b"", headers=headers)
    assert answer.status_code == 400 and answer.headers["content-type"] == answer_type
    body = _loads(answer.content) if answer_type == CBOR else orjson.loads(answer.content)
    assert body == {"__type": refusal}
    assert answer.headers["x-amzn-requestid"] and answer.headers["x-amz-id-2"]
    # with a body, a content type the API does not speak is refused in XML, which AWS sends untyped
    refused = httpx.post(streams_server.endpoint, content=b"{}", headers={"X-Amz-Target": target or ""})
    assert refused.status_code in (403, 404) and refused.content.startswith(b"<")
    assert "content-type" not in refused.headers


def test_cbor_errors_are_cbor(streams_server: StreamsServer) -> None:
    status, out, _ = cbor_call(streams_server, "DescribeStream", {"StreamName": "does-not-exist"})
    assert status == 400 and out["__type"] == "ResourceNotFoundException"
    # AWS's answer as recorded (LocalStack's test_cbor_exceptions): named by the stream's name, not its ARN
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/wrong-stream-name"
    status, out, _ = cbor_call(streams_server, "DescribeStream", {"StreamARN": arn})
    assert (status, out) == (400, {"__type": "ResourceNotFoundException",
                                   "message": "Stream wrong-stream-name under account 123456789012 not found."})
    resp = httpx.post(streams_server.endpoint, content=b"\xff\xff garbage",
                      headers={"X-Amz-Target": "Kinesis_20131202.ListStreams", "Content-Type": CBOR})
    assert resp.status_code == 400 and _loads(resp.content)["__type"] == "SerializationException"


def test_http2_with_prior_knowledge(streams_server: StreamsServer) -> None:
    name = unique("h2")
    with httpx.Client(http1=False, http2=True) as client:
        headers = {"X-Amz-Target": "Kinesis_20131202.CreateStream", "Content-Type": "application/x-amz-json-1.1"}
        resp = client.post(streams_server.endpoint, json={"StreamName": name, "ShardCount": 1}, headers=headers)
        assert resp.http_version == "HTTP/2" and resp.status_code == 200
        headers["X-Amz-Target"] = "Kinesis_20131202.ListStreams"
        listed = client.post(streams_server.endpoint, json={}, headers=headers)
        assert listed.http_version == "HTTP/2" and name in listed.json()["StreamNames"]
        status, out, resp = cbor_call(streams_server, "DescribeStreamSummary", {"StreamName": name}, client)
        assert resp.http_version == "HTTP/2" and out["StreamDescriptionSummary"]["StreamName"] == name


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_javascript_sdk_v3_default_client_over_http2(streams_server: StreamsServer) -> None:
    """The real JavaScript SDK v3, default configuration: its Kinesis client uses HTTP/2 (h2c here)."""
    script = kinesis_client_script()
    name = unique("js")
    out = subprocess.run(["node", str(script), streams_server.endpoint, name], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"handler": "NodeHttp2Handler", "failed": 0, "data": ["js-0", "js-1", "js-2"],
                      "timestampIsDate": True}
