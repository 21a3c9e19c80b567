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

from firehose.streams.addressing import name_in_arn, split_arn
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

    Streams only so far; another kind of resource adds its branch here.
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
    raise _not_found(store, arn)


async def tag_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tagged(store, request["ResourceARN"]).add(request["Tags"])
    return {}


async def untag_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tagged(store, request["ResourceARN"]).remove(request["TagKeys"])
    return {}


async def list_tags_for_resource(store: ShardStore, request: Request) -> dict[str, Any]:
    tags = tagged(store, request["ResourceARN"]).tags()
    return {"Tags": [{"Key": k, "Value": tags[k]} for k in sorted(tags)]}
