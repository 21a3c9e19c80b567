"""Reading a flow's files from their offsets, noticing truncation, closing rotated files.

Each poll reads up to ``READ_SIZE`` bytes per file, oldest file first, and
hands them to the file's splitter. What comes out is a list of ``Chunk``: the
records of one file generation, the file offset after each, and the offset a
restart must resume from once they are all acknowledged.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace

from firehose.agent.checkpoints import Position, Row
from firehose.agent.config import Flow
from firehose.agent.splitter import Splitter
from firehose.agent.tracker import FP_LEN, TrackedFile, Tracker, digest, head, matches

log = logging.getLogger("firehose.agent")

READ_SIZE = 1 << 20
#: A multi-line record whose file has been idle this long is complete (no further line is coming soon).
MULTILINE_IDLE_FLUSH = 1.0


@dataclass
class Chunk:
    """Records of one file generation, in order, with where each ends in the file."""

    key: int
    ident: Position
    records: list[bytes]
    ends: list[int]
    safe: int

    def at(self, offset: int) -> Position:
        return replace(self.ident, offset=offset)


class Tailer:
    """One flow's files and their splitters."""

    def __init__(self, flow: Flow, rows: list[Row]) -> None:
        self.flow = flow
        self.tracker = Tracker(flow.file_pattern, rows, start_of_file=flow.initial_position == "START_OF_FILE")
        self.splitters: dict[int, Splitter] = {}
        self.rotate_wait = flow.rotate_wait_millis / 1000
        start = flow.multi_line_start_pattern
        footer = flow.file_footer_pattern
        self._start = re.compile(start.encode()) if start else None
        self._footer = re.compile(footer.encode()) if footer else None
        self._terminator = flow.truncated_record_terminator.encode()

    @property
    def files(self) -> list[TrackedFile]:
        return list(self.tracker.files.values())

    def _splitter(self, offset: int) -> Splitter:
        return Splitter(offset=offset, max_record=self.flow.max_record_bytes, terminator=self._terminator,
                        skip_header_lines=self.flow.skip_header_lines, start_pattern=self._start,
                        footer_pattern=self._footer)

    def scan(self, now: float) -> list[TrackedFile]:
        added = self.tracker.scan(now)
        for f in added:
            self.splitters[f.key] = self._splitter(f.offset)
            log.info("flow %s: tailing %s from offset %d", self.flow.stream, f.path, f.offset)
        return added

    def initial_positions(self) -> list[Chunk]:
        """Where every file starts: written as checkpoints at once, so END_OF_FILE is decided only once."""
        return [Chunk(f.key, f.position(0), [], [], f.offset) for f in self.files]

    def read(self, now: float) -> list[Chunk]:
        chunks: list[Chunk] = []
        for f in self.files:
            chunk = self._read_file(f, now)
            if chunk is not None:
                chunks.append(chunk)
        return chunks

    def _read_file(self, f: TrackedFile, now: float) -> Chunk | None:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            size = f.size
        sp = self.splitters[f.key]
        if size != f.size:
            if size < sp.safe_offset or size < f.offset or not matches(f.fd, f.fp_len, f.fp):
                sp = self._new_generation(f)
            elif f.fp_len < FP_LEN:
                data = head(f.fd, FP_LEN)
                f.fp_len, f.fp = len(data), digest(data)
            f.size, f.last_change = size, now
        if f.offset < f.size and not sp.finished:
            data = os.pread(f.fd, min(READ_SIZE, f.size - f.offset), f.offset)
            f.offset += len(data)
            records, ends = sp.feed(data)
            return Chunk(f.key, f.position(0), records, ends, sp.safe_offset)
        idle = now - f.last_change
        if f.gone_since is not None and now - max(f.gone_since, f.last_change) >= self.rotate_wait:
            records, ends = sp.flush(partial=True)
            chunk = Chunk(f.key, f.position(0), records, ends, sp.safe_offset)
            log.info("flow %s: finished %s (rotated away or deleted) at offset %d", self.flow.stream, f.path,
                     chunk.safe)
            self.tracker.forget(f, chunk.safe)
            del self.splitters[f.key]
            return chunk
        if self._start is not None and idle >= MULTILINE_IDLE_FLUSH:
            records, ends = sp.flush(partial=False)
            if records:
                return Chunk(f.key, f.position(0), records, ends, sp.safe_offset)
        return None

    def _new_generation(self, f: TrackedFile) -> Splitter:
        """Truncated or rewritten in place: remember the old content for its copy, read the new from 0."""
        old = self.splitters.pop(f.key)
        self.tracker.ghosts.append(f.ghost(old.safe_offset))
        log.info("flow %s: %s was truncated or rewritten (copytruncate?); reading it again from the start",
                 self.flow.stream, f.path)
        f.new_generation()
        sp = self.splitters[f.key] = self._splitter(0)
        return sp

    def close(self) -> None:
        self.tracker.close()
        self.splitters.clear()
