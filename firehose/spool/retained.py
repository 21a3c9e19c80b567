"""Retained spools: what a deleted delivery stream had not delivered, kept for a while.

AWS deletes a stream's undelivered data with the stream. The daemon does too, as far as the stream
is concerned (it stops at once and a stream created again under the name starts empty), but it
keeps the stream's spool directory for ``delete.retain_hours`` under ``<state>/deleted/`` so an
operator who deleted the wrong stream can send the records on with ``firehose replay``.

Layout and invariants:

* ``<state>/deleted/<UTC time>-<account>-<stream>/`` is the stream's spool directory as it was
  (``records/``, ``processed/``, ``ledger/``), moved by one ``rename``, plus ``retained.json``
  (the manifest) written *before* the move, atomically. A directory without a manifest is not a
  retained spool and is never touched here.
* What is undelivered is read with the stream's own cursors, in the order the stream would have
  delivered it: the batches sealed and not confirmed (oldest first), then the records never
  sealed. For a stream that processes records, what the chain had already processed is the
  chain's output (the raw records are gone once processed); what it had not is the records as
  accepted. The order is the same on every read, so a replay's progress (``replayed.json``: how
  many records were accepted by the target) says exactly where to resume.
* The spool of an encrypted stream keeps its wrapped data keys (``keys.json``) with it, so reading
  it needs only the keyring that wrapped them (``encryption.py``).
* A batch the destination confirmed after the last durable "done" is counted as undelivered:
  replay is at-least-once, like every delivery after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from firehose.spool import PROC, RAW, Spool, StreamSpool
from firehose.spool.cursor import BatchCursor, ProcessCursor
from firehose.spool.entry import RecordEntry
from firehose.storage.atomic import fsync_dir, make_dirs, write_atomic
from firehose.storage.sealing import KeyringLoader

log = logging.getLogger("firehose.spool")

MANIFEST = "retained.json"
PROGRESS = "replayed.json"
#: Records handed out at a time when reading a retained spool (bounded memory for any backlog).
_CHUNK_BYTES = 4 * 1024 * 1024
_NO_LIMIT = 1 << 62


@dataclass(frozen=True)
class Retained:
    """One retained spool, as its manifest describes it."""

    path: Path
    stream: str
    account: str
    deleted_ms: int
    records: int
    bytes: int
    processes: bool
    definition: dict[str, Any] | None

    @property
    def name(self) -> str:
        """How ``firehose replay`` names it: its directory's name."""
        return self.path.name

    def replayed(self) -> int:
        """Records a replay already had accepted (0 before any)."""
        try:
            return int(orjson.loads((self.path / PROGRESS).read_bytes())["records"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def record_progress(self, records: int, target: str) -> None:
        write_atomic(self.path / PROGRESS, [orjson.dumps({"records": records, "to": target})])


def _read_manifest(path: Path) -> Retained | None:
    try:
        doc = orjson.loads((path / MANIFEST).read_bytes())
        return Retained(path=path, stream=str(doc["stream"]), account=str(doc["account"]),
                        deleted_ms=int(doc["deleted_ms"]), records=int(doc["records"]), bytes=int(doc["bytes"]),
                        processes=bool(doc["processes"]), definition=doc.get("definition"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def listing(root: Path) -> list[Retained]:
    """Every retained spool under ``root`` (``<state>/deleted``), oldest deletion first."""
    if not root.is_dir():
        return []
    found = [r for p in root.iterdir() if p.is_dir() and (r := _read_manifest(p)) is not None]
    return sorted(found, key=lambda r: (r.deleted_ms, r.name))


def find(root: Path, name: str) -> Retained | None:
    """A retained spool by its directory name (or, when that is unique, by its stream's name)."""
    every = listing(root)
    exact = [r for r in every if r.name == name]
    if exact:
        return exact[0]
    by_stream = [r for r in every if r.stream == name]
    return by_stream[0] if len(by_stream) == 1 else None


# -- reading ------------------------------------------------------------------------


def _records(e: RecordEntry, start: int, end: int) -> list[bytes]:
    return [bytes(e.record(i)) for i in range(start, end)]


async def _unread(cursor: BatchCursor) -> AsyncIterator[list[bytes]]:
    while cursor.has_unread():
        got: list[bytes] = []
        await cursor.read(_CHUNK_BYTES, lambda _pid, e, a, b, got=got: got.extend(_records(e, a, b)))
        if got:
            yield got


async def undelivered(stream: StreamSpool, *, processes: bool) -> AsyncIterator[list[bytes]]:
    """The stream's undelivered records, in chunks, in delivery order (see the module docstring)."""
    raw, proc = BatchCursor(stream, RAW), BatchCursor(stream, PROC)
    for seal in raw.pending():  # every source's open seals, oldest first
        spans = await (raw if seal.source == RAW else proc).read_sealed(seal)
        chunk = [r for s in spans for r in _records(s.entry, s.start, s.end)]
        if chunk:
            yield chunk
    if not processes:
        async for chunk in _unread(raw):
            yield chunk
        return
    async for chunk in _unread(proc):
        yield chunk
    feeder = ProcessCursor(stream)
    while feeder.has_unread():
        got: list[bytes] = []
        await feeder.read(_CHUNK_BYTES, lambda e, first, got=got: got.extend(_records(e, first, e.count)))
        if got:
            yield got


@contextlib.asynccontextmanager
async def opened(directory: Path, keyring: KeyringLoader | None = None) -> AsyncIterator[StreamSpool]:
    """A stream spool directory opened on its own (no limit, no reserve), closed afterwards.

    ``keyring``: for an encrypted stream's spool (MissingKeyError without the keys it needs)."""
    spool = Spool(directory.parent, max_bytes=_NO_LIMIT, reserve_bytes=0, keyring=keyring)
    try:
        yield spool.open_stream(directory.name, label=f"the retained spool {directory.name}")
    finally:
        spool.close()


async def count(directory: Path, *, processes: bool, keyring: KeyringLoader | None = None) -> tuple[int, int]:
    """(records, bytes) a stream spool directory holds undelivered."""
    records = size = 0
    async with opened(directory, keyring) as stream:
        async for chunk in undelivered(stream, processes=processes):
            records += len(chunk)
            size += sum(len(r) for r in chunk)
    return records, size


# -- retaining and expiring ---------------------------------------------------------------------


def _stamp(ms: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ms / 1000))


async def retain(directory: Path, root: Path, *, stream: str, account: str, processes: bool,
                 definition: dict[str, Any] | None, keep: bool,
                 keyring: KeyringLoader | None = None) -> tuple[Retained | None, int, int]:
    """A deleted stream's spool ``directory``: (what was retained, records, bytes undelivered).

    With undelivered records and ``keep``, the directory moves under ``root`` with its manifest;
    otherwise it is deleted. The stream's spool must be closed (no writer) before this is called.
    """
    if not directory.is_dir():
        return None, 0, 0
    records, size = await count(directory, processes=processes, keyring=keyring)
    if not records or not keep:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        return None, records, size
    deleted_ms = int(time.time() * 1000)
    manifest = {"stream": stream, "account": account, "deleted_ms": deleted_ms,
                "deleted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deleted_ms / 1000)),
                "records": records, "bytes": size, "processes": processes, "definition": definition}
    write_atomic(directory / MANIFEST, [orjson.dumps(manifest, option=orjson.OPT_INDENT_2)])
    make_dirs(root)
    target = root / f"{_stamp(deleted_ms)}-{account}-{stream}"
    n = 1
    while target.exists():
        n += 1
        target = root / f"{_stamp(deleted_ms)}-{account}-{stream}.{n}"
    os.rename(directory, target)
    fsync_dir(root)
    fsync_dir(directory.parent)
    return _read_manifest(target), records, size


def adopt(directory: Path, root: Path) -> Retained | None:
    """A spool directory left with a manifest but not moved (a stop between the two): move it now."""
    retained = _read_manifest(directory)
    if retained is None:
        return None
    make_dirs(root)
    target = root / f"{_stamp(retained.deleted_ms)}-{retained.account}-{retained.stream}"
    os.rename(directory, target)
    fsync_dir(root)
    return _read_manifest(target)


#: A retained spool whose replay wrote progress this recently is being replayed: expiry waits.
REPLAY_GRACE_MS = 3_600_000


def _replaying(retained: Retained, now_ms: int) -> bool:
    try:
        return now_ms - (retained.path / PROGRESS).stat().st_mtime * 1000 < REPLAY_GRACE_MS
    except OSError:
        return False


def expire(root: Path, retain_hours: float, *, now_ms: int | None = None) -> list[Retained]:
    """Delete the retained spools older than ``retain_hours``, but one a replay is sending (it wrote
    progress within the last hour); the ones deleted."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    gone = []
    for retained in listing(root):
        if retained.deleted_ms + retain_hours * 3_600_000 <= now and not _replaying(retained, now):
            shutil.rmtree(retained.path, ignore_errors=True)
            gone.append(retained)
    return gone


def remove(retained: Retained) -> None:
    """Delete a retained spool (replayed in full)."""
    shutil.rmtree(retained.path, ignore_errors=True)

