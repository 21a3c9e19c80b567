"""CORS on both APIs, as AWS answers it (kinesis-fidelity.md §5.1): the browser's preflight, and the headers
every API answer to a request with ``Origin`` carries, on the Firehose port and on the Kinesis port."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.ports import free_port

EXPOSED = "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
ORIGIN = {"Origin": "http://app.example"}


def _endpoints(start_daemon: Any) -> list[tuple[str, str]]:
    kinesis_port = free_port()
    daemon = start_daemon(kinesis={"enabled": True, "port": kinesis_port})
    return [(daemon.endpoint, "Firehose_20150804.ListDeliveryStreams"),
            (f"http://127.0.0.1:{kinesis_port}", "Kinesis_20131202.ListStreams")]


def test_preflight_is_answered_empty_and_echoes_what_the_browser_asks(start_daemon: Any) -> None:
    for endpoint, _target in _endpoints(start_daemon):
        answer = httpx.options(f"{endpoint}/", headers={
            **ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-amz-target,x-amz-date,authorization"})
        assert answer.status_code == 200
        assert answer.content == b""
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-max-age"] == "172800"
        assert answer.headers["access-control-allow-headers"] == "content-type,x-amz-target,x-amz-date,authorization"
        assert answer.headers["access-control-allow-methods"] == "POST"
        assert answer.headers["content-length"] == "0"
        # a request id, but no x-amz-id-2 and no content type (kinesalite's recording of AWS's preflight)
        assert answer.headers["x-amzn-requestid"]
        assert "x-amz-id-2" not in answer.headers and "content-type" not in answer.headers
        # Without Origin, OPTIONS is no preflight: a method the API's path does not take, refused as AWS does.
        assert httpx.options(f"{endpoint}/").status_code == 403


def test_answers_to_a_request_with_origin_expose_aws_headers(start_daemon: Any) -> None:
    for endpoint, target in _endpoints(start_daemon):
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        ok = httpx.post(f"{endpoint}/", content=b"{}", headers={**headers, **ORIGIN})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "*"
        assert ok.headers["access-control-expose-headers"] == EXPOSED
        assert ok.headers["x-amzn-requestid"]
        failed = httpx.post(f"{endpoint}/", content=b"{not json", headers={**headers, **ORIGIN})
        assert failed.status_code == 400 and json.loads(failed.content)["__type"] == "SerializationException"
        assert failed.headers["access-control-allow-origin"] == "*"
        assert failed.headers["access-control-expose-headers"] == EXPOSED
        plain = httpx.post(f"{endpoint}/", content=b"{}", headers=headers)  # no Origin, no CORS headers
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers
