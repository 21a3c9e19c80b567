"""Batches of spooled records know where their bytes lie on disk, so a worker process can read a
batch there (``read_ranges``) instead of being sent it through a pipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from firehose.pipeline.spans import SpanRecords
from firehose.records import FileRange, read_ranges
from firehose.spool import entry
from firehose.spool.entry import Span
from firehose.storage.log import SegmentLog


def spans_from(log: SegmentLog) -> list[Span]:
    """Every record of the log but the first and last, as the deliverer buffers them."""
    entries = [entry.decode(f.seq, f.payload, (f.path, f.offset)) for f in log.read_frames(0, 1 << 30)]
    spans = [Span(e, 0, e.count) for e in entries]
    spans[0] = Span(entries[0], 1, entries[0].count)
    spans[-1] = Span(entries[-1], 0, entries[-1].count - 1)
    return spans


@pytest.fixture
def spooled(tmp_path: Path) -> SegmentLog:
    log = SegmentLog(tmp_path / "records", segment_bytes=300)  # the batch crosses segment files
    for n in range(6):
        log.write([entry.encode([b'{"n": %d, "i": %d}\n' % (n, i) for i in range(5)], 1_700_000_000_000 + n)])
    log.sync()
    return log


def test_the_extents_of_a_batch_hold_exactly_its_records(spooled: SegmentLog) -> None:
    records = SpanRecords(spans_from(spooled))
    extents = records.extents()
    assert extents is not None
    assert len({r.path for r in extents}) > 1
    assert bytes(read_ranges(extents)) == b"".join(records.parts())
    assert read_ranges(extents).count(b"\n") == 6 * 5 - 2
    # Spans that meet in one entry are one range.
    e = records.spans[2].entry
    assert SpanRecords([Span(e, 0, 2), Span(e, 2, 5)]).extents() == (e.extent(0, 5),)


def test_a_range_past_the_end_of_its_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "short"
    f.write_bytes(b"0123456789")
    assert read_ranges([FileRange(str(f), 2, 5), FileRange(str(f), 0, 2)]) == b"2345601"
    with pytest.raises(OSError, match="ends before offset 12"):
        read_ranges([FileRange(str(f), 4, 8)])
    with pytest.raises(FileNotFoundError):
        read_ranges([FileRange(str(tmp_path / "gone"), 0, 1)])
