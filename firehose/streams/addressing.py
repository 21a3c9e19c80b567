"""How a request names its stream: ``StreamName``, ``StreamARN``, or both when they agree.

Every Kinesis operation on a stream takes either member (current API). AWS's error
messages name the stream by its name either way: a DescribeStream by ``StreamARN`` of a
missing stream is answered ``Stream wrong-stream-name under account 111111111111 not
found.`` (LocalStack's recording against AWS, September 2025; kinesis-fidelity.md §5.4
says the ARN stands in for the name, which that recording contradicts).
"""

from __future__ import annotations

from typing import Any

from firehose.streams.errors import (
    InvalidArgumentException,
    ResourceNotFoundException,
    ValidationException,
)
from firehose.streams.store import ShardStore

Request = dict[str, Any]


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
