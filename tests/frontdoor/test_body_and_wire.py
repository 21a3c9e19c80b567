"""The front door's body handling and wire forms, piece by piece: budget pools, inflation, parsing limits."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import cbor2
import pytest

from firehose.errors import SerializationException
from firehose.frontdoor import body, wire


def _receive(*chunks: bytes) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)
    return receive


def test_a_body_is_charged_its_declared_length_when_its_first_bytes_arrive() -> None:
    async def scenario() -> None:
        budget = body.MemoryBudget(4 * 1024)  # reading pool 1 KiB, parsing pool 3 KiB
        silent = budget.request()
        assert budget.reading.free == 1024 and silent.read == 0  # nothing held before a byte arrives
        first = budget.request()
        raw = await body.read(_receive(b"ab", b"cd"), 1000, first, length=600)
        assert raw == b"abcd" and first.read == 600 and budget.reading.free == 424
        second = budget.request()
        waiting = asyncio.ensure_future(body.read(_receive(b"x"), 1000, second, length=500))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # 500 do not fit beside the 600 held: it waits, unread
        first.done_reading()
        assert await asyncio.wait_for(waiting, 1) == b"x" and second.read == 500
        await second.parsing(10_000)  # more than the whole pool: it takes the whole pool and runs alone
        assert second.parse == 3072 and budget.parsing.free == 0
        second.release()
        first.release()
        assert (budget.reading.free, budget.parsing.free) == (1024, 3072)
    asyncio.run(scenario())


def test_a_body_over_its_limit_is_refused_as_it_streams_in() -> None:
    async def scenario() -> None:
        held = body.MemoryBudget(1 << 20).request()
        with pytest.raises(body.BodyTooLarge):
            await body.read(_receive(b"a" * 600, b"b" * 600, b"c"), 1000, held)
    asyncio.run(scenario())


def test_gzip_members_inflate_within_the_caps_and_nothing_may_follow_them() -> None:
    async def inflate(raw: bytes, encoding: str = "gzip", size: int = 1 << 20, ratio: int = 200) -> bytes:
        return await body.inflate(raw, encoding, max_size=size, max_ratio=ratio)

    one, two = gzip.compress(b"first "), gzip.compress(b"second")
    assert asyncio.run(inflate(one + two)) == b"first second"
    with pytest.raises(SerializationException, match="corrupt"):
        asyncio.run(inflate(one + b"junk"))
    with pytest.raises(SerializationException, match="truncated"):
        asyncio.run(inflate(one[:-4]))
    bomb = gzip.compress(b"\0" * (4 << 20))
    with pytest.raises(SerializationException, match="more than 200 times its size"):
        asyncio.run(inflate(bomb))
    with pytest.raises(SerializationException, match="more than 1000 bytes"):
        asyncio.run(inflate(gzip.compress(b"x" * 2000), ratio=10**6, size=1000))
    assert asyncio.run(inflate(zlib.compress(b"zlib"), "deflate")) == b"zlib"
    raw_deflate = zlib.compressobj(wbits=-15)
    assert asyncio.run(inflate(raw_deflate.compress(b"raw") + raw_deflate.flush(), "deflate")) == b"raw"


def test_nesting_and_container_limits() -> None:
    assert wire.decode(b'{"a": [[[1]]]}', cbor=False, max_depth=4) == {"a": [[[1]]]}
    with pytest.raises(SerializationException, match="more than 3 deep"):
        wire.decode(b'{"a": [[[1]]]}', cbor=False, max_depth=3)
    wide = b'{"a": [' + b",".join([b"{}"] * 5000) + b"]}"
    assert len(wire.decode(wide, cbor=False, max_depth=3)["a"]) == 5000  # wide is not deep
    with pytest.raises(SerializationException, match="more than 4000 objects and arrays"):
        wire.decode(wide, cbor=False, max_depth=3, max_containers=4000)
    with pytest.raises(SerializationException, match="Start of list"):
        wire.decode(b"[1]", cbor=False, max_depth=64)


def test_cbor_takes_timestamps_and_refuses_every_other_tag() -> None:
    stamp = wire.decode(cbor2.dumps({"T": cbor2.CBORTag(1, 1_700_000_000_123)}), cbor=True, max_depth=64)
    assert stamp == {"T": 1_700_000_000.123}
    shared: list[Any] = []
    for _ in range(40):  # 2^40 paths in a few hundred bytes, if references were followed
        shared = [shared, shared]
    for value in (cbor2.dumps({"S": shared}, value_sharing=True), cbor2.dumps({"R": cbor2.CBORTag(35, "a+")}),
                  cbor2.dumps({"X": cbor2.CBORTag(999, 1)})):
        with pytest.raises(SerializationException, match="^$"):  # refused bare, as AWS refuses unreadable bodies
            wire.decode(value, cbor=True, max_depth=64)
