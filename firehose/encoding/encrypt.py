"""Client-side envelope encryption of objects: AES-256-GCM in a segmented stream.

Each object gets a fresh random 256-bit data key (DEK). The DEK is wrapped with AES key
wrap (RFC 3394) under a key-encryption key (KEK) from the keyring. Key wrap, rather than
AES-GCM under the KEK, needs no nonce: a long-lived KEK wraps millions of keys without
the birthday bound that random 96-bit GCM nonces would put on it, and unwrapping checks
integrity, so a wrong KEK or an altered wrapped key is detected before any data is read.

The body is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár), as in Tink's
streaming AEAD and age: the plaintext is cut into segments of ``segment_size`` bytes
(1 MiB, large enough that per-segment costs vanish next to AES itself; the last one
shorter, possibly empty) and segment *i* is sealed with AES-256-GCM under the DEK with

* nonce = nonce prefix (7 random bytes per object) ‖ *i* (u32, big-endian) ‖ last flag (1 byte)
* associated data = the encoded header (``EnvelopeHeader.to_bytes``), so the algorithm,
  key id, wrapped key, nonce prefix and segment size are all authenticated.

Ciphertext segments are ``segment_size + 16`` bytes, the last one possibly shorter. The
counter makes a reordered or dropped segment fail, the last flag makes a stream cut at a
segment boundary fail, and decryption releases a segment's plaintext only after its tag
verified, so nothing unauthenticated is ever returned; a failure raises
``DecryptionError`` naming the case. The stream carries no total length, so bytes
appended after a short last segment are reported as that segment failing (appended
data is one of the causes its message lists); after a full-size last segment they are
reported as trailing data. Per-segment authentication means a reader emits the verified
segments before a later one fails: callers writing to a file write a temporary file and
rename it only on success.

The header travels in-band for local files (``seal_file_stream``: header, then
ciphertext) and as S3 user metadata for objects (``EnvelopeHeader.to_metadata``).
In-band header, all integers big-endian::

    "FHENC" | version u8 (1) | length u16 of what follows
    | u8 len + algorithm (ASCII) | u8 len + key id (ASCII) | u8 len + wrapped key (40 bytes)
    | u8 len + nonce prefix (7 bytes) | segment size u32

Rotation: KEKs are named by id and the newest (the greatest id) wraps new DEKs. Adding a
key rotates; objects written under older keys stay readable while the keyring still
holds their key, and removing a key makes them unreadable (crypto-shredding). Operators
name keys so that their ids sort by age, e.g. ``2026-11-01-main``.
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from firehose.encoding.compress import Chunk, rechunk
from firehose.keyring import KEY_ID, KEY_SIZE, Keyring, UnknownKeyError  # shared with the shard logs

VERSION = 1
ALGORITHM = "AES256-GCM-STREAM"
SEGMENT_SIZE = 1024 * 1024
#: Largest segment a reader accepts: it buffers one segment, and the size comes from the header.
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
WRAPPED_KEY_SIZE = KEY_SIZE + 8  # RFC 3394 adds one 64-bit integrity block.
READ_SIZE = 1024 * 1024

MAGIC = b"FHENC"
_PREFIX = struct.Struct(">5sBH")  # magic, version, length of the fields that follow
_SEGMENT_SIZE = struct.Struct(">I")
_NONCE_SUFFIX = struct.Struct(">IB")  # segment counter, last flag

_NOT_A_SEALED_FILE = "not a firehose-encrypted file: it does not start with an FHENC header"

METADATA_PREFIX = "firehose-enc-"
_META_VERSION = METADATA_PREFIX + "version"
_META_ALGORITHM = METADATA_PREFIX + "alg"
_META_KEY_ID = METADATA_PREFIX + "key-id"
_META_WRAPPED_KEY = METADATA_PREFIX + "wrapped-key"
_META_NONCE = METADATA_PREFIX + "nonce"
_META_SEGMENT = METADATA_PREFIX + "segment"


class DecryptionError(ValueError):
    """An object could not be decrypted; the message says why. No unverified plaintext was released."""


# -- Header --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """What a reader needs besides the KEK; validated on construction, so a parsed header is usable."""

    version: int
    algorithm: str
    key_id: str
    wrapped_key: bytes
    nonce_prefix: bytes
    segment_size: int

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise DecryptionError(f"unsupported envelope version {self.version}; "
                                  f"this firehose reads {VERSION}")
        if self.algorithm != ALGORITHM:
            raise DecryptionError(f"unsupported algorithm {self.algorithm!r}; "
                                  f"this firehose reads {ALGORITHM}")
        if not KEY_ID.fullmatch(self.key_id):
            raise DecryptionError(f"malformed header: invalid key id {self.key_id!r}")
        if len(self.wrapped_key) != WRAPPED_KEY_SIZE:
            raise DecryptionError(f"malformed header: the wrapped key is {len(self.wrapped_key)} bytes, "
                                  f"not {WRAPPED_KEY_SIZE}")
        if len(self.nonce_prefix) != NONCE_PREFIX_SIZE:
            raise DecryptionError(f"malformed header: the nonce prefix is {len(self.nonce_prefix)} bytes, "
                                  f"not {NONCE_PREFIX_SIZE}")
        if not 1 <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise DecryptionError(f"malformed header: segment size {self.segment_size} is outside "
                                  f"1..{MAX_SEGMENT_SIZE}")

    def to_bytes(self) -> bytes:
        """The in-band header; also the associated data of every segment."""
        fields = b"".join(
            bytes([len(value)]) + value
            for value in (self.algorithm.encode(), self.key_id.encode(), self.wrapped_key, self.nonce_prefix)
        ) + _SEGMENT_SIZE.pack(self.segment_size)
        return _PREFIX.pack(MAGIC, self.version, len(fields)) + fields

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeHeader:
        """Parse exactly one in-band header (``to_bytes`` output, nothing after it)."""
        if len(data) < _PREFIX.size or not data.startswith(MAGIC):
            raise DecryptionError(_NOT_A_SEALED_FILE)
        _, version, length = _PREFIX.unpack_from(data)
        if version != VERSION:  # a later version may lay its fields out differently
            raise DecryptionError(f"unsupported envelope version {version}; this firehose reads {VERSION}")
        if len(data) != _PREFIX.size + length:
            raise DecryptionError("malformed header: its length field does not match")
        values: list[bytes] = []
        pos = _PREFIX.size
        try:
            for _ in range(4):
                end = pos + 1 + data[pos]
                values.append(data[pos + 1 : end])
                pos = end
            (segment_size,) = _SEGMENT_SIZE.unpack_from(data, pos)
            algorithm, key_id = values[0].decode("ascii"), values[1].decode("ascii")
        except (IndexError, struct.error, UnicodeDecodeError):
            raise DecryptionError("malformed header: its fields are cut short or not ASCII") from None
        if pos + _SEGMENT_SIZE.size != len(data):
            raise DecryptionError("malformed header: its fields do not fill its length")
        return cls(version, algorithm, key_id, values[2], values[3], segment_size)

    def to_metadata(self) -> dict[str, str]:
        """S3 user metadata (ASCII values, about 200 bytes of S3's 2 KB)."""
        return {
            _META_VERSION: str(self.version),
            _META_ALGORITHM: self.algorithm,
            _META_KEY_ID: self.key_id,
            _META_WRAPPED_KEY: base64.b64encode(self.wrapped_key).decode(),
            _META_NONCE: base64.b64encode(self.nonce_prefix).decode(),
            _META_SEGMENT: str(self.segment_size),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> EnvelopeHeader:
        """Parse ``to_metadata`` output; keys match case-insensitively (S3 lower-cases them) and
        unrelated keys are ignored."""
        meta = {k.lower(): v for k, v in metadata.items()}
        missing = [k for k in (_META_VERSION, _META_ALGORITHM, _META_KEY_ID, _META_WRAPPED_KEY, _META_NONCE,
                               _META_SEGMENT) if k not in meta]
        if missing:
            raise DecryptionError(f"not a firehose-encrypted object: its metadata lacks {', '.join(missing)}")
        try:
            version, segment_size = int(meta[_META_VERSION]), int(meta[_META_SEGMENT])
            wrapped_key = base64.b64decode(meta[_META_WRAPPED_KEY], validate=True)
            nonce_prefix = base64.b64decode(meta[_META_NONCE], validate=True)
        except ValueError as exc:  # int() or base64 (binascii.Error is a ValueError)
            raise DecryptionError(f"malformed encryption metadata: {exc}") from None
        return cls(version, meta[_META_ALGORITHM], meta[_META_KEY_ID], wrapped_key, nonce_prefix,
                   segment_size)


# -- Stream --------------------------------------------------------------------


def _with_last_flag(pieces: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Pair each piece with whether it is the last, looking one piece ahead.

    No pieces at all yield ``(b"", True)``: an empty body is still one (empty) last segment.
    """
    current = next(pieces, b"")
    for following in pieces:
        yield current, False
        current = following
    yield current, True


def _nonce(header: EnvelopeHeader, index: int, last: bool) -> bytes:
    return header.nonce_prefix + _NONCE_SUFFIX.pack(index, last)


def encrypt(chunks: Iterable[Chunk], keyring: Keyring) -> tuple[EnvelopeHeader, Iterator[bytes]]:
    """Seal a body under a fresh data key wrapped by the keyring's newest key.

    Returns the header (to store in-band or as metadata) and the ciphertext, one segment
    per item, produced as ``chunks`` is consumed. The key is chosen and wrapped here, so
    an empty keyring fails at the call rather than midway through an upload.
    """
    key_id = keyring.newest_id
    data_key = AESGCM.generate_key(bit_length=256)
    header = EnvelopeHeader(VERSION, ALGORITHM, key_id, aes_key_wrap(keyring.get(key_id), data_key),
                            os.urandom(NONCE_PREFIX_SIZE), SEGMENT_SIZE)
    return header, _seal(AESGCM(data_key), header, chunks)


def _seal(aead: AESGCM, header: EnvelopeHeader, chunks: Iterable[Chunk]) -> Iterator[bytes]:
    aad = header.to_bytes()
    for index, (segment, last) in enumerate(_with_last_flag(rechunk(chunks, header.segment_size))):
        yield aead.encrypt(_nonce(header, index, last), segment, aad)


def decrypt(header: EnvelopeHeader, chunks: Iterable[Chunk], keyring: Keyring) -> Iterator[bytes]:
    """The plaintext of a ciphertext stream, one verified segment per item.

    The data key is unwrapped here, so an unknown or wrong key fails at the call; a
    damaged stream raises ``DecryptionError`` when the first bad segment is reached.
    """
    return _open(AESGCM(_unwrap(header, keyring)), header, chunks)


def _unwrap(header: EnvelopeHeader, keyring: Keyring) -> bytes:
    try:
        return aes_key_unwrap(keyring.get(header.key_id), header.wrapped_key)
    except UnknownKeyError as exc:
        raise DecryptionError(f"cannot decrypt: {exc}") from None
    except InvalidUnwrap:
        raise DecryptionError(f"cannot unwrap the data key with key {header.key_id!r}: wrong key, "
                              "or the wrapped key was altered") from None


def _open(aead: AESGCM, header: EnvelopeHeader, chunks: Iterable[Chunk]) -> Iterator[bytes]:
    aad = header.to_bytes()
    sealed_size = header.segment_size + TAG_SIZE
    for index, (segment, last) in enumerate(_with_last_flag(rechunk(chunks, sealed_size))):
        if last:
            yield _open_last(aead, header, aad, index, segment)
        else:
            yield _open_inner(aead, header, aad, index, segment)


def _try_open(aead: AESGCM, nonce: bytes, segment: bytes, aad: bytes) -> bytes | None:
    """The segment's plaintext if it authenticates under this nonce, else None."""
    try:
        return aead.decrypt(nonce, segment, aad)
    except InvalidTag:
        return None


def _open_inner(aead: AESGCM, header: EnvelopeHeader, aad: bytes, index: int, segment: bytes) -> bytes:
    """A full-size segment with more data after it."""
    plain = _try_open(aead, _nonce(header, index, False), segment, aad)
    if plain is not None:
        return plain
    if _try_open(aead, _nonce(header, index, True), segment, aad) is not None:
        raise DecryptionError(f"trailing data after the last segment (segment {index})")
    cause = "it was altered or moved" + (", or the header was altered" if index == 0 else "")
    raise DecryptionError(f"segment {index} failed authentication: {cause}")


def _open_last(aead: AESGCM, header: EnvelopeHeader, aad: bytes, index: int, segment: bytes) -> bytes:
    """Whatever is left at the end of the stream, which must be the segment sealed as the last."""
    if len(segment) < TAG_SIZE:
        where = "it has no segments" if index == 0 and not segment else f"it ends inside segment {index}"
        raise DecryptionError(f"truncated object: {where}")
    plain = _try_open(aead, _nonce(header, index, True), segment, aad)
    if plain is not None:
        return plain
    if _try_open(aead, _nonce(header, index, False), segment, aad) is not None:
        raise DecryptionError(f"truncated object: it ends after segment {index}, which is not the last")
    cause = "the object was truncated inside it, or it was altered or has data appended"
    if index == 0:
        cause += ", or the header was altered"
    raise DecryptionError(f"the final segment {index} failed authentication: {cause}")


# -- Files and objects ---------------------------------------------------------


def seal_file_stream(chunks: Iterable[Chunk], keyring: Keyring) -> Iterator[bytes]:
    """A self-describing encrypted file: the in-band header, then the ciphertext."""
    header, ciphertext = encrypt(chunks, keyring)
    return itertools.chain((header.to_bytes(),), ciphertext)


def _read_exact(source: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size and (more := source.read(size - len(data))):
        data += more
    return data


def _read_chunks(source: BinaryIO) -> Iterator[bytes]:
    while data := source.read(READ_SIZE):
        yield data


def _read_header(source: BinaryIO) -> EnvelopeHeader:
    """Read exactly the in-band header, leaving ``source`` at the first ciphertext byte."""
    prefix = _read_exact(source, _PREFIX.size)
    if len(prefix) < _PREFIX.size or not prefix.startswith(MAGIC):
        raise DecryptionError(_NOT_A_SEALED_FILE)
    _, _, length = _PREFIX.unpack(prefix)
    return EnvelopeHeader.from_bytes(prefix + _read_exact(source, length))


def _write_plaintext(header: EnvelopeHeader, source: BinaryIO, out: BinaryIO, keyring: Keyring) -> None:
    for plain in decrypt(header, _read_chunks(source), keyring):
        out.write(plain)


def decrypt_file(source: BinaryIO, out: BinaryIO, keyring: Keyring) -> EnvelopeHeader:
    """Decrypt a ``seal_file_stream`` file into ``out``; returns its header (key id, for tooling).

    Only verified segments reach ``out``. On ``DecryptionError`` it may hold the verified
    segments before the failure: discard it.
    """
    header = _read_header(source)
    _write_plaintext(header, source, out, keyring)
    return header


def decrypt_object(body: BinaryIO, metadata: Mapping[str, str], out: BinaryIO,
                   keyring: Keyring) -> EnvelopeHeader:
    """Decrypt an S3 object (ciphertext body, header in its user metadata) into ``out``.

    Only verified segments reach ``out``. On ``DecryptionError`` it may hold the verified
    segments before the failure: discard it.
    """
    header = EnvelopeHeader.from_metadata(metadata)
    _write_plaintext(header, body, out, keyring)
    return header
