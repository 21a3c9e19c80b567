"""The AWS event-stream encoding (``application/vnd.amazon.eventstream``): SubscribeToShard's answer.

A message, all integers big-endian::

    total length u32 | headers length u32 | prelude CRC u32 | headers | payload | message CRC u32

where the prelude CRC is the CRC-32 (zlib's polynomial) of the first 8 bytes and the message CRC
the CRC-32 of everything before it. A header is ``name length u8 | name | type u8 | value``; of
the ten value types the Kinesis event stream needs strings (7) only, and booleans, byte arrays
and longs are here for completeness. botocore decodes these messages (``botocore.eventstream``)
but has no encoder, and no maintained library on the venv encodes them, hence this module.

Limits botocore enforces on what it reads: headers up to 128 KiB, payloads up to 24 MiB.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

CONTENT_TYPE = b"application/vnd.amazon.eventstream"
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024
#: Prelude (12 bytes) and message CRC (4 bytes).
OVERHEAD = 16

_PRELUDE = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_I64 = struct.Struct(">q")

HeaderValue = str | bytes | bool | int


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Headers in their wire form: strings (type 7), byte arrays (6), booleans (0/1), longs (5)."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"header name {name!r} must be 1-255 bytes")
        out.append(len(raw_name))
        out += raw_name
        if isinstance(value, bool):
            out.append(0 if value else 1)
        elif isinstance(value, int):
            out.append(5)
            out += _I64.pack(value)
        else:
            raw = value.encode() if isinstance(value, str) else value
            if len(raw) > 0xFFFF:
                raise ValueError(f"header {name!r} is longer than 65,535 bytes")
            out.append(7 if isinstance(value, str) else 6)
            out += _U16.pack(len(raw))
            out += raw
    if len(out) > MAX_HEADERS_BYTES:
        raise ValueError("headers exceed 128 KiB")
    return bytes(out)


def message(headers: bytes, payload: bytes = b"") -> bytes:
    """One framed message from encoded ``headers`` (``encode_headers``) and a payload."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError("payload exceeds 24 MiB")
    prelude = _PRELUDE.pack(OVERHEAD + len(headers) + len(payload), len(headers))
    prelude_crc = _U32.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(headers, zlib.crc32(prelude_crc, zlib.crc32(prelude))))
    return b"".join((prelude, prelude_crc, headers, payload, _U32.pack(crc)))


def _event_headers(event_type: str) -> bytes:
    return encode_headers({":message-type": "event", ":event-type": event_type, ":content-type": "application/json"})


_HEADERS: dict[str, bytes] = {}


def event(event_type: str, payload: bytes) -> bytes:
    """An event (``:message-type`` event) with a JSON payload."""
    headers = _HEADERS.get(event_type)
    if headers is None:
        headers = _HEADERS[event_type] = _event_headers(event_type)
    return message(headers, payload)


def initial_response(payload: bytes = b"{}") -> bytes:
    """The first message of an RPC-style event stream: the operation's non-stream output members."""
    return event("initial-response", payload)


def exception(name: str, payload: bytes) -> bytes:
    """A modelled exception (``:exception-type``): the stream ends after it."""
    return message(encode_headers({":message-type": "exception", ":exception-type": name,
                                   ":content-type": "application/json"}), payload)


def error(code: str, text: str) -> bytes:
    """An unmodelled error (``:error-code`` / ``:error-message``, no payload): the stream ends after it."""
    return message(encode_headers({":message-type": "error", ":error-code": code, ":error-message": text}))
