"""The keyring: key-encryption keys (KEKs) by id, newest last, loaded from files and variables.

One keyring serves everything the daemon encrypts at rest: the envelope encryption of delivered
objects (``firehose.encoding.encrypt``), the Kinesis sidecar's shard logs
(``firehose.streams.encryption``) and the spools of encrypted delivery streams
(``firehose.spool.encryption``). All wrap fresh data keys under the newest key, so adding a
key rotates them all, and all keep reading what older keys wrapped while the keyring still holds
them. Key material never appears in a message or a repr: only ids and sources do.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path

#: Bytes of a key-encryption key (AES-256).
KEY_SIZE = 32
#: What a key id may be: it is also a file name (``<id>.key``).
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")


class UnknownKeyError(KeyError):
    """The keyring has no key with this id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id

    def __str__(self) -> str:  # KeyError would show the repr of its argument
        return f"key {self.key_id!r} is not in the keyring; it was rotated out or never loaded"


def _decode_key(text: str, source: str) -> bytes:
    """A KEK from its base64 or hex text; errors name the source, never the key material."""
    text = text.strip()
    if _HEX_KEY.fullmatch(text):
        key = bytes.fromhex(text)
    else:
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error is one
            raise ValueError(f"{source}: a key must be base64 or hex text") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"{source}: a key must be {KEY_SIZE} bytes (AES-256), this one is {len(key)}")
    return key


class Keyring:
    """Key-encryption keys by id; the greatest id in sorted order is the newest.

    The repr shows ids only, so a keyring can appear in logs and tracebacks.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        for key_id, key in keys.items():
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r}: use 1-128 letters, digits, '.', '_' or '-'")
            if len(key) != KEY_SIZE:
                raise ValueError(f"key {key_id!r} must be {KEY_SIZE} bytes (AES-256), not {len(key)}")
        self._keys = {key_id: bytes(keys[key_id]) for key_id in sorted(keys)}

    @classmethod
    def load(cls, *, directory: Path | None = None, env_prefix: str | None = "FIREHOSE_KEK_",
             environ: Mapping[str, str] | None = None) -> Keyring:
        """Keys from ``<directory>/<key id>.key`` files and ``<env_prefix><ID>`` variables.

        A file holds one 32-byte key as base64 or hex text (``openssl rand -base64 32``);
        other files are ignored. A variable's id is its suffix, lower-cased. Name keys so
        their ids sort by age (``2026-11-01-main.key``): the greatest is the newest. The
        same id from two places is an error rather than a silent choice, because the two
        could be different keys. An empty keyring loads (nothing may need a key yet);
        ``encrypt`` refuses it.
        """
        found: dict[str, tuple[bytes, str]] = {}

        def add(key_id: str, text: str, source: str) -> None:
            if key_id in found:
                raise ValueError(f"key id {key_id!r} is defined twice: in {found[key_id][1]} and in {source}")
            found[key_id] = (_decode_key(text, source), source)

        if directory is not None:
            if not directory.is_dir():
                raise ValueError(f"key directory {directory} does not exist")
            for path in sorted(directory.glob("*.key")):
                add(path.name.removesuffix(".key"), path.read_bytes().decode("ascii", "replace"), str(path))
        if env_prefix is not None:
            env = os.environ if environ is None else environ
            for name in sorted(env):
                if name.startswith(env_prefix) and len(name) > len(env_prefix):
                    add(name[len(env_prefix):].lower(), env[name], f"${name}")
        return cls({key_id: key for key_id, (key, _) in found.items()})

    @property
    def ids(self) -> tuple[str, ...]:
        """Key ids, oldest first."""
        return tuple(self._keys)

    @property
    def newest_id(self) -> str:
        """The id of the key that wraps new data keys."""
        if not self._keys:
            raise ValueError("the keyring is empty: encryption needs a key-encryption key "
                             "(a <key id>.key file in the key directory or a FIREHOSE_KEK_<ID> variable)")
        return next(reversed(self._keys))

    def get(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyError(key_id) from None

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self._keys)})"
