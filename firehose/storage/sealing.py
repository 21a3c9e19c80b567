"""Sealing stored entries: per-owner data keys wrapped by the keyring, AES-256-GCM with associated data.

The toolkit beneath both stores that encrypt at rest: the Kinesis sidecar's shard logs
(``firehose.streams.encryption``) and the delivery spool (``firehose.spool.encryption``). Each keeps
its own entry layout, nonce and persistence; what they share is here.

Data keys. An owner (a Kinesis stream, a delivery stream's spool) seals under its own data keys
(DEKs): random AES-256 keys, each wrapped (AES key wrap, RFC 3394, as the object envelopes of
``firehose.encoding.encrypt`` are) under a key-encryption key (KEK) of the daemon's keyring
(``firehose.keyring``) and kept, wrapped, with the id of the KEK that wrapped it. A DEK is named by its
generation (u32, increasing per owner). Owners make a new generation, wrapped by the keyring's newest
key, whenever they begin sealing (an enable, and every start of a process that seals): so a key added
to the keyring (rotation) seals new entries from the next start, and a DEK serves one process run only,
which is what lets nonces be deterministic (below). Entries sealed under older generations stay
readable while the keyring still holds the KEKs that wrapped them; an owner whose stored entries need a
KEK that is gone does not start (``MissingKeyError``, naming the owner and the key id).

Nonces. Callers pass a nonce that never repeats under one DEK: (where the entry lives, its sequence
number) is unique within a process run, and a DEK serves one run only, so sequence numbers handed out
again after a crash cut a torn tail are sealed under another key. A deterministic nonce has no birthday
bound, unlike a random 96-bit one (NIST's 2^32 messages per key).

Associated data. Callers authenticate what they keep in the clear (the entry's header, its position),
so an altered header, or an entry moved elsewhere, fails to open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from firehose.errors import ConfigError
from firehose.keyring import Keyring, UnknownKeyError

#: Loads the keyring (raising ValueError with the reason when it cannot); called only when an owner needs it.
KeyringLoader = Callable[[], Keyring]

#: Bytes of the GCM tag after each sealed body.
TAG_SIZE = 16

#: Where the keyring is configured, for messages that tell an operator what to fix.
KEYRING_SETTINGS = "encryption.keys_dir, encryption.env_prefix"


class MissingKeyError(ConfigError):
    """Stored entries need a key the keyring does not hold (or holds wrong): their owner does not start."""


class UnreadableError(Exception):
    """A sealed entry does not open: its data key generation is not held, or it fails authentication."""


@dataclass
class DataKey:
    """One generation of an owner's data key, as its owner persists it: wrapped, with its KEK's id."""

    generation: int
    kek_id: str
    wrapped: bytes
    #: When it stopped sealing (None: it seals now, or sealed when the process stopped).
    retired_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "kek_id": self.kek_id, "wrapped": self.wrapped.hex(),
                "retired_ms": self.retired_ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataKey:
        return cls(int(d["generation"]), str(d["kek_id"]), bytes.fromhex(d["wrapped"]), d.get("retired_ms"))


def new_data_key(generation: int, ring: Keyring) -> tuple[DataKey, bytes]:
    """A fresh DEK of ``generation``, wrapped under the keyring's newest key (ValueError when it is empty)."""
    kek_id = ring.newest_id
    key = AESGCM.generate_key(bit_length=256)
    return DataKey(generation, kek_id, aes_key_wrap(ring.get(kek_id), key)), key


def load_ring(keyring: KeyringLoader | None, where: str) -> Keyring:
    """The keyring an encrypted owner needs; MissingKeyError (naming ``where``) when it cannot be loaded."""
    try:
        return keyring() if keyring is not None else Keyring({})
    except ValueError as exc:
        raise MissingKeyError(f"{where} is encrypted, but the keyring cannot be loaded: {exc}") from None


def unwrap(dk: DataKey, ring: Keyring, where: str) -> bytes:
    """``dk``'s plain DEK; MissingKeyError naming ``where`` and the key id when the keyring cannot unwrap it."""
    try:
        return aes_key_unwrap(ring.get(dk.kek_id), dk.wrapped)
    except UnknownKeyError:
        raise MissingKeyError(
            f"{where} has records encrypted under key id {dk.kek_id!r}, which is not in the keyring "
            f"({KEYRING_SETTINGS}): put that key back to start; without it those records cannot be read") from None
    except InvalidUnwrap:
        raise MissingKeyError(
            f"{where} has records encrypted under key id {dk.kek_id!r}, but the keyring's key of that id is "
            "a different key (it does not unwrap the data key): put the original key back") from None


class DataKeys:
    """An owner's unwrapped data keys by generation (runtime only, never persisted); ``sealing`` is the
    generation new entries are sealed with, None while the owner stores plain entries."""

    __slots__ = ("_aeads", "sealing")

    def __init__(self) -> None:
        self._aeads: dict[int, AESGCM] = {}
        self.sealing: int | None = None

    def add(self, generation: int, key: bytes) -> None:
        self._aeads[generation] = AESGCM(key)

    def holds(self, generation: int) -> bool:
        return generation in self._aeads

    def seal_with(self, generation: int, nonce: bytes, body: bytes | bytearray | memoryview,
                  associated: bytes) -> bytes:
        """``body`` sealed under ``generation`` (ciphertext then the 16-byte tag)."""
        return self._aeads[generation].encrypt(nonce, body, associated)

    def open_with(self, generation: int, nonce: bytes, sealed: bytes | memoryview, associated: bytes) -> bytes:
        """The plain body of a sealed one; UnreadableError when its key is not held or it does not authenticate."""
        aead = self._aeads.get(generation)
        if aead is None:
            raise UnreadableError(f"it is sealed under data key generation {generation}, which is no longer held")
        try:
            return aead.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise UnreadableError("it failed authentication: it was altered or moved") from None
