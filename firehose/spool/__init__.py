"""The spool: where acknowledged records live until their destination confirmed them.

``Spool.append`` returns only once the records are in an fsynced, checksummed
log (see ``firehose/storage/log.py``); that is the moment a PutRecordBatch may
be acknowledged.
Each delivery stream has its own record log and batch ledger under
``<root>/<stream key>/``, so a slow stream never pins another stream's disk
space. The spool as a whole has a byte limit and keeps free disk space for its
bookkeeping (``firehose/spool/admission.py``): an append that would pass
either fails with ``ServiceUnavailableException`` (HTTP 503, which SDKs retry)
and nothing already acknowledged is touched.

No configuration can wedge it: segments are at most an eighth of the limit
(or of the filesystem when that is smaller; ``segment_size``), so delivering
the oldest records frees space while the rest of a backlog is on its way, and when an append is refused every
stream gives back the segments it no longer needs, the active one included
(``SegmentLog.reclaim``). A spool whose records are all delivered therefore
always has its whole limit free.

A stream whose encryption is on has its entries sealed on the way to the disk and opened on every
read (``firehose/spool/encryption.py``); the spool of a stream never encrypted is exactly as it was.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from firehose.errors import ServiceUnavailableException, SpoolError
from firehose.records import Position
from firehose.spool import entry
from firehose.spool.admission import Admission
from firehose.spool.encryption import PROC_LOG, RAW_LOG, SEAL_OVERHEAD, SpoolKeys
from firehose.spool.ledger import Ledger
from firehose.storage.atomic import make_dirs
from firehose.storage.committer import GroupCommitter, commit
from firehose.storage.log import HEADER_SIZE, Deferred, Frame, Payload, SegmentLog
from firehose.storage.sealing import KeyringLoader

__all__ = ["PROC", "RAW", "Position", "Spool", "StreamSpool", "segment_size"]

#: The two sources a seal can name (see ledger.py).
RAW = "raw"
PROC = "proc"

log = logging.getLogger("firehose.spool")

#: Segments are at most this fraction of ``spool.max_bytes``: delivering the oldest segment of a
#: full spool frees an eighth of it, so ingest resumes soon after an outage ends.
SEGMENTS_PER_LIMIT = 8
#: ... but not smaller than this (unless ``spool.segment_bytes`` itself is), to keep files few.
MIN_SEGMENT_BYTES = 1024 * 1024


def segment_size(max_bytes: int, segment_bytes: int) -> int:
    """The segment size the spool uses: ``segment_bytes``, capped at an eighth of ``max_bytes``."""
    return min(segment_bytes, max(max_bytes // SEGMENTS_PER_LIMIT, MIN_SEGMENT_BYTES))


class StreamSpool:
    """One delivery stream's logs and batch ledger.

    ``log`` holds the records as accepted (source ``raw``); ``processed`` holds
    the output of the processing chain (source ``proc``) for streams that
    process records, so a crash after processing never runs a transform again
    for records already processed.
    """

    def __init__(self, key: str, directory: Path, committer: GroupCommitter, segment_bytes: int,
                 owner: Spool, *, label: str | None = None) -> None:
        self.key = key
        #: The spool this stream's bytes count against (appends and releases go through it).
        self.owner = owner
        self.directory = directory
        self.log = SegmentLog(directory / "records", segment_bytes=segment_bytes)
        # Processing output is bookkeeping too: without it no raw segment is freed.
        # Its newest entry says how far raw records were processed: kept when the rest is freed.
        self.processed = SegmentLog(directory / "processed", segment_bytes=segment_bytes, uses_reserve=True,
                                    keep_last=True)
        self.ledger = Ledger(directory / "ledger", committer)
        self._committer = committer
        self._listeners: list[Callable[[], None]] = []
        #: Other readers of the raw log (a source-record backup), each with its own ledger, and the
        #: raw position below which each has everything done. Raw segments go only below all of them
        #: and below what the stream's own readers asked to release (``raw_wanted``).
        self._side_ledgers: dict[str, Ledger] = {}
        self._raw_holds: dict[str, Callable[[], Position]] = {}
        self._raw_wanted: Position = (0, 0)
        #: The stream's data keys; its entries are sealed while ``encryption.sealing``.
        self.encryption = SpoolKeys(directory, label or f"the delivery stream whose spool is {key}")
        try:
            self.encryption.restore(owner.keyring, self.log, self.processed)
        except BaseException:
            self.close()
            raise

    def source(self, name: str) -> SegmentLog:
        return self.log if name == RAW else self.processed

    def read_frames(self, source: str, from_seq: int, max_bytes: int) -> list[Frame]:
        """Committed entries of ``source`` from ``from_seq``, sealed ones opened (blocking: not on the event loop).

        An opened frame has an empty path: its records are not on disk as they are in the payload."""
        return self.encryption.opened(RAW_LOG if source == RAW else PROC_LOG,
                                      self.source(source).read_frames(from_seq, max_bytes))

    def sealed(self, source: str, payload: Payload) -> Payload | Deferred:
        """What to write for ``payload``: it, or while encryption is on, it sealed as the log writes it."""
        if not self.encryption.sealing:
            return payload
        return self.encryption.sealer(RAW_LOG if source == RAW else PROC_LOG, payload)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever new records are durable."""
        self._listeners.append(listener)

    def side_ledger(self, name: str) -> Ledger:
        """The ledger of another reader of the raw log (``ledger-<name>/``), opened once and kept
        until the stream's spool closes (one ``Ledger`` per directory in the process)."""
        ledger = self._side_ledgers.get(name)
        if ledger is None:
            ledger = self._side_ledgers[name] = Ledger(self.directory / f"ledger-{name}", self._committer)
        return ledger

    def forget_side_ledger(self, name: str) -> None:
        """A reader that is gone for good (its stream no longer has it): its ledger goes with it."""
        self._raw_holds.pop(name, None)
        ledger = self._side_ledgers.pop(name, None)
        if ledger is not None:
            ledger.close()
        shutil.rmtree(self.directory / f"ledger-{name}", ignore_errors=True)

    def hold_raw(self, name: str, done_before: Callable[[], Position]) -> None:
        """Keep raw records from ``done_before()`` on: reader ``name`` still needs them."""
        self._raw_holds[name] = done_before

    def unhold_raw(self, name: str) -> None:
        self._raw_holds.pop(name, None)

    def raw_release_point(self, wanted: Position) -> Position:
        """Where raw segments may be released, given that a reader of the stream wants ``wanted``:
        never past what a side reader still holds. Wanted points only grow (what was delivered stays
        delivered), so a side reader that catches up releases what the others asked for earlier."""
        self._raw_wanted = max(self._raw_wanted, wanted)
        return min([self._raw_wanted, *(hold() for hold in self._raw_holds.values())])

    def notify(self) -> None:
        for listener in self._listeners:
            listener()

    def close(self) -> None:
        self.log.close()
        self.processed.close()
        self.ledger.close()
        for ledger in self._side_ledgers.values():
            ledger.close()


class Spool:
    """All streams' spools, one group committer, one admission (byte limit and disk reserve)."""

    def __init__(self, root: Path, *, max_bytes: int, segment_bytes: int = 64 * 1024 * 1024,
                 reserve_bytes: int = 0, keyring: KeyringLoader | None = None) -> None:
        self.root = Path(root)
        #: Loads the daemon's keyring, for the spools of encrypted streams (called only when one needs it).
        self.keyring = keyring
        make_dirs(self.root)
        self.max_bytes = max_bytes
        self.admission = Admission(self.root, max_bytes=max_bytes, reserve_bytes=reserve_bytes)
        # Sized by what the spool can hold: its limit, or its filesystem when that is smaller.
        self.segment_bytes = segment_size(self.admission.capacity, segment_bytes)
        if self.segment_bytes < segment_bytes:
            log.info("Spool segments are an eighth of the spool's room, so delivered space is freed early.",
                     extra={"segment_bytes": self.segment_bytes, "room_bytes": self.admission.capacity})
        self.committer = GroupCommitter(on_disk_full=self._give_up_reserve)
        self._streams: dict[str, StreamSpool] = {}

    @property
    def used_bytes(self) -> int:
        return self.admission.used

    def refusal(self) -> str | None:
        """Why puts would be refused now (for /readyz), or None."""
        return self.admission.refusal()

    def _give_up_reserve(self) -> bool:
        """A bookkeeping write found the disk full (committer thread): free the reserve for it."""
        return self.admission.reserve.give_up()

    def is_open(self, key: str) -> bool:
        return key in self._streams

    def open_stream(self, key: str, *, label: str | None = None) -> StreamSpool:
        """Open (recovering if needed) the spool of one stream; ``label`` names the stream in messages.

        MissingKeyError when its entries need a key that is not in the keyring."""
        stream = self._streams.get(key)
        if stream is None:
            stream = StreamSpool(key, self.root / key, self.committer, self.segment_bytes, self, label=label)
            self._streams[key] = stream
            self.admission.add(stream.log.size_bytes + stream.processed.size_bytes)
        return stream

    def existing_keys(self) -> list[str]:
        """Stream directories on disk (including ones no stream owns any more)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def detach_stream(self, key: str) -> Path:
        """Forget a stream: close its logs and stop counting its bytes; its directory stays, for the
        caller to delete or retain (``spool.retained``)."""
        stream = self._streams.pop(key, None)
        if stream is not None:
            self.admission.returned(stream.log.size_bytes + stream.processed.size_bytes)
            stream.close()
        self.admission.freed()
        return self.root / key

    def remove_stream(self, key: str) -> None:
        """Forget a stream and delete its spool directory."""
        shutil.rmtree(self.detach_stream(key), ignore_errors=True)
        self.admission.freed()

    async def append(self, stream: StreamSpool, records: list[bytes], arrival_ms: int, size: int) -> int:
        """Make one call's records durable; returns the entry's sequence number.

        ``size`` is the records' total byte count (the caller has it already).
        """
        need = entry.direct_put_size(len(records), size) + HEADER_SIZE
        if stream.encryption.sealing:  # sealed by the committer thread, as it writes the entry
            return await self._append_raw(stream, stream.sealed(RAW, entry.encode(records, arrival_ms)),
                                          need + SEAL_OVERHEAD)
        return await self._append_raw(stream, entry.encode(records, arrival_ms), need)

    async def append_sourced(self, stream: StreamSpool, payload: Payload) -> int:
        """Make records read from a source (with their checkpoint) durable, like ``append``; sealed
        when the stream's encryption is on (a SQL application's output into an encrypted stream)."""
        need = sum(len(p) for p in payload) + HEADER_SIZE
        if stream.encryption.sealing:
            return await self._append_raw(stream, stream.sealed(RAW, payload), need + SEAL_OVERHEAD)
        return await self._append_raw(stream, payload, need)

    def _admit(self, need: int) -> None:
        try:
            self.admission.admit(need)
        except ServiceUnavailableException:
            # Delivered segments a stream still keeps (its active one) count until given back.
            if not self.reclaim():
                raise
            self.admission.admit(need)

    def reclaim(self) -> int:
        """Every stream gives back the segments it no longer needs, active ones included; bytes freed."""
        freed = 0
        for stream in list(self._streams.values()):
            for source in (stream.log, stream.processed):
                freed += source.reclaim()
        if freed:
            self.admission.returned(freed)
            self.admission.freed()
        return freed

    async def _append_raw(self, stream: StreamSpool, payload: Payload | Deferred, need: int) -> int:
        self._admit(need)
        try:
            seq = await commit(self.committer, stream.log, [payload])
        except SpoolError as exc:
            self.admission.returned(need)
            self.admission.write_failed(exc)
            raise ServiceUnavailableException(f"Could not make the records durable: {exc}") from exc
        except asyncio.CancelledError:
            # The commit may still happen; the accounting is corrected on release.
            raise
        self.admission.written()
        stream.notify()
        return seq

    async def append_processed(self, stream: StreamSpool, payload: Payload) -> int:
        """Make one processed entry durable (the processing chain's output).

        Not refused when the spool is full: the raw records it replaces are
        released right after, and refusing would stall delivery.
        """
        size = sum(len(p) for p in payload) + HEADER_SIZE
        if stream.encryption.sealing:
            size += SEAL_OVERHEAD
        self.admission.add(size)
        try:
            seq = await commit(self.committer, stream.processed, [stream.sealed(PROC, payload)])
        except SpoolError:
            self.admission.returned(size)
            raise
        stream.notify()
        return seq

    def release(self, stream: StreamSpool, source: str, before: Position) -> int:
        """Delete the stream's segments of ``source`` that hold only records before ``before``.

        The active segment goes too once the spool is more than half full, so that a spool
        whose records are all delivered has its whole limit free again.
        """
        if source == RAW:
            before = stream.raw_release_point(before)
        pressed = self.admission.used * 2 > self.max_bytes
        freed = stream.source(source).drop_before(before[0], include_active=pressed)
        if freed:
            self.admission.returned(freed)
            self.admission.freed()
        return freed

    def release_held(self, stream: StreamSpool) -> int:
        """Release raw segments again after a side reader of ``stream`` moved its hold."""
        return self.release(stream, RAW, (0, 0))

    def close(self) -> None:
        self.committer.stop()
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
