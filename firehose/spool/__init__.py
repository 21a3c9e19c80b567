"""The spool: where acknowledged records live until their destination confirmed them.

``Spool.append`` returns only once the records are in an fsynced, checksummed
log (see ``firehose/storage/log.py``); that is the moment a PutRecordBatch may
be acknowledged.
Each delivery stream has its own record log and batch ledger under
``<root>/<stream key>/``, so a slow stream never pins another stream's disk
space. The spool as a whole has a byte limit: an append that would pass it
fails with ``ServiceUnavailableException`` (HTTP 503, which SDKs retry) and
nothing already acknowledged is touched.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from firehose.errors import ServiceUnavailableException, SpoolError
from firehose.records import Position
from firehose.spool import entry
from firehose.spool.ledger import Ledger
from firehose.storage.atomic import make_dirs
from firehose.storage.committer import GroupCommitter, commit
from firehose.storage.log import HEADER_SIZE, Payload, SegmentLog

__all__ = ["PROC", "RAW", "Position", "Spool", "StreamSpool"]

#: The two sources a seal can name (see ledger.py).
RAW = "raw"
PROC = "proc"

log = logging.getLogger("firehose.spool")


class StreamSpool:
    """One delivery stream's logs and batch ledger.

    ``log`` holds the records as accepted (source ``raw``); ``processed`` holds
    the output of the processing chain (source ``proc``) for streams that
    process records, so a crash after processing never runs a transform again
    for records already processed.
    """

    def __init__(self, key: str, directory: Path, committer: GroupCommitter, segment_bytes: int,
                 owner: Spool) -> None:
        self.key = key
        #: The spool this stream's bytes count against (appends and releases go through it).
        self.owner = owner
        self.directory = directory
        self.log = SegmentLog(directory / "records", segment_bytes=segment_bytes)
        self.processed = SegmentLog(directory / "processed", segment_bytes=segment_bytes)
        self.ledger = Ledger(directory / "ledger", committer)
        self._listeners: list[Callable[[], None]] = []

    def source(self, name: str) -> SegmentLog:
        return self.log if name == RAW else self.processed

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever new records are durable."""
        self._listeners.append(listener)

    def notify(self) -> None:
        for listener in self._listeners:
            listener()

    def close(self) -> None:
        self.log.close()
        self.processed.close()
        self.ledger.close()


class Spool:
    """All streams' spools, one group committer, one byte limit."""

    def __init__(self, root: Path, *, max_bytes: int, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = Path(root)
        make_dirs(self.root)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.committer = GroupCommitter()
        self._streams: dict[str, StreamSpool] = {}
        self._lock = threading.Lock()
        self._used = 0  # bytes of record segments on disk plus appends in flight

    @property
    def used_bytes(self) -> int:
        return self._used

    def open_stream(self, key: str) -> StreamSpool:
        """Open (recovering if needed) the spool of one stream."""
        stream = self._streams.get(key)
        if stream is None:
            stream = StreamSpool(key, self.root / key, self.committer, self.segment_bytes, self)
            self._streams[key] = stream
            with self._lock:
                self._used += stream.log.size_bytes + stream.processed.size_bytes
        return stream

    def existing_keys(self) -> list[str]:
        """Stream directories on disk (including ones no stream owns any more)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def remove_stream(self, key: str) -> None:
        """Forget a stream and delete its spool directory."""
        stream = self._streams.pop(key, None)
        if stream is not None:
            with self._lock:
                self._used -= stream.log.size_bytes + stream.processed.size_bytes
            stream.close()
        shutil.rmtree(self.root / key, ignore_errors=True)

    async def append(self, stream: StreamSpool, records: list[bytes], arrival_ms: int, size: int) -> int:
        """Make one call's records durable; returns the entry's sequence number.

        ``size`` is the records' total byte count (the caller has it already).
        """
        return await self._append_raw(stream, entry.encode(records, arrival_ms),
                                      entry.direct_put_size(len(records), size) + HEADER_SIZE)

    async def append_sourced(self, stream: StreamSpool, payload: Payload) -> int:
        """Make records read from a source (with their checkpoint) durable, like ``append``."""
        return await self._append_raw(stream, payload, sum(len(p) for p in payload) + HEADER_SIZE)

    async def _append_raw(self, stream: StreamSpool, payload: Payload, need: int) -> int:
        with self._lock:
            if self._used + need > self.max_bytes:
                raise ServiceUnavailableException(
                    f"Slow down. The spool is full ({self._used} of {self.max_bytes} bytes); "
                    "delivery is behind. Retry with backoff."
                )
            self._used += need
        try:
            seq = await commit(self.committer, stream.log, [payload])
        except SpoolError as exc:
            with self._lock:
                self._used -= need
            raise ServiceUnavailableException(f"Could not make the records durable: {exc}") from exc
        except asyncio.CancelledError:
            # The commit may still happen; the accounting is corrected on release.
            raise
        stream.notify()
        return seq

    async def append_processed(self, stream: StreamSpool, payload: Payload) -> int:
        """Make one processed entry durable (the processing chain's output).

        Not refused when the spool is full: the raw records it replaces are
        released right after, and refusing would stall delivery.
        """
        size = sum(len(p) for p in payload) + HEADER_SIZE
        with self._lock:
            self._used += size
        try:
            seq = await commit(self.committer, stream.processed, [payload])
        except SpoolError:
            with self._lock:
                self._used -= size
            raise
        stream.notify()
        return seq

    def release(self, stream: StreamSpool, source: str, before: Position) -> int:
        """Delete the stream's segments of ``source`` that hold only records before ``before``."""
        freed = stream.source(source).drop_before(before[0])
        if freed:
            with self._lock:
                self._used -= freed
        return freed

    def close(self) -> None:
        self.committer.stop()
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
