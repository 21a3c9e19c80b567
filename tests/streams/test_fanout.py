"""Enhanced fan-out: consumers and SubscribeToShard through boto3 (HTTP/1.1), httpx over HTTP/2 and the
JavaScript SDK v3, against the real ``firehose streams serve`` process; the event-stream framing checked by
botocore's own decoder."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import yaml
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hyperframe.frame import GoAwayFrame

from firehose.asgi import Streamed, send_streamed
from firehose.streams import eventstream, subscriptions
from firehose.streams.consumers import register_stream_consumer
from firehose.streams.store import ShardStore, StoreOptions
from tests.support.jssdk import js_script
from tests.support.streams import StreamsServer, unique

SHARD0 = "shardId-000000000000"
ARN = re.compile(r"arn:aws:kinesis:us-east-1:123456789012:stream/(?P<stream>[\w.-]+)/consumer/(?P<name>[\w.-]+)"
                 r":(?P<created>\d+)")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    """Consumers take 0.5 s to become ACTIVE and to go; subscriptions last 1.5 s."""
    root = tmp_path_factory.mktemp("kinesis-slow")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"kinesis": {"consumer_delay_seconds": 0.5, "subscription_seconds": 1.5}}))
    server = StreamsServer(root / "state", root / "server.log", config)
    yield server
    server.stop()


def error_of(exc_info: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    err = exc_info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def stream_with_consumer(kinesis: Any, shards: int = 1, consumer: str = "app") -> tuple[str, str, str]:
    """A new stream, its ARN, and the ARN of an ACTIVE consumer registered on it."""
    name = unique("efo")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    return name, arn, wait_active(kinesis, arn, consumer)


def wait_active(kinesis: Any, stream_arn: str, consumer: str) -> str:
    arn = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName=consumer)["Consumer"]["ConsumerARN"]
    deadline = time.monotonic() + 10
    while kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]["ConsumerStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return str(arn)


def subscribe(kinesis: Any, consumer: str, shard: str = SHARD0, **position: Any) -> Any:
    position.setdefault("Type", "TRIM_HORIZON")
    return kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition=position)["EventStream"]


def take(events: Any, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Events until ``count`` records arrived (or the stream ends); the event dicts."""
    out: list[dict[str, Any]] = []
    got = 0
    deadline = time.monotonic() + timeout
    for event in events:
        body = event["SubscribeToShardEvent"]
        out.append(body)
        got += len(body["Records"])
        if got >= count or time.monotonic() > deadline:
            break
    return out


def datas(events: list[dict[str, Any]]) -> list[bytes]:
    return [r["Data"] for e in events for r in e["Records"]]


def put(kinesis: Any, name: str, payloads: list[bytes], key: str = "k") -> None:
    out = kinesis.put_records(StreamName=name, Records=[{"Data": p, "PartitionKey": key} for p in payloads])
    assert out["FailedRecordCount"] == 0


# -- the encoder ----------------------------------------------------------------------------------


def test_frames_decode_with_botocore_and_carry_both_crcs() -> None:
    payload = b'{"Records":[],"MillisBehindLatest":0}'
    frames = [eventstream.initial_response(), eventstream.event("SubscribeToShardEvent", payload),
              eventstream.exception("ResourceInUseException", b'{"message":"taken over"}'),
              eventstream.error("InternalFailure", "boom"),
              eventstream.message(eventstream.encode_headers({"t": True, "f": False, "n": -5, "b": b"\x00\x01"}),
                                  b"x" * 70_000)]
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames))
    messages = list(buffer)
    assert [m.headers.get(":event-type") for m in messages[:2]] == ["initial-response", "SubscribeToShardEvent"]
    assert messages[0].payload == b"{}" and messages[1].payload == payload
    assert messages[1].headers[":content-type"] == "application/json"
    assert messages[2].headers == {":message-type": "exception", ":exception-type": "ResourceInUseException",
                                   ":content-type": "application/json"}
    assert messages[3].headers == {":message-type": "error", ":error-code": "InternalFailure",
                                   ":error-message": "boom"} and messages[3].payload == b""
    assert messages[4].headers == {"t": True, "f": False, "n": -5, "b": b"\x00\x01"}
    assert messages[4].payload == b"x" * 70_000
    frame = frames[1]
    assert int.from_bytes(frame[:4], "big") == len(frame)
    assert int.from_bytes(frame[8:12], "big") == zlib.crc32(frame[:8])
    assert int.from_bytes(frame[-4:], "big") == zlib.crc32(frame[:-4])
    for at in (9, len(frame) - 10):  # a flipped bit in the prelude CRC or the payload is caught
        bad = bytearray(frame)
        bad[at] ^= 1
        buffer = EventStreamBuffer()
        buffer.add_data(bytes(bad))
        with pytest.raises(ChecksumMismatch):
            list(buffer)


# -- consumers ------------------------------------------------------------------------------------


def test_consumer_register_describe_list_deregister(kinesis: Any) -> None:
    name = unique("efo")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    before = int(time.time())
    registered = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="app.1")["Consumer"]
    assert registered["ConsumerStatus"] == "CREATING" and registered["ConsumerName"] == "app.1"
    m = ARN.fullmatch(registered["ConsumerARN"])
    assert m and m["stream"] == name and m["name"] == "app.1" and before <= int(m["created"]) <= time.time() + 1
    assert "StreamARN" not in registered
    desc = kinesis.describe_stream_consumer(ConsumerARN=registered["ConsumerARN"])["ConsumerDescription"]
    assert desc["StreamARN"] == stream_arn and desc["ConsumerStatus"] == "ACTIVE"
    assert abs(desc["ConsumerCreationTimestamp"].timestamp() - int(m["created"])) < 1
    by_name = kinesis.describe_stream_consumer(StreamARN=stream_arn, ConsumerName="app.1")["ConsumerDescription"]
    assert by_name == desc
    kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="app.0")
    listed = kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]
    assert [c["ConsumerName"] for c in listed] == ["app.0", "app.1"] and "StreamARN" not in listed[0]
    page = kinesis.list_stream_consumers(StreamARN=stream_arn, MaxResults=1)
    assert [c["ConsumerName"] for c in page["Consumers"]] == ["app.0"]
    rest = kinesis.list_stream_consumers(StreamARN=stream_arn, NextToken=page["NextToken"])
    assert [c["ConsumerName"] for c in rest["Consumers"]] == ["app.1"] and "NextToken" not in rest
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["ConsumerCount"] == 2

    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="app.1")
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.describe_stream_consumer(ConsumerName="app.1")
    assert error_of(exc) == ("InvalidArgumentException", "ConsumerArn or both ConsumerName and StreamARN are "
                             "required for this request.", 400)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as exc:
        kinesis.describe_stream_consumer(StreamARN=stream_arn, ConsumerName="nobody")
    assert error_of(exc) == ("ResourceNotFoundException", "Consumer nobody, account 123456789012 not found.", 400)
    stale = registered["ConsumerARN"].rsplit(":", 1)[0] + ":1"  # the name, but another registration's time
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_consumer(ConsumerARN=stale)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.register_stream_consumer(StreamARN=stream_arn + "-absent", ConsumerName="x")

    kinesis.deregister_stream_consumer(ConsumerARN=registered["ConsumerARN"])
    kinesis.deregister_stream_consumer(StreamARN=stream_arn, ConsumerName="app.0")
    assert kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"] == []
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_consumer(ConsumerARN=registered["ConsumerARN"])


def test_twenty_consumers_per_stream(kinesis: Any) -> None:
    name = unique("efo")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    for i in range(20):
        kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName=f"c{i}")
    with pytest.raises(kinesis.exceptions.LimitExceededException):
        kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="c20")
    assert len(kinesis.list_stream_consumers(StreamARN=stream_arn, MaxResults=10000)["Consumers"]) == 20


def test_creating_and_deleting_states_and_five_creating_at_once(slow_server: StreamsServer) -> None:
    kinesis = slow_server.client()
    name = unique("efo")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    arns = [kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName=f"c{i}")["Consumer"]["ConsumerARN"]
            for i in range(5)]
    with pytest.raises(kinesis.exceptions.LimitExceededException):
        kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="c5")
    assert kinesis.describe_stream_consumer(ConsumerARN=arns[0])["ConsumerDescription"]["ConsumerStatus"] \
        == "CREATING"
    with pytest.raises(kinesis.exceptions.ResourceInUseException) as exc:  # not readable while CREATING
        subscribe(kinesis, arns[0])
    assert "not ACTIVE" in error_of(exc)[1]
    time.sleep(0.7)
    assert {c["ConsumerStatus"] for c in kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]} \
        == {"ACTIVE"}
    kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="c5")
    kinesis.deregister_stream_consumer(ConsumerARN=arns[1])
    assert kinesis.describe_stream_consumer(ConsumerARN=arns[1])["ConsumerDescription"]["ConsumerStatus"] \
        == "DELETING"
    time.sleep(0.7)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_consumer(ConsumerARN=arns[1])


def test_consumers_survive_a_restart(start_streams_server: Any, tmp_path: Path) -> None:
    server = start_streams_server({"kinesis": {"consumer_delay_seconds": 60}})
    kinesis = server.client()
    kinesis.create_stream(StreamName="kept", ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName="kept")["StreamDescriptionSummary"]["StreamARN"]
    arn = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="app")["Consumer"]["ConsumerARN"]
    server.proc.kill()  # kill -9: the registration was durable when answered
    server.proc.wait()
    server.start()
    desc = kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]
    assert desc["ConsumerStatus"] == "ACTIVE"  # the pending CREATING -> ACTIVE happened
    assert kinesis.describe_stream_summary(StreamName="kept")["StreamDescriptionSummary"]["ConsumerCount"] == 1


def test_delete_stream_with_consumers_needs_enforce_consumer_deletion(kinesis: Any) -> None:
    name, _stream_arn, consumer = stream_with_consumer(kinesis)
    with pytest.raises(kinesis.exceptions.ResourceInUseException) as exc:
        kinesis.delete_stream(StreamName=name)
    assert error_of(exc) == ("ResourceInUseException", f"Consumers exist in stream {name} and "
                             "enforceConsumerDeletion is either not set or is false", 400)
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=False)
    events = subscribe(kinesis, consumer)
    assert next(iter(events))["SubscribeToShardEvent"]["Records"] == []
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    with pytest.raises(botocore.exceptions.EventStreamError) as ended:  # the running subscription is told
        list(events)
    assert ended.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.describe_stream_consumer(ConsumerARN=consumer)


# -- SubscribeToShard -----------------------------------------------------------------------------


def test_records_arrive_in_order_as_they_are_put(kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis)
    put(kinesis, name, [b"before"])
    resp = kinesis.subscribe_to_shard(ConsumerARN=consumer, ShardId=SHARD0, StartingPosition={"Type": "LATEST"})
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["transfer-encoding"] == "chunked"
    events = iter(resp["EventStream"])
    first = next(events)["SubscribeToShardEvent"]  # at once, nothing yet: where reading continues
    assert first["Records"] == [] and first["MillisBehindLatest"] == 0
    payloads = [f"r{i}".encode() for i in range(60)]
    producer = threading.Thread(target=lambda: [put(kinesis, name, payloads[i:i + 20]) for i in (0, 20, 40)])
    producer.start()
    got = take(events, 60)
    producer.join()
    assert datas(got) == payloads
    seqs = [r["SequenceNumber"] for e in got for r in e["Records"]]
    assert seqs == sorted(seqs, key=int) and got[-1]["ContinuationSequenceNumber"] == seqs[-1]
    assert all(r["PartitionKey"] == "k" for e in got for r in e["Records"])


def test_every_starting_position(kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis)
    put(kinesis, name, [b"a", b"b"])
    time.sleep(0.02)
    middle = time.time()
    time.sleep(0.02)
    put(kinesis, name, [b"c"])
    seqs = [r["SequenceNumber"] for r in kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
        StreamName=name, ShardId=SHARD0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]]
    cases: list[tuple[dict[str, Any], list[bytes]]] = [
        ({"Type": "TRIM_HORIZON"}, [b"a", b"b", b"c"]),
        ({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}, [b"b", b"c"]),
        ({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seqs[1]}, [b"c"]),
        ({"Type": "AT_TIMESTAMP", "Timestamp": middle}, [b"c"]),
    ]
    for i, (position, expected) in enumerate(cases):
        # a consumer per case: one subscribe per second per consumer and shard
        arn = wait_active(kinesis, kinesis.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"]["StreamARN"], f"p{i}")
        events = subscribe(kinesis, arn, **position)
        assert datas(take(events, len(expected))) == expected, position
        events.close()
    latest = subscribe(kinesis, consumer, Type="LATEST")
    first = next(iter(latest))["SubscribeToShardEvent"]
    assert first["Records"] == [] and first["ContinuationSequenceNumber"] == seqs[-1]
    latest.close()
    for position, code in (({"Type": "AT_SEQUENCE_NUMBER"}, "InvalidArgumentException"),
                           ({"Type": "LATEST", "SequenceNumber": seqs[0]}, "InvalidArgumentException"),
                           ({"Type": "AT_TIMESTAMP"}, "InvalidArgumentException"),
                           ({"Type": "AT_TIMESTAMP", "Timestamp": time.time() + 3600}, "InvalidArgumentException"),
                           ({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": "1" * 56}, "InvalidArgumentException")):
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            subscribe(kinesis, consumer, **position)
        assert error_of(exc)[0] == code and error_of(exc)[2] == 400, position
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        subscribe(kinesis, consumer, shard="shardId-000000000009")
    # a shard id is read by its index, as GetShardIterator reads it
    arn = wait_active(kinesis, kinesis.describe_stream_summary(StreamName=name)[
        "StreamDescriptionSummary"]["StreamARN"], "short")
    events = subscribe(kinesis, arn, shard="shardId-0", Type="TRIM_HORIZON")
    assert datas(take(events, 3)) == [b"a", b"b", b"c"]
    events.close()


def test_an_idle_shards_continuation_resumes_before_its_first_record(slow_server: StreamsServer) -> None:
    """A shard without records has no sequence number yet: resuming after the one given must not skip
    the first record that arrives later; subscriptions end at their lifetime (1.5 s here)."""
    kinesis = slow_server.client()
    name, stream_arn, consumer = stream_with_consumer(kinesis)
    started = time.monotonic()
    events = list(subscribe(kinesis, consumer, Type="LATEST"))  # ends cleanly at the lifetime
    assert 1.2 < time.monotonic() - started < 5
    continuation = events[-1]["SubscribeToShardEvent"]["ContinuationSequenceNumber"]
    put(kinesis, name, [b"first", b"second"])
    # other consumers resume (one subscribe per second per consumer and shard): positions are the shard's
    resumed = subscribe(kinesis, wait_active(kinesis, stream_arn, "second"), Type="AFTER_SEQUENCE_NUMBER",
                        SequenceNumber=continuation)
    got = take(resumed, 2)
    assert datas(got) == [b"first", b"second"]
    resumed.close()
    again = subscribe(kinesis, wait_active(kinesis, stream_arn, "third"), Type="AFTER_SEQUENCE_NUMBER",
                      SequenceNumber=got[-1]["ContinuationSequenceNumber"])
    put(kinesis, name, [b"third"])
    assert datas(take(again, 1)) == [b"third"]
    again.close()


def test_two_consumers_on_one_shard_each_get_everything(kinesis: Any) -> None:
    name, stream_arn, one = stream_with_consumer(kinesis)
    two = wait_active(kinesis, stream_arn, "other")
    payloads = [f"x{i}".encode() for i in range(100)]
    streams = [subscribe(kinesis, one), subscribe(kinesis, two)]
    put(kinesis, name, payloads[:50])
    put(kinesis, name, payloads[50:])
    for events in streams:
        assert datas(take(events, 100)) == payloads
        events.close()


def test_consumers_sharing_events_under_a_steady_flow_each_get_everything_in_order(kinesis: Any) -> None:
    """Many small puts while three consumers read: events are coalesced and, for consumers at the same
    position, encoded once and sent to each (``subscriptions.Shared``); one consumer starts later, behind."""
    name, stream_arn, one = stream_with_consumer(kinesis)
    others = [wait_active(kinesis, stream_arn, f"other{i}") for i in range(2)]
    payloads = [f"s{i}".encode() for i in range(200)]
    streams = [subscribe(kinesis, one), subscribe(kinesis, others[0])]
    for events in streams:
        assert next(iter(events))["SubscribeToShardEvent"]["Records"] == []
    producer = threading.Thread(target=lambda: [put(kinesis, name, payloads[i:i + 5]) for i in range(0, 200, 5)])
    producer.start()
    got = [take(streams[0], 100)]
    streams.append(subscribe(kinesis, others[1]))  # from TRIM_HORIZON, while the others follow the puts
    got += [take(streams[1], 200), take(streams[2], 200)]
    got[0] += take(streams[0], 200 - len(datas(got[0])))
    producer.join()
    for events in got:
        assert datas(events) == payloads
        seqs = [r["SequenceNumber"] for e in events for r in e["Records"]]
        assert seqs == sorted(seqs, key=int) and events[-1]["ContinuationSequenceNumber"] == seqs[-1]
    for events in streams:
        events.close()


def test_children_at_the_end_of_a_split_shard(kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis)
    put(kinesis, name, [b"p0", b"p1"])
    parent = subscribe(kinesis, consumer)
    assert datas(take(parent, 2)) == [b"p0", b"p1"]
    kinesis.split_shard(StreamName=name, ShardToSplit=SHARD0, NewStartingHashKey=str(2**127))
    rest = list(parent)  # ends after the event that names the children
    last = rest[-1]["SubscribeToShardEvent"]
    assert "ContinuationSequenceNumber" not in last and last["Records"] == []
    children = last["ChildShards"]
    assert [c["ShardId"] for c in children] == ["shardId-000000000001", "shardId-000000000002"]
    assert all(c["ParentShards"] == [SHARD0] for c in children)
    assert children[1]["HashKeyRange"]["StartingHashKey"] == str(2**127)
    put(kinesis, name, [b"c0"], key="k")
    got = []
    for child in children:
        events = subscribe(kinesis, consumer, shard=child["ShardId"])
        first = next(iter(events))["SubscribeToShardEvent"]
        got += [r["Data"] for r in first["Records"]]
        events.close()
    assert got == [b"c0"]
    # a closed shard read from the start: every record, then the children, then the end; one per second
    with pytest.raises(kinesis.exceptions.LimitExceededException):
        subscribe(kinesis, consumer)
    time.sleep(1.0)
    replay = [e["SubscribeToShardEvent"] for e in subscribe(kinesis, consumer)]
    assert datas(replay) == [b"p0", b"p1"] and replay[-1]["ChildShards"] == children


def test_a_second_subscription_within_five_seconds_is_refused_then_takes_over(kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis)
    first = subscribe(kinesis, consumer)
    assert next(iter(first))["SubscribeToShardEvent"]["Records"] == []
    with pytest.raises(kinesis.exceptions.ResourceInUseException) as exc:
        subscribe(kinesis, consumer)
    assert error_of(exc)[2] == 400
    time.sleep(5.0)
    second = subscribe(kinesis, consumer)
    with pytest.raises(botocore.exceptions.EventStreamError) as ended:
        list(first)
    assert ended.value.response["Error"]["Code"] == "ResourceInUseException"
    put(kinesis, name, [b"to the new one"])
    assert datas(take(second, 1)) == [b"to the new one"]
    second.close()


@pytest.mark.parametrize("gone", ["send fails", "cancelled"])
def test_a_client_gone_before_the_first_event_releases_the_subscription(tmp_path: Path, gone: str) -> None:
    """The client goes away before the event stream produced anything: the server's ``send`` of the
    response start fails (the connection is gone), or the answer is cancelled while it
    waits there. A new subscription must not then be refused for 5 s."""

    async def scenario() -> None:
        store = ShardStore(tmp_path, StoreOptions())
        store.create_stream("s", 1)
        await asyncio.sleep(0)  # ACTIVE (no delay)
        arn = (await register_stream_consumer(store, {"StreamARN": store.streams["s"].arn,
                                                      "ConsumerName": "c"}))["Consumer"]["ConsumerARN"]
        await asyncio.sleep(0)
        request = {"ConsumerARN": arn, "ShardId": SHARD0, "StartingPosition": {"Type": "LATEST"}}
        answer = await subscriptions.subscribe_to_shard(store, request)
        assert isinstance(answer, Streamed) and subscriptions.of(store).running
        sending = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            assert message["type"] == "http.response.start"
            sending.set()
            if gone == "send fails":
                raise ConnectionResetError("the client went away")
            await asyncio.Event().wait()

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        task = asyncio.ensure_future(send_streamed(send, receive, answer, "rid"))
        await sending.wait()
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(results[0], ConnectionResetError if gone == "send fails" else asyncio.CancelledError)
        assert subscriptions.of(store).running == {}
        await store.close()

    asyncio.run(scenario())


async def _events_of(answer: Streamed) -> AsyncIterator[dict[str, Any]]:
    """The SubscribeToShardEvent bodies of an in-process answer, as they are produced; an exception event
    as ``{"exception": its type}``."""
    buffer = EventStreamBuffer()
    async for chunk in answer.chunks:
        buffer.add_data(chunk)
        for message in buffer:
            if message.headers.get(":event-type") == "SubscribeToShardEvent":
                yield json.loads(message.payload)
            elif message.headers.get(":message-type") == "exception":
                yield {"exception": message.headers[":exception-type"]}


async def _first_records(store: ShardStore, consumer: str, after: str) -> tuple[float, float, list[bytes]]:
    """Seconds until a subscription after ``after`` sends its first event, and its first records, and their
    data; it is closed."""
    started = time.monotonic()
    answer = await subscriptions.subscribe_to_shard(store, {
        "ConsumerARN": consumer, "ShardId": SHARD0,
        "StartingPosition": {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}})
    assert isinstance(answer, Streamed)
    events = _events_of(answer)
    first_event: float | None = None
    try:
        async for event in events:
            if first_event is None:
                first_event = time.monotonic() - started
                assert event["Records"] or event["ContinuationSequenceNumber"]  # where the client is
            if event["Records"]:
                return first_event, time.monotonic() - started, [base64.b64decode(r["Data"]) for r in event["Records"]]
        raise AssertionError("the subscription ended without records")
    finally:
        await events.aclose()
        await answer.chunks.aclose()  # type: ignore[attr-defined]


def test_a_takeover_owes_what_the_subscription_it_ends_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the limits on, 2 MiB/s is per consumer and shard, as on AWS: a client that takes over its own
    subscription (here at once; AWS: after 5 s) must pay the older one's read debt before its first read,
    while a consumer without debt reads at once."""
    monkeypatch.setattr(subscriptions, "TAKEOVER_S", 0.0)
    monkeypatch.setattr(subscriptions, "SUBSCRIBE_INTERVAL_S", 0.0)
    big = [(b"k", b"x" * 250_000, 0)] * 4  # about 1 MB: one event, paid in about 0.48 s at 2 MiB/s

    async def scenario() -> tuple[float, float]:
        store = ShardStore(tmp_path, StoreOptions(enforce_limits=True))
        store.create_stream("s", 1)
        await asyncio.sleep(0)  # ACTIVE (no delay)
        arns = [(await register_stream_consumer(store, {"StreamARN": store.streams["s"].arn, "ConsumerName": c})
                 )["Consumer"]["ConsumerARN"] for c in ("app", "control")]
        await asyncio.sleep(0)
        assert all(r.error_code is None for r in await store.put("s", big))  # within the 1 MiB/s write burst
        first = await subscriptions.subscribe_to_shard(store, {
            "ConsumerARN": arns[0], "ShardId": SHARD0, "StartingPosition": {"Type": "TRIM_HORIZON"}})
        assert isinstance(first, Streamed)
        events = _events_of(first)
        event = await anext(events)
        assert len(event["Records"]) == 4  # the app now owes about 1 MB
        assert all(r.error_code is None for r in await store.put("s", [(b"k", b"small", 0)]))
        after = event["ContinuationSequenceNumber"]
        told, held, got = await _first_records(store, arns[0], after)  # takes over from ``first``
        assert got == [b"small"]
        assert [e async for e in events] == [{"exception": "ResourceInUseException"}]  # told it was taken over
        await first.chunks.aclose()  # type: ignore[attr-defined]
        _, control, got = await _first_records(store, arns[1], after)
        assert got == [b"small"]
        await store.close()
        return told, held, control

    told, held, control = asyncio.run(scenario())
    owed = 4 * 250_001 / subscriptions.READ_BYTES_PER_S
    assert owed - 0.1 < held < owed + 1.0, (held, owed)
    assert told < 0.2, told  # the debt holds back the read, not the first (empty) event
    assert control < 0.2, control


def test_read_debts_are_kept_only_while_owed_or_running() -> None:
    subs = subscriptions.Subscriptions()
    owing = subs.admit(("c", "owing"), "c", "owing", 0.0, limited=True)
    assert owing.debt is not None
    owing.debt.take(1024)
    subs.release(owing)
    running = subs.admit(("c", "running"), "c", "running", 0.0, limited=True)
    for i in range(4095):  # 4097 debts: the next new one drops those paid and not running
        subs.release(subs.admit(("c", f"paid{i}"), "c", f"paid{i}", 0.0, limited=True))
    subs.admit(("c", "new"), "c", "new", 0.0, limited=True)
    assert set(subs.debts) == {("c", "owing"), ("c", "running"), ("c", "new")}
    assert subs.admit(("c", "owing"), "c", "owing", 1.0, limited=True).debt is owing.debt  # inherited
    assert subs.admit(("c", "x"), "c", "x", 0.0).debt is None and running.debt is not None  # limits off


def test_deregistering_ends_the_subscription(kinesis: Any) -> None:
    _, _, consumer = stream_with_consumer(kinesis)
    events = subscribe(kinesis, consumer)
    next(iter(events))
    kinesis.deregister_stream_consumer(ConsumerARN=consumer)
    with pytest.raises(botocore.exceptions.EventStreamError) as ended:
        list(events)
    assert ended.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_stopping_the_server_ends_subscriptions_at_once(start_streams_server: Any) -> None:
    server = start_streams_server()
    kinesis = server.client()
    _, _, consumer = stream_with_consumer(kinesis)
    events = subscribe(kinesis, consumer)
    next(iter(events))
    started = time.monotonic()
    server.stop()
    assert list(events) == []  # a clean end, no exception event
    assert time.monotonic() - started < 3  # not held until the graceful timeout (5 s)
    assert server.proc is not None and server.proc.returncode == 0


def test_http2_event_stream(streams_server: StreamsServer, kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis)
    put(kinesis, name, [b"h2-a", b"h2-b"])
    headers = {"X-Amz-Target": "Kinesis_20131202.SubscribeToShard", "Content-Type": "application/x-amz-json-1.1"}
    body = {"ConsumerARN": consumer, "ShardId": SHARD0, "StartingPosition": {"Type": "TRIM_HORIZON"}}
    with httpx.Client(http1=False, http2=True) as client, \
            client.stream("POST", streams_server.endpoint, json=body, headers=headers) as resp:
        assert resp.http_version == "HTTP/2" and resp.status_code == 200
        assert resp.headers["content-type"] == "application/vnd.amazon.eventstream"
        buffer = EventStreamBuffer()
        messages = []
        for chunk in resp.iter_raw():
            buffer.add_data(chunk)
            messages += list(buffer)
            if len(messages) >= 2:
                break
    assert messages[0].headers[":event-type"] == "initial-response"
    event = json.loads(messages[1].payload)
    assert [r["Data"] for r in event["Records"]] == ["aDItYQ==", "aDItYg=="]  # base64, as in GetRecords


def test_events_keep_coming_after_the_client_sends_goaway(streams_server: StreamsServer, kinesis: Any) -> None:
    """A client's GOAWAY only says it opens no more streams: the JavaScript SDK v3 sends one as soon as an
    event stream's headers arrive, and its events must still come (they were lost when the server closed
    the connection on it)."""
    name, _, consumer = stream_with_consumer(kinesis)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    body = json.dumps({"ConsumerARN": consumer, "ShardId": SHARD0, "StartingPosition": {"Type": "LATEST"}}).encode()
    conn.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "http"),
                          (":authority", f"127.0.0.1:{streams_server.port}"),
                          ("content-type", "application/x-amz-json-1.1"),
                          ("x-amz-target", "Kinesis_20131202.SubscribeToShard"), ("content-length", str(len(body)))])
    conn.send_data(1, body, end_stream=True)
    buffer, events = EventStreamBuffer(), list[dict[str, Any]]()
    with socket.create_connection(("127.0.0.1", streams_server.port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())

        acks: list[h2.events.PingAckReceived] = []

        def read_until(done: Callable[[], bool]) -> None:
            while not done():
                data = sock.recv(65536)
                assert data, f"the server closed the connection after {events}"
                for event in conn.receive_data(data):
                    assert not isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded)), event
                    if isinstance(event, h2.events.PingAckReceived):
                        acks.append(event)
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        buffer.add_data(event.data)
                        events.extend(json.loads(m.payload) for m in buffer
                                      if m.headers.get(":event-type") == "SubscribeToShardEvent")
                sock.sendall(conn.data_to_send())

        read_until(lambda: len(events) >= 1)  # the first event: nothing yet
        sock.sendall(GoAwayFrame(0, last_stream_id=0).serialize())  # as the SDK does (its h2 state unaware)
        conn.ping(b"goaway!!")  # answered once the server has read the GOAWAY sent before it
        sock.sendall(conn.data_to_send())
        read_until(lambda: bool(acks))
        put(kinesis, name, [b"after-goaway"])
        read_until(lambda: len(events) >= 2)
    assert [r["Data"] for e in events for r in e["Records"]] == ["YWZ0ZXItZ29hd2F5"]  # base64


def test_errors_before_the_stream_are_json(streams_server: StreamsServer) -> None:
    headers = {"X-Amz-Target": "Kinesis_20131202.SubscribeToShard", "Content-Type": "application/x-amz-json-1.1"}
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/none/consumer/none:1"
    resp = httpx.post(streams_server.endpoint, headers=headers, json={
        "ConsumerARN": arn, "ShardId": SHARD0, "StartingPosition": {"Type": "LATEST"}})
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/x-amz-json-1.1"
    assert resp.json() == {"__type": "ResourceNotFoundException",
                           "message": f"Consumer {arn}, account 123456789012 not found."}


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_javascript_sdk_v3_subscribe_to_shard_over_http2(streams_server: StreamsServer, kinesis: Any) -> None:
    name, _, consumer = stream_with_consumer(kinesis, shards=1)
    put(kinesis, name, [b"js-0", b"js-1"])  # read from TRIM_HORIZON: acknowledged before the subscription
    script = js_script("kinesis_subscribe.mjs")
    out = subprocess.run(["node", str(script), streams_server.endpoint, consumer, SHARD0, "2"], capture_output=True,
                         text=True, timeout=120, input="")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["handler"] == "NodeHttp2Handler"
    assert result["data"] == ["js-0", "js-1"], (result, out.stderr)
    assert result["continuation"] and result["millisBehindLatest"] == 0
