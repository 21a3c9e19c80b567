"""No configuration wedges the spool: once its records are delivered its whole limit is free again,
also after a restart, and a backlog frees space while it is being delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firehose.errors import ServiceUnavailableException
from firehose.partitions import DEFAULT_PARTITION
from firehose.spool import RAW, Spool, StreamSpool, segment_size
from firehose.spool.cursor import BatchCursor
from firehose.spool.entry import RecordEntry

MiB = 1024 * 1024


@pytest.mark.parametrize(("max_bytes", "segment_bytes", "expected"), [
    (8 * MiB, 64 * MiB, 1 * MiB),  # an edge box's spool: eight segments, not one
    (48 * MiB, 64 * MiB, 6 * MiB),
    (1024 * MiB, 64 * MiB, 64 * MiB),  # the defaults are left alone
    (8 * MiB, 16 * 1024, 16 * 1024),  # smaller segments asked for are kept
])
def test_segments_are_at_most_an_eighth_of_the_spool(max_bytes: int, segment_bytes: int, expected: int) -> None:
    assert segment_size(max_bytes, segment_bytes) == expected


async def put(spool: Spool, stream: StreamSpool, size: int) -> None:
    record = b"r" * (size - 64)
    await spool.append(stream, [record], 1_700_000_000_000, len(record))


async def fill(spool: Spool, stream: StreamSpool, size: int) -> int:
    """Append ``size``-byte entries until the spool refuses one; how many it took."""
    n = 0
    while True:
        try:
            await put(spool, stream, size)
        except ServiceUnavailableException:
            return n
        n += 1


async def deliver_all(cursor: BatchCursor) -> None:
    """Read everything, seal it as one batch, and mark it delivered (what the deliverer does)."""
    got: list[tuple[RecordEntry, int, int]] = []
    while cursor.has_unread():
        await cursor.read(64 * MiB, lambda _pid, e, a, b: got.append((e, a, b)))
    (first, start, _), (last, _, end) = got[0], got[-1]
    seal = await cursor.seal(DEFAULT_PARTITION, (first.seq, start), (last.seq, end), f"k{first.seq}", 0, {})
    await cursor.done(seal)


def test_a_spool_smaller_than_a_segment_takes_large_puts_again_once_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool(tmp_path, max_bytes=8 * MiB, segment_bytes=64 * MiB)
        try:
            stream = spool.open_stream("s")
            assert spool.segment_bytes == MiB
            assert await fill(spool, stream, 512 * 1024) == 16
            assert (spool.refusal() or "").startswith("spool full")
            await deliver_all(BatchCursor(stream, RAW))
            assert spool.used_bytes == 0 and spool.refusal() is None
            await put(spool, stream, 4 * MiB)  # the largest PutRecordBatch
        finally:
            spool.close()

    asyncio.run(main())


def test_delivered_segments_kept_while_there_was_room_are_given_back_when_it_runs_out(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool(tmp_path, max_bytes=8 * MiB, segment_bytes=64 * MiB)
        try:
            stream = spool.open_stream("s")
            for _ in range(5):
                await put(spool, stream, 512 * 1024)
            await deliver_all(BatchCursor(stream, RAW))
            assert 0 < spool.used_bytes < MiB + 512 * 1024  # the active segment is kept: no pressure
            assert await fill(spool, stream, 512 * 1024) == 16  # refused once, given back, then full
        finally:
            spool.close()

    asyncio.run(main())


def test_a_spool_full_of_delivered_records_takes_records_at_once_after_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool(tmp_path, max_bytes=8 * MiB, segment_bytes=64 * MiB)
        stream = spool.open_stream("s")
        await fill(spool, stream, 512 * 1024)
        spool.release = lambda *_args, **_kw: 0  # type: ignore[method-assign]  # stopped before deleting
        await deliver_all(BatchCursor(stream, RAW))
        spool.close()

        spool = Spool(tmp_path, max_bytes=8 * MiB, segment_bytes=64 * MiB)
        try:
            stream = spool.open_stream("s")
            assert spool.used_bytes > 7 * MiB
            BatchCursor(stream, RAW)  # the pipeline starting
            assert spool.used_bytes == 0
            await put(spool, stream, 4 * MiB)
        finally:
            spool.close()

    asyncio.run(main())


def test_a_backlog_frees_space_as_its_oldest_records_are_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool(tmp_path, max_bytes=8 * MiB, segment_bytes=64 * MiB)
        try:
            stream = spool.open_stream("s")
            await fill(spool, stream, 256 * 1024)
            cursor = BatchCursor(stream, RAW)
            got: list[tuple[RecordEntry, int, int]] = []
            while cursor.has_unread():
                await cursor.read(64 * MiB, lambda _pid, e, a, b: got.append((e, a, b)))
            # Deliver the oldest MiB and a bit: one segment's worth of the backlog.
            head = got[:5]
            seal = await cursor.seal(DEFAULT_PARTITION, (head[0][0].seq, 0), (head[-1][0].seq, head[-1][2]), "k", 0, {})
            await cursor.done(seal)
            await put(spool, stream, 512 * 1024)  # taken while seven eighths of the backlog wait
        finally:
            spool.close()

    asyncio.run(main())
