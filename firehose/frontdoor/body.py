"""Reading a request body without letting a client decide how much memory it takes.

Invariants:

* No body larger than its limit is ever held: ``Content-Length`` is checked
  before the first byte is read, and the running total while chunks stream in
  (chunked bodies have no length up front).
* All requests being handled at once share one memory budget
  (``MemoryBudget``), in two pools so that neither can wait on the other in a
  circle. When a body's first bytes arrive, its declared length (the API's
  limit when it has none, as a chunked body) is taken from the *reading* pool
  at once: a client that sends nothing holds nothing, and no request ever
  holds part of its body's share while waiting for the rest (which could
  leave every reader waiting on the others). When the pool is full the
  request waits before reading on, the server stops reading its socket, and
  TCP pushes back on the client. Once the body is complete, what
  parsing can grow it to (``{},``, three bytes, becomes a dict of about 64;
  a one-byte empty CBOR map one of about 140) is charged to the *parsing*
  pool before it is parsed, and the reading share is returned once the body
  is parsed. Parsing-pool holders never wait for anything, so every waiter is
  eventually served.
* A gzip or deflate body inflates to at most ``max_size`` bytes and at most
  ``max_ratio`` times its size on the wire, checked as it inflates (a small
  bomb is refused after inflating a bounded amount, never expanded in full),
  off the event loop when it is large. Concatenated gzip members are each
  inflated, within the same caps; data after the last one is refused.
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

#: What parsing can grow a body to, per byte (measured with bodies made only of empty containers, the
#: worst case: ``[{},{},...]`` in JSON, ``0xa0`` maps in CBOR).
JSON_GROWTH = 40
CBOR_GROWTH = 160
#: The share of ``limits.max_request_memory`` bodies being read may hold; parsing has the rest.
_READING_SHARE = 4


class BodyTooLarge(Exception):
    """The body passed its limit; the rest was not read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds {limit} bytes.")
        self.limit = limit


class Disconnected(Exception):
    """The client went away before its body arrived."""


class Pool:
    """Bytes that may be held at once; acquirers wait first come, first served.

    A request larger than the whole pool still gets the whole pool (it then
    runs alone), so no request waits forever.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def acquire(self, size: int) -> int:
        """Take ``size`` bytes (at most the whole pool), waiting until they are free; returns what was taken."""
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


class MemoryBudget:
    """``limits.max_request_memory`` of one listener: a pool for bodies being read, one for parsing them."""

    def __init__(self, total: int) -> None:
        self.reading = Pool(total // _READING_SHARE)
        self.parsing = Pool(total - total // _READING_SHARE)

    def request(self) -> Held:
        return Held(self)


class Held:
    """One request's share of the budget; ``release`` returns all of it (call it once the request is done)."""

    __slots__ = ("budget", "read", "parse")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.read = self.parse = 0

    async def reading(self, size: int) -> None:
        self.read += await self.budget.reading.acquire(size)

    async def parsing(self, size: int) -> None:
        """Charge what parsing the complete body can grow to (only once the body is read)."""
        self.parse += await self.budget.parsing.acquire(size)

    def done_reading(self) -> None:
        """The raw body is parsed and dropped: its reading share goes back."""
        if self.read:
            self.budget.reading.release(self.read)
            self.read = 0

    def release(self) -> None:
        self.done_reading()
        if self.parse:
            self.budget.parsing.release(self.parse)
            self.parse = 0


async def read(receive: Receive, limit: int, held: Held, digest: Any | None = None, *, length: int = -1
               ) -> bytes:
    """The whole body, refusing it as soon as it passes ``limit`` bytes; when its first bytes arrive, its
    ``length`` (``limit`` when unknown) is charged to ``held``; fed to ``digest`` (a hashlib object) when
    one is given."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk = message.get("body", b"")
        if chunk:
            if not size:
                await held.reading(length if length >= 0 else limit)
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


async def inflate_charged(raw: bytes, encoding: str, held: Held, *, max_size: int, max_ratio: int) -> bytes:
    """``inflate``, once the parsing pool has given ``held`` the most the body may inflate to."""
    if encoding in ("", "identity"):
        return raw
    await held.parsing(min(max_size, len(raw) * max_ratio))
    return await inflate(raw, encoding, max_size=max_size, max_ratio=max_ratio)


def _wbits(raw: bytes, encoding: str) -> int:
    if encoding != "deflate":
        return zlib.MAX_WBITS | 16  # gzip
    # RFC 9110's "deflate" is the zlib format, but some clients send raw deflate: accept both.
    zlib_header = len(raw) >= 2 and (raw[0] & 0x0F) == 8 and int.from_bytes(raw[:2], "big") % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _inflate(raw: bytes, encoding: str, max_size: int, max_ratio: int) -> bytes:
    """Inflate at most one byte past the cap; reaching it means the body is refused."""
    cap = min(max_size, max(len(raw), 1) * max_ratio)
    wbits = _wbits(raw, encoding)
    parts: list[bytes] = []
    size, rest = 0, raw
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(rest, cap - size + 1)
        except zlib.error as exc:
            raise SerializationException(f"The {encoding} request body is corrupt: {exc}") from None
        size += len(out)
        if size > cap:
            if cap < max_size:
                raise SerializationException(
                    f"The {encoding} request body inflates to more than {max_ratio} times its size; refused.")
            raise SerializationException(f"The {encoding} request body inflates to more than {max_size} bytes.")
        if not inflater.eof:
            raise SerializationException(f"The {encoding} request body is truncated.")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if encoding == "deflate":
            raise SerializationException("The deflate request body has data after its end.")
