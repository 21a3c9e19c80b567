"""The batch ledger: which spooled records make up which object, and which are delivered.

Why it exists: an object's name must not depend on when a batch happened to be
cut. Buffers flush on time as well as size, so after a crash the same records
would be cut differently and land under new names next to the old object
(duplicates in S3). Instead, the moment a batch is cut it is *sealed*: its
record range and its full object key go into this ledger and are fsynced
before a byte is sent. A batch that is re-delivered after a crash or a retry
therefore lands under the key it had the first time, and overwrites instead of
duplicating.

Invariants:

* ``seal`` returns only after the seal is durable; nothing of a batch is sent before.
* ``done`` is recorded only after the destination confirmed the batch, and is
  durable before any spool segment it frees is deleted.
* Batches of one stream are contiguous and in order: a seal starts where the
  previous one ended (``high``). Every record before ``low_watermark`` belongs
  to a done batch; records from ``high`` on are not sealed yet.
* The ledger is itself a segment log of JSON entries. It is compacted by
  appending a checkpoint (the open seals and ``high``) and dropping older
  segments; replay starts from the last checkpoint, and duplicate records left
  by a crash during compaction are harmless because replay is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from firehose.spool.committer import GroupCommitter, commit
from firehose.spool.log import SegmentLog

log = logging.getLogger("firehose.spool")

#: A record's place in the spool: (entry sequence number, index in the entry).
Position = tuple[int, int]

_COMPACT_AT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Seal:
    """A cut batch: records [start, end) of the spool, to be delivered under ``key``."""

    batch_id: int
    start: Position
    end: Position
    key: str
    sealed_ms: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": "seal",
            "id": self.batch_id,
            "start": list(self.start),
            "end": list(self.end),
            "key": self.key,
            "ms": self.sealed_ms,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Seal:
        return cls(
            batch_id=d["id"],
            start=(d["start"][0], d["start"][1]),
            end=(d["end"][0], d["end"][1]),
            key=d["key"],
            sealed_ms=d["ms"],
            meta=d.get("meta") or {},
        )


class Ledger:
    """Seals and completions for one stream's spool."""

    def __init__(self, directory: Path, committer: GroupCommitter, *, start: Position = (0, 0)) -> None:
        self._log = SegmentLog(directory, segment_bytes=256 * 1024)
        self._committer = committer
        self.open: dict[int, Seal] = {}
        self.high: Position = start
        self.next_batch_id = 1
        self._replay()

    def _replay(self) -> None:
        for _seq, payload in self._log.iter_all():
            self._apply(orjson.loads(payload))

    def _apply(self, rec: dict[str, Any]) -> None:
        kind = rec["t"]
        if kind == "seal":
            seal = Seal.from_json(rec)
            self.open[seal.batch_id] = seal
            self.high = max(self.high, seal.end)
            self.next_batch_id = max(self.next_batch_id, seal.batch_id + 1)
        elif kind == "done":
            self.open.pop(rec["id"], None)
        elif kind == "ckpt":
            self.open = {}
            self.high = (rec["high"][0], rec["high"][1])
            self.next_batch_id = max(self.next_batch_id, rec["next"])
            for s in rec["seals"]:
                seal = Seal.from_json(s)
                self.open[seal.batch_id] = seal

    @property
    def low_watermark(self) -> Position:
        """Every record before this position has been delivered."""
        if self.open:
            return min(s.start for s in self.open.values())
        return self.high

    def pending(self) -> list[Seal]:
        """Sealed batches not yet confirmed, oldest first (to re-deliver after a restart)."""
        return sorted(self.open.values(), key=lambda s: s.start)

    async def seal(self, start: Position, end: Position, key: str, sealed_ms: int, meta: dict[str, Any]) -> Seal:
        seal = Seal(self.next_batch_id, start, end, key, sealed_ms, meta)
        before = self.high
        self.next_batch_id += 1
        self.open[seal.batch_id] = seal
        self.high = max(self.high, end)
        try:
            await self._write([seal.to_json()])
        except BaseException:
            del self.open[seal.batch_id]
            self.high = before
            raise
        return seal

    async def done(self, batch_ids: Iterable[int]) -> None:
        ids = [i for i in batch_ids if i in self.open]
        if ids:
            await self._write([{"t": "done", "id": i} for i in ids])
            for i in ids:
                self.open.pop(i, None)
        if self._log.size_bytes > _COMPACT_AT_BYTES:
            await self._compact()

    async def _compact(self) -> None:
        ckpt = {
            "t": "ckpt",
            "high": list(self.high),
            "next": self.next_batch_id,
            "seals": [s.to_json() for s in self.open.values()],
        }
        first = await commit(self._committer, self._log, [[orjson.dumps(ckpt)]])
        self._log.drop_before(first)

    async def _write(self, records: list[dict[str, Any]]) -> None:
        await commit(self._committer, self._log, [[orjson.dumps(r)] for r in records])

    def close(self) -> None:
        self._log.close()
