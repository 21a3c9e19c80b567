"""The batch ledger: which spooled records make up which object, and which are delivered.

Why it exists: an object's name must not depend on when a batch happened to be
cut. Buffers flush on time as well as size, so after a crash the same records
would be cut differently and land under new names next to the old object
(duplicates in S3). Instead, the moment a batch is cut it is *sealed*: which
records it holds and its full object key go into this ledger and are fsynced
before a byte is sent. A batch re-delivered after a crash or a retry lands
under the key it had the first time and overwrites instead of duplicating.

A seal names its records by *source* log (``raw``: the records as spooled;
``proc``: the output of the processing chain), *partition* and a span of
positions ``[start, end)``: it holds every record of that partition in that
span. Buffers are FIFO per partition, so a span is exact. Records re-routed
away from their own partition (to error output) are named explicitly in
``positions`` instead.

Invariants:

* ``seal`` returns only after the seal is durable; nothing of a batch is sent before.
* ``done`` is recorded only after the destination confirmed the batch, and is
  durable before any spool segment it frees is deleted.
* ``low[source]`` is where reading resumes after a restart: every record of
  that source before it is delivered, dropped, or held by an open seal (which
  is delivered again from its own record). It is written with every seal and
  done; after a restart the pipeline reads again from there and skips the
  records that a seal (open or done) already holds, so nothing is delivered
  twice. Spool data may be deleted only below ``release_point``, which also
  keeps what open seals need.
* ``high[source]`` is the end of the furthest seal, per source.
* The ledger is itself a segment log of JSON entries. It is compacted by
  appending a checkpoint and dropping older segments; replay starts from the
  last checkpoint, and replay is idempotent, so a crash during compaction is
  harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from firehose.records import Position
from firehose.storage.committer import GroupCommitter, commit
from firehose.storage.log import SegmentLog

log = logging.getLogger("firehose.spool")

_COMPACT_AT_BYTES = 1 << 20


def _pos(v: list[int]) -> Position:
    return (v[0], v[1])


@dataclass(frozen=True, slots=True)
class Seal:
    """A cut batch: the records it holds and the key they are delivered under."""

    batch_id: int
    source: str
    partition: str
    start: Position
    end: Position
    key: str
    sealed_ms: int
    meta: dict[str, Any] = field(default_factory=dict)
    positions: tuple[Position, ...] | None = None

    def holds(self, source: str, partition: str, position: Position) -> bool:
        if source != self.source:
            return False
        if self.positions is not None:
            return position in self.positions
        return partition == self.partition and self.start <= position < self.end

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "t": "seal", "id": self.batch_id, "src": self.source, "part": self.partition,
            "start": list(self.start), "end": list(self.end), "key": self.key, "ms": self.sealed_ms,
            "meta": self.meta,
        }
        if self.positions is not None:
            d["pos"] = [list(p) for p in self.positions]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Seal:
        return cls(
            batch_id=d["id"], source=d["src"], partition=d["part"], start=_pos(d["start"]), end=_pos(d["end"]),
            key=d["key"], sealed_ms=d["ms"], meta=d.get("meta") or {},
            positions=tuple(_pos(p) for p in d["pos"]) if "pos" in d else None,
        )


class Ledger:
    """Seals, completions and watermarks for one stream's spool."""

    def __init__(self, directory: Path, committer: GroupCommitter) -> None:
        self._log = SegmentLog(directory, segment_bytes=256 * 1024, uses_reserve=True)
        self._committer = committer
        self.open: dict[int, Seal] = {}
        self.done_above: dict[int, Seal] = {}  # done, but not yet below the low watermark
        self.low: dict[str, Position] = {}
        self.high: dict[str, Position] = {}
        self.next_batch_id = 1
        for _seq, payload in self._log.iter_all():
            self._apply(orjson.loads(payload))

    # -- replay -----------------------------------------------------------------

    def _apply(self, rec: dict[str, Any]) -> None:
        kind = rec["t"]
        if kind == "seal":
            seal = Seal.from_json(rec)
            if seal.batch_id not in self.done_above:
                self.open[seal.batch_id] = seal
            self._note_high(seal)
            self.next_batch_id = max(self.next_batch_id, seal.batch_id + 1)
        elif kind == "done":
            seal = self.open.pop(rec["id"], None)
            if seal is not None:
                self.done_above[seal.batch_id] = seal
        elif kind == "ckpt":
            self.open = {}
            self.done_above = {}
            self.high = {}
            self.next_batch_id = max(self.next_batch_id, rec["next"])
            for s in rec["open"]:
                seal = Seal.from_json(s)
                self.open[seal.batch_id] = seal
                self._note_high(seal)
            for s in rec["done"]:
                seal = Seal.from_json(s)
                self.done_above[seal.batch_id] = seal
                self._note_high(seal)
            for src, p in rec.get("high", {}).items():
                self.high[src] = max(self.high.get(src, (0, 0)), _pos(p))
        for src, p in rec.get("low", {}).items():
            self.low[src] = max(self.low.get(src, (0, 0)), _pos(p))
        self._prune()

    def _note_high(self, seal: Seal) -> None:
        self.high[seal.source] = max(self.high.get(seal.source, (0, 0)), seal.end)

    def _prune(self) -> None:
        for bid, seal in list(self.done_above.items()):
            if seal.end <= self.low.get(seal.source, (0, 0)):
                del self.done_above[bid]

    # -- queries ----------------------------------------------------------------

    def pending(self) -> list[Seal]:
        """Sealed batches not yet confirmed, oldest first (to re-deliver after a restart)."""
        return sorted(self.open.values(), key=lambda s: (s.source, s.start, s.batch_id))

    def covering(self, source: str) -> list[Seal]:
        """Seals (open or done) that may hold records at or after the low watermark."""
        return [s for s in (*self.open.values(), *self.done_above.values()) if s.source == source]

    def open_start(self, source: str) -> Position | None:
        starts = [s.start for s in self.open.values() if s.source == source]
        return min(starts) if starts else None

    def release_point(self, source: str) -> Position:
        """Spool data of ``source`` before this position is no longer needed.

        ``low`` is where reading resumes; an open seal may start before it (it
        is delivered from its own record), and its records must stay.
        """
        low = self.low.get(source, (0, 0))
        start = self.open_start(source)
        return min(low, start) if start is not None else low

    # -- changes ----------------------------------------------------------------

    async def seal(self, source: str, partition: str, start: Position, end: Position, key: str, sealed_ms: int,
                   meta: dict[str, Any], *, positions: tuple[Position, ...] | None = None,
                   low: Mapping[str, Position] | None = None) -> Seal:
        seal = Seal(self.next_batch_id, source, partition, start, end, key, sealed_ms, meta, positions)
        self.next_batch_id += 1
        self.open[seal.batch_id] = seal
        record = seal.to_json()
        if low:
            record["low"] = {k: list(v) for k, v in low.items()}
        try:
            await self._write([record])
        except BaseException:
            del self.open[seal.batch_id]
            raise
        self._note_high(seal)
        self._advance(low)
        return seal

    async def done(self, batch_ids: Iterable[int], *, low: Mapping[str, Position] | None = None) -> None:
        ids = [i for i in batch_ids if i in self.open]
        records: list[dict[str, Any]] = [{"t": "done", "id": i} for i in ids]
        if low:
            if records:
                records[-1]["low"] = {k: list(v) for k, v in low.items()}
            else:
                records.append({"t": "low", "low": {k: list(v) for k, v in low.items()}})
        if records:
            await self._write(records)
        for i in ids:
            self.done_above[i] = self.open.pop(i)
        self._advance(low)
        if self._log.size_bytes > _COMPACT_AT_BYTES:
            await self._compact()

    def _advance(self, low: Mapping[str, Position] | None) -> None:
        for src, p in (low or {}).items():
            self.low[src] = max(self.low.get(src, (0, 0)), p)
        self._prune()

    async def _compact(self) -> None:
        ckpt = {
            "t": "ckpt",
            "next": self.next_batch_id,
            "low": {k: list(v) for k, v in self.low.items()},
            "high": {k: list(v) for k, v in self.high.items()},
            "open": [s.to_json() for s in self.open.values()],
            "done": [s.to_json() for s in self.done_above.values()],
        }
        first = await commit(self._committer, self._log, [[orjson.dumps(ckpt)]])
        self._log.drop_before(first)

    async def _write(self, records: list[dict[str, Any]]) -> None:
        await commit(self._committer, self._log, [[orjson.dumps(r)] for r in records])

    def close(self) -> None:
        self._log.close()
