"""The daemon as the receiving end of Firehose's HTTP endpoint protocol (``POST /http-endpoint/<stream>``)."""

from __future__ import annotations

import base64
import gzip
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.config import local_stream
from tests.support.waiting import wait_until


def _delivery(records: list[bytes], request_id: str | None = None) -> dict[str, Any]:
    return {"requestId": request_id or str(uuid.uuid4()), "timestamp": 1578090901599,
            "records": [{"data": base64.b64encode(r).decode()} for r in records]}


def _post(endpoint: str, stream: str, body: dict[str, Any] | bytes, *, gzipped: bool = False,
          headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    h = {"Content-Type": "application/json", "X-Amz-Firehose-Protocol-Version": "1.0", **(headers or {})}
    if isinstance(body, dict):
        h["X-Amz-Firehose-Request-Id"] = body["requestId"]
    if gzipped:
        raw = gzip.compress(raw)
        h["Content-Encoding"] = "gzip"
    return httpx.post(f"{endpoint}/http-endpoint/{stream}", content=raw, headers=h, timeout=10)


def _delivered(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()]


def test_accepted_records_are_delivered_and_the_answer_echoes_the_request_id(start_daemon: Any,
                                                                              tmp_path: Path) -> None:
    d = start_daemon([local_stream("edge")])
    body = _delivery([b'{"n":1}\n', b'{"n":2}\n', b""])
    r = _post(d.endpoint, "edge", body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["requestId"] == body["requestId"]
    assert isinstance(answer["timestamp"], int) and "errorMessage" not in answer
    assert r.headers["content-type"] == "application/json"
    wait_until(lambda: d.idle("edge"))
    assert b"".join(_delivered(tmp_path / "out")) == b'{"n":1}\n{"n":2}\n'


def test_gzip_only_when_the_header_says_so(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("edge")])
    assert _post(d.endpoint, "edge", _delivery([b"zipped\n"]), gzipped=True).status_code == 200
    # A gzip body without the header is not guessed at: it is not JSON, so it is refused.
    raw = gzip.compress(orjson.dumps(_delivery([b"x"])))
    r = _post(d.endpoint, "edge", raw)
    assert r.status_code == 400 and "not valid JSON" in r.json()["errorMessage"]
    r = _post(d.endpoint, "edge", _delivery([b"x"]), headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    wait_until(lambda: d.idle("edge"))
    assert _delivered(tmp_path / "out") == [b"zipped\n"]


def test_a_retried_request_id_is_not_spooled_twice(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("edge")])
    body = _delivery([b"once\n"])
    for _ in range(3):
        r = _post(d.endpoint, "edge", body)
        assert r.status_code == 200 and r.json()["requestId"] == body["requestId"]
    assert _post(d.endpoint, "edge", _delivery([b"twice\n"])).status_code == 200
    wait_until(lambda: d.idle("edge"))
    assert sorted(b"".join(_delivered(tmp_path / "out")).splitlines()) == [b"once", b"twice"]
    metrics = httpx.get(f"{d.endpoint}/metrics").text
    assert 'firehose_http_endpoint_duplicate_requests_total{delivery_stream="edge"} 2.0' in metrics


def test_access_keys_are_checked_when_configured(start_daemon: Any) -> None:
    d = start_daemon([local_stream("edge")], http_endpoint_receiver={"access_keys": ["k1", "k2"]})
    assert _post(d.endpoint, "edge", _delivery([b"a"])).status_code == 401
    for key, status in (("nope", 401), ("k2", 200)):
        headers = {"X-Amz-Firehose-Access-Key": key}
        assert _post(d.endpoint, "edge", _delivery([b"a"]), headers=headers).status_code == status


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{", 400, "not valid JSON"),
    (b"[]", 400, "JSON object"),
    (orjson.dumps({"records": [{"data": "eA=="}]}), 400, "requestId"),
    (orjson.dumps({"requestId": "r", "records": []}), 400, "non-empty"),
    (orjson.dumps({"requestId": "r", "records": [{"data": "!!"}]}), 400, "records[0].data is not valid base64"),
    (orjson.dumps({"requestId": "r", "records": [{}]}), 400, "records[0].data is required"),
    (orjson.dumps({"requestId": "r", "records": [{"data": ""}] * 10_001}), 413, "at most 10000"),
])
def test_malformed_requests_are_refused_with_the_reason(start_daemon: Any, tmp_path: Path, body: bytes,
                                                        status: int, reason: str) -> None:
    d = start_daemon([local_stream("edge")])
    r = _post(d.endpoint, "edge", body)
    assert r.status_code == status
    assert reason in r.json()["errorMessage"]
    # The daemon is unharmed and nothing was spooled.
    assert _post(d.endpoint, "edge", _delivery([b"ok\n"])).status_code == 200
    wait_until(lambda: d.idle("edge"))
    assert _delivered(tmp_path / "out") == [b"ok\n"]


def test_an_oversized_record_refuses_the_whole_request(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("edge")])
    r = _post(d.endpoint, "edge", _delivery([b"fine\n", b"x" * 1_024_001]))
    assert r.status_code == 400 and "records[1]" in r.json()["errorMessage"]
    wait_until(lambda: d.idle("edge"))
    assert _delivered(tmp_path / "out") == []


def test_unknown_stream_is_404_and_large_requests_are_split_into_spool_entries(start_daemon: Any,
                                                                                tmp_path: Path) -> None:
    d = start_daemon([local_stream("edge", size_mb=64, interval=0)])
    r = _post(d.endpoint, "nope", _delivery([b"a"]))
    assert r.status_code == 404 and "ResourceNotFoundException" in r.json()["errorMessage"]
    # Random bytes: they do not compress, so the gzip body stays within the inflation ratio cap.
    records = [b"%05d\n" % i for i in range(2_000)] + [os.urandom(1_000_000) for _ in range(6)]
    assert _post(d.endpoint, "edge", _delivery(records), gzipped=True).status_code == 200
    wait_until(lambda: d.idle("edge"))
    assert b"".join(_delivered(tmp_path / "out")) == b"".join(records)


def test_a_gzip_body_that_inflates_beyond_the_ratio_cap_is_refused_unless_allowed(start_daemon: Any,
                                                                                   tmp_path: Path) -> None:
    """limits.max_decompression_ratio: a body of one repeated byte inflates about 1,000 times."""
    records = [b"y" * 1_000_000 for _ in range(3)]
    d = start_daemon([local_stream("edge", size_mb=64, interval=0)])
    r = _post(d.endpoint, "edge", _delivery(records), gzipped=True)
    assert r.status_code == 400 and "more than 200 times its size" in r.json()["errorMessage"]
    d.stop()
    d = start_daemon([local_stream("edge", size_mb=64, interval=0)], limits={"max_decompression_ratio": 2000},
                     state_dir=tmp_path / "state2")
    assert _post(d.endpoint, "edge", _delivery(records), gzipped=True).status_code == 200
    wait_until(lambda: d.idle("edge"))
    assert b"".join(_delivered(tmp_path / "out")) == b"".join(records)


def test_the_route_can_be_disabled(start_daemon: Any) -> None:
    d = start_daemon([local_stream("edge")], http_endpoint_receiver={"enabled": False})
    assert _post(d.endpoint, "edge", _delivery([b"a"])).status_code == 404
