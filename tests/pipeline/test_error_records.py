"""A stream's recent error records: what its error output received, newest first, bounded, safe to show.

The ring (``firehose.pipeline.errorrecords``) on its own, then through the daemon: a processing
failure (the chain's error documents) and a record destination giving up (``ErrorOutput``) appear
in ``/console/api/streams`` and as ``/readyz``'s ``last_error_record``, which ``firehose describe`` shows.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import orjson

from firehose import failures
from firehose.commands.streams import page, summary
from firehose.pipeline.errorrecords import DATA_BYTES, MESSAGE_CHARS, RecentErrors, preview
from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}


def doc(raw: bytes, code: str = "Lambda.Error", message: str = "bad", ended: int = 1_700_000_000_000) -> bytes:
    return failures.document(raw=raw, arrival_ms=ended - 5, code=code, message=message, attempts=3,
                             ended_ms=ended)


def test_data_is_shown_as_text_only_when_it_is_printable_utf8_and_is_cut_to_a_bound() -> None:
    assert preview(b'<b>hi</b>\tthere\n') == {"bytes": 16, "truncated": False, "text": "<b>hi</b>\tthere\n"}
    binary = preview(b"\x00\x01\xff")
    assert binary == {"bytes": 3, "truncated": False, "base64": base64.b64encode(b"\x00\x01\xff").decode()}
    assert "text" not in preview(b"bell\a"), "control characters are not printable"
    long = preview(b"x" * 100_000)
    assert long["truncated"] and long["bytes"] == 100_000 and long["text"] == "x" * DATA_BYTES
    # A character cut by the limit is left out, not a reason to call the data binary.
    cut = preview(b"a" * (DATA_BYTES - 1) + "é".encode() * 10)
    assert cut["truncated"] and cut["text"] == "a" * (DATA_BYTES - 1)
    assert len(base64.b64decode(preview(b"\xff" * 10_000)["base64"])) == DATA_BYTES


def test_the_ring_keeps_the_newest_documents_newest_first_each_bounded_in_size() -> None:
    ring = RecentErrors()
    ring.add("processing-failed", "errors/a", [doc(b"r%d" % i, ended=1_700_000_000_000 + i) for i in range(30)])
    ring.add("http-endpoint-failed", "errors/b", [doc(b"last", code="HttpEndpoint.DestinationException",
                                                      message="m" * 1_000_000)])
    shown = ring.newest_first()
    assert len(shown) == failures.RECENT
    newest = shown[0]
    assert (newest["code"], newest["error_output_type"], newest["key"], newest["data"]["text"], newest["attempts"]) \
        == ("HttpEndpoint.DestinationException", "http-endpoint-failed", "errors/b", "last", 3)
    assert len(newest["message"]) == MESSAGE_CHARS + 1 and newest["message"].endswith("…")
    assert [s["data"]["text"] for s in shown[1:]] == [f"r{i}" for i in range(29, 10, -1)]
    assert ring.newest() == newest
    assert all(len(orjson.dumps(s)) < 3 * 1024 for s in shown)
    # A conversion failure names its code and message differently; an unreadable document is still listed.
    ring.add("format-conversion-failed", "errors/c", [failures.conversion_document(
        raw=b"{}", arrival_ms=1, message="no column x", table={}, ended_ms=2)])
    ring.add("processing-failed", "errors/d", [b"not json"])
    assert [(s["code"], s["message"][:11]) for s in ring.newest_first()[:2]] == [
        ("Unreadable", "The error d"), ("DataFormatConversion.MalformedData", "no column x")]


def _listed(d: RunningDaemon, stream: str) -> list[dict[str, Any]]:
    listing = httpx.get(f"{d.endpoint}/console/api/streams").json()["delivery_streams"]
    return next(s for s in listing if s["name"] == stream)["error_records"]


def test_a_processing_failure_is_listed_with_its_reason_and_described(start_daemon: Any, tmp_path: Path) -> None:
    stream = local_stream("cw", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          ProcessingConfiguration={"Enabled": True, "Processors": [
                              {"Type": "Decompression", "Parameters": [
                                  {"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]}]})
    d = start_daemon([stream])
    assert _listed(d, "cw") == []
    d.client().put_record_batch(DeliveryStreamName="cw", Records=[{"Data": b"<i>not gzip</i> 1"},
                                                                   {"Data": b"\x00\x01 not gzip 2"}])
    wait_until(lambda: d.idle("cw") and len(_listed(d, "cw")) == 2, timeout=30)
    newest, older = _listed(d, "cw")
    assert newest["error_output_type"] == older["error_output_type"] == "decompression-failed"
    assert newest["key"].startswith("errors/decompression-failed/")
    assert newest["data"]["base64"] == base64.b64encode(b"\x00\x01 not gzip 2").decode()
    assert older["data"]["text"] == "<i>not gzip</i> 1"
    assert newest["code"] and newest["message"]
    written = [json.loads(line) for p in (tmp_path / "out").rglob("*") if p.is_file() and "errors" in str(p)
               for line in p.read_text().splitlines()]
    assert {w["errorCode"] for w in written} == {newest["code"]}, "the console shows what the error output holds"
    ready = httpx.get(f"{d.endpoint}/readyz").json()["streams"]["cw"]
    assert ready["last_error_record"] == newest
    description = d.client().describe_delivery_stream(DeliveryStreamName="cw")["DeliveryStreamDescription"]
    text = page(summary(description, {"cw": ready}))
    [line] = [line for line in text.splitlines() if line.startswith("Last error record:")]
    assert line.split(":", 1)[1].strip().startswith(f"{newest['code']}: {newest['message'][:20]}")
    assert line.endswith(")") and "(decompression-failed, " in line


def test_records_a_destination_gave_up_on_are_listed_newest_first(start_daemon: Any) -> None:
    with HttpEndpointReceiver(access_key="k") as endpoint:
        endpoint.behaviour = Behaviour(status=500, error_message="<script>no</script>")
        d = start_daemon([{"DeliveryStreamName": "hooks", "HttpEndpointDestinationConfiguration": {
            "EndpointConfiguration": {"Url": endpoint.url, "Name": "sink", "AccessKey": "k"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}, "RetryOptions": {"DurationInSeconds": 0},
            "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}}}], **FAST)
        for n in (1, 2):
            d.client().put_record(DeliveryStreamName="hooks", Record={"Data": b"event %d" % n})
            wait_until(lambda n=n: len(_listed(d, "hooks")) == n, timeout=20)
    records = _listed(d, "hooks")
    assert [r["data"]["text"] for r in records] == ["event 2", "event 1"]
    assert {(r["error_output_type"], r["code"]) for r in records} == {
        ("http-endpoint-failed", "HttpEndpoint.DestinationException")}
    assert records[0]["message"] == "HTTP 500: <script>no</script>"
