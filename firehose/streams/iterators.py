"""Shard iterators: opaque, signed, and expiring five minutes after they were issued.

An iterator names a position in one shard of one incarnation of a stream
(its creation time tells a stream deleted and created again apart). It is
signed with a key kept in the store's state directory, so an iterator stays
valid across a restart of the server while a forged or altered one is
refused, as AWS refuses it, with ``InvalidArgumentException``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import NamedTuple

TTL_MS = 5 * 60 * 1000
_MAC_BYTES = 16


class Iterator(NamedTuple):
    issued_ms: int
    stream: str
    stream_created_ms: int
    shard_index: int
    entry: int
    index: int


def issue(key: bytes, it: Iterator) -> str:
    body = "/".join(map(str, it)).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b64encode(mac + body).decode()


def parse(key: bytes, token: str) -> Iterator | None:
    """The iterator a token encodes, or None when it is malformed or not signed by ``key``."""
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
        return None
    try:
        return Iterator(*_fields(body.decode()))
    except (ValueError, UnicodeDecodeError):
        return None


def stream_of(token: str) -> str | None:
    """The stream a token names, read WITHOUT checking its signature (for authorization, before the
    store checks the token itself); None when it cannot be read."""
    try:
        body = base64.b64decode(token, validate=True)[_MAC_BYTES:].decode()
        return _fields(body)[1]
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _fields(body: str) -> tuple[int, str, int, int, int, int]:
    issued, rest = body.split("/", 1)
    stream, created, shard, entry, index = rest.rsplit("/", 4)
    return int(issued), stream, int(created), int(shard), int(entry), int(index)
