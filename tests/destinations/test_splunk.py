"""The Splunk HEC destination against a stand-in HEC: bodies, headers, acks, splitting, error codes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from firehose.definitions import SplunkDestinationConfiguration
from firehose.destinations.base import DestinationContext, Failure, Outcome
from firehose.destinations.splunk import SplunkDestination, event_error, split_requests
from firehose.errors import DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch
from firehose.settings import Settings
from tests.support.ports import free_port
from tests.support.receivers.splunk import TOKEN, SplunkReceiver, Token

DISABLED = "0d1e5c4b-7a0e-4f55-8b8e-3f7c2d9a0002"
NO_ACK = "4b7f2a9c-1e3d-4c6a-9f2b-5d8e7a6c0003"


@pytest.fixture
def hec() -> Iterator[SplunkReceiver]:
    tokens = {TOKEN: Token(), DISABLED: Token(enabled=False), NO_ACK: Token(ack=False)}
    with SplunkReceiver(tokens) as receiver:
        yield receiver


def config(url: str, kind: str = "Raw", *, token: str = TOKEN,
           ack_timeout: int = 5) -> SplunkDestinationConfiguration:
    return SplunkDestinationConfiguration.model_validate({
        "HECEndpoint": url, "HECEndpointType": kind, "HECToken": token,
        "HECAcknowledgmentTimeoutInSeconds": ack_timeout,
        "S3Configuration": {"RoleARN": "arn:aws:iam::123456789012:role/firehose",
                            "BucketARN": "arn:aws:s3:::backup"},
    })


def batch(*data: bytes) -> RecordBatch:
    return RecordBatch("s", "b", tuple(DeliveryRecord(f"r{i}", d, 0) for i, d in enumerate(data)))


@asynccontextmanager
async def destination(cfg: SplunkDestinationConfiguration, *, timeout: float = 5.0,
                      max_request_bytes: int | None = None,
                      transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[SplunkDestination]:
    with ThreadPoolExecutor(2) as pool:
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
            ctx = DestinationContext(stream="s", settings=Settings(), executor=pool, http=http)
            dest = SplunkDestination(cfg, ctx)
            if max_request_bytes is not None:
                dest.max_request_bytes = max_request_bytes
            yield dest


def deliver(cfg: SplunkDestinationConfiguration, records: RecordBatch, **kw: Any) -> tuple[Outcome, str]:
    """One attempt; the outcome and the channel it used."""
    async def main() -> tuple[Outcome, str]:
        async with destination(cfg, **kw) as dest:
            return await dest.deliver(records), dest.channel
    return asyncio.run(main())


def codes(failures: tuple[Failure, ...]) -> dict[int, str]:
    return {f.index: f.code for f in failures}


# -- delivery -----------------------------------------------------------------------


def test_raw_sends_the_records_bytes_back_to_back_with_token_and_channel(hec: SplunkReceiver) -> None:
    outcome, channel = deliver(config(hec.url), batch(b"one\n", memoryview(b"two "), b"", b"three"))
    assert outcome.delivered_all
    [indexed] = hec.indexed_by(token=TOKEN, channel=channel)
    assert (indexed.endpoint, indexed.body) == ("raw", b"one\ntwo three")
    assert str(uuid.UUID(channel)) == channel
    send, *polls = hec.seen
    assert send.path == "/services/collector/raw"
    assert send.headers["authorization"] == f"Splunk {TOKEN}"
    assert send.headers["x-splunk-request-channel"] == channel
    assert send.headers["content-type"] == "application/json"
    assert [(p.path, p.query, json.loads(p.body)) for p in polls] == [
        ("/services/collector/ack", {"channel": channel}, {"acks": [indexed.ack_id]})]
    assert hec.pending_acks(channel) == set()


def test_event_endpoint_gets_the_event_objects_as_they_are(hec: SplunkReceiver) -> None:
    events = [{"event": {"user": "a"}, "sourcetype": "x", "index": "main"}, {"event": "b", "time": 1.5}]
    data = [json.dumps(e).encode() + b"\n" for e in events]
    outcome, channel = deliver(config(hec.url, "Event"), batch(*data))
    assert outcome.delivered_all
    [indexed] = hec.indexed_by(channel=channel)
    assert indexed.endpoint == "event" and indexed.body == b"".join(data) and list(indexed.events) == events
    assert hec.seen[0].path == "/services/collector/event"


def test_late_acks_are_waited_for(hec: SplunkReceiver) -> None:
    hec.ack_delay = 0.6
    started = time.monotonic()
    outcome, channel = deliver(config(hec.url), batch(b"x"))
    assert outcome.delivered_all and time.monotonic() - started >= 0.6
    [waited] = outcome.ack_seconds  # DataAckLatency: from sending to the ack
    assert 0.6 <= waited < time.monotonic() - started + 0.01
    polls = [s for s in hec.seen if s.path.endswith("/ack")]
    assert len(polls) >= 3 and hec.pending_acks(channel) == set()


def test_acks_that_never_come_are_retried_as_ack_timeout(hec: SplunkReceiver) -> None:
    hec.ack_delay = None
    started = time.monotonic()
    outcome, channel = deliver(config(hec.url, ack_timeout=1), batch(b"a", b"b"))
    assert 1.0 <= time.monotonic() - started < 3.0
    assert not outcome.rejected and codes(outcome.retry) == {0: "Splunk.AckTimeout", 1: "Splunk.AckTimeout"}
    assert [f.extra for f in outcome.retry] == [{"EventId": "r0"}, {"EventId": "r1"}]
    assert "may have been indexed" in outcome.retry[0].reason
    # The HEC holds the data: retrying it can duplicate it, as the reason says.
    assert len(hec.indexed_by(channel=channel)) == 1 and hec.pending_acks(channel) == {0}


def test_an_ack_poll_refused_for_good_ends_the_wait_at_once(hec: SplunkReceiver) -> None:
    hec.ack_delay = None
    switch_off = threading.Timer(0.25, lambda: setattr(hec.tokens[TOKEN], "ack", False))
    switch_off.start()
    started = time.monotonic()
    outcome, _ = deliver(config(hec.url, ack_timeout=10), batch(b"a"))
    switch_off.join()
    assert codes(outcome.retry) == {0: "Splunk.DisabledAck"} and "ACK is disabled" in outcome.retry[0].reason
    assert time.monotonic() - started < 3


def busy_ack_polls(busy: int, polls: list[int]) -> httpx.MockTransport:
    """A HEC taking data as ackId 3 that answers the first ``busy`` ack polls (logged in ``polls``) 503."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/services/collector/raw":
            return httpx.Response(200, json={"text": "Success", "code": 0, "ackId": 3})
        polls.append(len(polls))
        if len(polls) <= busy:
            return httpx.Response(503, json={"text": "Server is busy", "code": 9})
        return httpx.Response(200, json={"acks": {"3": True}})
    return httpx.MockTransport(answer)


def test_a_failed_ack_poll_is_tolerated() -> None:
    polls: list[int] = []
    outcome, _ = deliver(config("http://hec.test"), batch(b"a"), transport=busy_ack_polls(2, polls))
    assert outcome.delivered_all and len(polls) == 3


def test_an_ack_timeout_names_the_last_failed_poll() -> None:
    cfg = config("http://hec.test", ack_timeout=1)
    outcome, _ = deliver(cfg, batch(b"a"), transport=busy_ack_polls(99, []))
    assert codes(outcome.retry) == {0: "Splunk.AckTimeout"}
    reason = outcome.retry[0].reason
    assert "The last ack poll failed" in reason and "Server is busy" in reason


def test_a_busy_hec_is_retried_and_the_next_attempt_delivers_on_the_same_channel(hec: SplunkReceiver) -> None:
    hec.busy_requests = 1

    async def main() -> tuple[Outcome, Outcome, str]:
        async with destination(config(hec.url)) as dest:
            return await dest.deliver(batch(b"a", b"b")), await dest.deliver(batch(b"a", b"b")), dest.channel

    first, second, channel = asyncio.run(main())
    assert codes(first.retry) == {0: "Splunk.IndexerBusy", 1: "Splunk.IndexerBusy"}
    assert "Server is busy" in first.retry[0].reason and "HEC code 9" in first.retry[0].reason
    assert second.delivered_all
    assert {s.headers["x-splunk-request-channel"] for s in hec.seen} == {channel}
    assert [i.body for i in hec.indexed] == [b"ab"]


@pytest.mark.parametrize(("token", "code", "text"), [
    ("11111111-2222-4333-8444-555555555555", "Splunk.InvalidToken", "Invalid token"),
    (DISABLED, "Splunk.DisabledToken", "Token disabled"),
])
def test_token_problems_are_retried(hec: SplunkReceiver, token: str, code: str, text: str) -> None:
    outcome, _ = deliver(config(hec.url, token=token), batch(b"a"))
    assert not outcome.rejected and codes(outcome.retry) == {0: code}
    assert text in outcome.retry[0].reason and token not in outcome.retry[0].reason
    assert hec.indexed == []


def test_a_token_without_acknowledgement_is_retried_as_disabled_ack(hec: SplunkReceiver) -> None:
    outcome, _ = deliver(config(hec.url, token=NO_ACK), batch(b"a"))
    assert codes(outcome.retry) == {0: "Splunk.DisabledAck"}
    assert [i.ack_id for i in hec.indexed] == [None]


def test_event_records_that_are_not_hec_events_are_rejected_the_rest_delivered(hec: SplunkReceiver) -> None:
    good = b'{"event": "ok"}'
    bad = [b'{"time": 1}', b'{"event": ""}', b"not json", b"[1]", b'{"event": null}', b"\xff"]
    outcome, _ = deliver(config(hec.url, "Event"), batch(good, *bad, good))
    assert not outcome.retry
    assert codes(outcome.rejected) == {i: "Splunk.InvalidDataFormat" for i in range(1, 7)}
    assert [f.extra for f in outcome.rejected] == [{"EventId": f"r{i}"} for i in range(1, 7)]
    assert [i.body for i in hec.indexed] == [good + good]


def test_a_large_event_batch_is_validated_too(hec: SplunkReceiver) -> None:
    good = json.dumps({"event": "x" * 1000}).encode()
    outcome, _ = deliver(config(hec.url, "Event"), batch(*[good] * 300, b"{}"))
    assert codes(outcome.rejected) == {300: "Splunk.InvalidDataFormat"} and not outcome.retry
    assert sum(len(i.events) for i in hec.indexed) == 300


def test_a_record_of_several_event_objects_is_one_valid_record() -> None:
    assert event_error(b'{"event": 1}\n {"event": {"a": 2}}\n') is None
    assert event_error(b'{"event": 1} {"host": "h"}') is not None
    assert event_error(b"  ") is not None


def test_data_the_hec_calls_invalid_is_rejected_for_that_request_only(hec: SplunkReceiver) -> None:
    hec.invalid_format_requests = 1
    outcome, _ = deliver(config(hec.url), batch(b"aaaa", b"bbbb", b"cccc"), max_request_bytes=8)
    assert not outcome.retry
    assert codes(outcome.rejected) == {0: "Splunk.InvalidDataFormat", 1: "Splunk.InvalidDataFormat"}
    assert "invalid-event-number 0" in outcome.rejected[0].reason
    assert [i.body for i in hec.indexed] == [b"cccc"]


def test_a_large_batch_is_split_and_every_ack_is_polled(hec: SplunkReceiver) -> None:
    hec.max_content_length = 1000
    hec.ack_delay = 0.3
    records = [bytes([65 + i % 26]) * 90 + b"\n" for i in range(40)]
    outcome, channel = deliver(config(hec.url), batch(*records), max_request_bytes=1000)
    assert outcome.delivered_all
    indexed = hec.indexed_by(channel=channel)
    assert [len(i.body) for i in indexed] == [910] * 4
    assert b"".join(i.body for i in indexed) == b"".join(records)
    assert [i.ack_id for i in indexed] == [0, 1, 2, 3]
    polled = {n for s in hec.seen if s.path.endswith("/ack") for n in json.loads(s.body)["acks"]}
    assert polled == {0, 1, 2, 3} and hec.pending_acks(channel) == set()


def test_a_record_above_the_request_limit_travels_alone() -> None:
    records = batch(b"a" * 5, b"b" * 20, b"c" * 5, b"d" * 6).records
    assert split_requests(records, range(4), 10) == [(0,), (1,), (2,), (3,)]
    assert split_requests(records, [0, 2, 3], 11) == [(0, 2), (3,)]


def test_when_a_request_fails_the_rest_of_the_batch_is_not_sent(hec: SplunkReceiver) -> None:
    hec.busy_requests = 1
    hec.ack_delay = 0.2
    outcome, _ = deliver(config(hec.url), batch(b"aaaa", b"bbbb", b"cccc"), max_request_bytes=8)
    assert codes(outcome.retry) == {0: "Splunk.IndexerBusy", 1: "Splunk.IndexerBusy", 2: "Splunk.IndexerBusy"}
    assert hec.indexed == [] and len(hec.seen) == 1


def test_an_unreachable_endpoint_is_retried() -> None:
    outcome, _ = deliver(config(f"http://127.0.0.1:{free_port()}"), batch(b"a"))
    assert codes(outcome.retry) == {0: "Splunk.InvalidEndpoint"}
    assert "ConnectError" in outcome.retry[0].reason


def test_an_endpoint_that_never_answers_is_a_connection_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        outcome, _ = deliver(config(url), batch(b"a"), timeout=0.3)
    assert codes(outcome.retry) == {0: "Splunk.ConnectionTimeout"}


def test_tls_to_a_server_that_does_not_speak_it_is_a_handshake_error(hec: SplunkReceiver) -> None:
    outcome, _ = deliver(config(hec.url.replace("http://", "https://")), batch(b"a"))
    assert codes(outcome.retry) == {0: "Splunk.SSLHandshake"}


# -- health check and description -----------------------------------------------------


def check(cfg: SplunkDestinationConfiguration) -> None:
    async def main() -> None:
        async with destination(cfg) as dest:
            await dest.check()
    asyncio.run(main())


def test_check_passes_when_the_hec_is_healthy_and_takes_the_token(hec: SplunkReceiver) -> None:
    check(config(hec.url, "Event"))
    assert [(s.method, s.path) for s in hec.seen] == [
        ("GET", "/services/collector/health"), ("POST", "/services/collector/event")]
    assert hec.indexed == []


def test_check_fails_when_the_hec_is_unhealthy(hec: SplunkReceiver) -> None:
    hec.healthy = False
    with pytest.raises(DestinationUnavailable, match="not healthy: HEC is unhealthy, queues are full"):
        check(config(hec.url))


def test_check_fails_when_the_token_is_refused(hec: SplunkReceiver) -> None:
    with pytest.raises(DestinationUnavailable, match="Token disabled") as info:
        check(config(hec.url, token=DISABLED))
    assert info.value.code == "Splunk.DisabledToken" and DISABLED not in info.value.message


def test_check_fails_when_the_hec_is_unreachable() -> None:
    with pytest.raises(DestinationUnavailable, match="Cannot reach the HEC") as info:
        check(config(f"http://127.0.0.1:{free_port()}"))
    assert info.value.code == "Splunk.InvalidEndpoint"


def test_describe_names_the_endpoint_but_not_the_token() -> None:
    async def main() -> str:
        async with destination(config("https://hec.example.com:8088/")) as dest:
            return dest.describe()
    text = asyncio.run(main())
    assert text == "Splunk HEC https://hec.example.com:8088 (Raw)" and TOKEN not in text


def test_each_instance_has_its_own_channel() -> None:
    async def main() -> set[str]:
        async with destination(config("http://h")) as one, destination(config("http://h")) as two:
            return {one.channel, two.channel}
    assert len(asyncio.run(main())) == 2


# -- the stand-in HEC follows the documented protocol -----------------------------------


def hec_post(hec: SplunkReceiver, path: str, body: bytes, *, channel: str | None = None,
             query: dict[str, str] | None = None, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Splunk {token}"}
    if channel is not None:
        headers["X-Splunk-Request-Channel"] = channel
    response = httpx.post(hec.url + path, content=body, headers=headers, params=query)
    return response.status_code, response.json()


def test_receiver_channels_are_guids_required_with_ack_by_header_or_query(hec: SplunkReceiver) -> None:
    channel = str(uuid.uuid4())
    assert hec_post(hec, "/services/collector/raw", b"x") == (
        400, {"text": "Data channel is missing", "code": 10})
    assert hec_post(hec, "/services/collector/raw", b"x", channel="c1") == (
        400, {"text": "Invalid data channel", "code": 11})
    assert hec_post(hec, "/services/collector/raw", b"x", query={"channel": channel}) == (
        200, {"text": "Success", "code": 0, "ackId": 0})
    assert hec_post(hec, "/services/collector/raw", b"x", channel=channel) == (
        200, {"text": "Success", "code": 0, "ackId": 1})
    assert hec_post(hec, "/services/collector/raw", b"x", token=NO_ACK) == (
        200, {"text": "Success", "code": 0})


def test_receiver_acks_count_up_per_channel_and_are_forgotten_once_true(hec: SplunkReceiver) -> None:
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    sends = [hec_post(hec, "/services/collector/raw", b"x", channel=c) for c in (one, one, two)]
    assert [answer["ackId"] for _, answer in sends] == [0, 1, 0]
    ack = json.dumps({"acks": [0, 1, 7]}).encode()
    assert hec_post(hec, "/services/collector/ack", ack, channel=one) == (
        200, {"acks": {"0": True, "1": True, "7": False}})
    assert hec_post(hec, "/services/collector/ack", ack, channel=one) == (
        200, {"acks": {"0": False, "1": False, "7": False}})
    assert hec_post(hec, "/services/collector/ack", ack, channel=str(uuid.uuid4()))[1]["acks"]["0"] is False
    assert hec_post(hec, "/services/collector/ack", ack, channel=one, token=NO_ACK) == (
        400, {"text": "ACK is disabled", "code": 14})


def test_receiver_event_endpoint_validates_each_event(hec: SplunkReceiver) -> None:
    channel = str(uuid.uuid4())
    cases = {
        b'{"event": "a"}{"time": 1}': (12, "Event field is required", 1),
        b'{"event": "a"} {"event": ""}': (13, "Event field cannot be blank", 1),
        b'{"event": "a"} nope': (6, "Invalid data format", 1),
    }
    for body, (code, text, number) in cases.items():
        assert hec_post(hec, "/services/collector/event", body, channel=channel) == (
            400, {"text": text, "code": code, "invalid-event-number": number})
    assert hec_post(hec, "/services/collector/event", b"", channel=channel) == (
        400, {"text": "No data", "code": 5})
    assert hec_post(hec, "/services/collector/event", b"{}", channel=channel, token="nope") == (
        403, {"text": "Invalid token", "code": 4})
    assert hec.indexed == []
