"""A SQL application's checkpoint: input positions, engine state and the outputs still being sent, in one file.

One file per application (``<root>/<account>/<application>.ckpt``), replaced whole by
``storage.atomic.write_atomic``, so after a crash it is the old checkpoint or the new one,
never a mix. A checkpoint says, for tick ``tick``:

* ``positions``: where the input is read from next (per shard, or a delivery stream's spool position);
* ``snapshot``: the engine's state after the tick (open windows, sliding state, its clock);
* ``pending``: the output records of that tick, per output, with what is needed to find out
  after a crash which of them already reached their destination (``outputs.py``).

The runtime writes the checkpoint of a tick *before* it sends the tick's outputs: the outputs are
then durable (in the checkpoint itself) before the positions move past the records that made
them, and a restart sends what ``pending`` still holds. The checkpoint of the next tick replaces
the pending outputs of this one only once they were all sent.

Layout: ``b"KDACKPT1"``, the JSON header's length (u32, little endian), the JSON header, then the
snapshot's bytes. Output records are base64 in the header (one tick's worth of rows).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pybase64

from firehose.storage.atomic import write_atomic

_MAGIC = b"KDACKPT1"
_LEN = struct.Struct("<I")


@dataclass
class PendingOutput:
    """One output's records of a tick, not yet known to be at its destination.

    ``since`` (delivery stream outputs): the destination's raw log end before the checkpoint
    was written; the tick's entries, if any were written, are at or after it.
    """

    output_id: str
    records: list[bytes]
    since: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"output_id": self.output_id, "since": self.since,
                "records": [pybase64.b64encode(r).decode() for r in self.records]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingOutput:
        return cls(data["output_id"], [pybase64.b64decode(r) for r in data["records"]], data.get("since"))


@dataclass
class Checkpoint:
    """What a restart continues from (see the module's docstring)."""

    tick: int
    positions: dict[str, Any]
    snapshot: bytes = b""
    pending: list[PendingOutput] = field(default_factory=list)
    #: The ROWTIME of the last rows pushed (ms): a restart never stamps an older one.
    rowtime_ms: int = 0

    def encode(self) -> list[bytes]:
        header = orjson.dumps({"tick": self.tick, "positions": self.positions, "rowtime_ms": self.rowtime_ms,
                               "pending": [p.to_json() for p in self.pending]})
        return [_MAGIC, _LEN.pack(len(header)), header, self.snapshot]

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        if not data.startswith(_MAGIC):
            raise ValueError("not an application checkpoint")
        (size,) = _LEN.unpack_from(data, len(_MAGIC))
        start = len(_MAGIC) + _LEN.size
        header = orjson.loads(data[start:start + size])
        return cls(tick=int(header["tick"]), positions=header["positions"], snapshot=data[start + size:],
                   pending=[PendingOutput.from_json(p) for p in header.get("pending", [])],
                   rowtime_ms=int(header.get("rowtime_ms", 0)))


class CheckpointStore:
    """Checkpoints of every application, under ``root`` (blocking file I/O: call it off the event loop)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, account: str, name: str) -> Path:
        return self.root / account / f"{name}.ckpt"

    def load(self, account: str, name: str) -> Checkpoint | None:
        try:
            data = self.path(account, name).read_bytes()
        except FileNotFoundError:
            return None
        return Checkpoint.decode(data)

    def save(self, account: str, name: str, checkpoint: Checkpoint) -> None:
        write_atomic(self.path(account, name), checkpoint.encode())

    def forget(self, account: str, name: str) -> None:
        self.path(account, name).unlink(missing_ok=True)
