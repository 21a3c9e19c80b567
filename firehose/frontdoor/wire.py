"""The awsJson1_1 and CBOR wire forms both APIs speak: content types, targets, bodies, errors, ids.

* ``application/x-amz-json-1.1`` is what boto3, the CLI and the JavaScript,
  Go and .NET SDKs send; ``application/json`` is accepted for curl users.
* ``application/x-amz-cbor-1.1`` is the AWS SDK for Java's default for Kinesis
  (hence the KPL, the KCL and the Kinesis Agent): CBOR maps with the same
  member names, blobs as byte strings, and timestamps as tag 1 holding
  **milliseconds** (not the seconds RFC 8949 specifies) in both directions, so
  a standard decoder would misread them; tag 1 is read and written here.
* Errors are ``{"__type": ..., "message": ...}`` in the request's own wire form
  (firehose-api.md §1.1; botocore reads ``__type``, then ``message``).
* Timestamps in answers are epoch seconds (a JSON number), as AWS sends them.

Decoding never raises anything but ``SerializationException``: a body that is
not an object, is malformed, or nests deeper than the limit is refused with it.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any

import cbor2
import orjson
import pybase64

from firehose.errors import SerializationException

JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"
JSON_BYTES = JSON.encode()
CBOR_BYTES = CBOR.encode()
#: Content types a JSON request may carry. application/json is accepted for curl users.
JSON_TYPES = frozenset({JSON, "application/json"})
#: The message of an error AWS sends without one (a body it cannot read): ``error`` leaves the member out.
BARE = ""

#: Answer members that are timestamps (epoch seconds in the operations' answers).
_CBOR_TIMESTAMPS = frozenset({"ApproximateArrivalTimestamp", "StreamCreationTimestamp", "ConsumerCreationTimestamp"})
#: A tag-1 value above this is taken to be milliseconds (10^11 s is in the year 5138).
_MILLIS_ABOVE = 10**11


def request_id() -> str:
    return str(uuid.uuid4())


def split_target(target: str, prefix: str) -> str | None:
    """The operation named by ``X-Amz-Target`` if it belongs to ``prefix``."""
    service, dot, operation = target.partition(".")
    return operation if dot and service == prefix and operation else None


def epoch_seconds(ms: int) -> float:
    """AWS sends timestamps as epoch seconds (a JSON number)."""
    return ms / 1000


# -- requests ------------------------------------------------------------------------------


def decode(raw: bytes, *, cbor: bool, max_depth: int | None, max_containers: int | None = None) -> dict[str, Any]:
    """A request body as the operations take it (JSON: blobs base64 strings; CBOR: bytes, timestamps as
    epoch seconds). ``max_depth`` None leaves nesting to the parsers' own limits (1,024 for JSON, 400 for
    CBOR): for operations whose fast path reads only flat members and never walks the rest.

    ``max_containers`` bounds the objects and arrays of a JSON body, counted on the bytes before parsing
    (an upper bound: brackets inside strings count too), so that no body makes the parser build millions
    of objects while it holds the interpreter (the event loop waits for that).

    A body that is empty, not JSON (or CBOR), or not an object is refused as AWS refuses it: a
    SerializationException with no message (kinesalite's recordings; current coral services too), except
    a list, which AWS answers "Start of list found where not expected"."""
    if not raw:
        raise SerializationException(BARE)
    if max_containers is not None and not cbor and raw.count(b"{") + raw.count(b"[") > max_containers:
        raise SerializationException(f"The request body holds more than {max_containers} objects and arrays.")
    try:
        data = _decode_cbor(raw) if cbor else orjson.loads(raw)
    except Exception:  # orjson.JSONDecodeError, cbor2.CBORDecodeError, ValueError, RecursionError
        raise SerializationException(BARE) from None
    if not isinstance(data, dict):
        if isinstance(data, list):
            raise SerializationException("Start of list found where not expected")
        raise SerializationException(BARE)
    if max_depth is not None and _may_exceed(raw, max_depth) and _depth_exceeds(data, max_depth):
        raise SerializationException(f"The request body nests objects and arrays more than {max_depth} deep.")
    return data


def _may_exceed(raw: bytes, max_depth: int) -> bool:
    """Cheap (C-speed) proof that a JSON body cannot nest deeper than ``max_depth``; CBOR is always walked."""
    return raw[:1] not in (b"{", b" ", b"\n", b"\t", b"\r") or raw.count(b"{") + raw.count(b"[") > max_depth


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Depth first, one iterator per level: memory grows with the depth, never with the width."""
    stack: list[Any] = [iter(data.values())]
    push, pop = stack.append, stack.pop
    while stack:
        for child in stack[-1]:
            kind = type(child)
            if kind is dict or kind is list:
                if len(stack) >= limit:
                    return True
                push(iter(child.values() if kind is dict else child))
                break
        else:
            pop()
    return False


def _epoch(value: Any, _immutable: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a CBOR timestamp (tag 1) must hold a number")
    return value / 1000 if abs(value) > _MILLIS_ABOVE else float(value)


def _refuse_tag(_value: Any, _immutable: bool = False) -> Any:
    raise ValueError("AWS's CBOR protocol has no such tag")


#: Tags cbor2 would otherwise decode itself. AWS SDKs send tag 1 (timestamps) only; the others would
#: let a client build values the operations never expect, or shared references (28, 29, 25, 256) that
#: make a few bytes stand for an enormous tree.
_REFUSED_TAGS = (0, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 52, 54, 100, 256, 258, 260,
                 261, 1004, 55799)
_SEMANTIC: dict[int, Callable[[Any, bool], Any]] = {1: _epoch, **{tag: _refuse_tag for tag in _REFUSED_TAGS}}


def _other_tag(_decoder: Any, tag: Any) -> Any:
    raise ValueError(f"AWS's CBOR protocol has no tag {tag.tag}")


def _decode_cbor(raw: bytes) -> Any:
    return cbor2.CBORDecoder(io.BytesIO(raw), semantic_decoders=_SEMANTIC, tag_hook=_other_tag).decode()


# -- answers ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pybase64.b64encode(value).decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")


class JsonAnswer(bytes):
    """An operation's answer already in JSON, sent as it is (re-encoded for a CBOR request).

    PutRecordBatch's answer holds a record id per record: written with one ``join`` it costs a tenth of
    building 500 dicts and walking them (about 5 µs against 50 µs a call)."""


def encode(result: dict[str, Any] | JsonAnswer, *, cbor: bool) -> bytes:
    """An operation's answer: blobs (bytes) become base64 in JSON and byte strings in CBOR."""
    if isinstance(result, JsonAnswer):
        return cbor2.dumps(_cbor_ready(orjson.loads(bytes(result)))) if cbor else bytes(result)
    return cbor2.dumps(_cbor_ready(result)) if cbor else orjson.dumps(result, default=_json_default)


def _cbor_ready(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _cbor_ready(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_cbor_ready(v) for v in value]
    if key in _CBOR_TIMESTAMPS and isinstance(value, (int, float)):
        return cbor2.CBORTag(1, int(round(value * 1000)))
    return value


#: What AWS answers, in XML, before it knows which service and operation a request is for.
NO_OPERATION = "Unable to determine service/operation name to be authorized"


def xml_error(aws_type: str, message: str | None = None) -> bytes:
    """AWS's XML refusal of a request it cannot route (kinesalite's recording): ``<Type>`` with a
    ``<Message>`` (403 AccessDeniedException), or an empty element (404 UnknownOperationException)."""
    if message is None:
        return f"<{aws_type}/>\n".encode()
    return f"<{aws_type}>\n  <Message>{message}</Message>\n</{aws_type}>\n".encode()


def error(aws_type: str, message: str, *, cbor: bool = False, members: dict[str, Any] | None = None) -> bytes:
    """The error envelope; ``members``: the error shape's other modelled members (e.g. RawInputRecords).
    A ``BARE`` message is left out, as AWS leaves it out of its refusal of a body it cannot read."""
    body = {"__type": aws_type, **({"message": message} if message != BARE else {}), **(members or {})}
    return cbor2.dumps(body) if cbor else orjson.dumps(body)
