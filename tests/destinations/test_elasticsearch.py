"""The OpenSearch/Elasticsearch destination against a real OpenSearch-compatible server.

The server is osmem-server (an in-memory OpenSearch 3.x API, no JVM), started once per
session on a free loopback port (``tests/support/servers.py``); documents are read back with
opensearch-py, an independent client. What osmem cannot do is played by a small recording HTTP
server: it has no authentication (the basic-auth test checks the header on the wire) and no way to
make a bulk item fail with 429 or 5xx (those tests replay bulk responses recorded from real clusters).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from opensearchpy import OpenSearch

from firehose.definitions import (
    AmazonOpenSearchServerlessDestinationConfiguration,
    AmazonopensearchserviceDestinationConfiguration,
    ElasticsearchDestinationConfiguration,
)
from firehose.destinations.base import DestinationContext, Outcome
from firehose.destinations.elasticsearch import ElasticsearchDestination, index_name
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch
from firehose.settings import Settings
from tests.support.aws import ROLE
from tests.support.ports import free_port
from tests.support.servers import OpenSearchServer

T = TypeVar("T")
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::errors"}
DOMAIN_ARN = "arn:aws:es:us-east-1:123456789012:domain/logs"
EXECUTOR = ThreadPoolExecutor(2)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(text: str) -> int:
    """Epoch milliseconds of a UTC time, exactly (no float rounding at .999)."""
    return (datetime.fromisoformat(text).replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


# -- osmem-server (tests/support/servers.py, one per session) ------------------------------------


@pytest.fixture
def cluster(opensearch_server: OpenSearchServer) -> str:
    return opensearch_server.url


@pytest.fixture
def reader(cluster: str) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[cluster])
    yield client
    client.close()


# -- a recording server ------------------------------------------------------------------


@dataclass
class Recorder:
    """Records every request; answers with queued (status, body) pairs, then with ``default``."""

    url: str = ""
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    replies: list[tuple[int, bytes]] = field(default_factory=list)
    default: tuple[int, bytes] = (200, b'{"took":1,"errors":false,"items":[]}')

    def reply(self, status: int, body: str | dict[str, Any]) -> None:
        self.replies.append((status, (body if isinstance(body, str) else json.dumps(body)).encode()))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.requests.append((self.command, self.path, dict(self.headers), body))
            status, payload = rec.replies.pop(0) if rec.replies else rec.default
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


# -- driving the destination ---------------------------------------------------------------


def es_config(endpoint: str | None, index: str, *, flavour: type = ElasticsearchDestinationConfiguration,
              **members: Any) -> Any:
    if flavour is AmazonOpenSearchServerlessDestinationConfiguration:
        where = {"CollectionEndpoint": endpoint}
    else:
        where = {"ClusterEndpoint": endpoint} if endpoint else {"DomainARN": DOMAIN_ARN}
    return flavour.model_validate({"RoleARN": ROLE, **where, "IndexName": index, "S3Configuration": S3,
                                   **members})


def run(config: Any, action: Callable[[ElasticsearchDestination], Awaitable[T]],
        settings: Settings | None = None) -> T:
    """Build the destination as the daemon does (shared httpx client, thread pool) and run ``action``."""
    async def main() -> T:
        async with httpx.AsyncClient(timeout=10) as http:
            ctx = DestinationContext("s", settings or Settings(), EXECUTOR, http=http)
            return await action(ElasticsearchDestination(config, ctx))
    return asyncio.run(main())


def deliver(config: Any, records: list[DeliveryRecord], settings: Settings | None = None) -> Outcome:
    return run(config, lambda dest: dest.deliver(RecordBatch("s", "batch-1", tuple(records))), settings)


def records(*docs: bytes | dict[str, Any]) -> list[DeliveryRecord]:
    """Records that arrived at 2024-01-02T03:04:05Z; dicts become JSON lines."""
    return [DeliveryRecord(f"inc-d7-{i}", doc if isinstance(doc, bytes) else json.dumps(doc).encode() + b"\n",
                           ms("2024-01-02T03:04:05")) for i, doc in enumerate(docs)]


def codes(failures: tuple[Any, ...]) -> dict[int, str]:
    return {f.index: f.code for f in failures}


# -- delivery into a real cluster ---------------------------------------------------------------


def test_documents_land_in_the_rotated_index_under_their_record_ids(cluster: str, reader: OpenSearch) -> None:
    batch = [DeliveryRecord("inc-d1-0", b'{"user":"a","n":1}\n', ms("2024-01-02T23:59:59")),
             DeliveryRecord("inc-d1-1", memoryview(b'{"user":"b","tags":["x","y"],"ok":true}'),
                            ms("2024-01-03T00:00:00")),
             DeliveryRecord("inc-d1-2", '{"user":"ü","nested":{"k":2.5}}\n'.encode(),
                            ms("2024-01-03T10:00:00"))]
    assert deliver(es_config(cluster, "clicks"), batch).delivered_all
    landed = [("clicks-2024-01-02", "inc-d1-0"), ("clicks-2024-01-03", "inc-d1-1"),
              ("clicks-2024-01-03", "inc-d1-2")]
    assert [reader.get(index=index, id=doc_id)["_source"] for index, doc_id in landed] == [
        {"user": "a", "n": 1}, {"user": "b", "tags": ["x", "y"], "ok": True},
        {"user": "ü", "nested": {"k": 2.5}}]


def test_the_same_batch_delivered_twice_leaves_one_copy_of_each_document(
        cluster: str, reader: OpenSearch) -> None:
    # 1100 records: the body is built and the response read in the thread pool, as in production.
    batch = records(*({"n": i} for i in range(1100)))
    config = es_config(cluster, "twice", IndexRotationPeriod="NoRotation")
    assert deliver(config, batch).delivered_all
    assert deliver(config, batch).delivered_all
    reader.indices.refresh(index="twice")
    assert reader.count(index="twice")["count"] == 1100
    assert reader.get(index="twice", id="inc-d7-1099")["_source"] == {"n": 1099}
    assert reader.get(index="twice", id="inc-d7-0")["_version"] == 2


def test_no_document_id_lets_the_cluster_choose_ids(cluster: str, reader: OpenSearch) -> None:
    config = es_config(cluster, "noids", IndexRotationPeriod="NoRotation",
                       DocumentIdOptions={"DefaultDocumentIdFormat": "NO_DOCUMENT_ID"})
    batch = records({"n": 1}, {"n": 2})
    assert deliver(config, batch).delivered_all
    assert deliver(config, batch).delivered_all
    reader.indices.refresh(index="noids")
    hits = reader.search(index="noids", body={"query": {"match_all": {}}})["hits"]["hits"]
    assert sorted(h["_source"]["n"] for h in hits) == [1, 1, 2, 2]  # retries may duplicate, as in AWS
    assert not {h["_id"] for h in hits} & {r.record_id for r in batch}


def test_a_document_the_mapping_refuses_is_rejected_and_the_others_delivered(
        cluster: str, reader: OpenSearch) -> None:
    reader.indices.create(index="strict", body={"mappings": {"dynamic": "strict", "properties": {
        "user": {"type": "keyword"}, "n": {"type": "integer"}}}})
    batch = records({"user": "a", "n": 1}, {"user": "b", "extra": 1}, {"user": "c", "n": "many"},
                    {"user": "d"})
    outcome = deliver(es_config(cluster, "strict", IndexRotationPeriod="NoRotation"), batch)
    assert outcome.retry == ()
    assert codes(outcome.rejected) == {1: "strict_dynamic_mapping_exception", 2: "mapper_parsing_exception"}
    assert "dynamic introduction of [extra]" in outcome.rejected[0].reason
    assert outcome.rejected[1].extra == {"esDocumentId": "inc-d7-2", "esIndexName": "strict",
                                         "esTypeName": ""}
    assert reader.get(index="strict", id="inc-d7-0")["_source"] == {"user": "a", "n": 1}
    assert reader.get(index="strict", id="inc-d7-3")["_source"] == {"user": "d"}
    assert not reader.exists(index="strict", id="inc-d7-1")


def test_records_that_are_not_one_line_json_objects_are_rejected_without_being_sent(
        cluster: str, reader: OpenSearch) -> None:
    smuggler = b'{"a":1}\n{"index":{"_index":"smuggled"}}\n{"b":2}\n'
    batch = records(b"not json\n", b"[1,2]\n", b'{\n  "pretty": true\n}\n', b'{"bad":"\xff"}', smuggler,
                    {"fine": True})
    outcome = deliver(es_config(cluster, "invalid", IndexRotationPeriod="NoRotation"), batch)
    assert outcome.retry == ()
    assert codes(outcome.rejected) == dict.fromkeys(range(5), "OS.InvalidDocument")
    assert "not an object" in outcome.rejected[1].reason
    assert "several lines" in outcome.rejected[2].reason
    assert outcome.rejected[0].extra == {"esDocumentId": "inc-d7-0", "esIndexName": "invalid",
                                         "esTypeName": ""}
    reader.indices.refresh(index="invalid")
    assert reader.count(index="invalid")["count"] == 1
    assert not reader.indices.exists(index="smuggled")


def test_type_name_goes_into_every_action_line(recorder: Recorder, cluster: str) -> None:
    config = es_config(recorder.url, "typed", TypeName="fromFirehose", IndexRotationPeriod="OneMonth")
    assert deliver(config, records({"n": 1}, {"n": 2})).delivered_all
    [(method, path, headers, body)] = recorder.requests
    url = urlsplit(path)
    assert (method, url.path, headers["Content-Type"]) == ("POST", "/_bulk", "application/json")
    assert parse_qs(url.query) == {"filter_path": ["errors,items.*.status,items.*.error"]}
    action = b'{"index":{"_index":"typed-2024-01","_type":"fromFirehose","_id":"inc-d7-%d"}}\n'
    assert body == action % 0 + b'{"n": 1}\n' + action % 1 + b'{"n": 2}\n'
    # OpenSearch 2+ refuses _type for the whole request: every record is retried with the reason,
    # until the retry duration runs out (or the definition is fixed).
    outcome = deliver(es_config(cluster, "typed", TypeName="fromFirehose"), records({"n": 1}, {"n": 2}))
    assert codes(outcome.retry) == {0: "400", 1: "400"} and outcome.rejected == ()
    assert "unknown parameter [_type]" in outcome.retry[0].reason
    assert outcome.retry[1].extra == {"esDocumentId": "inc-d7-1", "esIndexName": "typed-2024-01-02",
                                      "esTypeName": "fromFirehose"}


# -- what osmem cannot produce: recorded responses from real clusters ---------------------------

# Items 0 and 3 as osmem answers them. Item 1: an Elasticsearch 7 write-queue rejection as logged
# by fluent-bit (DaoCloud docs, Elasticsearch FAQ "status:429, es_rejected_execution_exception"),
# reason shortened. Item 2: OpenSearch with a red cluster (opensearch-project/OpenSearch#17452).
RECORDED_ITEMS = {"took": 60002, "errors": True, "items": [
    {"index": {"_index": "logs", "_id": "inc-d7-0", "_version": 1, "result": "created", "status": 201,
               "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1}},
    {"create": {"_index": "insight-es-k8s-logs-000067", "_type": "_doc", "_id": "MxomDIcBLVS7yRloG6PF",
                "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": (
                    "rejected execution of org.elasticsearch.action.support.replication."
                    "TransportWriteAction$1 on EsThreadPoolExecutor[name = mcamel-common-es-cluster-masters-"
                    "es-data-0/write, queue capacity = 10000, active threads = 2, queued tasks = 10000]")}}},
    {"create": {"_index": "test-index", "_id": "1", "status": 503, "error": {
        "type": "unavailable_shards_exception",
        "reason": "[test-index][4] primary shard is not active Timeout: [1m], request: [BulkShardRequest "
                  "[[test-index][4]] containing [index {[test-index][1], source[{ \"field1\" : "
                  "\"value1\" }]}]]"}}},
    {"index": {"_index": "logs", "_id": "inc-d7-3", "status": 400, "error": {
        "type": "mapper_parsing_exception", "reason": "failed to parse field [n] of type [integer]",
        "caused_by": {"type": "number_format_exception", "reason": "For input string: \"many\""}}}},
]}

# A request-level rejection by OpenSearch's indexing back-pressure (exercism/website#7223).
_PRESSURE = ("rejected execution of coordinating operation [shard_detail=[production-solutions][2][C], "
             "shard_coordinating_and_primary_bytes=29490684, shard_operation_bytes=434882, "
             "shard_max_coordinating_and_primary_bytes=34694922]")
RECORDED_429 = {"error": {"root_cause": [{"type": "rejected_execution_exception", "reason": _PRESSURE}],
                          "type": "rejected_execution_exception", "reason": _PRESSURE}, "status": 429}


def test_items_refused_with_429_or_5xx_are_retried_and_others_rejected(recorder: Recorder) -> None:
    recorder.reply(200, RECORDED_ITEMS)
    outcome = deliver(es_config(recorder.url, "logs", IndexRotationPeriod="NoRotation"),
                      records({"n": 1}, {"n": 2}, {"n": 3}, {"n": "many"}))
    assert codes(outcome.retry) == {1: "es_rejected_execution_exception", 2: "unavailable_shards_exception"}
    assert codes(outcome.rejected) == {3: "mapper_parsing_exception"}
    assert "primary shard is not active" in outcome.retry[1].reason
    assert outcome.rejected[0].reason == ('failed to parse field [n] of type [integer] '
                                          '(caused by number_format_exception: For input string: "many")')


@pytest.mark.parametrize(("status", "body", "code", "says"), [
    (429, json.dumps(RECORDED_429), "429", "rejected_execution_exception: rejected execution of"),
    (503, "<html>502 Bad Gateway</html>", "503", "<html>502 Bad Gateway</html>"),
    (401, '{"error":"Unauthorized"}', "401", "401: Unauthorized"),
    (200, "<html>proxy login</html>", "OS.MalformedResponse", "not JSON"),
    (200, '{"errors":true,"items":[]}', "OS.MalformedResponse", "0 items for 2 documents"),
])
def test_a_request_that_fails_as_a_whole_retries_every_record_it_sent(
        recorder: Recorder, status: int, body: str, code: str, says: str) -> None:
    recorder.reply(status, body)
    outcome = deliver(es_config(recorder.url, "logs"), records({"n": 1}, b"[not an object]", {"n": 3}))
    assert codes(outcome.retry) == {0: code, 2: code}
    assert codes(outcome.rejected) == {1: "OS.InvalidDocument"}
    assert says in outcome.retry[0].reason


def test_a_cluster_that_is_down_retries_everything_and_fails_its_check() -> None:
    config = es_config(f"http://127.0.0.1:{free_port()}", "down")
    outcome = deliver(config, records({"n": 1}, {"n": 2}))
    assert codes(outcome.retry) == {0: "OS.ConnectError", 1: "OS.ConnectError"}
    assert "got no answer" in outcome.retry[0].reason
    with pytest.raises(DestinationUnavailable, match="Cannot reach the cluster"):
        run(config, lambda dest: dest.check())


# -- configuration ---------------------------------------------------------------------------


def test_basic_auth_from_credentials_is_sent_with_every_request(recorder: Recorder) -> None:
    settings = Settings(credentials={recorder.url: {"username": "firehose", "password": "s3cret"}})
    config = es_config(recorder.url, "auth")
    run(config, lambda dest: dest.check(), settings)
    assert deliver(config, records({"n": 1}), settings).delivered_all
    deliver(config, records({"n": 1}))  # no credentials configured: no header
    expected = "Basic " + base64.b64encode(b"firehose:s3cret").decode()
    assert [(r[0], r[2].get("Authorization")) for r in recorder.requests] == [
        ("GET", expected), ("POST", expected), ("POST", None)]


def test_check_fails_clearly_when_the_cluster_refuses_the_credentials(recorder: Recorder) -> None:
    recorder.reply(401, {"error": {"type": "security_exception",
                                   "reason": "missing authentication credentials"}, "status": 401})
    with pytest.raises(DestinationUnavailable, match="HTTP 401: security_exception: missing authentication"):
        run(es_config(recorder.url, "auth"), lambda dest: dest.check())


def test_a_domain_arn_is_resolved_through_the_domains_setting(cluster: str, reader: OpenSearch) -> None:
    settings = Settings(domains={DOMAIN_ARN: cluster})
    config = es_config(None, "bydomain", flavour=AmazonopensearchserviceDestinationConfiguration)
    run(config, lambda dest: dest.check(), settings)
    assert deliver(config, records({"n": 1}), settings).delivered_all
    assert reader.get(index="bydomain-2024-01-02", id="inc-d7-0")["_source"] == {"n": 1}
    assert ElasticsearchDestination(config, DestinationContext("s", settings, EXECUTOR)).describe() == cluster


def test_an_unknown_domain_arn_fails_check_and_delivery_naming_the_setting() -> None:
    config = es_config(None, "nowhere")
    with pytest.raises(DestinationUnavailable, match=f"DomainARN {DOMAIN_ARN} has no endpoint.*domains:"):
        run(config, lambda dest: dest.check())
    with pytest.raises(DestinationError, match="domains: setting") as raised:
        deliver(config, records({"n": 1}))
    assert raised.value.retriable and raised.value.code == "OS.DomainNotConfigured"


def test_check_reads_cluster_info(cluster: str) -> None:
    run(es_config(cluster, "any"), lambda dest: dest.check())


def test_flavours_set_error_output_type_retry_duration_and_error_fields(cluster: str) -> None:
    es = ElasticsearchDestination(es_config(cluster, "i", RetryOptions={"DurationInSeconds": 60}),
                                  DestinationContext("s", Settings(), EXECUTOR))
    assert (es.name, es.error_output_type, es.retry_seconds, es.retry_clock) == (
        "elasticsearch", "elasticsearch-failed", 60, "first_attempt")
    serverless = es_config(cluster, "coll", flavour=AmazonOpenSearchServerlessDestinationConfiguration)
    outcome = deliver(serverless, records(b"nope"))
    assert outcome.rejected[0].extra == {"osDocumentId": "inc-d7-0", "osIndexName": "coll"}
    dest = ElasticsearchDestination(serverless, DestinationContext("s", Settings(), EXECUTOR))
    assert (dest.error_output_type, dest.retry_seconds, dest.describe()) == (
        "AmazonOpenSearchService-failed", 300, cluster)


# -- index names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rotation", "at", "expected"), [
    ("NoRotation", "2016-02-25T13:00:00", "myindex"),
    ("OneHour", "2016-02-25T13:00:00", "myindex-2016-02-25-13"),
    ("OneHour", "2016-02-25T13:59:59.999", "myindex-2016-02-25-13"),
    ("OneHour", "2016-12-31T23:59:59.999", "myindex-2016-12-31-23"),
    ("OneHour", "2017-01-01T00:00:00", "myindex-2017-01-01-00"),
    ("OneDay", "2016-02-25T13:00:00", "myindex-2016-02-25"),
    ("OneDay", "2016-02-29T23:59:59.999", "myindex-2016-02-29"),
    ("OneDay", "2016-03-01T00:00:00", "myindex-2016-03-01"),
    ("OneMonth", "2016-02-25T13:00:00", "myindex-2016-02"),
    ("OneMonth", "2016-01-31T23:59:59.999", "myindex-2016-01"),
    ("OneMonth", "2016-02-01T00:00:00", "myindex-2016-02"),
    # US weeks run Sunday to Saturday; week 1 is the week that holds the year's first Saturday.
    # (AWS's table shows "myindex-2016-w08" for 2016-02-25, which contradicts the rule AWS states
    # next to it: 2016-01-02 is a Saturday, so week 1 is 2015-12-27..2016-01-02 and 02-25 is in w09.)
    ("OneWeek", "2016-02-25T13:00:00", "myindex-2016-w09"),
    ("OneWeek", "2016-02-27T23:59:59.999", "myindex-2016-w09"),  # Saturday
    ("OneWeek", "2016-02-28T00:00:00", "myindex-2016-w10"),  # Sunday starts a week (ISO: Monday)
    ("OneWeek", "2016-01-01T00:00:00", "myindex-2016-w01"),  # Friday: its week holds 2016's first Saturday
    ("OneWeek", "2019-12-28T23:59:59.999", "myindex-2019-w52"),
    ("OneWeek", "2019-12-29T00:00:00", "myindex-2020-w01"),  # the week of 2020-01-01 is 2020's week 1
    ("OneWeek", "2019-12-31T12:00:00", "myindex-2020-w01"),
    ("OneWeek", "2020-01-04T23:59:59.999", "myindex-2020-w01"),
    ("OneWeek", "2020-01-05T00:00:00", "myindex-2020-w02"),
    ("OneWeek", "2022-01-01T00:00:00", "myindex-2022-w01"),  # a Saturday 1 January: week 1 is 2021-12-26..
    ("OneWeek", "2022-01-02T00:00:00", "myindex-2022-w02"),
    ("OneWeek", "2022-12-31T23:59:59.999", "myindex-2022-w53"),  # 2022 has 53 Saturdays
    ("OneWeek", "2023-01-01T00:00:00", "myindex-2023-w01"),
])
def test_index_name_for_each_rotation_period(rotation: str, at: str, expected: str) -> None:
    assert index_name("myindex", rotation, ms(at)) == expected


def test_every_us_week_is_one_index_sunday_to_saturday_numbered_from_the_week_of_1_january() -> None:
    sunday, labels = date(2009, 12, 27), []
    while sunday < date(2031, 1, 1):
        days = [sunday + timedelta(days=d) for d in range(7)]
        [label] = {index_name("w", "OneWeek", ms(f"{d}T12:00:00")) for d in days}
        new_years_day = [d for d in days if (d.month, d.day) == (1, 1)]
        if new_years_day:
            assert label == f"w-{new_years_day[0].year}-w01"
        else:
            year, number = labels[-1].removeprefix("w-").split("-w")
            assert label == f"w-{year}-w{int(number) + 1:02d}"
        labels.append(label)
        sunday += timedelta(days=7)
    assert {label[-2:] for label in labels} >= {"01", "52", "53"}


@pytest.mark.parametrize(("status", "auth_failed"), [(401, True), (403, True), (500, False), (429, False)])
def test_a_cluster_refusing_the_credentials_is_told_apart_as_an_auth_failure(
        recorder: Recorder, status: int, auth_failed: bool) -> None:
    recorder.reply(status, {"error": {"type": "security_exception", "reason": "no permissions"}, "status": status})
    outcome = deliver(es_config(recorder.url, "auth"), records({"n": 1}))
    assert outcome.auth_failed is auth_failed and codes(outcome.retry) == {0: str(status)}
