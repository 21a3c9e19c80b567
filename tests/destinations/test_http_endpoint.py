"""The HTTP endpoint destination against a faithful protocol receiver (tests/support/receivers/http_endpoint.py).

Each test drives one destination directly, as the pipeline would: one ``deliver`` per attempt, with a
real ``httpx.AsyncClient`` over loopback (plain HTTP, or TLS with a throwaway certificate).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from firehose.definitions import HttpEndpointDestinationConfiguration
from firehose.destinations.base import DestinationContext, Outcome
from firehose.destinations.http_endpoint import (
    CONNECTION_RESET,
    DESTINATION_EXCEPTION,
    HOST_UNREACHABLE,
    INVALID_RESPONSE,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_REQUEST_RECORDS,
    MAX_RESPONSE_TEXT_CHARS,
    REQUEST_TIMEOUT,
    REQUEST_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    SSL_HANDSHAKE_FAILURE,
    HttpEndpointDestination,
)
from firehose.errors import DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch
from firehose.settings import Settings
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.tls import self_signed, server_context

STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/orders"
BATCH_ID = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f"
RECORDS = (b'{"order": 1}\n', b"", bytes(range(256)), "zürich ✓\n".encode())


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool that counts the work handed to it (to see what left the event loop)."""

    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    with CountingExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture
def receiver() -> Iterator[HttpEndpointReceiver]:
    with HttpEndpointReceiver() as r:
        yield r


def config(url: str, *, access_key: str | None = None, gzip_body: bool = False,
           attributes: dict[str, str] | None = None) -> HttpEndpointDestinationConfiguration:
    endpoint: dict[str, Any] = {"Url": url, "Name": "orders sink"}
    if access_key is not None:
        endpoint["AccessKey"] = access_key
    request: dict[str, Any] = {"ContentEncoding": "GZIP" if gzip_body else "NONE"}
    if attributes:
        request["CommonAttributes"] = [{"AttributeName": k, "AttributeValue": v}
                                       for k, v in attributes.items()]
    return HttpEndpointDestinationConfiguration.model_validate({
        "EndpointConfiguration": endpoint,
        "RequestConfiguration": request,
        "RetryOptions": {"DurationInSeconds": 60},
        "S3Configuration": {"RoleARN": "arn:aws:iam::123456789012:role/firehose",
                            "BucketARN": "arn:aws:s3:::errors"},
    })


def make_batch(*datas: bytes | memoryview, batch_id: str = BATCH_ID) -> RecordBatch:
    records = tuple(DeliveryRecord(f"inc-a{i}-0", d, 1_700_000_000_000 + i) for i, d in enumerate(datas))
    return RecordBatch("orders", batch_id, records)


def run(cfg: HttpEndpointDestinationConfiguration, executor: ThreadPoolExecutor,
        step: Callable[[HttpEndpointDestination], Any], **client: Any) -> Any:
    """Run one step (deliver, check) of a fresh destination with its own client, as after a restart."""
    async def go() -> Any:
        async with httpx.AsyncClient(**{"timeout": 5.0, **client}) as http:
            ctx = DestinationContext(stream="orders", settings=Settings(), executor=executor, http=http,
                                     stream_arn=STREAM_ARN)
            return await step(HttpEndpointDestination(cfg, ctx))
    return asyncio.run(go())


def deliver(cfg: HttpEndpointDestinationConfiguration, executor: ThreadPoolExecutor, batch: RecordBatch,
            **client: Any) -> Outcome:
    return run(cfg, executor, lambda d: d.deliver(batch), **client)


def assert_all_retried(outcome: Outcome, batch: RecordBatch, code: str, message: str) -> None:
    assert outcome.rejected == ()
    assert [f.index for f in outcome.retry] == list(range(len(batch.records)))
    assert [f.extra for f in outcome.retry] == [{"dataId": r.record_id} for r in batch.records]
    assert {f.code for f in outcome.retry} == {code}
    assert message in outcome.retry[0].reason, outcome.retry[0].reason


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the request -------------------------------------------------------------------------------------


def test_request_has_the_protocol_headers_and_body(receiver: HttpEndpointReceiver,
                                                    executor: CountingExecutor) -> None:
    batch = make_batch(*RECORDS[:3], memoryview(RECORDS[3]))
    before = time.time_ns() // 1_000_000
    outcome = deliver(config(f"{receiver.url}/v1/ingest?source=firehose&x=1"), executor, batch)
    after = time.time_ns() // 1_000_000
    assert outcome.delivered_all
    [req] = receiver.requests
    assert (req.method, req.path) == ("POST", "/v1/ingest?source=firehose&x=1")
    assert (req.status, req.error) == (200, None)
    firehose_headers = {k: v for k, v in req.headers.items() if k.startswith("x-amz-firehose-")}
    assert firehose_headers == {"x-amz-firehose-protocol-version": "1.0",
                                "x-amz-firehose-request-id": BATCH_ID,
                                "x-amz-firehose-source-arn": STREAM_ARN}
    assert req.headers["content-type"] == "application/json"
    assert "content-encoding" not in req.headers
    assert int(req.headers["content-length"]) == len(req.wire_body)
    doc = json.loads(req.wire_body)
    assert list(doc) == ["requestId", "timestamp", "records"]
    assert doc["requestId"] == BATCH_ID and before <= doc["timestamp"] <= after
    assert doc["records"] == [{"data": base64.b64encode(d).decode()} for d in RECORDS]
    assert req.records == list(RECORDS)
    assert executor.submitted == 0, "a small plain body is built on the event loop"


def test_gzip_content_encoding_compresses_the_body(receiver: HttpEndpointReceiver,
                                                   executor: CountingExecutor) -> None:
    batch = make_batch(*RECORDS)
    assert deliver(config(receiver.url, gzip_body=True), executor, batch).delivered_all
    [req] = receiver.requests
    assert req.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(req.wire_body))["requestId"] == BATCH_ID
    assert req.records == list(RECORDS)
    assert executor.submitted == 1, "gzip runs in the thread pool"


def test_large_bodies_are_built_off_the_event_loop(receiver: HttpEndpointReceiver,
                                                   executor: CountingExecutor) -> None:
    records = [bytes([i]) * 700_000 for i in range(3)]
    assert deliver(config(receiver.url), executor, make_batch(*records)).delivered_all
    assert receiver.requests[0].records == records
    assert executor.submitted == 1


def test_common_attributes_and_access_key_headers(executor: CountingExecutor) -> None:
    attributes = {"team": "payments", "ünïcode": "välue ✓"}
    with HttpEndpointReceiver(access_key="s3cr3t-ключ") as receiver:
        cfg = config(receiver.url, access_key="s3cr3t-ключ", attributes=attributes)
        assert deliver(cfg, executor, make_batch(b"x")).delivered_all
        [req] = receiver.requests
    assert req.headers["x-amz-firehose-access-key"] == "s3cr3t-ключ"
    assert json.loads(req.headers["x-amz-firehose-common-attributes"]) == {"commonAttributes": attributes}


def test_wrong_access_key_is_a_retried_401_with_the_endpoints_message(executor: CountingExecutor) -> None:
    with HttpEndpointReceiver(access_key="expected") as receiver:
        batch = make_batch(b"a", b"b")
        outcome = deliver(config(receiver.url, access_key="wrong"), executor, batch)
        assert [r.status for r in receiver.requests] == [401]
    assert_all_retried(outcome, batch, DESTINATION_EXCEPTION,
                       "HTTP 401: invalid or missing X-Amz-Firehose-Access-Key")


def test_request_id_is_the_batch_id_on_every_attempt(receiver: HttpEndpointReceiver,
                                                     executor: CountingExecutor) -> None:
    receiver.behaviour = Behaviour(status=503, fail_first=1)
    batch = make_batch(b"once", b"twice")
    cfg = config(receiver.url)
    first = deliver(cfg, executor, batch)
    second = deliver(cfg, executor, batch)  # a new destination and client, as after a restart
    again = deliver(cfg, executor, batch)  # delivered, but a crash came before it was marked done
    assert [f.code for f in first.retry] == [DESTINATION_EXCEPTION] * 2
    assert second.delivered_all and again.delivered_all
    requests = receiver.requests
    assert [r.status for r in requests] == [503, 200, 200]
    assert {r.headers["x-amz-firehose-request-id"] for r in requests} == {BATCH_ID}
    assert {r.request_id for r in requests} == {BATCH_ID}
    assert all(r.records == [b"once", b"twice"] for r in requests)
    assert receiver.accepted() == [b"once", b"twice"], "the endpoint deduplicates on the request id"


# -- the response ------------------------------------------------------------------------------------

ELSEWHERE = "http://elsewhere.invalid/ingest"


@pytest.mark.parametrize(("behaviour", "code", "message"), [
    pytest.param(Behaviour(status=500, error_message="disk full"), DESTINATION_EXCEPTION,
                 "HTTP 500: disk full", id="500"),
    pytest.param(Behaviour(status=503, error_message="try later"), DESTINATION_EXCEPTION,
                 "HTTP 503: try later", id="503"),
    pytest.param(Behaviour(status=400, error_message="bad"), DESTINATION_EXCEPTION, "HTTP 400: bad",
                 id="400"),
    pytest.param(Behaviour(status=201, error_message="created?"), DESTINATION_EXCEPTION, "HTTP 201: created?",
                 id="201"),
    pytest.param(Behaviour(status=204), DESTINATION_EXCEPTION, "HTTP 204: (empty body)", id="204"),
    pytest.param(Behaviour(status=302, headers={"Location": ELSEWHERE}), DESTINATION_EXCEPTION,
                 f"HTTP 302 redirect to {ELSEWHERE} (redirects are not followed)", id="302-not-followed"),
    pytest.param(Behaviour(wrong_request_id=True), INVALID_RESPONSE,
                 f"HTTP 200 but the response's requestId 'not-the-request-id' is not the request's "
                 f"'{BATCH_ID}'",
                 id="wrong-request-id"),
    pytest.param(Behaviour(raw_body=b"{not json"), INVALID_RESPONSE,
                 "HTTP 200 but the response body is not JSON: {not json", id="malformed-body"),
    pytest.param(Behaviour(raw_body=b"[1, 2]"), INVALID_RESPONSE, "not a JSON object", id="not-an-object"),
    pytest.param(Behaviour(content_type="text/plain"), INVALID_RESPONSE,
                 "HTTP 200 but the response's Content-Type is 'text/plain'", id="wrong-content-type"),
    pytest.param(Behaviour(headers={"Content-Encoding": "gzip"}), INVALID_RESPONSE,
                 "the response is encoded (gzip)", id="compressed-response"),
    pytest.param(Behaviour(pad_to=1024 * 1024 + 1), RESPONSE_TOO_LARGE,
                 "HTTP 200: the response body is over 1048576 bytes", id="response-too-large"),
    pytest.param(Behaviour(drop_connection=True), CONNECTION_RESET, "broke before a complete response",
                 id="connection-closed"),
])
def test_every_answer_but_a_conforming_200_retries_every_record(
    receiver: HttpEndpointReceiver, executor: CountingExecutor, behaviour: Behaviour, code: str, message: str
) -> None:
    receiver.behaviour = behaviour
    batch = make_batch(*RECORDS)
    outcome = deliver(config(receiver.url), executor, batch)
    assert_all_retried(outcome, batch, code, message)
    assert len(receiver.requests) == 1, "one attempt: no retry, no redirect followed"


def test_413_splits_the_request_and_rejects_only_records_that_alone_are_too_large(
        receiver: HttpEndpointReceiver, executor: CountingExecutor) -> None:
    """An endpoint with a body limit below the batch gets halves; a record over the limit on its own is
    rejected, marked to stay out of the error output (spec §4.2: 413 is permanent, not backed up)."""
    receiver.behaviour = Behaviour(max_body_bytes=600, error_message="Payload too large")
    batch = make_batch(b"a" * 100, b"b" * 100, b"c" * 1000, b"d" * 100, b"e" * 100)
    outcome = deliver(config(receiver.url), executor, batch)
    assert outcome.retry == ()
    assert [f.index for f in outcome.rejected] == [2]
    (refused,) = outcome.rejected
    assert (refused.code, refused.reason, refused.error_output) == (
        REQUEST_TOO_LARGE, "HTTP 413: Payload too large", False)
    assert refused.extra == {"dataId": "inc-a2-0"}
    assert sorted(receiver.accepted()) == [b"a" * 100, b"b" * 100, b"d" * 100, b"e" * 100]
    # Parts of a batch carry their own ids, derived from the batch id: the same ones on a retry.
    ids = [r.request_id for r in receiver.requests]
    assert ids[0] == BATCH_ID and len(set(ids)) == len(ids)
    deliver(config(receiver.url), executor, batch)
    assert [r.request_id for r in receiver.requests][len(ids):] == ids


def test_a_batch_over_the_protocol_limits_goes_as_several_requests(
        receiver: HttpEndpointReceiver, executor: CountingExecutor) -> None:
    batch = make_batch(*[b"%d" % i for i in range(MAX_REQUEST_RECORDS + 5)])
    assert deliver(config(receiver.url), executor, batch).delivered_all
    assert [len(r.records) for r in receiver.requests] == [MAX_REQUEST_RECORDS, 5]
    assert BATCH_ID not in {r.request_id for r in receiver.requests}


def test_a_slow_endpoint_times_out(receiver: HttpEndpointReceiver, executor: CountingExecutor) -> None:
    receiver.behaviour = Behaviour(delay=3.0)
    batch = make_batch(b"slow")
    started = time.monotonic()
    outcome = deliver(config(receiver.url), executor, batch, timeout=httpx.Timeout(5.0, read=0.3))
    assert time.monotonic() - started < 2.0
    assert_all_retried(outcome, batch, REQUEST_TIMEOUT,
                       f"{receiver.url} did not answer within the read timeout")


def test_error_messages_embed_the_endpoint_text_cut_to_size(receiver: HttpEndpointReceiver,
                                                            executor: CountingExecutor) -> None:
    batch = make_batch(b"x")
    receiver.behaviour = Behaviour(status=500, error_message="E" * (MAX_ERROR_MESSAGE_CHARS + 808))
    reason = deliver(config(receiver.url), executor, batch).retry[0].reason
    assert reason == f"HTTP 500: {'E' * MAX_ERROR_MESSAGE_CHARS}… (808 more characters)"
    page = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    receiver.behaviour = Behaviour(status=502, raw_body=page, content_type="text/html")
    reason = deliver(config(receiver.url), executor, batch).retry[0].reason
    assert reason.startswith("HTTP 502: <html><body>xxx")
    assert reason.endswith(f"… ({len(page) - MAX_RESPONSE_TEXT_CHARS} more characters)")
    assert len(reason) < MAX_RESPONSE_TEXT_CHARS + 50


def test_a_closed_port_is_an_unreachable_host(executor: CountingExecutor) -> None:
    url = f"http://127.0.0.1:{closed_port()}/ingest"
    batch = make_batch(b"a", b"b")
    outcome = deliver(config(url), executor, batch)
    assert_all_retried(outcome, batch, HOST_UNREACHABLE, f"cannot connect to {url}: ")
    assert "Connect call failed" in outcome.retry[0].reason


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[HttpEndpointReceiver]:
    with HttpEndpointReceiver(tls=server_context(certificate)) as r:
        yield r


def test_tls_with_an_untrusted_certificate_fails_verification(tls_receiver: HttpEndpointReceiver,
                                                              executor: CountingExecutor) -> None:
    assert tls_receiver.url.startswith("https://")
    batch = make_batch(b"secret")
    outcome = deliver(config(tls_receiver.url), executor, batch)  # the default client: system trust store
    assert_all_retried(outcome, batch, SSL_HANDSHAKE_FAILURE, "CERTIFICATE_VERIFY_FAILED")
    assert tls_receiver.requests == []


def test_tls_succeeds_when_the_certificate_is_the_ca_bundle(tls_receiver: HttpEndpointReceiver,
                                                            executor: CountingExecutor,
                                                            certificate: tuple[Path, Path]) -> None:
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    outcome = deliver(config(tls_receiver.url), executor, make_batch(*RECORDS), verify=trust)
    assert outcome.delivered_all
    assert tls_receiver.requests[0].records == list(RECORDS)


# -- check and describe ------------------------------------------------------------------------------


def test_check_passes_for_any_answer_and_sends_no_data(receiver: HttpEndpointReceiver,
                                                       executor: CountingExecutor) -> None:
    run(config(f"{receiver.url}/ingest"), executor, lambda d: d.check())  # the receiver answers HEAD with 405
    assert receiver.requests == []


def test_check_raises_when_the_endpoint_is_down(executor: CountingExecutor) -> None:
    url = f"http://127.0.0.1:{closed_port()}/ingest"
    with pytest.raises(DestinationUnavailable, match=f"cannot connect to {url}"):
        run(config(url), executor, lambda d: d.check())


def test_describe_hides_credentials_and_the_constructor_only_stores(executor: CountingExecutor) -> None:
    cfg = config("https://user:pw@sink.example.com:8443/v1/ingest?api_key=k#frag")
    ctx = DestinationContext(stream="orders", settings=Settings(), executor=executor, stream_arn=STREAM_ARN)
    dest = HttpEndpointDestination(cfg, ctx)  # no client needed: nothing is sent
    assert dest.describe() == "https://sink.example.com:8443/v1/ingest"
    assert (dest.name, dest.error_output_type, dest.retry_clock, dest.retry_seconds) == (
        "http_endpoint", "http-endpoint-failed", "first_failure", 60)


# -- the receiver itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "status", "error"), [
    pytest.param({"method": "PUT"}, 405, "method PUT", id="method"),
    pytest.param({"drop": "x-amz-firehose-protocol-version"}, 400, "Protocol-Version", id="no-version"),
    pytest.param({"drop": "x-amz-firehose-source-arn"}, 400, "source-arn", id="no-source-arn"),
    pytest.param({"headers": {"content-type": "text/plain"}}, 415, "Content-Type", id="content-type"),
    pytest.param({"headers": {"content-encoding": "br"}}, 415, "Content-Encoding", id="encoding"),
    pytest.param({"gzip_without_header": True}, 400, "not JSON", id="gzip-without-header"),
    pytest.param({"body": {"requestId": "other", "timestamp": 1, "records": []}}, 400, "does not match",
                 id="request-id-mismatch"),
    pytest.param({"body": {"requestId": BATCH_ID, "timestamp": "now", "records": []}}, 400, "timestamp",
                 id="timestamp"),
    pytest.param({"body": {"requestId": BATCH_ID, "timestamp": 1, "records": [{"data": "**"}]}}, 400,
                 "not base64", id="data-not-base64"),
])
def test_the_receiver_refuses_requests_that_break_the_protocol(
    receiver: HttpEndpointReceiver, change: dict[str, Any], status: int, error: str
) -> None:
    headers = {"X-Amz-Firehose-Protocol-Version": "1.0", "X-Amz-Firehose-Request-Id": BATCH_ID,
               "X-Amz-Firehose-Source-Arn": STREAM_ARN, "Content-Type": "application/json",
               **change.get("headers", {})}
    headers = {k: v for k, v in headers.items() if k.lower() != change.get("drop")}
    body = json.dumps(change.get("body", {"requestId": BATCH_ID, "timestamp": 1, "records": []})).encode()
    if change.get("gzip_without_header"):
        body = gzip.compress(body)
    resp = httpx.request(change.get("method", "POST"), receiver.url, headers=headers, content=body)
    assert resp.status_code == status
    assert resp.json()["requestId"] == BATCH_ID and error in resp.json()["errorMessage"]
    [req] = receiver.requests
    assert req.status == status and req.error is not None and error in req.error
