"""SubscribeToShard: a shard's records pushed to an enhanced fan-out consumer as an event stream.

What is checked before the answer starts (consumer ACTIVE, shard known, starting position as
GetShardIterator checks it, AWS's rules per consumer and shard) is answered as a normal JSON
error. Then the answer is ``application/vnd.amazon.eventstream`` (``eventstream.py``): an
``initial-response`` event, then ``SubscribeToShardEvent`` events:

* records as soon as they are durable: the store's append path wakes the shard's waiting
  subscribers (``ShardData.wake``), so no polling interval stands between an acknowledged
  PutRecords and the event (a few ms on loopback). Under a steady flow, an event that follows
  another by less than ``COALESCE_S`` waits out the rest of that time, so that it carries
  everything that arrived meanwhile (one read, one JSON encoding, one frame and one write for
  many PutRecords calls instead of one each): a record waits at most ``COALESCE_S`` more, and a
  record after a quiet spell not at all. A reader behind (the last read was cut at
  ``EVENT_BYTES``) reads on at once. Consumers that keep up are at the same position when the
  same append wakes them: the first reads, encodes and frames the event, and the others send the
  same bytes (``Shared``: reused only while it still reaches the shard's end, so it is exactly
  what they would have read);
* an empty event at once when there is nothing to send yet, then whenever nothing happened for
  ``HEARTBEAT_S`` (botocore gives up reading after 60 s);
* at the end of a closed shard, a last event with ``ChildShards`` and no
  ``ContinuationSequenceNumber`` (what KCL, Flink and Beam read as "reshard"), then the end;
* when the stream is deleted or the consumer deregistered, a ``ResourceNotFoundException`` event;
  when a newer subscription takes over, a ``ResourceInUseException`` event; then the end;
* after the subscription's lifetime (AWS: 5 minutes), or when the server stops, a clean end.

Rules per (consumer, shard), as AWS's: a subscription while another is less than 5 s old is
refused (ResourceInUseException); 5 s or more takes over and ends the older one; one successful
subscribe per second (LimitExceededException). With the store's limits on, each (consumer, shard)
reads at most 2 MiB/s, as AWS's limit is per consumer and shard: a debt paid before the next read
(as GetRecords' limit is), kept per (consumer, shard) in ``Subscriptions.debts``, so a subscription
that takes over owes what the one it ended owed (a client that re-subscribes every 5 s gets no
fresh budget).

Memory per subscriber is one event (at most ``EVENT_BYTES`` of records, plus their JSON): the
next read happens only once the server has taken the last event off its hands, which HTTP flow
control holds back for a slow client.

Event payloads are JSON with ``:content-type: application/json`` whatever the request's wire form
(as kinesis-mock answers; what AWS sends a CBOR request is not verified).

ContinuationSequenceNumber is the last record sent or, with nothing sent, the number AFTER
which reading resumes at the current position: the record before it, or, at an entry's start
that is not the shard's end (the entry before it may be trimmed), a number no record holds:
index ``_AFTER_ENTRY`` of the entry before, which
AFTER_SEQUENCE_NUMBER reads on from (an entry holds at most 500 records). A shard that has no
record yet has none before it: its number is index ``_BEFORE_FIRST`` of entry 0, which
SubscribeToShard reads as the shard's start (GetShardIterator does not know it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pybase64

from firehose.asgi import Streamed
from firehose.clock import now_ms
from firehose.frontdoor.quotas import Bucket
from firehose.streams import eventstream, iterators, sequence, shardids
from firehose.streams.consumers import Consumer, by_arn
from firehose.streams.errors import (
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from firehose.streams.shard import Position, ReadRecord, ShardData
from firehose.streams.store import Shard, ShardStore, Stream
from firehose.streams.throttle import READ_BYTES_PER_S

log = logging.getLogger("firehose.streams")

Request = dict[str, Any]
Key = tuple[str, str]

#: An empty event at least this often when nothing else is sent (AWS: about every 5 s).
HEARTBEAT_S = 5.0
#: A subscription younger than this cannot be taken over (ResourceInUseException).
TAKEOVER_S = 5.0
#: Successful subscribes per (consumer, shard): one per this many seconds.
SUBSCRIBE_INTERVAL_S = 1.0
#: Records and bytes (keys and data) per event.
EVENT_RECORDS = 10_000
EVENT_BYTES = 1024 * 1024
#: Events of a subscription that keeps up follow each other at least this far apart (see the module's
#: docstring): the most a record waits for company. Far under the 50 ms within which a record must reach
#: its subscriber, and under AWS's own typical fan-out delay (about 70 ms); the server's CPU per record
#: then no longer depends on how small the producer's PutRecords calls are.
COALESCE_S = 0.01
_AFTER_ENTRY = sequence.MAX_RECORDS_PER_ENTRY - 2
_BEFORE_FIRST = sequence.MAX_RECORDS_PER_ENTRY - 1


@dataclass(eq=False)
class Subscription:
    """One running SubscribeToShard answer."""

    key: Key
    started: float
    #: The (consumer, shard)'s read debt with the store's limits on (``Subscriptions.debts``), else None.
    debt: Bucket | None = None
    #: Why it must end: (exception type, message), or ("", "") for a clean end; None while it runs.
    ending: tuple[str, str] | None = None
    waiter: asyncio.Future[None] | None = None

    def end(self, exception: str = "", message: str = "") -> None:
        if self.ending is None:
            self.ending = (exception, message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, data: ShardData | None, timeout: float) -> None:
        """Until the shard has news (``ShardData.wake``; not asked for when ``data`` is None), ``end`` is
        called, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        future = self.waiter = loop.create_future()
        if data is not None:
            data.waiting.append(future)
        timer = loop.call_later(max(0.0, timeout), _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self.waiter = None
            if data is not None and (not future.done() or future in data.waiting):
                future.cancel()
                try:
                    data.waiting.remove(future)
                except ValueError:
                    pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class Subscriptions:
    """One store's running subscriptions, the time of each (consumer, shard)'s last subscribe and, with the
    store's limits on, each (consumer, shard)'s read debt.

    A debt outlives the subscription that ran it up: the next subscription for the key (a takeover, or a
    new subscribe after the end) pays it before its first read. Kept while a subscription runs or it is
    unpaid; a subscription reads only once its debt is paid, so an entry left unpaid is at most one event
    (``EVENT_BYTES``, half a second at 2 MiB/s) from paid, and the map stays as small as ``last``."""

    running: dict[Key, Subscription] = field(default_factory=dict)
    last: dict[Key, float] = field(default_factory=dict)
    debts: dict[Key, Bucket] = field(default_factory=dict)

    def admit(self, key: Key, arn: str, shard_id: str, now: float, *, limited: bool = False) -> Subscription:
        """A new subscription for ``key``, or AWS's refusal; an older one is told to end. ``limited``: the
        store's limits are on (the subscription gets the key's read debt)."""
        older = self.running.get(key)
        if older is not None and now - older.started < TAKEOVER_S:
            raise ResourceInUseException(f"Another active subscription exists for consumer {arn} on shard "
                                         f"{shard_id}; a new subscription can take over {TAKEOVER_S:g} seconds "
                                         "after it started.")
        last = self.last.get(key)
        if last is not None and now - last < SUBSCRIBE_INTERVAL_S:
            raise LimitExceededException(f"Rate exceeded for consumer {arn} and shard {shard_id}: one "
                                         "SubscribeToShard call per second.")
        if older is not None:
            older.end("ResourceInUseException", f"A newer subscription for consumer {arn} on shard {shard_id} "
                                                "has taken over.")
        if len(self.last) > 4096:
            self.last = {k: t for k, t in self.last.items() if now - t < SUBSCRIBE_INTERVAL_S}
        self.last[key] = now
        sub = self.running[key] = Subscription(key, now, self._debt(key, now) if limited else None)
        return sub

    def _debt(self, key: Key, now: float) -> Bucket:
        """``key``'s read debt: the one its earlier subscriptions ran up, or a new one (nothing owed)."""
        debt = self.debts.get(key)
        if debt is None:
            if len(self.debts) > 4096:
                self.debts = {k: d for k, d in self.debts.items() if k in self.running or d.available(now) < 0}
            debt = self.debts[key] = Bucket(READ_BYTES_PER_S, capacity=0.0, stamp=now)
        return debt

    def release(self, sub: Subscription) -> None:
        if self.running.get(sub.key) is sub:
            del self.running[sub.key]

    def end_all(self) -> None:
        for sub in list(self.running.values()):
            sub.end()


_BY_STORE: weakref.WeakKeyDictionary[ShardStore, Subscriptions] = weakref.WeakKeyDictionary()


def of(store: ShardStore) -> Subscriptions:
    found = _BY_STORE.get(store)
    if found is None:
        found = _BY_STORE[store] = Subscriptions()
    return found


def end_all(store: ShardStore) -> None:
    """End every subscription of the store cleanly (the server is stopping)."""
    of(store).end_all()


# -- the operation ----------------------------------------------------------------------------------


async def subscribe_to_shard(store: ShardStore, request: Request) -> Streamed:
    arn, given = request["ConsumerARN"], request["ShardId"]
    stream, consumer = by_arn(store, arn)
    if stream.status == "CREATING":
        raise ResourceInUseException(f"Stream {stream.name} under account {store.options.account_id} not ACTIVE, "
                                     f"instead in state {stream.status}")
    if consumer.status != "ACTIVE":
        raise ResourceInUseException(f"Consumer {arn} under account {store.options.account_id} not ACTIVE, "
                                     f"instead in state {consumer.status}")
    shard = store.shard(stream, shardids.resolve(given) or given)  # as GetShardIterator reads it: by index
    shard_id = shard.shard_id
    position = await _start(store, stream, shard, request["StartingPosition"])
    subs = of(store)
    sub = subs.admit((arn, shard_id), arn, shard_id, time.monotonic(), limited=store.options.enforce_limits)
    events = _events(store, stream, shard, consumer, position, sub)
    return Streamed(eventstream.CONTENT_TYPE, _Released(events, lambda: subs.release(sub)))


class _Released:
    """An event stream whose ``aclose`` releases its subscription even if it never started: a client
    gone before the first chunk must not leave the subscription held (a new one would be refused for
    5 s), and an async generator closed before its first step runs no ``finally``."""

    def __init__(self, events: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release

    def __aiter__(self) -> _Released:
        return self

    async def __anext__(self) -> bytes:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._release()


async def _start(store: ShardStore, stream: Stream, shard: Shard, where: dict[str, Any]) -> Position:
    """Where a StartingPosition points, checked as GetShardIterator checks its arguments."""
    from firehose.streams.operations import get_shard_iterator  # operations imports this module for its table

    kind, number, at = where["Type"], where.get("SequenceNumber"), where.get("Timestamp")
    if kind == "AFTER_SEQUENCE_NUMBER" and number is not None:
        decoded = sequence.decode(number)
        if decoded is not None and decoded.created_s == stream.epoch and decoded.shard_index == shard.index \
                and (decoded.entry, decoded.index) == (0, _BEFORE_FIRST):
            return (0, 0)
    request: Request = {"StreamName": stream.name, "ShardId": shard.shard_id, "ShardIteratorType": kind}
    if number is not None:
        request["StartingSequenceNumber"] = number
    if at is not None:
        request["Timestamp"] = at
    try:
        token = (await get_shard_iterator(store, request))["ShardIterator"]
    except InvalidArgumentException as exc:
        raise InvalidArgumentException(exc.message.replace("GetShardIterator", "SubscribeToShard")) from None
    it = iterators.parse(store.key, token)
    assert it is not None
    return (it.entry, it.index)


def _continuation(data: ShardData, position: Position) -> str:
    """The number AFTER which reading resumes at ``position`` (see the module's docstring)."""
    entry, index = position
    if index > 0:
        return data.sequence_number((entry, index - 1))
    last = data.last_position
    if last is not None and last[0] + 1 == entry:  # at the end of the shard: its last record
        return data.sequence_number(last)
    if entry > 0:
        return data.sequence_number((entry - 1, _AFTER_ENTRY))
    if sequence.first_entry(data.prefix):  # the shard's StartingSequenceNumber, just before its first record
        return data.sequence_number((-1, 0))
    return data.sequence_number((0, _BEFORE_FIRST))


def _event(records: list[dict[str, Any]], continuation: str | None, behind: int,
           children: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"Records": records, "MillisBehindLatest": behind}
    if continuation is not None:
        body["ContinuationSequenceNumber"] = continuation
    if children is not None:
        body["ChildShards"] = children
    return eventstream.event("SubscribeToShardEvent", orjson.dumps(body))


@dataclass(frozen=True, slots=True)
class Shared:
    """An event holding a shard's records from ``start`` to its end when it was read (``end``)."""

    start: Position
    end: Position
    event: bytes
    #: Keys and data, for the read limit.
    size: int
    #: The arrival time of its first record, for the retention check.
    first_arrival_ms: int


@dataclass
class Subscribers:
    """A shard's running subscriptions (``ShardData.subscribers``): how many, and the last event one of
    them read up to the shard's end (kept only while there is another to send it to)."""

    count: int = 0
    last: Shared | None = None

    @staticmethod
    def of(data: ShardData) -> Subscribers:
        found = data.subscribers
        if not isinstance(found, Subscribers):
            found = data.subscribers = Subscribers()
        return found

    def leave(self, data: ShardData) -> None:
        self.count -= 1
        if self.count <= 1:
            self.last = None
        if self.count <= 0 and data.subscribers is self:
            data.subscribers = None


_KMS = {"EncryptionType": "KMS"}
_PLAIN: dict[str, str] = {}


def _shapes(records: list[ReadRecord]) -> list[dict[str, Any]]:
    """GetRecords' ``Record`` shapes, ``Data`` already base64 (an event is always JSON): one C call per
    record instead of orjson calling back into Python for each blob."""
    b64 = pybase64.b64encode_as_string
    return [{"SequenceNumber": r.sequence_number, "ApproximateArrivalTimestamp": r.arrival_ms / 1000,
             "Data": b64(r.data), "PartitionKey": r.partition_key, **(_KMS if r.sealed else _PLAIN)}
            for r in records]


def _children(stream: Stream, shard: Shard) -> list[dict[str, Any]]:
    return [{"ShardId": s.shard_id, "ParentShards": [p for p in (s.parent, s.adjacent_parent) if p],
             "HashKeyRange": {"StartingHashKey": str(s.start), "EndingHashKey": str(s.end)}}
            for s in stream.shards if shard.shard_id in (s.parent, s.adjacent_parent)]


def _gone(store: ShardStore, stream: Stream, consumer: Consumer) -> str | None:
    """Why the subscription cannot go on (its stream or consumer is gone), or None."""
    if store.streams.get(stream.name) is not stream or stream.status == "DELETING":
        return f"Stream {stream.name} under account {store.options.account_id} not found."
    if consumer.status != "ACTIVE" or not any(c is consumer for c in stream.consumers):
        return f"Consumer {consumer.arn}, account {store.options.account_id} not found."
    return None


async def _events(store: ShardStore, stream: Stream, shard: Shard, consumer: Consumer, position: Position,
                  sub: Subscription) -> AsyncIterator[bytes]:
    """The event stream of one subscription; ends (and is released) however the answer ends."""
    data = stream.data[shard.shard_id]
    deadline = sub.started + store.options.subscription_s
    debt = sub.debt
    peers = Subscribers.of(data)
    peers.count += 1
    try:
        yield eventstream.initial_response()
        sent = time.monotonic()
        hold = 0.0  # no read before this time (COALESCE_S after an event that left the reader caught up)
        first = True  # the first event goes out at once, records or not: the client learns where it is
        while True:
            if sub.ending is not None:
                if sub.ending[0]:
                    yield eventstream.exception(sub.ending[0], orjson.dumps({"message": sub.ending[1]}))
                return
            gone = _gone(store, stream, consumer)
            if gone is not None:
                yield eventstream.exception(ResourceNotFoundException.__name__, orjson.dumps({"message": gone}))
                return
            now = time.monotonic()
            if now >= deadline:
                return
            if debt is not None and (owed := -debt.available(now)) > 0:
                if first:  # an inherited debt holds back reading, not the client's first word of where it is
                    first = False
                    yield _event([], _continuation(data, position), 0)
                    sent = time.monotonic()
                    continue
                await sub.wait(data, min(owed / READ_BYTES_PER_S, deadline - now))
                continue
            if hold > now:  # the last event went out less than COALESCE_S ago: let more arrive first
                await sub.wait(None, min(hold, deadline) - now)
                hold = 0.0
                continue
            shared = peers.last
            if shared is not None and shared.start == position and shared.end == data.end \
                    and shared.first_arrival_ms >= stream.cutoff_ms():
                if debt is not None:
                    debt.take(shared.size)
                position = shared.end
                yield shared.event
                sent, first = time.monotonic(), False
                hold = sent + COALESCE_S
                continue
            start = position
            result = data.read(position, limit=EVENT_RECORDS, max_bytes=EVENT_BYTES, cutoff_ms=stream.cutoff_ms())
            position = result.next
            if result.records:
                size = sum(len(r.data) + len(r.partition_key) for r in result.records)
                if debt is not None:
                    debt.take(size)
                behind = 0 if result.behind_arrival_ms is None else max(0, now_ms() - result.behind_arrival_ms)
                event = _event(_shapes(result.records), result.records[-1].sequence_number, behind)
                caught_up = result.behind_arrival_ms is None
                if caught_up and peers.count > 1:  # others may be at ``start`` too
                    peers.last = Shared(start, position, event, size, result.records[0].arrival_ms)
                del result
                yield event
                sent, first = time.monotonic(), False
                hold = sent + COALESCE_S if caught_up else 0.0
                continue
            if not shard.is_open and result.at_end:
                yield _event([], None, 0, _children(stream, shard))
                return
            if first or now - sent >= HEARTBEAT_S:
                first = False
                yield _event([], _continuation(data, position), 0)
                sent = time.monotonic()
                continue
            await sub.wait(data, min(HEARTBEAT_S - (now - sent), deadline - now))
    except Exception:
        log.exception("A SubscribeToShard event stream failed.", extra={"stream": stream.name,
                                                                        "shard": shard.shard_id})
        yield eventstream.exception("InternalFailureException",
                                    orjson.dumps({"message": "An internal error occurred; subscribe again."}))
    finally:
        peers.leave(data)
        of(store).release(sub)

