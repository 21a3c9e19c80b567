"""Encryption at rest of one delivery stream's spool (StartDeliveryStreamEncryption and friends).

While a stream's encryption is on, every entry its spool stores (the records as accepted, and the
processing chain's output) is sealed with AES-256-GCM before it reaches the disk, so records are never
there in clear text while they wait. The machinery is ``firehose.storage.sealing``'s, shared with the
Kinesis sidecar's shard logs; this module keeps the spool's layout, nonces and key file.

Keys. The stream's data keys (generations, each wrapped by a key of the daemon's keyring) are kept in
``<spool>/<stream key>/keys.json`` (written atomically and fsynced before a generation seals anything),
beside the logs they open rather than in the catalog: they belong to those bytes, so they leave with
them (a deleted stream's retained spool carries its keys to ``firehose replay``), and no catalog
rewrite can lose them. Whether the stream *should* seal is the catalog's (``firehose.sse``): the daemon
calls ``begin`` (a new generation, wrapped by the keyring's newest key, which is how a key added to the
keyring takes over) when encryption is enabled and at every start of a stream whose encryption is on,
and ``end`` when it is disabled. Opening a spool (``restore``) unwraps every generation its entries may
need; a key that is gone stops the start with ``MissingKeyError`` naming the stream and the key id.
Every generation is retired at open (a DEK serves one process run: its nonces are unique only there),
and one none of whose entries can remain (each log's oldest segment starts past the sequence numbers it
had reached when it was retired) is forgotten: its key may then leave the keyring.

Entries. A sealed entry is, in place of a plain one (``entry.py``, whose first byte is its kind, 1-3)::

    kind 0x53 u8 | generation u32 | entry seq u64 | AES-256-GCM(the plain entry) | tag 16

The associated data is those 13 clear bytes plus the log (raw 0, processed 1), and the opener checks that
the sequence number in them is where the entry lies: an altered header, or an entry moved to another
position or log, fails to open. One stream's logs may mix both kinds (entries stored before encryption
was enabled or after it was disabled are plain), and readers open each as it comes. The nonce is
log u32 | entry seq u64: unique within a run (the log hands out increasing numbers; a failed write burns
its numbers), under a DEK of that run only. The log tells the sequence number to the sealer as it
writes the entry (``storage.log.Deferred``), in the committer's thread: sealing costs the event loop
nothing but the closure.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from firehose.clock import now_ms
from firehose.storage.atomic import write_atomic
from firehose.storage.log import Frame, Payload, SegmentLog
from firehose.storage.sealing import (
    TAG_SIZE,
    DataKey,
    DataKeys,
    KeyringLoader,
    MissingKeyError,
    UnreadableError,
    load_ring,
    new_data_key,
    unwrap,
)

__all__ = ["KEYS_FILE", "PROC_LOG", "RAW_LOG", "SEAL_OVERHEAD", "MissingKeyError", "SpoolKeys", "UnreadableEntry",
           "is_sealed"]

KEYS_FILE = "keys.json"
KIND_SEALED = 0x53
RAW_LOG = 0
PROC_LOG = 1
_CLEAR = struct.Struct("<BIQ")  # kind, generation, entry seq
_LOG = struct.Struct("<B")
_NONCE = struct.Struct(">IQ")  # log, entry seq
#: Bytes a sealed entry has beyond its plain form.
SEAL_OVERHEAD = _CLEAR.size + TAG_SIZE


class UnreadableEntry(ValueError):
    """A sealed spool entry that does not open (altered, moved, or its key forgotten): like a corrupt entry."""


def is_sealed(payload: bytes | memoryview) -> bool:
    """Whether an entry has the sealed layout (a plain one starts with its kind, 1..3)."""
    return len(payload) > 0 and payload[0] == KIND_SEALED


class SpoolKeys:
    """One stream spool's data keys: ``keys.json`` on disk, the unwrapped ones in memory.

    ``sealing`` is True while new entries are sealed. ``begin`` and ``end`` write the key file (fsync)
    and may block: call them off the event loop once the stream runs. ``seal`` and ``open`` are safe
    from any thread.
    """

    def __init__(self, directory: Path, where: str) -> None:
        self.path = directory / KEYS_FILE
        #: Names the stream in messages ("delivery stream 'orders' of account 123456789012").
        self.where = where
        self.data_keys: list[DataKey] = []
        #: Per generation retired at an open: each log's next sequence number then (none it sealed is past it).
        self.ends: dict[int, tuple[int, int]] = {}
        self.next_generation = 0
        self.keys = DataKeys()

    @property
    def sealing(self) -> bool:
        return self.keys.sealing is not None

    @property
    def sealing_kek(self) -> str | None:
        """The id of the keyring key that wraps the generation sealing now."""
        return next((dk.kek_id for dk in self.data_keys if dk.generation == self.keys.sealing), None)

    # -- persistence ----------------------------------------------------------------------------

    def _load(self) -> bool:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return False
        self.data_keys = [DataKey.from_json(d) for d in doc.get("data_keys", [])]
        self.ends = {int(g): (int(e[0]), int(e[1])) for g, e in doc.get("ends", {}).items()}
        self.next_generation = int(doc.get("next_generation", 0))
        return True

    def _save(self) -> None:
        doc: dict[str, Any] = {"data_keys": [dk.to_json() for dk in self.data_keys],
                               "ends": {str(g): list(e) for g, e in self.ends.items()},
                               "next_generation": self.next_generation}
        write_atomic(self.path, [orjson.dumps(doc, option=orjson.OPT_INDENT_2)], mode=0o600)

    def restore(self, keyring: KeyringLoader | None, raw: SegmentLog, processed: SegmentLog) -> None:
        """At open (nothing written yet): forget the generations no entry can need, retire the others and
        unwrap them. MissingKeyError when a key they need is not in the keyring. Nothing seals afterwards
        until ``begin``."""
        if not self._load():
            return
        firsts = (raw.first_seq, processed.first_seq)
        kept = [dk for dk in self.data_keys
                if not (dk.generation in self.ends and all(f >= e for f, e in zip(firsts, self.ends[dk.generation],
                                                                                     strict=True)))]
        changed = len(kept) != len(self.data_keys)
        self.data_keys = kept
        self.ends = {dk.generation: self.ends[dk.generation] for dk in kept if dk.generation in self.ends}
        now = now_ms()
        for dk in kept:
            if dk.generation not in self.ends:  # it may have sealed anything up to here, never more
                self.ends[dk.generation] = (raw.next_seq, processed.next_seq)
                dk.retired_ms = dk.retired_ms or now
                changed = True
        if kept:
            ring = load_ring(keyring, self.where)
            for dk in kept:
                self.keys.add(dk.generation, unwrap(dk, ring, self.where))
        if changed:
            self._save()

    def begin(self, keyring: KeyringLoader | None) -> str:
        """Seal new entries under a fresh generation wrapped by the keyring's newest key; that key's id.

        The key file is durable before anything is sealed with it. MissingKeyError (nothing changed)
        when the keyring cannot be loaded or is empty."""
        ring = load_ring(keyring, self.where)
        try:
            dk, key = new_data_key(self.next_generation, ring)
        except ValueError as exc:
            raise MissingKeyError(f"{self.where} is encrypted, but {exc}") from None
        self._retire()
        self.data_keys.append(dk)
        self.next_generation += 1
        try:
            self._save()
        except BaseException:
            self.data_keys.pop()
            self.next_generation -= 1
            raise
        self.keys.add(dk.generation, key)
        self.keys.sealing = dk.generation
        return dk.kek_id

    def end(self) -> None:
        """Store new entries plain (entries sealed so far stay readable)."""
        if self._retire():
            self._save()

    def _retire(self) -> bool:
        generation = self.keys.sealing
        if generation is None:
            return False
        self.keys.sealing = None
        for dk in self.data_keys:
            if dk.generation == generation:
                dk.retired_ms = now_ms()
        return True

    # -- entries ----------------------------------------------------------------------------------

    def sealer(self, log: int, payload: Payload) -> Callable[[int], Payload]:
        """What the log writes in place of ``payload`` (``storage.log.Deferred``): it sealed under the
        generation sealing now, with the sequence number the log gives it."""
        generation = self.keys.sealing
        assert generation is not None, "sealer() on a spool that is not sealing"
        keys = self.keys

        def seal(seq: int) -> Payload:
            clear = _CLEAR.pack(KIND_SEALED, generation, seq)
            body = payload[0] if len(payload) == 1 else b"".join(payload)
            return [clear, keys.seal_with(generation, _NONCE.pack(log, seq), body, clear + _LOG.pack(log))]

        return seal

    def open(self, log: int, seq: int, payload: memoryview) -> bytes:
        """The plain entry a sealed one holds; UnreadableEntry when it does not open."""
        _kind, generation, stored_seq = _CLEAR.unpack_from(payload)
        where = f"{self.where}: spool entry {seq} of the {'raw' if log == RAW_LOG else 'processed'} log"
        if stored_seq != seq:
            raise UnreadableEntry(f"{where} says it is entry {stored_seq}: it was moved or its header altered")
        clear = bytes(payload[:_CLEAR.size])
        try:
            return self.keys.open_with(generation, _NONCE.pack(log, seq), payload[_CLEAR.size:], clear + _LOG.pack(log))
        except UnreadableError as exc:
            raise UnreadableEntry(f"{where} cannot be read: {exc}") from None

    def opened(self, log: int, frames: list[Frame]) -> list[Frame]:
        """``frames`` with each sealed one's payload opened; an opened frame has no path (its bytes are not on
        disk as they are now). Frames of a spool that was never encrypted come back untouched."""
        if not self.data_keys:
            return frames
        return [Frame(f.seq, memoryview(self.open(log, f.seq, f.payload)), "", 0) if is_sealed(f.payload) else f
                for f in frames]
