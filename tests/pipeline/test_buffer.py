"""Buffering hints: whichever of size and interval comes first; batches cut at record boundaries."""

from __future__ import annotations

from firehose.pipeline.buffer import Buffer
from firehose.spool import entry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_entry(seq: int, sizes: list[int], arrival_ms: int = 0) -> entry.RecordEntry:
    records = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    payload = b"".join(entry.encode(records, arrival_ms))
    return entry.decode(seq, memoryview(payload))


def test_entry_round_trip_keeps_records_and_arrival() -> None:
    e = make_entry(7, [3, 0, 5], arrival_ms=1234)
    assert e.seq == 7 and e.arrival_ms == 1234 and e.count == 3
    assert [bytes(e.record(i)) for i in range(3)] == [b"AAA", b"", b"CCCCC"]
    assert bytes(e.span(1, 3)) == b"CCCCC"
    assert e.size() == 8


def test_ready_when_size_reached() -> None:
    clock = FakeClock()
    buf = Buffer(size_bytes=100, interval_s=300, clock=clock)
    buf.add(make_entry(0, [40, 40]))
    assert not buf.ready()
    buf.add(make_entry(1, [30]))
    assert buf.ready()


def test_ready_when_interval_elapses_from_the_oldest_record() -> None:
    clock = FakeClock()
    buf = Buffer(size_bytes=1000, interval_s=60, clock=clock)
    assert buf.deadline() is None and not buf.ready()
    buf.add(make_entry(0, [10]))
    clock.now += 30
    buf.add(make_entry(1, [10]))
    clock.now += 29.9
    assert not buf.ready()
    assert buf.deadline() == 1060.0
    clock.now += 0.1
    assert buf.ready()


def test_interval_zero_is_ready_as_soon_as_anything_is_buffered() -> None:
    buf = Buffer(size_bytes=1000, interval_s=0, clock=FakeClock())
    assert not buf.ready()
    buf.add(make_entry(0, [1]))
    assert buf.ready()


def test_take_cuts_at_a_record_boundary_within_the_size() -> None:
    buf = Buffer(size_bytes=100, interval_s=0, clock=FakeClock())
    buf.add(make_entry(0, [30, 30, 30, 30]))  # 120 bytes
    first = buf.take()
    assert [(s.entry.seq, s.start, s.end) for s in first] == [(0, 0, 3)]
    assert sum(s.size for s in first) == 90
    assert buf.bytes == 30
    second = buf.take()
    assert [(s.entry.seq, s.start, s.end) for s in second] == [(0, 3, 4)]
    assert not buf


def test_take_spans_entries_and_keeps_order() -> None:
    buf = Buffer(size_bytes=50, interval_s=0, clock=FakeClock())
    buf.add(make_entry(0, [20]))
    buf.add(make_entry(1, [20, 20]))
    batch = buf.take()
    assert [(s.entry.seq, s.start, s.end) for s in batch] == [(0, 0, 1), (1, 0, 1)]
    assert [(s.entry.seq, s.start, s.end) for s in buf.take()] == [(1, 1, 2)]


def test_a_record_larger_than_the_size_hint_still_goes_out_alone() -> None:
    buf = Buffer(size_bytes=10, interval_s=0, clock=FakeClock())
    buf.add(make_entry(0, [25, 5]))
    assert [(s.start, s.end) for s in buf.take()] == [(0, 1)]
    assert [(s.start, s.end) for s in buf.take()] == [(1, 2)]


def test_add_from_a_record_index_skips_earlier_records() -> None:
    buf = Buffer(size_bytes=1000, interval_s=0, clock=FakeClock())
    buf.add(make_entry(0, [5, 6, 7]), start=1)
    assert buf.bytes == 13
    buf.add(make_entry(1, [5]), start=1)  # nothing left of this entry
    assert [(s.entry.seq, s.start) for s in buf.take()] == [(0, 1)]


def test_a_span_of_one_record_over_the_size_is_taken_whole_and_leaves_nothing_behind() -> None:
    """The last record of a span over the size alone: a batch of it, and no empty span (an empty batch) after."""
    buf = Buffer(size_bytes=100, interval_s=0, clock=FakeClock())
    e = make_entry(0, [10, 150])
    buf.add(e, 1)
    batch = buf.take()
    assert [(s.start, s.end) for s in batch] == [(1, 2)]
    assert not buf and buf.bytes == 0 and buf.take() == [] and buf.deadline() is None
