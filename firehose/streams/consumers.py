"""Enhanced fan-out consumers: RegisterStreamConsumer, DescribeStreamConsumer, ListStreamConsumers,
DeregisterStreamConsumer, and what DeleteStream does with a stream's consumers.

A consumer belongs to one stream and is kept in the store's ``streams.json`` with the stream
(``Stream.consumers``), so it survives a restart. It moves CREATING → ACTIVE after the store's
``consumer_delay_s``, and DELETING → gone after the same delay; a restart completes a pending
transition. Its ARN ends in its creation second, as AWS's does, so a consumer registered again
under the same name gets a new ARN::

    arn:aws:kinesis:<region>:<account>:stream/<stream>/consumer/<name>:<creation epoch seconds>

Limits as AWS: 20 consumers per stream; 5 consumers CREATING at once (AWS's documentation does
not say whether per stream or per account; the sidecar counts the account's, as its "5 streams
CREATING" limit does). Message texts AWS does not document follow kinesis-mock and moto.

SubscribeToShard reads through an ACTIVE consumer (``subscriptions.py``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from firehose.clock import now_ms
from firehose.streams.errors import (
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
)

if TYPE_CHECKING:
    from firehose.frontdoor.door import Caller
    from firehose.streams.store import ShardStore, Stream

ConsumerStatus = Literal["CREATING", "ACTIVE", "DELETING"]
Request = dict[str, Any]

MAX_CONSUMERS_PER_STREAM = 20
MAX_CREATING = 5
MAX_TAGS = 50
MAX_LIST_RESULTS = 100
_ARN = re.compile(r"arn:aws[^:]*:kinesis:([^:]*):(\d{12}):stream/([a-zA-Z0-9_.-]+)/consumer/([a-zA-Z0-9_.-]+):(\d+)")


@dataclass
class Consumer:
    name: str
    arn: str
    created_ms: int
    status: ConsumerStatus = "CREATING"
    tags: dict[str, str] = field(default_factory=dict)
    #: The resource-based policy (JSON text as put; ``firehose.streams.policies``), or None.
    policy: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Consumer:
        return cls(**d)

    def settled(self) -> Consumer:
        """This consumer with a pending CREATING → ACTIVE done (at start-up, after a restart)."""
        return replace(self, status="ACTIVE") if self.status == "CREATING" else self

    def shape(self) -> dict[str, Any]:
        """AWS's ``Consumer``."""
        return {"ConsumerName": self.name, "ConsumerARN": self.arn, "ConsumerStatus": self.status,
                "ConsumerCreationTimestamp": self.created_ms / 1000}


def consumer_arn(stream_arn: str, name: str, created_ms: int) -> str:
    return f"{stream_arn}/consumer/{name}:{created_ms // 1000}"


def parse_arn(arn: str) -> tuple[str, str, str, str] | None:
    """(region, account, stream name, consumer name) of a consumer ARN, or None."""
    m = _ARN.fullmatch(arn)
    return (m[1], m[2], m[3], m[4]) if m else None


def _not_found(store: ShardStore, what: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Consumer {what}, account {store.options.account_id} not found.")


def _stream(store: ShardStore, stream_arn: str) -> Stream:
    """The live stream a StreamARN names (one being deleted is gone)."""
    from firehose.streams.operations import _stream_name  # operations imports this module for its table

    return store.stream(_stream_name(store, {"StreamARN": stream_arn}), data_op=False)


def by_arn(store: ShardStore, arn: str) -> tuple[Stream, Consumer]:
    """The stream and consumer a ConsumerARN names; ResourceNotFoundException when there is none."""
    parts = parse_arn(arn)
    if parts is None or parts[0] != store.options.region or parts[1] != store.options.account_id:
        raise _not_found(store, arn)
    stream = store.streams.get(parts[2])
    consumer = next((c for c in stream.consumers if c.arn == arn), None) if stream is not None else None
    if stream is None or consumer is None or stream.status == "DELETING":
        raise _not_found(store, arn)
    return stream, consumer


def find(store: ShardStore, request: Request) -> tuple[Stream, Consumer]:
    """The consumer Describe/Deregister name: by ConsumerARN, or by StreamARN and ConsumerName (all
    three may be given if they agree)."""
    arn, name, stream_arn = request.get("ConsumerARN"), request.get("ConsumerName"), request.get("StreamARN")
    if arn is not None:
        stream, consumer = by_arn(store, arn)
        if (name is not None and name != consumer.name) or (stream_arn is not None and stream_arn != stream.arn):
            raise InvalidArgumentException(f"ConsumerARN {arn} does not name consumer {name or consumer.name} "
                                           f"of stream {stream_arn or stream.arn}.")
        return stream, consumer
    if name is None or stream_arn is None:
        raise InvalidArgumentException("ConsumerArn or both ConsumerName and StreamARN are required for this "
                                       "request.")
    try:
        stream = _stream(store, stream_arn)
    except ResourceNotFoundException:
        raise _not_found(store, name) from None
    consumer = next((c for c in stream.consumers if c.name == name), None)
    if consumer is None or stream.status == "DELETING":
        raise _not_found(store, name)
    return stream, consumer


def wake_subscribers(stream: Stream) -> None:
    """Subscribers of the stream look again at their consumer (deregistered: they end)."""
    for data in stream.data.values():
        data.wake()


# -- operations --------------------------------------------------------------------------------


async def register_stream_consumer(store: ShardStore, request: Request) -> dict[str, Any]:
    stream = _stream(store, request["StreamARN"])
    name = request["ConsumerName"]
    tags = request.get("Tags") or {}
    if stream.status in ("CREATING", "DELETING"):
        raise ResourceInUseException(f"Stream {stream.name} under account {store.options.account_id} not ACTIVE, "
                                     f"instead in state {stream.status}")
    if len(tags) > MAX_TAGS:
        raise InvalidArgumentException(f"A consumer cannot have more than {MAX_TAGS} tags.")
    if any(c.name == name for c in stream.consumers):
        raise ResourceInUseException(f"Consumer {name} under stream {stream.name} under account "
                                     f"{store.options.account_id} already exists.")
    if len(stream.consumers) >= MAX_CONSUMERS_PER_STREAM:
        raise LimitExceededException(f"Stream {stream.name} under account {store.options.account_id} already has "
                                     f"{MAX_CONSUMERS_PER_STREAM} registered consumers, the most a stream can have.")
    creating = sum(c.status == "CREATING" for s in store.streams.values() for c in s.consumers)
    if creating >= MAX_CREATING:
        raise LimitExceededException(f"Account {store.options.account_id} already has {MAX_CREATING} consumers in "
                                     "CREATING status; wait for them to become ACTIVE before registering more.")
    created = now_ms()
    consumer = Consumer(name, consumer_arn(stream.arn, name, created), created, tags=dict(tags))
    stream.consumers.append(consumer)
    store._save()
    answer = {"Consumer": consumer.shape()}  # CREATING, as AWS answers, whatever the delay

    def activate() -> None:
        if consumer.status == "CREATING" and any(c is consumer for c in stream.consumers):
            consumer.status = "ACTIVE"
            store._save()

    store._later(store.options.consumer_delay_s, activate)
    return answer


async def describe_stream_consumer(store: ShardStore, request: Request) -> dict[str, Any]:
    stream, consumer = find(store, request)
    return {"ConsumerDescription": {**consumer.shape(), "StreamARN": stream.arn}}


async def list_stream_consumers(store: ShardStore, request: Request) -> dict[str, Any]:
    from firehose.streams.operations import _make_token, _read_token, _timestamp_ms

    token = request.get("NextToken")
    created = request.get("StreamCreationTimestamp")
    stream = _stream(store, request["StreamARN"])
    after = None
    if token is not None:
        if created is not None:
            raise InvalidArgumentException("NextToken and StreamCreationTimestamp cannot be provided together.")
        body = _read_token(store, token, "ListStreamConsumers")
        if body.get("stream") != stream.name or body.get("created") != stream.created_ms:
            raise InvalidArgumentException(f"Invalid NextToken: {token[:64]}")
        after = body["after"]
    elif created is not None and _timestamp_ms(created) // 1000 != stream.created_ms // 1000:
        raise store.not_found(stream.name)  # another stream of that name, since deleted
    if stream.status == "CREATING":
        raise ResourceInUseException(f"Stream {stream.name} under account {store.options.account_id} not ACTIVE, "
                                     f"instead in state {stream.status}")
    limit = min(request.get("MaxResults") or MAX_LIST_RESULTS, MAX_LIST_RESULTS)  # AWS: above 100 acts as 100
    listed = sorted((c for c in stream.consumers if after is None or c.name > after), key=lambda c: c.name)
    page = listed[:limit]
    out: dict[str, Any] = {"Consumers": [c.shape() for c in page]}
    if len(listed) > limit:
        out["NextToken"] = _make_token(store, {"op": "ListStreamConsumers", "stream": stream.name,
                                               "created": stream.created_ms, "after": page[-1].name})
    return out


async def deregister_stream_consumer(store: ShardStore, request: Request) -> dict[str, Any]:
    stream, consumer = find(store, request)
    if consumer.status == "DELETING":
        return {}
    consumer.status = "DELETING"
    store._save()
    wake_subscribers(stream)

    def remove() -> None:
        if any(c is consumer for c in stream.consumers):
            stream.consumers = [c for c in stream.consumers if c is not consumer]
            store._save()

    store._later(store.options.consumer_delay_s, remove)
    return {}


def check_deletion(store: ShardStore, stream: Stream, enforce: bool | None) -> None:
    """DeleteStream on a stream with consumers needs ``EnforceConsumerDeletion`` (they go with it)."""
    if stream.consumers and not enforce:
        raise ResourceInUseException(f"Consumers exist in stream {stream.name} and enforceConsumerDeletion is "
                                     "either not set or is false")


# -- what each call acts on, for authorization ----------------------------------------------------


def consumer_resource(request: Request, caller: Caller) -> str:
    """The consumer a request names: its ARN, or, named by stream and consumer name, the ARN with any
    creation time (IAM policies name consumers as ``.../consumer/<name>:*`` or ``.../consumer/*``)."""
    arn = request.get("ConsumerARN")
    if isinstance(arn, str) and arn:
        return arn
    stream_arn, name = request.get("StreamARN"), request.get("ConsumerName")
    if isinstance(stream_arn, str) and isinstance(name, str):
        return f"{stream_arn}/consumer/{name}:*"
    return f"arn:aws:kinesis:{caller.region}:{caller.account_id}:stream/*"
