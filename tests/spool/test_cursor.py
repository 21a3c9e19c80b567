"""The sealed-batch protocol at its interface: a crash between any two of its steps loses no
record and delivers none under two keys.

A crash here is what ``kill -9`` leaves: the spool object is abandoned without any shutdown
step (its files closed, nothing more written) and a new one is opened on the same directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from firehose.partitions import DEFAULT_PARTITION
from firehose.records import Position
from firehose.spool import PROC, RAW, Spool, StreamSpool, entry
from firehose.spool.cursor import BatchCursor, ProcessCursor
from firehose.spool.entry import RecordEntry, Span

STEPS = ("read", "seal", "send", "done")


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


class Reader:
    """The least a deliverer does: buffer what the cursor hands over, seal, send, mark done."""

    def __init__(self, cursor: BatchCursor, sent: dict[str, list[bytes]]) -> None:
        self.cursor = cursor
        self.sent = sent
        self.buffer: list[Span] = []
        cursor.holding(self.oldest)
        self.sealed: list[tuple[object, list[Span]]] = []

    def oldest(self) -> Position | None:
        return (self.buffer[0].entry.seq, self.buffer[0].start) if self.buffer else None

    def take(self, pid: str, e: RecordEntry, start: int, end: int) -> None:
        self.buffer.append(Span(e, start, end))

    async def read(self, max_bytes: int = 1 << 20) -> None:
        await self.cursor.read(max_bytes, self.take)

    async def seal(self, records: int) -> None:
        """Seal the next ``records`` buffered records as one batch."""
        spans: list[Span] = []
        while records and self.buffer:
            span = self.buffer[0]
            n = min(records, span.end - span.start)
            spans.append(Span(span.entry, span.start, span.start + n))
            records -= n
            if span.start + n == span.end:
                self.buffer.pop(0)
            else:
                span.start += n
        assert spans, "nothing buffered to seal"
        start, end = (spans[0].entry.seq, spans[0].start), (spans[-1].entry.seq, spans[-1].end)
        seal = await self.cursor.seal(DEFAULT_PARTITION, start, end, f"key-{start[0]}-{start[1]}", 0, {})
        self.sealed.append((seal, spans))

    def send(self) -> None:
        seal, spans = self.sealed[0]
        self.sent[seal.key] = records_of(spans)  # a second send of a key overwrites, as S3 does

    async def done(self) -> None:
        seal, _spans = self.sealed.pop(0)
        await self.cursor.done(seal)

    async def finish(self) -> None:
        """What a restarted deliverer does: deliver the open seals again, then everything unread."""
        for seal in self.cursor.pending():
            spans = await self.cursor.read_sealed(seal)
            self.sent[seal.key] = records_of(spans)
            await self.cursor.done(seal)
        while self.cursor.has_unread() or self.buffer:
            await self.read()
            if self.buffer:
                await self.seal(1 << 30)
                self.send()
                await self.done()


def records_of(spans: list[Span]) -> list[bytes]:
    return [bytes(s.entry.record(i)) for s in spans for i in range(s.start, s.end)]


def all_records(entries: int = 4, per: int = 5) -> list[list[bytes]]:
    return [[b"e%d-r%d" % (n, i) for i in range(per)] for n in range(entries)]


async def append(spool: Spool, stream: StreamSpool, batches: list[list[bytes]]) -> None:
    for records in batches:
        await spool.append(stream, records, 1_700_000_000_000, sum(map(len, records)))


def open_spool(root: Path) -> tuple[Spool, StreamSpool]:
    spool = Spool(root, max_bytes=1 << 30, segment_bytes=200)  # small segments: release deletes files
    return spool, spool.open_stream("s")


def assert_each_record_once(sent: dict[str, list[bytes]], batches: list[list[bytes]]) -> None:
    delivered = [r for records in sent.values() for r in records]
    expected = [r for records in batches for r in records]
    assert sorted(delivered) == sorted(expected), "a record was lost or went under two keys"


def crash_points() -> Iterator[int]:
    """After step k of a run that delivers two batches (eight steps)."""
    yield from range(2 * len(STEPS) + 1)


async def run_until_crash(root: Path, sent: dict[str, list[bytes]], batches: list[list[bytes]],
                          steps: Callable[[Reader, Spool], Awaitable[None]]) -> None:
    """Spool ``batches``, run ``steps`` with a reader, then crash: close the files, write nothing more."""
    spool, stream = open_spool(root)
    try:
        await append(spool, stream, batches)
        await steps(Reader(BatchCursor(stream, RAW), sent), spool)
    finally:
        spool.close()


async def restart_and_finish(root: Path, sent: dict[str, list[bytes]], *, more: list[list[bytes]] | None = None,
                             check: Callable[[BatchCursor], None] | None = None) -> None:
    """Open the spool again, as the next start does, and deliver everything (``more`` spooled first)."""
    spool, stream = open_spool(root)
    try:
        cursor = BatchCursor(stream, RAW)
        if check is not None:
            check(cursor)
        await append(spool, stream, more or [])
        await Reader(cursor, sent).finish()
        assert not stream.ledger.pending()
    finally:
        spool.close()


@pytest.mark.parametrize("crash_after", list(crash_points()))
def test_a_crash_between_any_two_steps_loses_nothing_and_repeats_nothing(tmp_path: Path, crash_after: int) -> None:
    batches = all_records()
    sent: dict[str, list[bytes]] = {}

    async def steps(reader: Reader, _spool: Spool) -> None:
        for step in ([reader.read, lambda: reader.seal(7), reader.send, reader.done] * 2)[:crash_after]:
            result = step()
            if asyncio.iscoroutine(result):
                await result

    asyncio.run(run_until_crash(tmp_path, sent, batches, steps))
    keys_before = dict(sent)
    asyncio.run(restart_and_finish(tmp_path, sent))
    assert_each_record_once(sent, batches)
    for key, records in keys_before.items():  # a batch sent again went under the same key, byte-identical
        assert sent[key] == records


def test_a_seal_torn_by_a_crash_is_as_if_never_made(tmp_path: Path) -> None:
    """A seal whose fsync never returned was never acted on; after the crash its records are unsealed."""
    batches = all_records()
    sent: dict[str, list[bytes]] = {}

    async def steps(reader: Reader, _spool: Spool) -> None:
        await reader.read()
        await reader.seal(7)

    asyncio.run(run_until_crash(tmp_path, sent, batches, steps))
    [segment] = sorted((tmp_path / "s" / "ledger").glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-3])  # the seal's frame, cut short

    def unsealed(cursor: BatchCursor) -> None:
        assert cursor.pending() == [] and cursor.position == (0, 0)

    asyncio.run(restart_and_finish(tmp_path, sent, check=unsealed))
    assert_each_record_once(sent, batches)


def test_done_is_durable_before_a_segment_is_deleted(tmp_path: Path) -> None:
    """A crash after the ledger's done and before the release leaves the segments, and nothing pending."""
    batches = all_records()
    sent: dict[str, list[bytes]] = {}

    async def steps(reader: Reader, spool: Spool) -> None:
        await reader.read()
        await reader.seal(20)
        reader.send()

        def crash(*_args: object) -> int:
            raise Crash
        spool.release = crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await reader.done()

    asyncio.run(run_until_crash(tmp_path, sent, batches, steps))
    segments = sorted((tmp_path / "s" / "records").glob("*.seg"))
    assert len(segments) > 1, "the records are still on disk"

    def done_already(cursor: BatchCursor) -> None:
        assert cursor.pending() == [] and not cursor.has_unread()

    asyncio.run(restart_and_finish(tmp_path, sent, more=[[b"later"]], check=done_already))
    assert_each_record_once(sent, [*batches, [b"later"]])
    assert not set(segments) & set((tmp_path / "s" / "records").glob("*.seg")), "released with the next batch"


def test_the_low_watermark_never_passes_a_buffered_record(tmp_path: Path) -> None:
    """Records read but not sealed are held back by the reader: a crash re-reads them."""
    batches = all_records()
    sent: dict[str, list[bytes]] = {}

    async def steps(reader: Reader, spool: Spool) -> None:
        await reader.read()
        await reader.seal(3)
        reader.send()
        await reader.done()  # moves the watermark, but only to the oldest buffered record
        assert spool.open_stream("s").ledger.low[RAW] == (0, 3)

    def resumes_at_the_buffer(cursor: BatchCursor) -> None:
        assert cursor.position == (0, 3)

    asyncio.run(run_until_crash(tmp_path, sent, batches, steps))
    asyncio.run(restart_and_finish(tmp_path, sent, check=resumes_at_the_buffer))
    assert_each_record_once(sent, batches)


def test_a_sealed_backlog_is_read_once_after_a_restart(tmp_path: Path) -> None:
    """Reading resumes past records that open seals hold without a gap (raw log only)."""
    batches = all_records()

    async def scenario() -> None:
        spool, stream = open_spool(tmp_path)
        await append(spool, stream, batches)
        reader = Reader(BatchCursor(stream, RAW), {})
        await reader.read()
        await reader.seal(5)
        await reader.seal(5)  # two open seals: entries 0 and 1 whole
        spool.close()
        spool, stream = open_spool(tmp_path)
        cursor = BatchCursor(stream, RAW)
        assert cursor.position == (1, 5)  # the end of the second seal: entry 2 is next
        assert [s.key for s in cursor.pending()] == ["key-0-0", "key-1-0"]
        assert cursor.pending() == [], "each open seal is handed out once"
        spool.close()

    asyncio.run(scenario())


def test_processing_resumes_after_the_last_processed_entry(tmp_path: Path) -> None:
    """The processed entry and the raw position it covers are one fsync: a crash before it
    processes the batch again, a crash after it does not."""
    batches = all_records()

    async def scenario() -> None:
        spool, stream = open_spool(tmp_path)
        await append(spool, stream, batches)
        feeder = ProcessCursor(stream)
        taken: list[tuple[RecordEntry, int]] = []
        await feeder.read(1 << 20, lambda e, first: taken.append((e, first)))
        assert [e.seq for e, _ in taken] == [0, 1, 2, 3] and feeder.position == (4, 0)
        spool.close()  # crash before the processed entry: nothing was consumed

        spool, stream = open_spool(tmp_path)
        feeder = ProcessCursor(stream)
        assert feeder.position == (0, 0)
        groups = [(DEFAULT_PARTITION, [(b"x", 1)])]
        await feeder.append(groups, (2, 0))  # the first two raw entries, processed
        spool.close()

        spool, stream = open_spool(tmp_path)
        feeder = ProcessCursor(stream)
        assert feeder.position == (2, 0)
        got = stream.processed.read(0, 1 << 20)
        assert [entry.decode(s, p).raw_end for s, p in got] == [(2, 0)]
        cursor = BatchCursor(stream, PROC)
        assert cursor.has_unread()
        spool.close()

    asyncio.run(scenario())
