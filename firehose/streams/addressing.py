"""How a request names its stream: ``StreamName``, ``StreamARN``, or both when they agree.

Every Kinesis operation on a stream takes either member (current API), and
AWS's error messages then name the stream the way the request did: with
``StreamARN`` the full ARN stands where the name would
(``Stream arn:aws:kinesis:us-east-1:123456789012:stream/s under account
123456789012 not found.``; kinesis-fidelity.md §5.4). ``by_arn`` applies that
to whatever error an operation raises, so the store keeps speaking in names.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from firehose.streams.errors import (
    FirehoseError,
    InvalidArgumentException,
    ResourceNotFoundException,
    ValidationException,
)
from firehose.streams.store import ShardStore

Request = dict[str, Any]
Handler = Callable[..., Awaitable[dict[str, Any]]]


def split_arn(arn: str) -> tuple[str, str, str]:
    """(region, account, resource) of an ARN the model's pattern has passed."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "", "", arn
    return parts[3], parts[4], parts[5]


def name_in_arn(arn: str) -> str:
    """The stream an ARN names: ``stream/<name>`` (a consumer ARN's ``stream/<name>/consumer/...`` too)."""
    resource = split_arn(arn)[2].removeprefix("stream/")
    return resource.split("/", 1)[0]


def stream_name(store: ShardStore, request: Request) -> str:
    """The stream a request names by StreamName or StreamARN (or both, if they agree).

    An ARN of another region or account names a stream this store does not have:
    ResourceNotFoundException, as AWS answers for a stream it cannot find.
    """
    name, arn = request.get("StreamName"), request.get("StreamARN")
    if name is None and arn is None:
        raise ValidationException("1 validation error detected: Value null at 'streamName' failed to satisfy "
                                  "constraint: Member must not be null")
    if arn is not None:
        region, account, _resource = split_arn(arn)
        from_arn = name_in_arn(arn)
        if name is not None and name != from_arn:
            raise InvalidArgumentException(f"StreamARN {arn} and StreamName {name} name different streams.")
        if region != store.options.region or account != store.options.account_id:
            raise ResourceNotFoundException(f"Stream {from_arn} under account {account} not found.")
        return from_arn
    return str(name)


def by_arn(handler: Handler) -> Handler:
    """``handler``, its errors naming the stream by the request's StreamARN when it gave one."""

    @functools.wraps(handler)
    async def wrapped(store: ShardStore, request: Request, *rest: Any) -> dict[str, Any]:
        try:
            return await handler(store, request, *rest)
        except FirehoseError as exc:
            arn = request.get("StreamARN")
            if isinstance(arn, str) and arn:
                name = name_in_arn(arn)
                text = exc.message.replace(f"Stream {name} ", f"Stream {arn} ")
                exc.message = text.replace(f"stream {name} ", f"stream {arn} ")
                exc.args = (exc.message,)
            raise

    return wrapped
