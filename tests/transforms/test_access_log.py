"""transforms/access_log.py turns Common and Combined Log Format lines into JSON lines.

The sample lines are the ones in Apache httpd's log file documentation, plus the lines nginx's default
"combined" format writes for ordinary requests, empty connections and TLS sent to a plain HTTP port.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support.transforms import load

access_log = load("access_log")

APACHE_COMMON = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326'
APACHE_COMBINED = APACHE_COMMON + ' "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
NGINX_COMBINED = '203.0.113.9 - - [04/Mar/2024:06:25:13 +0000] "GET /health HTTP/1.1" 200 2 "-" "curl/8.5.0"'
FRANK = {"host": "127.0.0.1", "ident": None, "user": "frank", "time": "2000-10-10T13:55:36-07:00",
         "request": "GET /apache_pb.gif HTTP/1.0", "method": "GET", "path": "/apache_pb.gif",
         "protocol": "HTTP/1.0", "status": 200, "bytes": 2326}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def event(*datas: str) -> dict[str, Any]:
    return {
        "invocationId": "inv-access",
        "deliveryStreamArn": "arn:aws:firehose:eu-west-1:123456789012:deliverystream/access",
        "region": "eu-west-1",
        "records": [{"recordId": f"id-{i}", "approximateArrivalTimestamp": 1709533514000, "data": data}
                    for i, data in enumerate(datas)],
    }


def converted(*lines: str) -> list[dict[str, Any]]:
    """Runs one record holding these lines and returns its JSON lines, checking it came back Ok."""
    [record] = access_log.lambda_handler(event(b64("\n".join(lines) + "\n")), None)["records"]
    assert record["result"] == "Ok"
    text = base64.b64decode(record["data"]).decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_apache_common_and_combined_examples() -> None:
    assert converted(APACHE_COMMON, APACHE_COMBINED) == [
        {**FRANK, "referer": None, "user_agent": None},
        {**FRANK, "referer": "http://www.example.com/start.html",
         "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)"},
    ]


def test_nginx_combined_dashes_become_null() -> None:
    assert converted(NGINX_COMBINED) == [{
        "host": "203.0.113.9", "ident": None, "user": None, "time": "2024-03-04T06:25:13+00:00",
        "request": "GET /health HTTP/1.1", "method": "GET", "path": "/health", "protocol": "HTTP/1.1",
        "status": 200, "bytes": 2, "referer": None, "user_agent": "curl/8.5.0",
    }]


def test_dash_bytes_means_no_body_and_becomes_zero() -> None:
    [line] = converted('192.0.2.1 - - [10/Oct/2000:13:55:36 +0530] "HEAD / HTTP/1.1" 304 -')
    assert line["bytes"] == 0
    assert line["time"] == "2000-10-10T13:55:36+05:30"


@pytest.mark.parametrize(("request_line", "raw", "method", "path", "protocol"), [
    ("-", None, None, None, None),  # Apache, no request line read
    ("", "", None, None, None),  # nginx, connection closed before a request
    (r"\x16\x03\x01\x02\x00\x01", r"\x16\x03\x01\x02\x00\x01", None, None, None),  # TLS to port 80
    ("GET /", "GET /", "GET", "/", None),  # HTTP/0.9 has no protocol
    ("M-SEARCH * HTTP/1.1", "M-SEARCH * HTTP/1.1", "M-SEARCH", "*", "HTTP/1.1"),
    ("GET /a b HTTP/1.1 extra", "GET /a b HTTP/1.1 extra", None, None, None),
])
def test_a_request_line_that_is_not_method_path_protocol_still_converts(
    request_line: str, raw: str | None, method: str | None, path: str | None, protocol: str | None,
) -> None:
    [line] = converted(f'198.51.100.4 - - [04/Mar/2024:06:25:13 +0000] "{request_line}" 400 0 "-" "-"')
    assert (line["request"], line["method"], line["path"], line["protocol"]) == (raw, method, path, protocol)
    assert line["status"] == 400


def test_escaped_quotes_are_kept_as_logged() -> None:
    [line] = converted(r'192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /q?x=\"1\" HTTP/1.1" 200 5 "-" '
                       r'"say \"hi\""')
    assert line["path"] == r"/q?x=\"1\""
    assert line["user_agent"] == r"say \"hi\""


def test_several_lines_in_one_record_keep_their_order_and_skip_blank_lines() -> None:
    data = b64(APACHE_COMMON + "\r\n\n" + NGINX_COMBINED + "\r\n" + APACHE_COMBINED)
    [record] = access_log.lambda_handler(event(data), None)["records"]
    lines = [json.loads(line) for line in base64.b64decode(record["data"]).decode().splitlines()]
    assert [(line["host"], line["referer"]) for line in lines] == [
        ("127.0.0.1", None), ("203.0.113.9", None), ("127.0.0.1", "http://www.example.com/start.html")]


def test_a_record_of_blank_lines_is_dropped() -> None:
    [record] = access_log.lambda_handler(event(b64("\n \n")), None)["records"]
    assert (record["result"], record["data"]) == ("Dropped", "")


def test_one_bad_line_fails_its_whole_record_and_no_other() -> None:
    bad = [
        b64(APACHE_COMMON + "\nnot an access log line\n"),
        b64(APACHE_COMMON.replace("10/Oct/2000", "32/Oct/2000")),  # no such day
        b64(APACHE_COMMON.replace("Oct", "Okt")),
        b64(APACHE_COMMON.replace("-0700", "+2500")),  # no such offset
        b64(APACHE_COMMON.replace(" 200 ", " OK ")),
        b64(APACHE_COMBINED.replace('"Mozilla', "Mozilla")),  # unbalanced quotes
        base64.b64encode(b"\xff\xfe" + APACHE_COMMON.encode()).decode(),  # not UTF-8
    ]
    records = access_log.lambda_handler(event(b64(APACHE_COMMON), *bad, b64(NGINX_COMBINED)), None)["records"]
    assert [r["recordId"] for r in records] == [f"id-{i}" for i in range(len(bad) + 2)]
    assert [r["result"] for r in records] == ["Ok"] + ["ProcessingFailed"] * len(bad) + ["Ok"]
    assert [r["data"] for r in records[1:-1]] == bad
