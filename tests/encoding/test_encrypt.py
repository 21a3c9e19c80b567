"""Envelope encryption: round trips, rotation, every way an object can be damaged, streaming, keyrings."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firehose.encoding.encrypt import (
    SEGMENT_SIZE,
    TAG_SIZE,
    DecryptionError,
    EnvelopeHeader,
    Keyring,
    UnknownKeyError,
    decrypt,
    decrypt_file,
    decrypt_object,
    encrypt,
    seal_file_stream,
)

MiB = 1 << 20
SEALED = SEGMENT_SIZE + TAG_SIZE
OLD, NEW = "2026-01-01-old", "2026-11-01-main"
KEYS = {OLD: os.urandom(32), NEW: os.urandom(32)}
KEYRING = Keyring({OLD: KEYS[OLD]})


def seal(data: bytes, keyring: Keyring = KEYRING) -> tuple[EnvelopeHeader, bytes]:
    header, ciphertext = encrypt([data], keyring)
    return header, b"".join(ciphertext)


def open_object(metadata: dict[str, str], body: bytes, keyring: Keyring = KEYRING) -> bytes:
    out = io.BytesIO()
    decrypt_object(io.BytesIO(body), metadata, out, keyring)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 10 * MiB],
                         ids=["empty", "one-byte", "one-segment", "one-byte-over", "10MiB"])
def test_round_trip_through_every_entry_point(size: int) -> None:
    data = os.urandom(size)
    header, body = seal(data)
    segments = max(1, -(-size // SEGMENT_SIZE))
    assert len(body) == size + segments * TAG_SIZE
    assert b"".join(decrypt(header, [body], KEYRING)) == data
    assert open_object(header.to_metadata(), body) == data
    sealed_file = b"".join(seal_file_stream([data], KEYRING))
    out = io.BytesIO()
    assert decrypt_file(io.BytesIO(sealed_file), out, KEYRING).key_id == OLD
    assert out.getvalue() == data


def test_bodies_in_small_parts_and_ciphertext_in_odd_pieces_decrypt_the_same() -> None:
    data = os.urandom(3 * SEGMENT_SIZE + 123)
    parts = [memoryview(data)[i : i + 1000] for i in range(0, len(data), 1000)]
    header, ciphertext = encrypt(parts, KEYRING)
    body = b"".join(ciphertext)
    pieces = [body[i : i + 777] for i in range(0, len(body), 777)]
    assert b"".join(decrypt(header, pieces, KEYRING)) == data


def test_each_object_gets_a_fresh_data_key_and_nonce() -> None:
    (h1, c1), (h2, c2) = seal(b"same"), seal(b"same")
    assert h1.wrapped_key != h2.wrapped_key and h1.nonce_prefix != h2.nonce_prefix and c1 != c2


# -- header --------------------------------------------------------------------


def test_header_round_trips_through_bytes_and_metadata() -> None:
    header, _ = seal(b"x")
    assert EnvelopeHeader.from_bytes(header.to_bytes()) == header
    meta = header.to_metadata()
    assert EnvelopeHeader.from_metadata(meta) == header
    assert set(meta) == {"firehose-enc-version", "firehose-enc-alg", "firehose-enc-key-id",
                         "firehose-enc-wrapped-key", "firehose-enc-nonce", "firehose-enc-segment"}
    assert all(v.isascii() for v in meta.values())
    assert sum(len(k) + len(v) for k, v in meta.items()) < 512  # S3 allows 2 KB of user metadata
    # S3 returns metadata keys lower-cased, other clients may not; unrelated keys are ignored.
    shouted = {k.upper(): v for k, v in meta.items()} | {"content-owner": "team-a"}
    assert EnvelopeHeader.from_metadata(shouted) == header


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"XXENC" + b[5:], "not a firehose-encrypted file"),
        (lambda b: b[:5] + b"\x02" + b[6:], "unsupported envelope version 2"),
        (lambda b: b + b"\0", "length field does not match"),
        (lambda b: b[:-1], "length field does not match"),
        (lambda b: b[:3], "not a firehose-encrypted file"),
    ],
    ids=["magic", "version", "trailing-byte", "cut-short", "tiny"],
)
def test_malformed_in_band_headers_are_rejected(mangle: Callable[[bytes], bytes], message: str) -> None:
    header, _ = seal(b"x")
    with pytest.raises(DecryptionError, match=message):
        EnvelopeHeader.from_bytes(mangle(header.to_bytes()))


def test_metadata_that_is_missing_or_unsupported_is_named() -> None:
    meta = seal(b"x")[0].to_metadata()
    lacks = "not a firehose-encrypted object: its metadata lacks firehose-enc-alg"
    with pytest.raises(DecryptionError, match=lacks):
        EnvelopeHeader.from_metadata({k: v for k, v in meta.items() if k != "firehose-enc-alg"})
    with pytest.raises(DecryptionError, match="unsupported algorithm 'AES128-CBC'"):
        EnvelopeHeader.from_metadata(meta | {"firehose-enc-alg": "AES128-CBC"})
    with pytest.raises(DecryptionError, match="malformed encryption metadata"):
        EnvelopeHeader.from_metadata(meta | {"firehose-enc-nonce": "not base64!"})
    with pytest.raises(DecryptionError, match="segment size 1073741824 is outside"):
        EnvelopeHeader.from_metadata(meta | {"firehose-enc-segment": str(1 << 30)})


# -- rotation and keys ---------------------------------------------------------


def test_rotation_new_objects_use_the_newest_key_old_ones_stay_readable_until_it_is_removed() -> None:
    old_header, old_body = seal(b"written before rotation", Keyring({OLD: KEYS[OLD]}))
    rotated = Keyring(KEYS)
    new_header, new_body = seal(b"written after rotation", rotated)
    assert (old_header.key_id, new_header.key_id) == (OLD, NEW)
    assert open_object(old_header.to_metadata(), old_body, rotated) == b"written before rotation"
    assert open_object(new_header.to_metadata(), new_body, rotated) == b"written after rotation"
    retired = Keyring({NEW: KEYS[NEW]})
    with pytest.raises(DecryptionError, match=f"key '{OLD}' is not in the keyring; it was rotated out"):
        open_object(old_header.to_metadata(), old_body, retired)
    assert open_object(new_header.to_metadata(), new_body, retired) == b"written after rotation"


def test_wrong_key_under_the_right_id_is_detected_before_any_output() -> None:
    header, body = seal(b"secret")
    with pytest.raises(DecryptionError, match=f"cannot unwrap the data key with key '{OLD}': wrong key"):
        decrypt(header, [body], Keyring({OLD: os.urandom(32)}))  # fails at the call, not lazily


def test_encrypting_with_an_empty_keyring_fails_clearly() -> None:
    with pytest.raises(ValueError, match="the keyring is empty"):
        encrypt([b"x"], Keyring({}))


# -- damage --------------------------------------------------------------------

PLAIN = os.urandom(3 * SEGMENT_SIZE + 100)  # segments 0-2 full, segment 3 (the last) short
HEADER, BODY = seal(PLAIN)
META = HEADER.to_metadata()


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def flip_metadata(key: str) -> dict[str, str]:
    raw = base64.b64decode(META[key])
    return META | {key: base64.b64encode(flip(raw, 0)).decode()}


DAMAGE = {
    # case: (metadata, body, error message, how many leading segments verified and were written)
    "flipped-byte-in-segment": (META, flip(BODY, SEALED + 10),
                                "segment 1 failed authentication: it was altered", 1),
    "flipped-byte-in-last-segment": (META, flip(BODY, len(BODY) - 1),
                                     "final segment 3 failed authentication: .*altered", 3),
    "flipped-nonce-in-header": (flip_metadata("firehose-enc-nonce"), BODY,
                                "segment 0 failed authentication: .*the header was altered", 0),
    "flipped-wrapped-key": (flip_metadata("firehose-enc-wrapped-key"), BODY,
                            "cannot unwrap the data key .*the wrapped key was altered", 0),
    "segment-size-changed": (META | {"firehose-enc-segment": str(SEGMENT_SIZE // 2)}, BODY,
                             "segment 0 failed authentication: .*the header was altered", 0),
    "unknown-key-id": (META | {"firehose-enc-key-id": "2027-01-01-other"}, BODY,
                       "key '2027-01-01-other' is not in the keyring", 0),
    "truncated-at-segment-boundary": (META, BODY[: 2 * SEALED],
                                      "truncated object: it ends after segment 1, which is not the last", 1),
    "truncated-mid-segment": (META, BODY[: 2 * SEALED + 100],
                              "final segment 2 failed authentication: the object was truncated inside it", 2),
    "truncated-inside-a-tag": (META, BODY[: SEALED + 5], "truncated object: it ends inside segment 1", 1),
    "truncated-to-nothing": (META, b"", "truncated object: it has no segments", 0),
    "two-segments-swapped": (META, BODY[SEALED : 2 * SEALED] + BODY[:SEALED] + BODY[2 * SEALED :],
                             "segment 0 failed authentication: it was altered or moved", 0),
    "segment-dropped": (META, BODY[:SEALED] + BODY[2 * SEALED :],
                        "segment 1 failed authentication: it was altered or moved", 1),
    "trailing-garbage": (META, BODY + b"garbage",
                         "final segment 3 failed authentication: .*has data appended", 3),
}


@pytest.mark.parametrize("metadata, body, message, verified", DAMAGE.values(), ids=DAMAGE.keys())
def test_damage_is_named_and_only_verified_segments_are_written(
    metadata: dict[str, str], body: bytes, message: str, verified: int
) -> None:
    out = io.BytesIO()
    with pytest.raises(DecryptionError, match=message):
        decrypt_object(io.BytesIO(body), metadata, out, KEYRING)
    assert out.getvalue() == PLAIN[: verified * SEGMENT_SIZE]


def test_trailing_data_after_a_full_last_segment_is_named() -> None:
    data = os.urandom(2 * SEGMENT_SIZE)
    header, body = seal(data)
    out = io.BytesIO()
    with pytest.raises(DecryptionError, match=r"trailing data after the last segment \(segment 1\)"):
        decrypt_object(io.BytesIO(body + b"x" * 100), header.to_metadata(), out, KEYRING)
    assert out.getvalue() == data[:SEGMENT_SIZE]


def test_in_band_header_is_authenticated_and_files_are_recognised() -> None:
    sealed = b"".join(seal_file_stream([PLAIN], KEYRING))
    header_size = len(HEADER.to_bytes())
    nonce_at = header_size - 4 - 7  # the nonce prefix sits just before the u32 segment size
    for damaged, message in [
        (flip(sealed, nonce_at), "segment 0 failed authentication: .*the header was altered"),
        (flip(sealed, header_size - 1), "segment 0 failed authentication: .*the header was altered"),
        (b"just some plain text", "not a firehose-encrypted file"),
    ]:
        out = io.BytesIO()
        with pytest.raises(DecryptionError, match=message):
            decrypt_file(io.BytesIO(damaged), out, KEYRING)
        assert out.getvalue() == b""


# -- streaming -----------------------------------------------------------------


def test_64_mib_streams_through_encryption_and_decryption_without_materialising() -> None:
    consumed = 0

    def body() -> Iterator[bytes]:
        nonlocal consumed
        for i in range(64):
            consumed += 1
            yield bytes([i]) * MiB

    def watched(ciphertext: Iterator[bytes]) -> Iterator[bytes]:
        """Pass segments on, checking encryption reads only one segment ahead of what it emitted."""
        for n, segment in enumerate(ciphertext, start=1):
            assert consumed <= (n + 1) * SEGMENT_SIZE // MiB + 1
            yield segment

    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        header, ciphertext = encrypt(body(), KEYRING)
        assert consumed == 0
        for plain in decrypt(header, watched(ciphertext), KEYRING):
            digest.update(plain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert consumed == 64
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB for a 64 MiB body"
    expected = hashlib.sha256()
    for i in range(64):
        expected.update(bytes([i]) * MiB)
    assert digest.digest() == expected.digest()


# -- keyring loading -----------------------------------------------------------


def test_keyring_loads_key_files_and_environment_and_orders_by_id(tmp_path: Path) -> None:
    a, b, c = os.urandom(32), os.urandom(32), os.urandom(32)
    (tmp_path / "2026-01-01-old.key").write_text(base64.b64encode(a).decode() + "\n")
    (tmp_path / "2026-11-01-main.key").write_text(b.hex())
    (tmp_path / "README").write_text("not a key")
    environ = {"FIREHOSE_KEK_ZZ_LATEST": base64.b64encode(c).decode(), "HOME": "/root"}
    ring = Keyring.load(directory=tmp_path, environ=environ)
    assert ring.ids == ("2026-01-01-old", "2026-11-01-main", "zz_latest")
    assert ring.newest_id == "zz_latest"
    assert (ring.get("2026-01-01-old"), ring.get("2026-11-01-main"), ring.get("zz_latest")) == (a, b, c)
    assert Keyring.load(directory=tmp_path, env_prefix=None, environ=environ).newest_id == "2026-11-01-main"
    assert a.hex() not in repr(ring) and repr(ring).startswith("Keyring(ids=")


def test_keyring_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32)
    monkeypatch.setenv("FIREHOSE_KEK_PROD", base64.b64encode(key).decode())
    assert Keyring.load().get("prod") == key


@pytest.mark.parametrize(
    "files, environ, message",
    [
        ({"short.key": base64.b64encode(b"x" * 16).decode()}, {},
         r"short.key: a key must be 32 bytes .* is 16"),
        ({"bad.key": "this is not base64"}, {}, "bad.key: a key must be base64 or hex"),
        ({"main.key": os.urandom(32).hex()}, {"FIREHOSE_KEK_MAIN": base64.b64encode(os.urandom(32)).decode()},
         r"key id 'main' is defined twice: in .*main.key and in \$FIREHOSE_KEK_MAIN"),
        ({}, {"FIREHOSE_KEK_A": os.urandom(32).hex(), "FIREHOSE_KEK_a": os.urandom(32).hex()},
         "key id 'a' is defined twice"),
        ({"bad id!.key": os.urandom(32).hex()}, {}, "key id 'bad id!'"),
    ],
    ids=["wrong-length", "not-base64", "duplicate-file-and-env", "duplicate-env", "bad-id"],
)
def test_keyring_load_errors_are_clear(tmp_path: Path, files: dict[str, str], environ: dict[str, str],
                                       message: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        Keyring.load(directory=tmp_path, environ=environ)


def test_missing_key_directory_and_unknown_ids_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Keyring.load(directory=tmp_path / "nope", environ={})
    ring = Keyring.load(directory=tmp_path, environ={})
    assert ring.ids == ()
    with pytest.raises(UnknownKeyError) as info:
        ring.get("gone")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "key 'gone' is not in the keyring; it was rotated out or never loaded"
