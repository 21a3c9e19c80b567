"""A batch's records as spans of spooled entries, read by the encoding stage without copies.

``SpanRecords`` is the pipeline's side of ``firehose.encoding.builder.Records``:
the encoding stage never sees the spool, only record bytes (views into the
entries the deliverer read) and arrival times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firehose.records import FileRange
from firehose.spool.entry import Span


@dataclass(frozen=True)
class SpanRecords:
    """A batch's records, as spans of spooled entries (no copies)."""

    spans: Sequence[Span]

    def parts(self) -> list[memoryview]:
        """Contiguous runs of record bytes, for concatenated output."""
        return [s.entry.span(s.start, s.end) for s in self.spans]

    def extents(self) -> tuple[FileRange, ...] | None:
        """Where ``parts`` lie on disk (adjacent ranges merged), or None if some records were not
        read from a spool file."""
        out: list[FileRange] = []
        for s in self.spans:
            r = s.entry.extent(s.start, s.end)
            if r is None:
                return None
            if out and out[-1].path == r.path and out[-1].offset + out[-1].length == r.offset:
                r = FileRange(r.path, out[-1].offset, out[-1].length + r.length)
                out.pop()
            out.append(r)
        return tuple(out)

    def each(self) -> list[memoryview]:
        return [s.entry.record(i) for s in self.spans for i in range(s.start, s.end)]

    def arrivals(self) -> list[int]:
        return [s.entry.arrival(i) for s in self.spans for i in range(s.start, s.end)]

    @property
    def count(self) -> int:
        return sum(s.end - s.start for s in self.spans)

    @property
    def first_arrival_ms(self) -> int:
        return min((s.entry.first_arrival(s.start, s.end) for s in self.spans), default=0)
