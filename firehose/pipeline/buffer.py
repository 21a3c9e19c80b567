"""Size-or-interval buffering (Firehose ``BufferingHints``) for one partition.

A buffer holds spans of spooled records (never copies of them) and is ready
when its bytes reach the size hint or its oldest span has waited the interval,
whichever comes first. An interval of 0 means "ready as soon as anything is
buffered". ``take`` cuts a batch at a record boundary so that it stays within
the size hint (a record is never split; a batch always has at least one
record), leaving the rest for the next batch.

Time comes from an injected monotonic clock so tests can drive it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from firehose.records import Position
from firehose.spool.entry import RecordEntry, Span

Clock = Callable[[], float]


class Buffer:
    def __init__(self, size_bytes: int, interval_s: float, clock: Clock) -> None:
        self.size_bytes = size_bytes
        self.interval_s = interval_s
        self._clock = clock
        self._spans: deque[Span] = deque()
        self._added: deque[float] = deque()  # when each span entered the buffer
        self.bytes = 0

    def reconfigure(self, size_bytes: int, interval_s: float) -> None:
        self.size_bytes = size_bytes
        self.interval_s = interval_s

    def __bool__(self) -> bool:
        return bool(self._spans)

    def add(self, entry: RecordEntry, start: int = 0, end: int | None = None) -> None:
        """Buffer records [start, end) of an entry (to its end by default)."""
        end = entry.count if end is None else end
        if start >= end:
            return
        span = Span(entry, start, end)
        self._spans.append(span)
        self._added.append(self._clock())
        self.bytes += span.size

    def oldest(self) -> Position | None:
        """Position of the oldest buffered record (None when empty)."""
        if not self._spans:
            return None
        span = self._spans[0]
        return (span.entry.seq, span.start)

    def oldest_arrival_ms(self) -> int | None:
        """Arrival (epoch ms) of the oldest buffered record (None when empty)."""
        if not self._spans:
            return None
        span = self._spans[0]
        return span.entry.arrival(span.start)

    def deadline(self) -> float | None:
        """Monotonic time at which the interval elapses (None when empty)."""
        if not self._added:
            return None
        return self._added[0] + self.interval_s

    def ready(self) -> bool:
        if not self._spans:
            return False
        if self.bytes >= self.size_bytes:
            return True
        deadline = self.deadline()
        return deadline is not None and self._clock() >= deadline

    def restore(self, spans: list[Span]) -> None:
        """Put back a batch that ``take`` cut and that could not be sealed, ahead of the rest.

        Without this, records taken but never sealed would be in no buffer and no batch, and so
        would no longer hold the spool's low watermark: a later batch's release could drop them.
        """
        now = self._clock()
        for span in reversed(spans):
            self._spans.appendleft(span)
            self._added.appendleft(now - self.interval_s)  # it was ready once: ready again at once
            self.bytes += span.size

    def take(self) -> list[Span]:
        """Cut the next batch: at most ``size_bytes`` (but at least one record)."""
        out: list[Span] = []
        room = self.size_bytes
        while self._spans:
            span = self._spans[0]
            if span.size <= room:
                out.append(self._spans.popleft())
                self._added.popleft()
                room -= span.size
                self.bytes -= span.size
                continue
            # Split the span at the last record that still fits (at least one
            # record in the batch overall); the rest keeps its time in the buffer.
            offsets = span.entry.offsets
            cut = span.start
            while cut < span.end and offsets[cut + 1] - offsets[span.start] <= room:
                cut += 1
            if cut == span.start and not out:
                cut = span.start + 1
            if cut > span.start:
                head = Span(span.entry, span.start, cut)
                out.append(head)
                self.bytes -= head.size
                span.start = cut
                if span.start >= span.end:  # its one record was over the size: nothing is left of it
                    self._spans.popleft()
                    self._added.popleft()
            break
        return out
