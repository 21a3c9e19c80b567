"""The CBOR wire form (``application/x-amz-cbor-1.1``) that the AWS SDK for Java speaks by default.

The Java SDK (v1 and v2, hence the KPL, the KCL and the Kinesis Agent) sends
Kinesis requests as CBOR maps with the same member names as JSON; blobs are
CBOR byte strings. Timestamps are tag 1 ("epoch-based date/time") but carry
**milliseconds**, not the seconds RFC 8949 specifies, in both directions, so
a standard decoder would misread them; this module reads tag 1 itself and
writes response timestamps the way the SDK expects them.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

CONTENT_TYPE = "application/x-amz-cbor-1.1"
#: Response members that are timestamps (epoch seconds in the operations' answers).
_TIMESTAMPS = frozenset({"ApproximateArrivalTimestamp", "StreamCreationTimestamp"})
#: A tag-1 value above this is taken to be milliseconds (10^11 s is in the year 5138).
_MILLIS_ABOVE = 10**11


def _epoch(value: Any, _immutable: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a CBOR timestamp (tag 1) must hold a number")
    return value / 1000 if abs(value) > _MILLIS_ABOVE else float(value)


def decode_request(body: bytes) -> Any:
    """A request body as the operations take it: timestamps as epoch seconds, blobs as bytes."""
    return cbor2.CBORDecoder(io.BytesIO(body), semantic_decoders={1: _epoch}).decode()


def _prepare(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _prepare(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_prepare(v) for v in value]
    if key in _TIMESTAMPS and isinstance(value, (int, float)):
        return cbor2.CBORTag(1, int(round(value * 1000)))
    return value


def encode_response(result: dict[str, Any]) -> bytes:
    return cbor2.dumps(_prepare(result))


def error_body(aws_type: str, message: str) -> bytes:
    return cbor2.dumps({"__type": aws_type, "message": message})
