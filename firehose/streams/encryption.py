"""Encryption at rest of the shard logs, behind StartStreamEncryption / StopStreamEncryption.

Keys. Each stream seals its records under its own data keys, generations of random AES-256 keys
wrapped by the daemon's keyring (``firehose.keyring``: the one that also encrypts delivered objects and
delivery streams' spools); ``firehose.storage.sealing`` holds that machinery, shared with the spool.
This stream's generations are kept, wrapped, in ``streams.json``. A new generation is made whenever a
stream begins sealing: at StartStreamEncryption and at every start of the store for a stream whose
encryption is on. A store one of whose streams needs a key that is gone refuses to start
(``MissingKeyError``, naming the stream and the key id). A generation retired (superseded or stopped)
more than the retention period plus a day ago is forgotten, with the records it sealed all past
retention: then its KEK may leave the keyring. ``floor_ms`` keeps those records unreadable should the
retention period grow later.

KMS key ids. AWS's ``KeyId`` (a key UUID, key ARN, alias ARN, ``alias/<name>`` or the AWS-owned
``alias/aws/kinesis``) is a label here: it is checked against AWS's forms, reported by
DescribeStream as given, and whatever it says, records are sealed with the keyring's newest
key. Without a key in the keyring, StartStreamEncryption answers ``KMSNotFoundException`` (AWS's
answer for a key that does not exist); a keyring that cannot be loaded (a missing key directory,
a malformed key file) answers ``KMSInvalidStateException``.

Entries. An entry stored while its stream seals has, instead of ``shard.py``'s plain layout::

    arrival ms u64 | count u16 | 0xFFFF u16 | generation u32 | entry seq u64
    | AES-256-GCM(the rest of the plain entry) | tag 16

The arrival time and the record count stay where the plain layout has them, in the clear, so
everything that reads only entry headers (start-up, AT_TIMESTAMP, retention trimming,
MillisBehindLatest, a per-segment index) works without a key. They are authenticated: the
associated data is those 24 clear bytes plus the shard index, and the opener checks that the
entry sequence number in them is where the entry lies, so an altered header, or an entry moved
to another position or shard, fails to open. Entries cannot move between streams either: each
stream has its own DEKs. ``0xFFFF`` stands where a plain entry has its first record's key length
(1..256), which tells the two layouts apart, so one shard's history may mix them: entries
stored before StartStreamEncryption and after StopStreamEncryption are plain, and readers
(GetRecords, and the Kinesis source through it) open each kind as it comes.

Nonces. nonce = shard index u32 | entry seq u64 (big-endian), never repeated under one DEK:
shard indexes differ within a stream; a shard's log numbers its entries in increasing order
within a process (a failed write burns its numbers); and a DEK serves one process run only (a
new generation at each start), so sequence numbers handed out again after a crash cut a torn
tail are sealed under another key. A deterministic nonce has no birthday bound, unlike a
random 96-bit one (NIST's 2^32 messages per key), which a busy stream of many shards would
reach within hours. The store learns an entry's sequence number before the log hands it out
(``ShardData.next_entry``) because it appends each shard's entries in order from one event
loop and the log numbers them in the order they were submitted; it checks the number it got.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firehose.clock import now_ms
from firehose.keyring import Keyring
from firehose.storage.sealing import (
    DataKey,
    DataKeys,
    KeyringLoader,
    MissingKeyError,
    UnreadableError,
    load_ring,
    new_data_key,
    unwrap,
)
from firehose.streams.errors import (
    InternalFailure,
    InvalidArgumentException,
    KMSInvalidStateException,
    KMSNotFoundException,
    LimitExceededException,
)

if TYPE_CHECKING:
    from firehose.streams.store import ShardStore, Stream

__all__ = ["DataKey", "EncryptionState", "KeyringLoader", "MissingKeyError", "StreamKeys", "check_request",
           "describe", "is_sealed", "restore", "start", "stop"]

#: Successful StartStreamEncryption calls (and, separately, StopStreamEncryption calls) per stream per rolling day.
MAX_CHANGES_PER_DAY = 25
_DAY_MS = 24 * 3600 * 1000

_CLEAR = struct.Struct("<QHHIQ")  # arrival ms, count (as shard.py's entry header), marker, generation, entry seq
_MARK_AT = 10
_SHARD = struct.Struct("<I")
_NONCE = struct.Struct(">IQ")

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_KEY_UUID = re.compile(_UUID)
_KEY_ARN = re.compile(r"arn:aws[^:]*:kms:[^:]*:\d{12}:key/" + _UUID)
_ALIAS_ARN = re.compile(r"arn:aws[^:]*:kms:[^:]*:\d{12}:alias/.+")


# -- the KeyId and EncryptionType checks -------------------------------------------------------


def check_request(encryption_type: str, key_id: str) -> None:
    """AWS's checks beyond the model (which has checked the enum and the 1-2048 length), in kinesis-mock's
    order and with its texts (the key id's form, then the type); AWS's own texts are not verified."""
    if key_id.startswith("arn:"):
        if not (_KEY_ARN.fullmatch(key_id) or _ALIAS_ARN.fullmatch(key_id)):
            raise InvalidArgumentException("Received KeyId ARN is not a properly formatted ARN")
    elif not ((key_id.startswith("alias/") and len(key_id) > len("alias/")) or _KEY_UUID.fullmatch(key_id)):
        raise InvalidArgumentException("Received KeyId is not a properly formatted Alias or GUID")
    if encryption_type != "KMS":
        raise InvalidArgumentException("KMS is the only valid EncryptionType for this request")


# -- persisted state -----------------------------------------------------------------------------


@dataclass
class EncryptionState:
    """A stream's encryption, persisted in ``streams.json`` (absent for a stream never encrypted)."""

    #: The KMS KeyId as the caller gave it; None while encryption is off.
    key_id: str | None = None
    data_keys: list[DataKey] = field(default_factory=list)
    next_generation: int = 0
    #: Times (ms) of the StartStreamEncryption / StopStreamEncryption calls of the last day, for the limit.
    started: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    #: Records that arrived before this are unreadable: the generation that sealed them was forgotten.
    floor_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "data_keys": [k.to_json() for k in self.data_keys],
                "next_generation": self.next_generation, "started": self.started, "stopped": self.stopped,
                "floor_ms": self.floor_ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EncryptionState:
        return cls(d.get("key_id"), [DataKey.from_json(k) for k in d.get("data_keys", [])],
                   int(d.get("next_generation", 0)), list(d.get("started", [])), list(d.get("stopped", [])),
                   int(d.get("floor_ms", 0)))


def describe(state: EncryptionState | None) -> dict[str, str]:
    """DescribeStream's and DescribeStreamSummary's ``EncryptionType`` (and ``KeyId`` while it is on)."""
    if state is None or state.key_id is None:
        return {"EncryptionType": "NONE"}
    return {"EncryptionType": "KMS", "KeyId": state.key_id}


# -- sealing and opening entries -------------------------------------------------------------------


class StreamKeys(DataKeys):
    """A stream's unwrapped data keys by generation (runtime only); ``sealing`` is the generation new
    entries are sealed with, None while the stream stores plain entries."""

    __slots__ = ()

    def seal(self, shard_index: int, seq: int, payload: list[bytes]) -> list[bytes]:
        """The sealed form of a plain entry (``shard.encode_entry``'s parts) that will be entry ``seq``."""
        generation = self.sealing
        assert generation is not None, "seal() on a stream that is not sealing"
        arrival, count = struct.unpack_from("<QH", payload[0])
        clear = _CLEAR.pack(arrival, count, 0xFFFF, generation, seq)
        body = b"".join(payload)
        sealed = self.seal_with(generation, _NONCE.pack(shard_index, seq), memoryview(body)[_MARK_AT:],
                                clear + _SHARD.pack(shard_index))
        return [clear, sealed]

    def open(self, shard_index: int, seq: int, payload: memoryview) -> bytes:
        """The plain form of sealed entry ``seq`` (what ``shard.decode_entry`` reads); InternalFailure if it
        does not authenticate (altered or moved) or its data key is not held."""
        arrival, count, _mark, generation, stored_seq = _CLEAR.unpack_from(payload)
        where = f"entry {seq} of shard {shard_index}"
        if stored_seq != seq:
            raise _damaged(f"{where} says it is entry {stored_seq}: it was moved or its header altered")
        if not self.holds(generation):
            raise _damaged(f"{where} is sealed under data key generation {generation}, which this store "
                           "no longer holds")
        clear = payload[:_CLEAR.size]
        try:
            body = self.open_with(generation, _NONCE.pack(shard_index, seq), payload[_CLEAR.size:],
                                bytes(clear) + _SHARD.pack(shard_index))
        except UnreadableError:
            raise _damaged(f"{where} failed authentication: it was altered or moved from another shard") from None
        return bytes(payload[:_MARK_AT]) + body


def is_sealed(payload: memoryview) -> bool:
    """Whether an entry has the sealed layout (a plain one has its first key's length, 1..256, here)."""
    return payload[_MARK_AT] == 0xFF and payload[_MARK_AT + 1] == 0xFF


def _damaged(message: str) -> InternalFailure:
    return InternalFailure(f"Cannot read an encrypted record: {message}.")


# -- keys at start-up -----------------------------------------------------------------------------


def _last_arrival(stream: Stream, now: int) -> int:
    """No record stored so far arrived later than this (arrival times are clamped never to go back)."""
    return max([now, *(d.last_arrival_ms for d in stream.data.values())])


def _retire(stream: Stream, now: int) -> None:
    keys, state = stream.keys, stream.encryption
    if keys.sealing is None or state is None:
        return
    for dk in state.data_keys:
        if dk.generation == keys.sealing:
            dk.retired_ms = _last_arrival(stream, now)
    keys.sealing = None


def _new_data_key(state: EncryptionState, ring: Keyring) -> tuple[DataKey, bytes]:
    """A fresh generation wrapped under the keyring's newest key (ValueError when the keyring is empty)."""
    dk, key = new_data_key(state.next_generation, ring)
    state.next_generation += 1
    return dk, key


def _install(stream: Stream, dk: DataKey, key: bytes) -> None:
    assert stream.encryption is not None
    stream.encryption.data_keys.append(dk)
    stream.keys.add(dk.generation, key)
    stream.keys.sealing = dk.generation


def restore(stream: Stream, keyring: KeyringLoader | None, account: str) -> None:
    """Unwrap a stream's data keys as its store opens (its shards already open), and begin a new
    generation if it seals. MissingKeyError when a key that its readable records need is gone.

    The caller saves ``streams.json`` afterwards, before any entry is sealed with the new generation.
    """
    state = stream.encryption
    if state is None:
        return
    now = now_ms()
    forget_before = now - stream.retention_hours * 3600 * 1000 - _DAY_MS
    kept = []
    for dk in state.data_keys:
        if dk.retired_ms is not None and dk.retired_ms < forget_before:
            state.floor_ms = max(state.floor_ms, dk.retired_ms + 1)
        else:
            kept.append(dk)
    state.data_keys = kept
    if not kept and state.key_id is None:
        return
    where = f"Kinesis stream {stream.name!r} of account {account}"
    ring = load_ring(keyring, where)
    for dk in kept:
        stream.keys.add(dk.generation, unwrap(dk, ring, where))
        if dk.retired_ms is None:  # sealing when the store stopped: never again (its nonces could repeat)
            dk.retired_ms = _last_arrival(stream, now)
    if state.key_id is not None:
        try:
            _install(stream, *_new_data_key(state, ring))
        except ValueError as exc:
            raise MissingKeyError(f"{where} is encrypted, but {exc}") from None


# -- the operations ---------------------------------------------------------------------------------


def _admit(times: list[int], now: int, what: str, stream: Stream, account: str) -> list[int]:
    """The calls of the last day, or LimitExceededException when this one is one too many (text not verified)."""
    recent = [t for t in times if t > now - _DAY_MS]
    if len(recent) >= MAX_CHANGES_PER_DAY:
        raise LimitExceededException(
            f"Stream {stream.name} under account {account} has had encryption {what} {MAX_CHANGES_PER_DAY} times "
            "in the last 24 hours, the most allowed.")
    return recent


def start(store: ShardStore, name: str, encryption_type: str, key_id: str) -> None:
    """StartStreamEncryption: checks, then UPDATING, then new records are sealed and the stream is ACTIVE."""
    stream = store.stream(name)
    check_request(encryption_type, key_id)
    store.active(name)
    account = store.options.account_id
    state = stream.encryption or EncryptionState()
    now = now_ms()
    recent = _admit(state.started, now, "started", stream, account)
    try:
        ring = store.keyring() if store.keyring is not None else Keyring({})
    except ValueError as exc:
        raise KMSInvalidStateException(f"The keyring that stands in for KMS cannot be loaded: {exc}") from None
    if not ring.ids:
        raise KMSNotFoundException(
            f"Key '{key_id}' cannot be used: no key-encryption key is configured (add a key to the keyring: a "
            "<key id>.key file in encryption.keys_dir or an encryption.env_prefix variable, then restart).")
    dk, key = _new_data_key(state, ring)
    state.started = [*recent, now]
    state.key_id = key_id
    stream.encryption = state

    def apply(at: int) -> None:
        _retire(stream, at)
        _install(stream, dk, key)

    store._reshard(stream, apply)


def stop(store: ShardStore, name: str, encryption_type: str, key_id: str) -> None:
    """StopStreamEncryption: checks, then UPDATING, then new records are stored plain and the stream is ACTIVE."""
    stream = store.stream(name)
    check_request(encryption_type, key_id)
    store.active(name)
    state = stream.encryption or EncryptionState()
    now = now_ms()
    state.stopped = [*_admit(state.stopped, now, "stopped", stream, store.options.account_id), now]
    state.key_id = None
    stream.encryption = state
    store._reshard(stream, lambda at: _retire(stream, at))
