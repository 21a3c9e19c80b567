"""Live copies of what delivery streams deliver, for ``firehose tap`` (as ``vector tap`` does).

The deliverer publishes each delivered batch's records (after the processing chain, as the
destination got them) and the records it sent to the error output; an operator endpoint streams
them to whoever follows the stream, one JSON line per record. It is built to cost nothing when no
one watches and never to slow delivery down when someone does:

* ``watching`` is one dict lookup: the deliverer builds nothing to publish unless it is true;
* each follower has a queue bounded in records and bytes, and there are at most ``MAX_FOLLOWERS``;
  a record that does not fit is counted and dropped, never waited for, and the follower is told
  how many it missed;
* ``sample`` (0 < rate <= 1) keeps that share of the records, chosen at random.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import orjson
import pybase64

#: Records, and bytes of them, a follower may be behind before the ones after are dropped (and counted):
#: a record is up to 1,000 KiB, so the byte bound is what keeps a follower's memory small.
QUEUE_RECORDS = 1000
QUEUE_BYTES = 4 * 1024 * 1024
#: Followers at once, over every stream: with the queue bounds, what taps can hold is bounded too.
MAX_FOLLOWERS = 16
#: An empty line after this many quiet seconds keeps the connection (and its proxies) alive.
HEARTBEAT_SECONDS = 5.0

DELIVERED = "delivered"
ERROR = "error"


@dataclass
class _Follower:
    queue: asyncio.Queue[bytes]
    errors: bool
    sample: float
    dropped: int = 0
    queued_bytes: int = 0


class TooManyFollowers(Exception):
    """``MAX_FOLLOWERS`` already follow; the caller should answer 503 and let the client retry."""


class Taps:
    """The followers of every stream. Used from the event loop only."""

    def __init__(self) -> None:
        self._followers: dict[str, list[_Follower]] = {}

    def watching(self, stream: str) -> bool:
        return stream in self._followers

    def full(self) -> bool:
        """Whether ``MAX_FOLLOWERS`` already follow (a new one would be refused)."""
        return sum(map(len, self._followers.values())) >= MAX_FOLLOWERS

    def publish(self, stream: str, kind: str, records: Iterable[bytes | memoryview]) -> None:
        """Offer ``records`` of ``stream`` (``delivered`` or ``error``) to its followers."""
        followers = [f for f in self._followers.get(stream, ()) if kind == DELIVERED or f.errors]
        if not followers:
            return
        for data in records:
            line: bytes | None = None
            for follower in followers:
                if follower.sample < 1.0 and random.random() >= follower.sample:
                    continue
                if line is None:
                    line = _line(stream, kind, bytes(data))
                if follower.queued_bytes + len(line) > QUEUE_BYTES or follower.queue.full():
                    follower.dropped += 1
                    continue
                follower.queue.put_nowait(line)
                follower.queued_bytes += len(line)

    async def follow(self, stream: str, *, errors: bool = False, sample: float = 1.0) -> AsyncIterator[bytes]:
        """JSON lines of ``stream``'s records as they are delivered, until the caller stops iterating.

        A line ``{"dropped": n}`` says that ``n`` records were skipped because the reader fell behind;
        an empty line is a heartbeat.
        """
        if self.full():
            raise TooManyFollowers(f"{MAX_FOLLOWERS} readers already follow delivery streams")
        follower = _Follower(asyncio.Queue(QUEUE_RECORDS), errors, sample)
        self._followers.setdefault(stream, []).append(follower)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(follower.queue.get(), HEARTBEAT_SECONDS)
                    follower.queued_bytes -= len(line)
                except TimeoutError:
                    line = b"\n"
                if follower.dropped:
                    yield orjson.dumps({"stream": stream, "dropped": follower.dropped}) + b"\n"
                    follower.dropped = 0
                yield line
        finally:
            followers = self._followers.get(stream, [])
            if follower in followers:
                followers.remove(follower)
            if not followers:
                self._followers.pop(stream, None)


def _line(stream: str, kind: str, data: bytes) -> bytes:
    """One record as a JSON line: its data as text when it is UTF-8, else as base64."""
    try:
        body: dict[str, str] = {"data": data.decode()}
    except UnicodeDecodeError:
        body = {"base64": pybase64.b64encode(data).decode()}
    return orjson.dumps({"stream": stream, "kind": kind, **body}) + b"\n"
