"""Reading a request body without letting a client decide how much memory it takes.

Invariants:

* No body larger than its limit is ever held: ``Content-Length`` is checked
  before the first byte is read, and the running total while chunks stream in
  (chunked bodies have no length up front).
* All requests being handled at once share one memory budget (``BodyBudget``):
  a request is charged its body size times what parsing can grow it to
  (``charge``) and waits for its share before its body is read, so a crowd of
  clients each sending just under the limit, or bodies made of empty objects
  (a 3-byte ``{},`` becomes a 64-byte dict), cannot exhaust memory; while a
  request waits the server stops reading its socket and TCP pushes back on
  the client.
* A gzip or deflate body inflates to at most ``max_decompressed`` bytes and at
  most ``max_ratio`` times its size on the wire, checked as it inflates (a
  small bomb is refused after inflating a bounded amount, never expanded in
  full), off the event loop when it is large.
* The SHA-256 that SigV4 needs is computed as chunks arrive, so the body is
  hashed once and never re-read for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from typing import Any

from firehose.asgi import Receive
from firehose.errors import SerializationException

#: Bodies at least this large are inflated on a worker thread instead of the event loop.
_INFLATE_OFF_LOOP = 64 * 1024


#: What parsing can grow a body to, per byte: ``{},`` (3 bytes) becomes a dict of about 64 bytes plus
#: a list slot; in CBOR an empty map is one byte.
JSON_GROWTH = 32
CBOR_GROWTH = 64


def charge(length: int, *, limit: int, inflated_limit: int, compressed: bool, ratio: int, growth: int) -> int:
    """The memory a request may come to need: its body (inflated, when compressed) as parsed."""
    size = limit if length < 0 else length
    if compressed:
        size = min(inflated_limit, size * ratio)
    return size * growth


class BodyTooLarge(Exception):
    """The body passed its limit; the rest was not read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds {limit} bytes.")
        self.limit = limit


class Disconnected(Exception):
    """The client went away before its body arrived."""


class BodyBudget:
    """Bytes of request bodies that may be held at once, shared by every request of a listener.

    A request larger than the whole budget still gets the whole budget (it
    then runs alone), so no request waits forever.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def acquire(self, size: int) -> int:
        size = min(size, self.total)
        if not self._waiters and size <= self.free:
            self.free -= size
            return size
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif not future.cancelled():
                self.release(size)  # granted while being cancelled
            raise
        return size

    def release(self, size: int) -> None:
        self.free += size
        while self._waiters and self._waiters[0][0] <= self.free:
            wanted, future = self._waiters.pop(0)
            if future.done():
                continue
            self.free -= wanted
            future.set_result(None)


async def read(receive: Receive, limit: int, digest: Any | None = None) -> bytes:
    """The whole body, refusing it as soon as it passes ``limit`` bytes; fed to ``digest`` (a hashlib
    object) chunk by chunk when one is given."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if digest is not None:
                digest.update(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: How much of a refused body is read (and thrown away) so that its client sees the 413 instead of a reset.
DRAIN_LIMIT = 64 * 1024 * 1024


async def discard(receive: Receive, length: int) -> bool:
    """Read and drop the rest of a refused body, up to ``DRAIN_LIMIT`` (none of it is kept), so the client,
    which is still sending, reads the answer instead of a connection reset. Returns False when the body is
    larger than that (the connection is then closed after the answer)."""
    if length > DRAIN_LIMIT:
        return False
    drained = 0
    while drained <= DRAIN_LIMIT:
        message = await receive()
        drained += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return True
    return False


def sha256() -> Any:
    return hashlib.sha256()


async def inflate(raw: bytes, encoding: str, *, max_size: int, max_ratio: int) -> bytes:
    """``raw`` decoded per ``Content-Encoding`` (identity, gzip, deflate), within the caps."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise SerializationException(f"Unsupported Content-Encoding {encoding!r}; send gzip, deflate or none.")
    if len(raw) >= _INFLATE_OFF_LOOP:
        return await asyncio.to_thread(_inflate, raw, encoding, max_size, max_ratio)
    return _inflate(raw, encoding, max_size, max_ratio)


def _wbits(raw: bytes, encoding: str) -> int:
    if encoding != "deflate":
        return zlib.MAX_WBITS | 16  # gzip
    # RFC 9110's "deflate" is the zlib format, but some clients send raw deflate: accept both.
    zlib_header = len(raw) >= 2 and (raw[0] & 0x0F) == 8 and int.from_bytes(raw[:2], "big") % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _inflate(raw: bytes, encoding: str, max_size: int, max_ratio: int) -> bytes:
    """Inflate at most one byte past the cap; reaching it means the body is refused."""
    cap = min(max_size, max(len(raw), 1) * max_ratio)
    inflater = zlib.decompressobj(_wbits(raw, encoding))
    try:
        out = inflater.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise SerializationException(f"The {encoding} request body is corrupt: {exc}") from None
    if len(out) > cap:
        if cap < max_size:
            raise SerializationException(
                f"The {encoding} request body inflates to more than {max_ratio} times its size; refused.")
        raise SerializationException(f"The {encoding} request body inflates to more than {max_size} bytes.")
    if not inflater.eof:
        raise SerializationException(f"The {encoding} request body is truncated.")
    return out
