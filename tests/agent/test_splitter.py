"""Cutting records: partial lines, header lines, multi-line records, footers, truncation, offsets."""

from __future__ import annotations

import re

from firehose.agent.splitter import Splitter


def feed_all(s: Splitter, *parts: bytes) -> tuple[list[bytes], list[int]]:
    records: list[bytes] = []
    ends: list[int] = []
    for p in parts:
        r, e = s.feed(p)
        records += r
        ends += e
    return records, ends


def test_lines_across_reads_keep_their_newline_and_offsets() -> None:
    s = Splitter(offset=0, max_record=100)
    records, ends = feed_all(s, b"one\ntw", b"o\nthr", b"ee")
    assert records == [b"one\n", b"two\n"]
    assert ends == [4, 8]
    assert s.safe_offset == 8  # "three" has no newline yet: a restart reads it again
    assert s.feed(b"\n") == ([b"three\n"], [14])


def test_resumed_offsets_are_absolute() -> None:
    s = Splitter(offset=1000, max_record=100, skip_header_lines=2)  # resumed: past the header already
    assert s.feed(b"a\nb\n") == ([b"a\n", b"b\n"], [1002, 1004])


def test_header_lines_are_skipped_at_the_start_of_a_file() -> None:
    s = Splitter(offset=0, max_record=100, skip_header_lines=2)
    records, ends = feed_all(s, b"h1\nh", b"2\nrow1\nrow2\n")
    assert records == [b"row1\n", b"row2\n"]
    assert ends == [11, 16]


def test_multi_line_records_by_start_pattern() -> None:
    s = Splitter(offset=0, max_record=1000, start_pattern=re.compile(rb"^\d{4}-"))
    text = (b"2024-01-01 first\n  at a\n  at b\n2024-01-01 second\n2024-01-01 third\n  more\n")
    records, ends = s.feed(text)
    assert records == [b"2024-01-01 first\n  at a\n  at b\n", b"2024-01-01 second\n"]
    assert ends == [31, 49]
    assert s.safe_offset == 49  # "third" may still get continuation lines
    assert s.flush(partial=False) == ([b"2024-01-01 third\n  more\n"], [len(text)])
    assert s.safe_offset == len(text)


def test_footer_ends_the_file() -> None:
    s = Splitter(offset=0, max_record=100, footer_pattern=re.compile(rb"^END"))
    records, _ = s.feed(b"a\nEND of log\nb\n")
    assert records == [b"a\n"]
    assert s.finished and s.feed(b"c\n") == ([], [])


def test_oversized_lines_are_truncated_with_the_terminator() -> None:
    s = Splitter(offset=0, max_record=10, terminator=b"...\n")
    records, ends = s.feed(b"short\n" + b"x" * 25 + b"\nok\n")
    assert records == [b"short\n", b"xxxxxx...\n", b"ok\n"]
    assert ends == [6, 32, 35]
    assert s.truncated == 1


def test_a_huge_line_is_not_held_in_memory() -> None:
    s = Splitter(offset=0, max_record=1000)
    for _ in range(100):
        assert s.feed(b"y" * 10_000) == ([], [])
    assert len(s._partial) <= 1000
    records, ends = s.feed(b"tail\nnext\n")
    assert records == [b"y" * 999 + b"\n", b"next\n"]
    assert ends == [1_000_005, 1_000_010]


def test_partial_last_line_is_sent_when_the_file_is_closed() -> None:
    s = Splitter(offset=0, max_record=100)
    s.feed(b"a\nno newline")
    assert s.flush(partial=True) == ([b"no newline\n"], [12])
    assert s.safe_offset == 12
