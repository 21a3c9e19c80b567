"""Resource-based policies of Kinesis streams (and consumers): PutResourcePolicy, GetResourcePolicy,
DeleteResourcePolicy, and the policies the front door evaluates for a request on a resource.

A stream's policy is the JSON text the owner put, kept on the stream in the
store's ``streams.json`` (so it survives a restart and goes with the stream
when the stream is deleted); it is compiled once per distinct text
(``compiled``) for evaluation. What a policy grants is decided by
``firehose.frontdoor.policy.evaluate`` together with the caller's identity
policies (security.md §9.2): across accounts both must allow, in the owner's
account either (a resource policy only when it names the caller itself), and
an explicit Deny in either wins.

``ResourceARN`` names a stream (``…:stream/<name>``) or a consumer
(``…:stream/<name>/consumer/<consumer>:<creation timestamp>``); ``holder``
finds what the ARN names in a store. Consumers plug in at ``consumer_of``.

Choices where AWS's behaviour is not documented (not verified against AWS):

* a policy that is not JSON, or not a resource-based IAM policy (every statement
  names a Principal) is ``InvalidArgumentException`` with the parser's reason;
* a policy longer than ``MAX_POLICY_CHARS`` (20 KiB, the size S3 and other AWS
  resource policies allow) is ``InvalidArgumentException`` too;
* Put/Get/DeleteResourcePolicy are never granted by a resource policy: the
  caller must belong to the owner's account (the API reference says so), so
  another account's principal is refused whatever the policy says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import orjson

from firehose.frontdoor.door import Caller
from firehose.frontdoor.policy import Policy
from firehose.streams.errors import InvalidArgumentException, ResourceNotFoundException
from firehose.streams.store import ShardStore, Stream

Request = dict[str, Any]

MAX_POLICY_CHARS = 20 * 1024
#: ``arn:<partition>:kinesis:<region>:<account>:stream/<name>[/consumer/<consumer>:<timestamp>]``.
_ARN = re.compile(r"arn:(aws[\w-]*):kinesis:([^:]*):(\d{12}):stream/([a-zA-Z0-9_.-]+)"
                  r"(?:/consumer/([a-zA-Z0-9_.-]+:\d+))?")


class PolicyHolder(Protocol):
    """Something a resource policy can be attached to (a stream, a consumer)."""

    policy: str | None


@dataclass(frozen=True, slots=True)
class ResourceArn:
    account: str
    region: str
    stream: str
    #: ``<name>:<creation timestamp>`` for a consumer ARN, else None.
    consumer: str | None


def parse_arn(arn: str) -> ResourceArn | None:
    """The parts of a stream or consumer ARN; None when it is neither."""
    match = _ARN.fullmatch(arn)
    if match is None:
        return None
    return ResourceArn(match.group(3), match.group(2), match.group(4), match.group(5))


def not_found(arn: str, account: str) -> ResourceNotFoundException:
    # AWS puts the full ARN where the stream name goes when the request named it by ARN (§5.4).
    return ResourceNotFoundException(f"Stream {arn} under account {account} not found.")


def holder(store: ShardStore, arn: str) -> PolicyHolder:
    """The stream or consumer ``arn`` names in ``store`` (ResourceNotFoundException when there is none)."""
    ref = parse_arn(arn)
    if ref is None or ref.account != store.options.account_id or ref.region != store.options.region:
        raise not_found(arn, ref.account if ref else store.options.account_id)
    stream = store.streams.get(ref.stream)
    if stream is None or stream.status in ("CREATING", "DELETING"):
        raise not_found(arn, ref.account)
    if ref.consumer is None:
        return stream
    return consumer_of(store, stream, arn)


def consumer_of(store: ShardStore, stream: Stream, arn: str) -> PolicyHolder:
    """The registered consumer of ``stream`` that ``arn`` names (one being deregistered is gone)."""
    consumer = next((c for c in stream.consumers if c.arn == arn and c.status != "DELETING"), None)
    if consumer is None:
        raise ResourceNotFoundException(f"Consumer {arn}, account {store.options.account_id} not found.")
    return consumer


@lru_cache(maxsize=256)
def compiled(text: str) -> Policy:
    """A stored policy, compiled (once per distinct text; a stored text has been checked by ``parse``)."""
    return Policy.parse(orjson.loads(text), resource_based=True)


def parse(text: str) -> Policy:
    """Check a policy a caller puts: JSON, a resource-based IAM policy, at most MAX_POLICY_CHARS."""
    if len(text) > MAX_POLICY_CHARS:
        raise InvalidArgumentException(f"The resource policy is {len(text)} characters long; at most "
                                       f"{MAX_POLICY_CHARS} are allowed.")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentException(f"The resource policy is not valid JSON: {exc}") from None
    try:
        return Policy.parse(document, resource_based=True)
    except ValueError as exc:
        raise InvalidArgumentException(f"Invalid resource policy: {exc}") from None


def policies(store: ShardStore | None, arn: str) -> tuple[Policy, ...]:
    """The resource policies that apply to a request on ``arn`` (none when it names nothing in ``store``)."""
    if store is None or arn == "*":
        return ()
    try:
        text = holder(store, arn).policy
    except ResourceNotFoundException:
        return ()
    return (compiled(text),) if text else ()


# -- the operations -----------------------------------------------------------------------------


async def put_resource_policy(store: ShardStore, request: Request) -> dict[str, Any]:
    target = holder(store, request["ResourceARN"])
    text = request["Policy"]
    parse(text)
    target.policy = text
    store.persist()
    return {}


async def get_resource_policy(store: ShardStore, request: Request) -> dict[str, Any]:
    # No policy → "{}" (LocalStack's test_resource_policy_crud snapshot, recorded against AWS).
    return {"Policy": holder(store, request["ResourceARN"]).policy or "{}"}


async def delete_resource_policy(store: ShardStore, request: Request) -> dict[str, Any]:
    arn = request["ResourceARN"]
    target = holder(store, arn)
    if not target.policy:
        # moto's wording; AWS answers ResourceNotFoundException here (LocalStack's AWS-validated snapshot).
        raise ResourceNotFoundException(f"No resource policy found for resource ARN {arn}.")
    target.policy = None
    store.persist()
    return {}


def resource_arn(request: Request, caller: Caller) -> str:
    """The resource a policy operation acts on, for authorization."""
    arn = request.get("ResourceARN")
    return arn if isinstance(arn, str) and arn else "*"
