"""/metrics and /metrics.json after known traffic: Firehose's CloudWatch names, values, and what is not delivered.

docs/metrics.md maps each CloudWatch name to the Prometheus name asserted here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firehose.telemetry import CHARTED, MAX_CHARTED_STREAMS, Metrics, MetricsHistory
from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.ports import free_port
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.receivers.splunk import TOKEN, SplunkReceiver
from tests.support.servers import OpenSearchServer
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}

#: Drops records starting "drop", fails those starting "fail", upper-cases the rest.
UPPER = """
    import base64

    def lambda_handler(event, context):
        out = []
        for r in event["records"]:
            data = base64.b64decode(r["data"])
            if data.startswith(b"drop"):
                out.append({"recordId": r["recordId"], "result": "Dropped", "data": ""})
            elif data.startswith(b"fail"):
                out.append({"recordId": r["recordId"], "result": "ProcessingFailed", "data": r["data"]})
            else:
                out.append({"recordId": r["recordId"], "result": "Ok",
                            "data": base64.b64encode(data.upper()).decode()})
        return {"records": out}
"""

FAILS = """
    def lambda_handler(event, context):
        raise RuntimeError("this function always fails")
"""


def lambda_processing(name: str, **params: str) -> dict[str, Any]:
    values = {"LambdaArn": f"arn:aws:lambda:us-east-1:123456789012:function:{name}", "BufferIntervalInSeconds": "0",
              **params}
    return {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
        {"ParameterName": k, "ParameterValue": v} for k, v in values.items()]}]}


def http_stream(name: str, url: str, *, retry: int) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": url, "Name": "sink", "AccessKey": "k-123"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry}, "S3BackupMode": "FailedDataOnly", "S3Configuration": S3}}


def scrape(d: RunningDaemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels)."""
    text = httpx.get(f"{d.endpoint}/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def endpoint() -> Iterator[HttpEndpointReceiver]:
    with HttpEndpointReceiver(access_key="k-123") as r:
        yield r


def test_an_s3_stream_with_a_lambda_counts_incoming_processing_delivery_and_the_error_output(
        start_daemon: Any, tmp_path: Path) -> None:
    fn_dir = tmp_path / "fns"
    fn_dir.mkdir()
    (fn_dir / "upper.py").write_text(textwrap.dedent(UPPER))
    (fn_dir / "fails.py").write_text(textwrap.dedent(FAILS))
    streams = [
        local_stream("t", ProcessingConfiguration=lambda_processing("upper")),
        local_stream("broken", ProcessingConfiguration=lambda_processing("fails", NumberOfRetries="0")),
    ]
    d = start_daemon(streams, transforms_dir=str(fn_dir))
    client = d.client()
    records = [b"a1", b"b22", b"drop-me", b"fail-me", b"c333"]
    response = client.put_record_batch(DeliveryStreamName="t", Records=[{"Data": r} for r in records])
    assert response["FailedPutCount"] == 0
    client.put_record(DeliveryStreamName="t", Record={"Data": b"d4444"})
    client.put_record(DeliveryStreamName="broken", Record={"Data": b"x"})
    wait_until(lambda: d.idle("t") and d.idle("broken"), timeout=30)
    m = scrape(d)

    sent = sum(map(len, records)) + 5
    assert value(m, "firehose_incoming_records_total", delivery_stream="t") == 6
    assert value(m, "firehose_incoming_bytes_total", delivery_stream="t") == sent
    assert value(m, "firehose_incoming_put_requests_total", delivery_stream="t") == 2
    assert value(m, "firehose_put_record_batch_records_total", delivery_stream="t") == 5
    assert value(m, "firehose_put_record_batch_bytes_total", delivery_stream="t") == sent - 5
    assert value(m, "firehose_put_record_bytes_total", delivery_stream="t") == 5
    assert value(m, "firehose_api_requests_total", operation="PutRecordBatch", outcome="success") == 1
    assert value(m, "firehose_api_requests_total", operation="PutRecord", outcome="success") == 2
    assert value(m, "firehose_api_request_duration_seconds_count", operation="PutRecord") == 2

    # Processing: the upper-casing Lambda succeeded; one record dropped, one failed, four passed on.
    assert value(m, "firehose_execute_processing_invocations_total", delivery_stream="t") >= 1
    assert value(m, "firehose_execute_processing_success_total", delivery_stream="t") == value(
        m, "firehose_execute_processing_invocations_total", delivery_stream="t")
    assert value(m, "firehose_execute_processing_duration_seconds_count", delivery_stream="t") >= 1
    assert value(m, "firehose_succeed_processing_records_total", delivery_stream="t") == 4
    assert value(m, "firehose_succeed_processing_bytes_total", delivery_stream="t") == 2 + 3 + 4 + 5
    assert value(m, "firehose_processing_dropped_records_total", delivery_stream="t") == 1
    # The failed record went to the error output: not delivered.
    assert value(m, "firehose_delivery_to_s3_records_total", delivery_stream="t") == 4
    assert value(m, "firehose_delivery_to_s3_bytes_total", delivery_stream="t") == 2 + 3 + 4 + 5
    assert value(m, "firehose_error_output_records_total", delivery_stream="t",
                 error_output_type="processing-failed") == 1
    assert value(m, "firehose_delivery_to_s3_success_total", delivery_stream="t") == value(
        m, "firehose_delivery_to_s3_attempts_total", delivery_stream="t") >= 1
    assert value(m, "firehose_delivery_to_s3_success_ratio", delivery_stream="t") == 1.0
    assert value(m, "firehose_delivery_to_s3_data_freshness_seconds", delivery_stream="t") == 0.0

    # A Lambda that always fails: every invocation counted as a failure, nothing delivered.
    assert value(m, "firehose_execute_processing_invocations_total", delivery_stream="broken") >= 1
    assert value(m, "firehose_execute_processing_success_total", delivery_stream="broken") == 0
    assert value(m, "firehose_error_output_records_total", delivery_stream="broken",
                 error_output_type="processing-failed") == 1
    assert value(m, "firehose_delivery_to_s3_records_total", delivery_stream="broken") in (None, 0)
    assert value(m, "firehose_delivery_streams") == 2
    assert value(m, "firehose_spool_commits_total") >= 1

    doc = httpx.get(f"{d.endpoint}/metrics.json").json()
    figures = doc["current"]["delivery_streams"]["t"]
    assert figures["firehose_incoming_records_total"] == 6
    assert figures["firehose_delivery_to_s3_records_total"] == 4
    assert doc["interval_seconds"] > 0 and isinstance(doc["history"], list)


def test_an_http_endpoint_that_fails_counts_attempts_not_deliveries_and_freshness_grows(
        start_daemon: Any, endpoint: HttpEndpointReceiver) -> None:
    endpoint.behaviour = Behaviour(status=503, error_message="maintenance")
    # Stopping gives deliveries shutdown_timeout_seconds (20 by default): this endpoint never takes one.
    d = start_daemon([http_stream("down", endpoint.url, retry=60)],
                     delivery={**FAST["delivery"], "shutdown_timeout_seconds": 0.5})
    d.client().put_record_batch(DeliveryStreamName="down", Records=[{"Data": b"r%d" % i} for i in range(3)])

    def failing() -> bool:
        m = scrape(d)
        return (value(m, "firehose_delivery_to_http_endpoint_attempts_total", delivery_stream="down") or 0) >= 2 \
            and (value(m, "firehose_delivery_to_http_endpoint_data_freshness_seconds", delivery_stream="down")
                 or 0) > 0.5

    wait_until(failing, timeout=20)
    m = scrape(d)
    assert value(m, "firehose_delivery_to_http_endpoint_success_total", delivery_stream="down") == 0
    assert value(m, "firehose_delivery_to_http_endpoint_success_ratio", delivery_stream="down") == 0.0
    assert value(m, "firehose_delivery_to_http_endpoint_records_total", delivery_stream="down") in (None, 0)


def test_records_an_http_endpoint_never_took_go_to_the_error_output_and_are_not_delivered(
        start_daemon: Any, endpoint: HttpEndpointReceiver) -> None:
    endpoint.behaviour = Behaviour(status=503, error_message="maintenance")
    d = start_daemon([http_stream("gone", endpoint.url, retry=1)], **FAST)
    d.client().put_record_batch(DeliveryStreamName="gone", Records=[{"Data": b"r%d" % i} for i in range(3)])
    wait_until(lambda: d.idle("gone"), timeout=30)
    m = scrape(d)
    assert value(m, "firehose_error_output_records_total", delivery_stream="gone",
                 error_output_type="http-endpoint-failed") == 3
    assert value(m, "firehose_delivery_to_http_endpoint_records_total", delivery_stream="gone") in (None, 0)
    assert value(m, "firehose_delivery_to_http_endpoint_success_total", delivery_stream="gone") == 0
    assert value(m, "firehose_delivery_to_http_endpoint_data_freshness_seconds", delivery_stream="gone") == 0.0

    endpoint.behaviour = Behaviour()
    d.client().put_record_batch(DeliveryStreamName="gone", Records=[{"Data": b"ok%d" % i} for i in range(4)])
    wait_until(lambda: d.idle("gone") and len(endpoint.accepted()) == 4, timeout=30)
    m = scrape(d)
    assert value(m, "firehose_delivery_to_http_endpoint_records_total", delivery_stream="gone") == 4
    assert value(m, "firehose_delivery_to_http_endpoint_bytes_total", delivery_stream="gone") == 4 * 3
    assert value(m, "firehose_delivery_to_http_endpoint_success_total", delivery_stream="gone") == 1


def test_the_history_keeps_only_the_charted_figures_of_a_bounded_number_of_streams() -> None:
    metrics = Metrics()
    for i in range(250):  # more streams than the history charts, each with many series
        stream = f"s{i:03d}"
        metrics.ingest(stream).records.inc(i)
        metrics.delivery(stream, "s3").records.inc(2 * i)
        metrics.delivery(stream, "http_endpoint").attempted(1, 3)
        metrics.error_output_records.labels(stream, "processing-failed").inc(5)
        for op in ("PutRecord", "PutRecordBatch"):
            metrics.failed_records.labels(stream, op).inc()
    history = MetricsHistory(metrics.registry, every_s=5, window_s=60)
    for _ in range(30):
        history.sample()
    assert len(history.samples) == 12 and MAX_CHARTED_STREAMS == 200
    _time, streams = history.samples[-1]
    assert sorted(streams) == [f"s{i:03d}" for i in range(200)]
    assert all(len(figures) == len(CHARTED) for figures in streams.values())
    doc = history.document()
    assert doc["history_series"] == CHARTED and len(doc["history"]) == 12
    s7 = dict(zip(CHARTED, doc["history"][-1]["delivery_streams"]["s007"], strict=True))
    # The same sums console.js makes: delivered over every family, errors = error output + failed attempts.
    assert (s7["incoming_records"], s7["delivered_records"], s7["errors"]) == (7, 14, 5 + 2)
    assert len(doc["current"]["delivery_streams"]) == 250, "the current figures are whole"
    size = len(orjson.dumps(doc["history"]))
    assert size < 12 * 200 * 150, size


def test_an_http_endpoint_counts_every_record_it_sent_as_processed_retries_included(
        start_daemon: Any, endpoint: HttpEndpointReceiver) -> None:
    endpoint.behaviour = Behaviour(status=500, fail_first=2)
    d = start_daemon([http_stream("flaky", endpoint.url, retry=60)], **FAST)
    records = [b"abc", b"defg", b"hi"]
    d.client().put_record_batch(DeliveryStreamName="flaky", Records=[{"Data": r} for r in records])
    wait_until(lambda: d.idle("flaky"), timeout=20)
    m = scrape(d)
    assert len(endpoint.requests) == 3
    assert value(m, "firehose_delivery_to_http_endpoint_processed_records_total", delivery_stream="flaky") == 9
    assert value(m, "firehose_delivery_to_http_endpoint_processed_bytes_total", delivery_stream="flaky") == 27
    assert value(m, "firehose_delivery_to_http_endpoint_records_total", delivery_stream="flaky") == 3
    figures = httpx.get(f"{d.endpoint}/metrics.json?history=0").json()["current"]["delivery_streams"]["flaky"]
    assert figures["firehose_delivery_to_http_endpoint_processed_records_total"] == 9


def test_splunk_reports_the_time_to_each_indexer_acknowledgement(start_daemon: Any) -> None:
    with SplunkReceiver() as hec:
        d = start_daemon([{"DeliveryStreamName": "logs", "SplunkDestinationConfiguration": {
            "HECEndpoint": hec.url, "HECEndpointType": "Raw", "HECToken": TOKEN,
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}, "S3Configuration": S3}}], **FAST)
        d.client().put_record_batch(DeliveryStreamName="logs", Records=[{"Data": b"line\n"}] * 5)
        wait_until(lambda: d.idle("logs"), timeout=20)
        requests = len(hec.indexed)
    m = scrape(d)
    count = value(m, "firehose_delivery_to_splunk_data_ack_latency_seconds_count", delivery_stream="logs")
    total = value(m, "firehose_delivery_to_splunk_data_ack_latency_seconds_sum", delivery_stream="logs")
    assert count == requests >= 1 and total is not None and 0 < total < 10


def test_opensearch_says_whether_its_last_attempt_was_rejected_or_refused_for_credentials(
        start_daemon: Any, opensearch_server: OpenSearchServer) -> None:
    index = f"strict-{free_port()}"
    httpx.put(f"{opensearch_server.url}/{index}", json={"mappings": {"dynamic": "strict", "properties": {
        "n": {"type": "integer"}}}}).raise_for_status()
    d = start_daemon([{"DeliveryStreamName": "search", "AmazonopensearchserviceDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterEndpoint": opensearch_server.url, "IndexName": index,
        "IndexRotationPeriod": "NoRotation", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": 0}, "S3Configuration": S3}}], **FAST)
    family = "firehose_delivery_to_amazon_opensearch_service"

    def judged(records: list[bytes]) -> tuple[float | None, float | None]:
        d.client().put_record_batch(DeliveryStreamName="search", Records=[{"Data": r} for r in records])
        wait_until(lambda: d.idle("search"), timeout=20)
        m = scrape(d)
        return (value(m, f"{family}_auth_failure", delivery_stream="search"),
                value(m, f"{family}_delivery_rejected", delivery_stream="search"))

    assert judged([b'{"n":1}', b'{"colour":"red"}']) == (0, 1), "the mapping refused a document"
    assert judged([b'{"n":2}']) == (0, 0), "a gauge of the last attempt, not a count"
