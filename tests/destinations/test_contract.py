"""The destination contract, run against every destination.

One delivery attempt reports what was delivered, what should be retried and what was rejected; the
pipeline owns everything else. So for every destination:

* the constructor does no I/O (building one for an unreachable endpoint succeeds);
* ``check()`` passes against a healthy endpoint and raises ``DestinationUnavailable`` otherwise;
* ``deliver()`` of a batch puts exactly its records where they can be read back;
* an unreachable endpoint never loses a batch and never raises anything but a retriable
  ``DestinationError``: every record is listed for retry (or the attempt raises);
* a record the destination refuses fails alone: the others of its batch are delivered (partial
  failure), and the refused one is listed, with a code and a reason, as rejected;
* delivering the same batch again does not duplicate it, where the protocol allows that
  (Splunk's does not: an ack that is lost means the data may be indexed twice, as on AWS).

The servers are real where one can run here (moto's S3, PostgreSQL, osmem-server); the Splunk HEC
and the HTTP endpoint are protocol receivers written to their documentation (``tests/support/receivers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from firehose.definitions import (
    AmazonopensearchserviceDestinationConfiguration,
    HttpEndpointDestinationConfiguration,
    RedshiftDestinationConfiguration,
    SplunkDestinationConfiguration,
)
from firehose.destinations import Destination, DestinationContext, Outcome
from firehose.destinations.elasticsearch import ElasticsearchDestination
from firehose.destinations.http_endpoint import HttpEndpointDestination
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import RedshiftDestination
from firehose.destinations.s3 import S3Destination
from firehose.destinations.splunk import SplunkDestination
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import DeliveryRecord, ObjectBatch, RecordBatch
from firehose.settings import Settings
from tests.support.aws import ROLE, s3_client
from tests.support.ports import free_port
from tests.support.receivers.http_endpoint import HttpEndpointReceiver
from tests.support.receivers.splunk import TOKEN, SplunkReceiver
from tests.support.servers import MotoServer, OpenSearchServer, PostgresServer

S3_CONFIG = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::stage"}
GOOD = [b'{"id":1,"name":"one"}\n', b'{"id":2,"name":"two"}\n', b'{"id":3,"name":"three"}\n']


@dataclass
class Harness:
    """One destination under test: how to build it, feed it and read back what it holds."""

    name: str
    #: (settings, healthy?) -> a destination; healthy=False points it at an endpoint that is down.
    build: Callable[[DestinationContext, bool], Destination]  # type: ignore[type-arg]
    read_back: Callable[[], list[bytes]]
    records: bool = True  # a record destination (else an object destination)
    #: A record this destination refuses on its own merits, or why it has no per-record refusal.
    bad_record: bytes | None = None
    no_refusal: str = "it writes whole objects: there is no per-record refusal"
    idempotent: bool = True
    settings: dict[str, Any] | None = None


def _batch(harness: Harness, data: list[bytes], batch_id: str) -> RecordBatch | ObjectBatch:
    if harness.records:
        return RecordBatch("orders", batch_id, tuple(
            DeliveryRecord(f"{batch_id[:8]}-r0-{i}", d, 1_700_000_000_000 + i) for i, d in enumerate(data)))
    key = f"2024/01/02/03/orders-1-2024-01-02-03-04-05-{batch_id}"
    return ObjectBatch("orders", key, tuple(data), sum(map(len, data)), len(data), 1_704_164_645_000)


def _run(harness: Harness, healthy: bool, step: Callable[[Destination], Any]) -> Any:  # type: ignore[type-arg]
    async def main() -> Any:
        settings = Settings.model_validate(harness.settings or {})
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0)) as http:
            with ThreadPoolExecutor(4) as pool:
                ctx = DestinationContext(stream="orders", settings=settings, executor=pool, http=http,
                                         stream_arn="arn:aws:firehose:us-east-1:123456789012:deliverystream/orders")
                destination = harness.build(ctx, healthy)
                try:
                    return await step(destination)
                finally:
                    await destination.aclose()
    return asyncio.run(main())


def _closed_url(scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


# -- the harnesses ---------------------------------------------------------------------------


@contextlib.contextmanager
def _local(tmp: Path) -> Iterator[Harness]:
    out = tmp / "local"

    def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
        if healthy:
            return LocalDirectoryDestination(out, ctx)
        blocker = tmp / "not-a-directory"
        blocker.write_bytes(b"")
        return LocalDirectoryDestination(blocker / "sub", ctx)

    yield Harness("local", build, lambda: [p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()],
                  records=False)


@contextlib.contextmanager
def _s3(moto: MotoServer) -> Iterator[Harness]:
    bucket = f"contract-{uuid.uuid4().hex[:8]}"
    client = s3_client(moto.endpoint)
    client.create_bucket(Bucket=bucket)

    def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
        endpoint = moto.endpoint if healthy else _closed_url()
        s3 = ctx.settings.s3.model_copy(update={"endpoint_url": endpoint, "connect_timeout_seconds": 1})
        return S3Destination(bucket, replace(ctx, settings=ctx.settings.model_copy(update={"s3": s3})))

    def read_back() -> list[bytes]:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)]

    yield Harness("s3", build, read_back, records=False)


@contextlib.contextmanager
def _redshift(postgres: PostgresServer, tmp: Path) -> Iterator[Harness]:
    database = postgres.create_database("contract")
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE events (id integer, name text)")

    def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
        port = postgres.port if healthy else free_port()
        config = RedshiftDestinationConfiguration.model_validate({
            "RoleARN": ROLE, "ClusterJDBCURL": postgres.url(port=port, database=database),
            "Username": postgres.user, "Password": postgres.password,
            "CopyCommand": {"DataTableName": "events", "DataTableColumns": "id,name", "CopyOptions": "JSON 'auto'"},
            "S3Configuration": S3_CONFIG})
        return RedshiftDestination(config, ctx, stage=LocalDirectoryDestination(tmp / "stage", ctx))

    def read_back() -> list[bytes]:
        with postgres.connect(database) as conn:
            rows = conn.execute("SELECT id, name FROM events ORDER BY id").fetchall()
        return [b'{"id":%d,"name":"%s"}\n' % (i, n.encode()) for i, n in rows]

    yield Harness("redshift", build, read_back, records=False)


@contextlib.contextmanager
def _opensearch(server: OpenSearchServer) -> Iterator[Harness]:
    index = f"contract-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[server.url])
    client.indices.create(index=index, body={"mappings": {"dynamic": "strict", "properties": {
        "id": {"type": "integer"}, "name": {"type": "keyword"}}}})

    def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
        config = AmazonopensearchserviceDestinationConfiguration.model_validate({
            "RoleARN": ROLE, "ClusterEndpoint": server.url if healthy else _closed_url(), "IndexName": index,
            "IndexRotationPeriod": "NoRotation", "S3Configuration": S3_CONFIG})
        return ElasticsearchDestination(config, ctx)

    def read_back() -> list[bytes]:
        client.indices.refresh(index=index)
        hits = client.search(index=index, body={"size": 100, "sort": [{"id": "asc"}]})["hits"]["hits"]
        return [json.dumps(h["_source"], separators=(",", ":")).encode() + b"\n" for h in hits]

    try:
        yield Harness("opensearch", build, read_back, bad_record=b'{"id":9,"colour":"red"}\n')
    finally:
        client.close()


@contextlib.contextmanager
def _splunk() -> Iterator[Harness]:
    with SplunkReceiver() as hec:
        def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
            config = SplunkDestinationConfiguration.model_validate({
                "HECEndpoint": hec.url if healthy else _closed_url(), "HECEndpointType": "Event",
                "HECToken": TOKEN, "HECAcknowledgmentTimeoutInSeconds": 5, "S3Configuration": S3_CONFIG})
            return SplunkDestination(config, ctx)

        def read_back() -> list[bytes]:
            return [json.dumps(e["event"], separators=(",", ":")).encode() + b"\n"
                    for req in hec.indexed for e in req.events]

        yield Harness("splunk", build, read_back, bad_record=b'{"event":null}\n', idempotent=False)


@contextlib.contextmanager
def _http_endpoint() -> Iterator[Harness]:
    with HttpEndpointReceiver() as receiver:
        def build(ctx: DestinationContext, healthy: bool) -> Destination:  # type: ignore[type-arg]
            config = HttpEndpointDestinationConfiguration.model_validate({
                "EndpointConfiguration": {"Url": receiver.url if healthy else _closed_url()},
                "S3Configuration": S3_CONFIG})
            return HttpEndpointDestination(config, ctx)

        yield Harness("http_endpoint", build, receiver.accepted,
                      no_refusal="the endpoint accepts or refuses a request as a whole")


HARNESSES = ["local", "s3", "redshift", "opensearch", "splunk", "http_endpoint"]


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    name = request.param
    if name == "local":
        factory: Any = _local(tmp_path)
    elif name == "s3":
        factory = _s3(request.getfixturevalue("moto_server"))
    elif name == "redshift":
        factory = _redshift(request.getfixturevalue("postgres_server"), tmp_path)
    elif name == "opensearch":
        factory = _opensearch(request.getfixturevalue("opensearch_server"))
    elif name == "splunk":
        factory = _splunk()
    else:
        factory = _http_endpoint()
    with factory as h:
        yield h


def _splunk_event(data: bytes) -> bytes:
    return json.dumps({"event": json.loads(data)}).encode() + b"\n"


def _feed(harness: Harness, data: list[bytes]) -> list[bytes]:
    """What the destination is sent for ``data`` (Splunk's Event endpoint takes HEC envelopes)."""
    return [_splunk_event(d) for d in data] if harness.name == "splunk" else data


# -- the contract ------------------------------------------------------------------------------


def test_check_passes_when_healthy_and_names_the_problem_when_down(harness: Harness) -> None:
    _run(harness, True, lambda d: d.check())
    with pytest.raises(DestinationUnavailable) as down:
        _run(harness, False, lambda d: d.check())
    assert down.value.message


def test_a_batch_is_delivered_and_reads_back_exactly(harness: Harness) -> None:
    outcome = _run(harness, True, lambda d: d.deliver(_batch(harness, _feed(harness, GOOD), str(uuid.uuid4()))))
    assert outcome.delivered_all
    assert b"".join(harness.read_back()) == b"".join(GOOD)


def test_an_unreachable_endpoint_retries_everything_and_loses_nothing(harness: Harness) -> None:
    batch = _batch(harness, _feed(harness, GOOD), str(uuid.uuid4()))

    async def attempt(d: Destination) -> Outcome | DestinationError:  # type: ignore[type-arg]
        try:
            return await d.deliver(batch)
        except DestinationError as exc:
            return exc

    result = _run(harness, False, attempt)
    if isinstance(result, DestinationError):
        assert result.retriable and result.message
    else:
        assert not result.rejected
        assert [f.index for f in result.retry] == list(range(len(GOOD)))
        assert all(f.code and f.reason for f in result.retry)
    assert harness.read_back() == []
    # Once the endpoint is back, the same batch goes through.
    assert _run(harness, True, lambda d: d.deliver(batch)).delivered_all
    assert b"".join(harness.read_back()) == b"".join(GOOD)


def test_a_refused_record_fails_alone_and_the_rest_is_delivered(harness: Harness) -> None:
    if harness.bad_record is None:
        pytest.skip(f"{harness.name}: {harness.no_refusal}")
    data = [*GOOD[:2], harness.bad_record, GOOD[2]]
    sent = [*_feed(harness, GOOD[:2]), harness.bad_record, *_feed(harness, GOOD[2:])]
    outcome = _run(harness, True, lambda d: d.deliver(_batch(harness, sent, str(uuid.uuid4()))))
    assert outcome.retry == ()
    [refused] = outcome.rejected
    assert refused.index == data.index(harness.bad_record)
    assert refused.code and refused.reason and refused.error_output
    assert b"".join(harness.read_back()) == b"".join(GOOD)


def test_delivering_the_same_batch_again_does_not_duplicate_it(harness: Harness) -> None:
    if not harness.idempotent:
        pytest.skip(f"{harness.name}'s protocol cannot tell a retry from new data")
    batch = _batch(harness, _feed(harness, GOOD), str(uuid.uuid4()))
    for _ in range(2):
        assert _run(harness, True, lambda d: d.deliver(batch)).delivered_all
    assert b"".join(harness.read_back()) == b"".join(GOOD)
