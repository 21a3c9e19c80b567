"""Bytes of one file → records: header lines skipped, multi-line records joined, oversized records truncated.

Each record keeps its trailing newline (the Kinesis Agent sends the line with
it). A record is emitted only once it is known to be complete: a line when its
newline arrives, a multi-line record when the next start line arrives or the
file has been idle long enough (``flush``). What is not yet emitted is
*pending*; ``safe_offset`` is where a restart must resume so that nothing
pending is lost.

A line longer than the largest record is not held in memory whole: the bytes
past the limit are dropped as they are read and the record is cut with the
terminator (the Kinesis Agent's ``truncatedRecordTerminator``).
"""

from __future__ import annotations

import re
from itertools import accumulate

_LINE = re.compile(rb"[^\n]*\n")


class Splitter:
    """The record-cutting state of one file generation."""

    def __init__(self, *, offset: int, max_record: int, terminator: bytes = b"\n", skip_header_lines: int = 0,
                 start_pattern: re.Pattern[bytes] | None = None, footer_pattern: re.Pattern[bytes] | None = None
                 ) -> None:
        self.max_record = max_record
        self.terminator = terminator
        # Header lines are skipped only at the start of a file; a resumed file is past them.
        self.header_left = skip_header_lines if offset == 0 else 0
        self.start_pattern = start_pattern
        self.footer_pattern = footer_pattern
        self.finished = False  # a footer line ended this file
        self.truncated = 0  # records cut to max_record
        self._partial = b""  # bytes after the last newline
        self._partial_bytes_read = 0  # how many bytes of the file those were (more than kept when overlong)
        self._overlong = False  # the partial line passed max_record; the rest of it is being dropped
        self._read_end = offset  # file offset after the last byte fed
        self._group: list[bytes] = []  # multi-line record being assembled
        self._group_start = offset
        self._group_end = offset  # offset after the group's last line

    @property
    def safe_offset(self) -> int:
        """Everything before this offset has been emitted (or skipped): a restart resumes here."""
        if self._group:
            return self._group_start
        return self._read_end - self._partial_bytes_read

    def feed(self, data: bytes) -> tuple[list[bytes], list[int]]:
        """Take the next bytes of the file; return the completed records and the file offset after each."""
        if self.finished or not data:
            self._read_end += len(data)
            return [], []
        start = self._read_end - self._partial_bytes_read
        self._read_end += len(data)
        cut = data.rfind(b"\n")
        if cut < 0:
            self._extend_partial(data)
            return [], []
        head = data[: cut + 1]
        if self._partial or self._overlong:
            first_nl = head.find(b"\n")
            line = self._finish_partial(head[: first_nl + 1])
            rest = head[first_nl + 1 :]
            lines = [line, *_LINE.findall(rest)] if rest else [line]
            sizes = [self._partial_bytes_read + first_nl + 1, *map(len, lines[1:])]
        else:
            lines = _LINE.findall(head)
            sizes = None
        self._partial, self._overlong, self._partial_bytes_read = b"", False, 0
        self._extend_partial(data[cut + 1 :])
        ends = list(accumulate(sizes if sizes is not None else map(len, lines), initial=start))[1:]
        if self.header_left or self.start_pattern is not None or self.footer_pattern is not None:
            return self._slow(lines, ends)
        if max(map(len, lines)) > self.max_record:
            lines = [self._truncate(x) for x in lines]
        return lines, ends

    def _extend_partial(self, data: bytes) -> None:
        if not data:
            return
        self._partial_bytes_read += len(data)
        if self._overlong:
            return
        self._partial += data
        if len(self._partial) > self.max_record:
            self._partial = self._partial[: self.max_record]
            self._overlong = True

    def _finish_partial(self, tail: bytes) -> bytes:
        if self._overlong:
            return self._partial + b"\x00"  # longer than max_record; _truncate cuts it and adds the terminator
        return self._partial + tail

    def _truncate(self, record: bytes) -> bytes:
        if len(record) <= self.max_record:
            return record
        self.truncated += 1
        return record[: self.max_record - len(self.terminator)] + self.terminator

    def _slow(self, lines: list[bytes], ends: list[int]) -> tuple[list[bytes], list[int]]:
        """Header skipping, footer detection and multi-line grouping, line by line."""
        records: list[bytes] = []
        out_ends: list[int] = []
        for line, end in zip(lines, ends, strict=True):
            if self.finished:
                break
            if self.header_left:
                self.header_left -= 1
                self._group_start = self._group_end = end
                continue
            if self.footer_pattern is not None and self.footer_pattern.search(line):
                self._emit_group(records, out_ends)
                self.finished = True
                self._group_start = self._group_end = end
                continue
            if self.start_pattern is None:
                records.append(self._truncate(line))
                out_ends.append(end)
                self._group_start = self._group_end = end
                continue
            if self.start_pattern.match(line) and self._group:
                self._emit_group(records, out_ends)
            if not self._group:
                self._group_start = self._group_end
            self._group.append(line)
            self._group_end = end
        if not self._group:
            self._group_start = self._group_end = ends[-1]
        return records, out_ends

    def _emit_group(self, records: list[bytes], ends: list[int]) -> None:
        if self._group:
            records.append(self._truncate(b"".join(self._group)))
            ends.append(self._group_end)
            self._group = []
            self._group_start = self._group_end

    def flush(self, *, partial: bool) -> tuple[list[bytes], list[int]]:
        """Emit the multi-line record being assembled and, with ``partial``, a last line with no newline.

        Called when a file has been idle (multi-line) or is closed after rotation
        (partial): a line without its newline is completed with one.
        """
        records: list[bytes] = []
        ends: list[int] = []
        if self.finished:
            return records, ends
        self._emit_group(records, ends)
        if partial and self._partial_bytes_read:
            line = self._finish_partial(b"\n")
            if self.header_left:
                self.header_left -= 1
            else:
                records.append(self._truncate(line))
                ends.append(self._read_end)
            self._partial, self._overlong, self._partial_bytes_read = b"", False, 0
            self._group_start = self._group_end = self._read_end
        return records, ends
