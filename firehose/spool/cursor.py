"""The sealed-batch protocol: a reader's narrow view of one stream's spool.

A ``BatchCursor`` is how the deliverer reads a stream's records and turns
them into batches. It owns everything about *where* reading is and what a
restart resumes from; the deliverer owns only its buffers, attempts and
retries. The protocol has five steps, and its invariants are stated here once:

1. **read** hands records to the reader in position order, starting at the
   *resume point*, and moves the read position past them only after the
   reader took them (so the low watermark never passes a record that is in no
   buffer and in no seal).
2. **seal** a batch (its partition, span of positions and full object key)
   and fsync that seal *before any byte of the batch is sent*: a batch sent
   again after a crash or a retry goes under the key it had the first time.
3. **done** is called only after the destination confirmed the whole batch,
   and is durable in the ledger *before* any spool segment it frees is
   deleted.
4. **release** deletes the segments every record of which is delivered (or
   held by an open seal's own ledger entry, never by data only an open seal
   needs): it happens inside ``done``, after the ledger write.
5. **restart**: the seals still open (``pending``) are delivered again from
   their own ledger entries, and reading resumes at the persisted low
   watermark, skipping the records a seal (open or done) already holds. A
   crash between any two steps therefore loses no record and delivers none
   twice under two keys (see ``tests/spool/test_cursor.py``, which crashes
   between every pair of steps).

The low watermark written with every seal and done is the smallest of: the
read position, the start of every open seal of this source (but the one
being marked done), and the oldest record the reader still holds in memory
(which the reader reports through its ``held`` callback).

A ``ProcessCursor`` is the same idea for the processing feeder (raw log →
processing chain → processed log): it resumes after whatever any mode
already consumed, and releases raw segments once their records are in a
durable processed entry and no open seal of an earlier mode needs them.

Both are used from one event loop; their blocking reads run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from firehose.partitions import DEFAULT_PARTITION
from firehose.records import Position
from firehose.spool import PROC, RAW, StreamSpool, entry
from firehose.spool.entry import RecordEntry, Span
from firehose.spool.ledger import Ledger, Seal

log = logging.getLogger("firehose.spool")

__all__ = ["BatchCursor", "ProcessCursor", "Seal", "sealed_through"]

_READ_CHUNK = 8 * 1024 * 1024

#: What a reader is handed: records [start, end) of one entry, all in one partition.
Sink = Callable[[str, RecordEntry, int, int], None]


def sealed_through(cursor: Position, cover: Sequence[Seal]) -> Position:
    """Where reading can resume: past the records that seals hold without a gap from ``cursor``.

    Only for the ``raw`` log, whose records are all in the default partition, so range seals
    of it hold every record between their ends. A backlog sealed before a restart is then read
    once (by its seals), not a second time only to find every record held.
    """
    for seal in sorted((s for s in cover if s.positions is None and s.partition == DEFAULT_PARTITION),
                       key=lambda s: s.start):
        if seal.start > cursor:
            break
        cursor = max(cursor, seal.end)
    return cursor


class _Cover:
    """What seals left by the previous run hold, so re-read records are not batched twice.

    Range seals hold every record of their partition in their span; overflow seals list
    their positions one by one. Built once at start: seals made by this run are never
    re-read, because reading only moves forward.
    """

    def __init__(self, cover: Sequence[Seal]) -> None:
        self.end: Position = max((s.end for s in cover), default=(0, 0))
        self._ranges = [(s.partition, s.start, s.end) for s in cover if s.positions is None]
        self._points: dict[int, set[int]] = {}
        for s in cover:
            for seq, i in s.positions or ():
                self._points.setdefault(seq, set()).add(i)

    def uncovered(self, e: RecordEntry, pid: str, start: int, end: int) -> list[tuple[int, int]]:
        """Index ranges of records [start, end) of ``e`` in partition ``pid`` that no seal holds."""
        if (e.seq, start) >= self.end:
            return [(start, end)]
        held: list[tuple[int, int]] = []
        for part, first, stop in self._ranges:
            if part != pid or stop <= (e.seq, start) or first >= (e.seq, end):
                continue
            held.append((max(start, first[1] if first[0] == e.seq else 0),
                         min(end, stop[1] if stop[0] == e.seq else end)))
        points = self._points.get(e.seq)
        if points:
            held.extend((i, i + 1) for i in points if start <= i < end)
        if not held:
            return [(start, end)]
        out: list[tuple[int, int]] = []
        run = start
        for a, b in sorted(held):
            if a > run:
                out.append((run, a))
            run = max(run, b)
        if run < end:
            out.append((run, end))
        return out


class BatchCursor:
    """One stream's sealed-batch protocol over the log of ``source`` (``raw`` or ``proc``).

    ``ledger``: a side reader's own ledger (``StreamSpool.side_ledger``) instead of the stream's.
    """

    def __init__(self, stream: StreamSpool, source: str, *, ledger: Ledger | None = None) -> None:
        self._spool = stream.owner
        self._stream = stream
        self.source = source
        self._log = stream.source(source)
        self._held: Callable[[], Position | None] = lambda: None
        ledger = ledger or stream.ledger
        self._ledger = ledger
        cover = ledger.covering(source)
        self._cover = _Cover(cover)
        position = ledger.low.get(source, (self._log.first_seq, 0))
        self._position: Position = sealed_through(position, cover) if source == RAW else position
        self._pending = ledger.pending()  # every source: seals left by a previous mode too
        # What the ledger already says is delivered goes now, not with the first batch: a spool that
        # was full of delivered records when it stopped must take records again at once.
        self.release()

    @property
    def position(self) -> Position:
        """Where the next read begins."""
        return self._position

    def holding(self, held: Callable[[], Position | None]) -> None:
        """Tell the cursor how to learn the oldest record the reader holds in memory (taken, not sealed).

        The low watermark never passes it: those records are in no seal yet.
        """
        self._held = held

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever new records are durable."""
        self._stream.subscribe(listener)

    # -- reading ----------------------------------------------------------------

    def has_unread(self) -> bool:
        return self._log.has_committed_from(self._position[0])

    async def read(self, max_bytes: int, into: Sink) -> None:
        """Hand up to about ``max_bytes`` of unread records to ``into``, then move past them.

        Records a seal of the previous run holds are skipped. ``into`` is called on the event
        loop, with no await between it and the move of the read position.
        """
        if max_bytes <= 0 or not self.has_unread():
            return
        seq, index = self._position
        got = await asyncio.to_thread(self._stream.read_frames, self.source, seq, min(max_bytes, _READ_CHUNK))
        for s, payload, path, offset in got:
            e = entry.decode(s, payload, (path, offset) if path else None)
            first = index if s == seq else 0
            for pid, start, end in e.partition_ranges():
                lo = max(start, first)
                if lo < end:
                    for a, b in self._cover.uncovered(e, pid, lo, end):
                        into(pid, e, a, b)
            self._position = (s + 1, 0)

    # -- sealing and completing ---------------------------------------------------

    def pending(self) -> list[Seal]:
        """Seals the previous run left open, oldest first, each to be delivered again (once)."""
        pending, self._pending = self._pending, []
        return pending

    def next_batch_id(self) -> int:
        """The id the next seal will get (it names nothing durable until ``seal`` returns)."""
        return self._ledger.next_batch_id

    async def seal(self, partition: str, start: Position, end: Position, key: str, sealed_ms: int,
                   meta: dict[str, Any], *, positions: tuple[Position, ...] | None = None) -> Seal:
        """Make a batch's seal durable; only then may any of it be sent."""
        return await self._ledger.seal(self.source, partition, start, end, key, sealed_ms, meta,
                                       positions=positions, low={self.source: self._low()})

    async def done(self, seal: Seal) -> None:
        """Record that the destination confirmed ``seal``'s batch, then free what it held.

        Safe to call again after it failed: a batch already done only moves the watermark.
        """
        await self._ledger.done([seal.batch_id], low={self.source: self._low(without=seal.batch_id)})
        try:
            self.release()
        except OSError as exc:  # the segments go with the next batch's release
            log.error("Could not delete delivered spool segments; retrying with the next batch.",
                      extra={"stream": self._stream.key, "error": str(exc)})

    def release(self) -> None:
        """Delete the segments every record of which is delivered (the ledger already says so)."""
        ledger = self._ledger
        self._spool.release(self._stream, self.source, ledger.release_point(self.source))
        if self.source == RAW:  # a processed log left from an earlier mode: only open seals hold it
            start = ledger.open_start(PROC)
            self._spool.release(self._stream, PROC, start or (self._stream.processed.committed_next_seq, 0))

    def _low(self, *, without: int | None = None) -> Position:
        """Every record of this source before this position is delivered (or dropped).

        ``without``: a batch about to be marked done, which no longer holds anything back.
        """
        candidates = [self._position]
        candidates += [s.start for s in self._ledger.open.values()
                       if s.source == self.source and s.batch_id != without]
        held = self._held()
        if held is not None:
            candidates.append(held)
        return min(candidates)

    # -- re-reading a sealed batch -------------------------------------------------

    async def read_sealed(self, seal: Seal) -> list[Span]:
        """A sealed batch's records, read again from the spool (after a restart); [] if gone."""
        return await asyncio.to_thread(self._read_sealed, seal)

    def _read_sealed(self, seal: Seal) -> list[Span]:
        explicit = [s for s in self._ledger.covering(seal.source) if s.positions is not None and s is not seal]
        spans: list[Span] = []
        seq = seal.start[0]
        while seq <= seal.end[0]:
            got = self._stream.read_frames(seal.source, seq, _READ_CHUNK)
            if not got:
                break
            for s, payload, path, offset in got:
                if s > seal.end[0]:
                    break
                e = entry.decode(s, payload, (path, offset) if path else None)
                for pid, lo, hi in e.partition_ranges():
                    if seal.positions is None and not explicit:
                        # A range seal with nothing carved out of it: its records in this entry are one
                        # index range, found without looking at each record (a backlog re-read after a
                        # restart goes through here, every record of it).
                        if pid == seal.partition:
                            first = max(lo, seal.start[1]) if s == seal.start[0] else lo
                            last = min(hi, seal.end[1]) if s == seal.end[0] else hi
                            if first < last:
                                spans.append(Span(e, first, last))
                        continue
                    run: int | None = None
                    for i in range(lo, hi):
                        held = seal.holds(seal.source, pid, (s, i)) and not any(
                            x.holds(seal.source, pid, (s, i)) for x in explicit)
                        if held and run is None:
                            run = i
                        elif not held and run is not None:
                            spans.append(Span(e, run, i))
                            run = None
                    if run is not None:
                        spans.append(Span(e, run, hi))
            seq = got[-1].seq + 1
        return spans


class ProcessCursor:
    """The raw log as the processing feeder reads it: raw → chain → processed entry.

    Invariant: a processed entry carries ``raw_end``, the raw position processed so far,
    in the same fsync as its records; processing resumes there after a crash, so no raw
    record is processed twice into the processed log and none is skipped. Raw segments
    are released once processed, except those an earlier mode's open seals still need.
    """

    def __init__(self, stream: StreamSpool) -> None:
        self._spool = stream.owner
        self._stream = stream
        self._position = self._resume()
        self._release(self._position)  # what was processed before the restart (see BatchCursor)

    def _resume(self) -> Position:
        """After whatever any mode already consumed: sealed, delivered or processed."""
        stream = self._stream
        ledger = stream.ledger
        candidates = [ledger.high.get(RAW, (0, 0)), ledger.low.get(RAW, (0, 0)), (stream.log.first_seq, 0)]
        last = stream.processed.committed_next_seq - 1
        if last >= 0:
            got = stream.read_frames(PROC, last, 1)
            if got:
                raw_end = entry.decode(got[0].seq, got[0].payload).raw_end
                if raw_end is not None:
                    candidates.append(raw_end)
        return max(candidates)

    @property
    def position(self) -> Position:
        return self._position

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._stream.subscribe(listener)

    def has_unread(self) -> bool:
        return self._stream.log.has_committed_from(self._position[0])

    async def read(self, max_bytes: int, into: Callable[[RecordEntry, int], None]) -> None:
        """Hand unread raw entries to ``into`` (with the first index not yet read), then move past them."""
        if max_bytes <= 0 or not self.has_unread():
            return
        seq, index = self._position
        got = await asyncio.to_thread(self._stream.read_frames, RAW, seq, min(max_bytes, _READ_CHUNK))
        for s, payload, _path, _offset in got:
            into(entry.decode(s, payload), index if s == seq else 0)
            self._position = (s + 1, 0)

    async def append(self, groups: Sequence[tuple[str, Sequence[tuple[bytes, int]]]], raw_end: Position) -> None:
        """Make one processed batch durable with the raw position it covers, then free the raw records."""
        payload = await asyncio.to_thread(entry.encode_processed, groups, raw_end)
        await self._spool.append_processed(self._stream, payload)
        self._release(raw_end)

    def _release(self, processed: Position) -> None:
        """Free raw segments processed before ``processed``, but those an earlier mode's open seals need."""
        held = self._stream.ledger.open_start(RAW)
        self._spool.release(self._stream, RAW, min(processed, held) if held else processed)
