"""Record destinations end to end through the daemon: boto3 puts, the daemon delivers to a real server
(PostgreSQL, osmem-server) or a protocol receiver (Splunk HEC, HTTP endpoint), and what cannot be
delivered lands in the error output with the reason, after the definition's retry duration.

The Splunk and HTTP endpoint receivers are stand-ins written to the documented protocols
(``tests/support/receivers/``): no Splunk server can run here, and an HTTP endpoint is whatever a user writes.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from tests.support.aws import ROLE
from tests.support.daemon import RunningDaemon
from tests.support.delivered import read_local
from tests.support.ports import free_port
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.receivers.splunk import TOKEN, SplunkReceiver
from tests.support.servers import OpenSearchServer, PostgresServer
from tests.support.tls import self_signed, server_context
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}


def http_stream(name: str, url: str, *, retry: int = 60, backup: str = "FailedDataOnly",
                **endpoint: Any) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": url, "Name": "sink", **endpoint},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry},
        "S3BackupMode": backup,
        "S3Configuration": S3}}


def error_docs(root: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for key, body in read_local(root).items() if key.startswith(f"{kind}/")
            for line in body.splitlines()]


def readiness(d: RunningDaemon) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{d.endpoint}/readyz", timeout=5) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


def put(d: RunningDaemon, stream: str, records: list[bytes]) -> None:
    response = d.client().put_record_batch(DeliveryStreamName=stream, Records=[{"Data": r} for r in records])
    assert response["FailedPutCount"] == 0


@pytest.fixture
def endpoint() -> Iterator[HttpEndpointReceiver]:
    with HttpEndpointReceiver(access_key="k-123") as r:
        yield r


# -- HTTP endpoint -----------------------------------------------------------------------------


def test_http_endpoint_receives_the_protocol_request_with_its_headers(start_daemon: Any,
                                                                      endpoint: HttpEndpointReceiver) -> None:
    stream = http_stream("hooks", endpoint.url + "/ingest?team=a", AccessKey="k-123")
    stream["HttpEndpointDestinationConfiguration"]["RequestConfiguration"] = {
        "ContentEncoding": "GZIP", "CommonAttributes": [{"AttributeName": "env", "AttributeValue": "prod"}]}
    d = start_daemon([stream], **FAST)
    records = [b'{"n":%d}\n' % i for i in range(50)]
    put(d, "hooks", records)
    wait_until(lambda: d.idle("hooks"))
    assert endpoint.accepted() == records
    [request] = endpoint.requests
    assert request.path == "/ingest?team=a"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["x-amz-firehose-access-key"] == "k-123"
    assert request.headers["x-amz-firehose-source-arn"] == (
        "arn:aws:firehose:us-east-1:123456789012:deliverystream/hooks")
    assert json.loads(request.headers["x-amz-firehose-common-attributes"]) == {"commonAttributes": {"env": "prod"}}
    assert request.headers["x-amz-firehose-request-id"] == request.request_id


def test_http_endpoint_failures_are_retried_with_one_request_id_then_written_to_the_error_output(
        start_daemon: Any, endpoint: HttpEndpointReceiver, tmp_path: Path) -> None:
    endpoint.behaviour = Behaviour(status=503, error_message="maintenance")
    d = start_daemon([http_stream("hooks", endpoint.url, retry=1, AccessKey="k-123")], **FAST)
    put(d, "hooks", [b"a\n", b"b\n"])
    wait_until(lambda: error_docs(tmp_path / "out", "http-endpoint-failed"), timeout=20)
    docs = error_docs(tmp_path / "out", "http-endpoint-failed")
    assert [base64.b64decode(doc["rawData"]) for doc in docs] == [b"a\n", b"b\n"]
    assert {doc["errorCode"] for doc in docs} == {"HttpEndpoint.DestinationException"}
    assert docs[0]["errorMessage"] == "HTTP 503: maintenance"
    assert docs[0]["attemptsMade"] == len(endpoint.requests) >= 2
    assert len({r.request_id for r in endpoint.requests}) == 1, "every retry carries the same request id"
    state = readiness(d)["streams"]["hooks"]
    assert state["consecutive_failures"] >= 2 and "maintenance" in state["last_error"]
    # FailedDataOnly: nothing but the error output was written.
    assert all(k.startswith("http-endpoint-failed/") for k in read_local(tmp_path / "out"))


def test_all_data_backs_up_every_record_and_a_recovered_endpoint_gets_the_batch(
        start_daemon: Any, endpoint: HttpEndpointReceiver, tmp_path: Path) -> None:
    endpoint.behaviour = Behaviour(status=500, fail_first=2)
    d = start_daemon([http_stream("hooks", endpoint.url, backup="AllData", AccessKey="k-123")], **FAST)
    assert readiness(d)["streams"]["hooks"]["last_delivery_ms"] is None
    put(d, "hooks", [b"x\n", b"y\n"])
    wait_until(lambda: d.idle("hooks"), timeout=20)
    assert endpoint.accepted() == [b"x\n", b"y\n"]
    assert [r.status for r in endpoint.requests] == [500, 500, 200]
    objects = read_local(tmp_path / "out")
    assert list(objects.values()) == [b"x\ny\n"], "AllData: the whole batch is backed up, no error output"
    state = readiness(d)["streams"]["hooks"]
    assert state["consecutive_failures"] == 0
    assert 0 <= time.time() * 1000 - state["last_delivery_ms"] < 20_000


def test_a_lone_record_the_endpoint_refuses_with_413_is_not_written_to_the_error_output(
        start_daemon: Any, endpoint: HttpEndpointReceiver, tmp_path: Path) -> None:
    endpoint.behaviour = Behaviour(max_body_bytes=4000)
    d = start_daemon([http_stream("hooks", endpoint.url, AccessKey="k-123")], **FAST)
    records = [b"small-%d\n" % i for i in range(10)]
    put(d, "hooks", records[:5] + [b"B" * 5000] + records[5:])
    wait_until(lambda: d.idle("hooks"), timeout=20)
    assert endpoint.accepted() == records
    assert read_local(tmp_path / "out") == {}
    metrics = httpx.get(f"{d.endpoint}/metrics").text
    assert ('firehose_destination_refused_records_total{code="HttpEndpoint.RequestEntityTooLarge",'
            'delivery_stream="hooks",destination="http_endpoint"} 1.0') in metrics


def test_tls_is_verified_and_a_ca_bundle_setting_trusts_a_private_certificate(start_daemon: Any,
                                                                              tmp_path: Path) -> None:
    certificate = self_signed(tmp_path)
    with HttpEndpointReceiver(tls=server_context(certificate)) as receiver:
        untrusted = start_daemon([http_stream("hooks", receiver.url, retry=0)], **FAST,
                                 state_dir=tmp_path / "a", buckets={"local": {"directory": str(tmp_path / "a-out")}})
        put(untrusted, "hooks", [b"secret\n"])
        wait_until(lambda: error_docs(tmp_path / "a-out", "http-endpoint-failed"), timeout=20)
        [doc] = error_docs(tmp_path / "a-out", "http-endpoint-failed")
        assert doc["errorCode"] == "HttpEndpoint.SSLHandshakeFailure"
        assert "CERTIFICATE_VERIFY_FAILED" in doc["errorMessage"]
        assert receiver.requests == []

        trusted = start_daemon([http_stream("hooks", receiver.url)], **FAST, state_dir=tmp_path / "b",
                               http={"ca_bundle": str(certificate[0])})
        put(trusted, "hooks", [b"secret\n"])
        wait_until(lambda: trusted.idle("hooks"), timeout=20)
        assert receiver.accepted() == [b"secret\n"]


def test_a_stalled_destination_neither_blocks_other_streams_nor_holds_its_backlog_in_memory(
        start_daemon: Any, endpoint: HttpEndpointReceiver, tmp_path: Path) -> None:
    endpoint.behaviour = Behaviour(delay=30)  # answers nothing until the test ends
    local = {"DeliveryStreamName": "files", "ExtendedS3DestinationConfiguration": {
        **S3, "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}}
    d = start_daemon([http_stream("hooks", endpoint.url), local], processing={"max_buffered_bytes": "4MiB"},
                     delivery={"max_inflight_batches": 2, "backoff_base_seconds": 0.05,
                               "shutdown_timeout_seconds": 0.5})
    chunk = [b"r" * 1000 + b"\n"] * 500
    started = time.monotonic()
    for _ in range(40):  # 20 MB into the stalled stream, far beyond two in-flight 1 MB batches
        put(d, "hooks", chunk)
    put(d, "files", [b"other\n"])
    wait_until(lambda: read_local(tmp_path / "out"), timeout=10)
    assert list(read_local(tmp_path / "out").values()) == [b"other\n"]
    assert time.monotonic() - started < 20
    state = readiness(d)["streams"]["hooks"]
    assert state["inflight_batches"] <= 2
    # Read-ahead stops at the stream's memory budget (processing.max_buffered_bytes) plus one spool entry.
    assert d.call(lambda: d.daemon.pipeline("hooks").buffered_bytes) <= 4 * 1024 * 1024 + 501_000
    assert d.call(lambda: d.daemon.spool.used_bytes) >= 20_000_000, "the backlog waits in the spool"


def test_one_daemon_delivers_to_another_through_the_http_endpoint_protocol(start_daemon: Any,
                                                                           tmp_path: Path) -> None:
    """An edge daemon forwards to a central one; the central daemon was down at first."""
    central_port = free_port()
    url = f"http://127.0.0.1:{central_port}/http-endpoint/central"
    edge = start_daemon([http_stream("edge", url, AccessKey="edge-key")], **FAST, state_dir=tmp_path / "edge",
                        buckets={"local": {"directory": str(tmp_path / "edge-out")}})
    records = [b'{"i":%d}\n' % i for i in range(300)]
    put(edge, "edge", records)
    wait_until(lambda: readiness(edge)["streams"]["edge"]["consecutive_failures"] >= 2, timeout=10)
    central_stream = {"DeliveryStreamName": "central", "ExtendedS3DestinationConfiguration": {
        **S3, "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}}
    central = start_daemon([central_stream], port=central_port, state_dir=tmp_path / "central",
                           buckets={"local": {"directory": str(tmp_path / "central-out")}},
                           http_endpoint_receiver={"access_keys": ["edge-key"]})
    wait_until(lambda: edge.idle("edge"), timeout=20)
    wait_until(lambda: central.idle("central"), timeout=20)
    assert b"".join(read_local(tmp_path / "central-out").values()) == b"".join(records)
    assert read_local(tmp_path / "edge-out") == {}


# -- Splunk HEC ---------------------------------------------------------------------------------


def splunk_stream(name: str, url: str, *, kind: str = "Raw", retry: int = 60, ack_timeout: int = 5,
                  backup: str = "FailedEventsOnly") -> dict[str, Any]:
    return {"DeliveryStreamName": name, "SplunkDestinationConfiguration": {
        "HECEndpoint": url, "HECEndpointType": kind, "HECToken": TOKEN,
        "HECAcknowledgmentTimeoutInSeconds": ack_timeout,
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry}, "S3BackupMode": backup, "S3Configuration": S3}}


def test_splunk_events_are_indexed_and_acknowledged(start_daemon: Any) -> None:
    with SplunkReceiver() as hec:
        d = start_daemon([splunk_stream("logs", hec.url, kind="Event")], **FAST)
        events = [b'{"event":{"n":%d},"sourcetype":"app"}' % i for i in range(20)]
        put(d, "logs", events)
        wait_until(lambda: d.idle("logs"), timeout=20)
        got = [e for req in hec.indexed for e in req.events]
        assert [e["event"]["n"] for e in got] == list(range(20))
        assert all(req.token == TOKEN and req.channel for req in hec.indexed)


def test_splunk_acks_that_never_arrive_end_in_splunk_failed_and_all_events_are_backed_up(
        start_daemon: Any, tmp_path: Path) -> None:
    with SplunkReceiver() as hec:
        hec.ack_delay = None
        d = start_daemon([splunk_stream("logs", hec.url, retry=1, ack_timeout=1, backup="AllEvents")], **FAST)
        put(d, "logs", [b"line one\n", b"line two\n"])
        wait_until(lambda: error_docs(tmp_path / "out", "splunk-failed"), timeout=30)
        docs = error_docs(tmp_path / "out", "splunk-failed")
        assert [base64.b64decode(doc["rawData"]) for doc in docs] == [b"line one\n", b"line two\n"]
        assert {doc["errorCode"] for doc in docs} == {"Splunk.AckTimeout"}
        assert all(doc["EventId"] for doc in docs)
        wait_until(lambda: d.idle("logs"), timeout=20)
        backups = [body for key, body in read_local(tmp_path / "out").items() if not key.startswith("splunk-")]
        assert backups == [b"line one\nline two\n"]
        assert hec.indexed, "the data reached the HEC; only its acknowledgement never came"


def test_splunk_busy_indexers_are_retried_until_they_take_the_data(start_daemon: Any, tmp_path: Path) -> None:
    with SplunkReceiver() as hec:
        hec.busy_requests = 3
        d = start_daemon([splunk_stream("logs", hec.url)], **FAST)
        put(d, "logs", [b"a\n", b"b\n"])
        wait_until(lambda: d.idle("logs"), timeout=20)
        assert [req.body for req in hec.indexed] == [b"a\nb\n"]
        assert read_local(tmp_path / "out") == {}


# -- OpenSearch ---------------------------------------------------------------------------------


def opensearch_stream(name: str, url: str, index: str, *, backup: str = "FailedDocumentsOnly",
                      retry: int = 60) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "AmazonopensearchserviceDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterEndpoint": url, "IndexName": index, "IndexRotationPeriod": "NoRotation",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry}, "S3BackupMode": backup, "S3Configuration": S3}}


def test_opensearch_documents_are_indexed_and_mapping_failures_go_to_the_error_output(
        start_daemon: Any, opensearch_server: OpenSearchServer, tmp_path: Path) -> None:
    client = OpenSearch(hosts=[opensearch_server.url])
    index = f"orders-{free_port()}"
    client.indices.create(index=index, body={"mappings": {"dynamic": "strict", "properties": {
        "sku": {"type": "keyword"}, "qty": {"type": "integer"}}}})
    d = start_daemon([opensearch_stream("orders", opensearch_server.url, index, backup="AllDocuments")], **FAST)
    good = [b'{"sku":"a-%d","qty":%d}' % (i, i) for i in range(30)]
    bad = b'{"sku":"z","colour":"red"}'
    put(d, "orders", good[:10] + [bad] + good[10:])
    wait_until(lambda: d.idle("orders"), timeout=20)
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 100, "query": {"match_all": {}}})["hits"]["hits"]
    assert sorted(h["_source"]["qty"] for h in hits) == list(range(30))
    [doc] = error_docs(tmp_path / "out", "AmazonOpenSearchService-failed")
    assert base64.b64decode(doc["rawData"]) == bad
    assert doc["errorCode"] == "strict_dynamic_mapping_exception"
    assert doc["esIndexName"] == index and doc["esDocumentId"]
    assert doc["attemptsMade"] == 1, "a mapping error is not retried"
    assert doc["esDocumentId"] not in {h["_id"] for h in hits}
    backups = [v for k, v in read_local(tmp_path / "out").items() if not k.startswith("AmazonOpenSearchService")]
    assert backups == [b"".join(good[:10] + [bad] + good[10:])], "AllDocuments: every record backed up"
    client.close()


# -- Redshift (PostgreSQL load mode) --------------------------------------------------------------


def redshift_stream(name: str, url: str, *, table: str = "events", retry: int = 60) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "RedshiftDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterJDBCURL": url, "Username": "firehose", "Password": "s3cret-pw",
        "CopyCommand": {"DataTableName": table, "DataTableColumns": "id,name", "CopyOptions": "JSON 'auto'"},
        "RetryOptions": {"DurationInSeconds": retry},
        "S3Configuration": {**S3, "Prefix": "staging/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}}}


def test_redshift_batches_are_staged_with_a_manifest_and_copied_into_the_table(
        start_daemon: Any, postgres_server: PostgresServer, tmp_path: Path) -> None:
    database = postgres_server.create_database("e2e_copy")
    with postgres_server.connect(database) as conn:
        conn.execute("CREATE TABLE events (id integer, name text)")
    d = start_daemon([redshift_stream("rows", postgres_server.url(database=database))], **FAST)
    put(d, "rows", [b'{"id":%d,"name":"n%d"}\n' % (i, i) for i in range(100)])
    wait_until(lambda: d.idle("rows"), timeout=20)
    with postgres_server.connect(database) as conn:
        assert conn.execute("SELECT count(*), sum(id) FROM events").fetchone() == (100, 4950)
    keys = list(read_local(tmp_path / "out"))
    staged = [k for k in keys if k.startswith("staging/") and "/manifests/" not in k]
    manifests = [k for k in keys if k.startswith("staging/manifests/")]
    assert len(staged) == 1 and len(manifests) == 1
    manifest = json.loads(read_local(tmp_path / "out")[manifests[0]])
    assert manifest == {"entries": [{"url": f"s3://local/{staged[0]}", "mandatory": True}]}


def test_a_copy_that_keeps_failing_files_the_manifest_under_errors_after_the_retry_duration(
        start_daemon: Any, postgres_server: PostgresServer, tmp_path: Path) -> None:
    database = postgres_server.create_database("e2e_missing")
    d = start_daemon([redshift_stream("rows", postgres_server.url(database=database), table="absent", retry=1)],
                     **FAST)
    put(d, "rows", [b'{"id":1,"name":"x"}\n'])
    wait_until(lambda: any(k.startswith("errors/manifests/") for k in read_local(tmp_path / "out")), timeout=20)
    wait_until(lambda: d.idle("rows"), timeout=20)
    state = readiness(d)["streams"]["rows"]
    assert 'relation "absent" does not exist' in state["last_error"]


# -- UpdateDestination ----------------------------------------------------------------------------


def test_update_destination_moves_a_failing_http_stream_to_a_working_endpoint(start_daemon: Any,
                                                                              tmp_path: Path) -> None:
    """Firehose applies URL changes between attempts: a batch retrying against a dead URL goes to the new one."""
    with HttpEndpointReceiver() as new:
        d = start_daemon([http_stream("hooks", f"http://127.0.0.1:{free_port()}/gone", retry=600)], **FAST)
        put(d, "hooks", [b"late\n"])
        wait_until(lambda: readiness(d)["streams"]["hooks"]["consecutive_failures"] >= 1, timeout=10)
        client = d.client()
        version = client.describe_delivery_stream(DeliveryStreamName="hooks")["DeliveryStreamDescription"]["VersionId"]
        client.update_destination(DeliveryStreamName="hooks", CurrentDeliveryStreamVersionId=version,
                                  DestinationId="destinationId-000000000001",
                                  HttpEndpointDestinationUpdate={"EndpointConfiguration": {"Url": new.url}})
        described = client.describe_delivery_stream(DeliveryStreamName="hooks")["DeliveryStreamDescription"]
        destination = described["Destinations"][0]["HttpEndpointDestinationDescription"]
        assert destination["EndpointConfiguration"]["Url"] == new.url
        assert destination["RetryOptions"] == {"DurationInSeconds": 600}, "members not in the update are kept"
        wait_until(lambda: d.idle("hooks"), timeout=20)
        assert new.accepted() == [b"late\n"]
        assert read_local(tmp_path / "out") == {}


def test_update_destination_refuses_what_aws_refuses(start_daemon: Any) -> None:
    with HttpEndpointReceiver() as receiver:
        d = start_daemon([http_stream("hooks", receiver.url),
                          splunk_stream("logs", receiver.url, backup="AllEvents")])
        client = d.client()

        def update(name: str, **member: Any) -> None:
            version = client.describe_delivery_stream(
                DeliveryStreamName=name)["DeliveryStreamDescription"]["VersionId"]
            client.update_destination(DeliveryStreamName=name, CurrentDeliveryStreamVersionId=version,
                                      DestinationId="destinationId-000000000001", **member)

        with pytest.raises(client.exceptions.InvalidArgumentException, match="OpenSearch"):
            update("hooks", AmazonopensearchserviceDestinationUpdate={
                "RoleARN": ROLE, "ClusterEndpoint": "http://127.0.0.1:9", "IndexName": "x"})
        with pytest.raises(client.exceptions.InvalidArgumentException, match="FailedEventsOnly to AllEvents"):
            update("logs", SplunkDestinationUpdate={"S3BackupMode": "FailedEventsOnly"})
        # Another type with a complete definition is allowed (here: to S3).
        update("hooks", ExtendedS3DestinationUpdate={**S3, "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
        described = client.describe_delivery_stream(DeliveryStreamName="hooks")["DeliveryStreamDescription"]
        assert "ExtendedS3DestinationDescription" in described["Destinations"][0]
