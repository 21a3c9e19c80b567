"""Tagging by ARN: TagResource, UntagResource and ListTagsForResource.

``ResourceARN`` names a stream (``arn:aws:kinesis:<region>:<acct>:stream/<name>``);
``tagged`` finds the tags of the resource an ARN names, and is the one place
to teach other kinds of resource (consumers: ``.../stream/<name>/consumer/<c>:<t>``)
to. Tag limits and texts are the stream tagging operations' (AddTagsToStream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firehose.streams import consumers
from firehose.streams.addressing import name_in_arn, split_arn
from firehose.streams.consumers import Consumer
from firehose.streams.errors import ResourceNotFoundException
from firehose.streams.store import ShardStore

Request = dict[str, Any]


@dataclass(frozen=True)
class Tagged:
    """A resource's tags and how to change them (``add`` applies AddTagsToStream's limits)."""

    tags: Callable[[], dict[str, str]]
    add: Callable[[dict[str, str]], None]
    remove: Callable[[list[str]], None]


def _not_found(store: ShardStore, arn: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Resource {arn} under account {store.options.account_id} not found.")


def tagged(store: ShardStore, arn: str) -> Tagged:
    """The resource ``arn`` names, or ResourceNotFoundException (a stream being deleted is still found).

    Streams and their enhanced fan-out consumers.
    """
    region, account, resource = split_arn(arn)
    if region != store.options.region or account != store.options.account_id:
        raise _not_found(store, arn)
    if resource.startswith("stream/") and "/" not in resource.removeprefix("stream/"):
        name = name_in_arn(arn)
        stream = store.streams.get(name)
        if stream is None:
            raise store.not_found(arn)
        return Tagged(lambda: stream.tags, lambda tags: store.add_tags(name, tags),
                      lambda keys: store.remove_tags(name, keys))
    if resource.startswith("stream/") and "/consumer/" in resource:
        _stream, consumer = consumers.by_arn(store, arn)
        return Tagged(lambda: consumer.tags, lambda tags: _tag_consumer(store, consumer, tags),
                      lambda keys: _untag_consumer(store, consumer, keys))
    raise _not_found(store, arn)


def _tag_consumer(store: ShardStore, consumer: Consumer, tags: dict[str, str]) -> None:
    """A consumer's tags follow the stream tagging rules (characters, at most 50)."""
    store.check_tag_text(consumer.name, [*tags, *tags.values()], "add tags to")
    merged = {**consumer.tags, **tags}
    store.check_tag_count(consumer.name, len(merged))
    consumer.tags = merged
    store.persist()


def _untag_consumer(store: ShardStore, consumer: Consumer, keys: list[str]) -> None:
    store.check_tag_text(consumer.name, keys, "remove tags from")
    for key in keys:
        consumer.tags.pop(key, None)
    store.persist()


async def tag_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tagged(store, request["ResourceARN"]).add(request["Tags"])
    return {}


async def untag_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tagged(store, request["ResourceARN"]).remove(request["TagKeys"])
    return {}


async def list_tags_for_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tags = tagged(store, request["ResourceARN"]).tags()
    return {"Tags": [{"Key": k, "Value": tags[k]} for k in sorted(tags)]}
