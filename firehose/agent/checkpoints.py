"""Acknowledged offsets, per flow and per file identity, in SQLite.

A row says: of the file with this device, inode and fingerprint, every byte
before ``offset`` has been acknowledged by the service. Rows are written only
after an acknowledgement, in send order, so a row is always the end of a
contiguous acknowledged prefix (a later batch's ack never moves a checkpoint
past an earlier batch that is still in flight).

WAL with ``synchronous=FULL`` makes each commit durable before ``commit``
returns, so after ``kill -9`` or a power cut at most the batch in flight is
sent again. A tmpfs (``/run`` on most distributions) is refused: it is wiped at
boot and every file would be shipped again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from firehose.errors import ConfigError

VOLATILE_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
#: Rows kept per flow for files that are gone (copy detection after a restart needs the recent ones).
MAX_ROWS_PER_FLOW = 2_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    flow TEXT NOT NULL,
    path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    fp_len INTEGER NOT NULL,
    fp BLOB NOT NULL,
    offset INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_flow ON checkpoints (flow, dev, ino);
"""


@dataclass
class Row:
    """One file generation's acknowledged offset."""

    id: int
    path: str
    dev: int
    ino: int
    fp_len: int
    fp: bytes
    offset: int
    updated: float


@dataclass(frozen=True)
class Position:
    """What a batch moves a checkpoint to (taken when the batch was cut, written after its ack)."""

    path: str
    dev: int
    ino: int
    fp_len: int
    fp: bytes
    offset: int


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point in /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mount = fields[4].replace("\\040", " ")
                fstype = fields[fields.index("-") + 1]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


class CheckpointStore:
    """The SQLite file, shared by every flow's sender thread (one lock, short transactions)."""

    def __init__(self, path: Path, *, allow_volatile: bool = False, ttl_days: int = 7) -> None:
        existing = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        kind = filesystem_type(existing)
        if kind in VOLATILE_FILESYSTEMS and not allow_volatile:
            raise ConfigError(
                f"checkpoint file {path} is on a {kind}, which is emptied at boot: every file would be sent "
                "again. Put checkpointFile (or --state-dir) on persistent storage such as /var/lib")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._purge(ttl_days)

    def _purge(self, ttl_days: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM checkpoints WHERE updated < ?", (time.time() - ttl_days * 86400,))

    def load(self, flow: str) -> list[Row]:
        """Every row of a flow, newest first."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, path, dev, ino, fp_len, fp, offset, updated FROM checkpoints WHERE flow = ? "
                "ORDER BY updated DESC, id DESC", (flow,))
            return [Row(*r) for r in cur.fetchall()]

    def commit(self, flow: str, positions: dict[int, Position], row_ids: dict[int, int]) -> None:
        """Persist positions in one durable transaction.

        ``positions`` is keyed by the in-memory id of a file generation; ``row_ids``
        maps those ids to rows already written, and is filled in for new ones.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, p in positions.items():
                    row = row_ids.get(key)
                    if row is None:
                        cur = self._db.execute(
                            "INSERT INTO checkpoints (flow, path, dev, ino, fp_len, fp, offset, updated) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (flow, p.path, p.dev, p.ino, p.fp_len, p.fp,
                                                                 p.offset, now))
                        row_ids[key] = int(cur.lastrowid or 0)
                    else:
                        self._db.execute(
                            "UPDATE checkpoints SET path = ?, fp_len = ?, fp = ?, offset = ?, updated = ? "
                            "WHERE id = ?", (p.path, p.fp_len, p.fp, p.offset, now, row))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def trim(self, flow: str, keep_ids: set[int]) -> None:
        """Drop the oldest rows of a flow beyond MAX_ROWS_PER_FLOW, never one still in use."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM checkpoints WHERE flow = ? ORDER BY updated DESC, id DESC LIMIT -1 OFFSET ?",
                (flow, MAX_ROWS_PER_FLOW))]
            stale = [(i,) for i in ids if i not in keep_ids]
            if stale:
                self._db.executemany("DELETE FROM checkpoints WHERE id = ?", stale)

    def close(self) -> None:
        with self._lock:
            self._db.close()
