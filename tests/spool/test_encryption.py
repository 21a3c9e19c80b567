"""Encryption at rest of a delivery stream's spool: sealed on the way to disk, opened on every read path."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from firehose.keyring import Keyring
from firehose.spool import PROC, RAW, Spool, StreamSpool, retained
from firehose.spool.cursor import BatchCursor, ProcessCursor
from firehose.spool.encryption import KEYS_FILE, UnreadableEntry
from firehose.spool.entry import RecordEntry
from firehose.storage.sealing import MissingKeyError

SECRET = b"card-4111-1111-1111-1111"


def _key(n: int) -> bytes:
    return bytes([n]) * 32


def _open(root: Path, keys: dict[str, bytes] | None, *, segment_bytes: int = 1 << 20) -> tuple[Spool, StreamSpool]:
    ring = Keyring(keys or {})
    spool = Spool(root, max_bytes=1 << 30, segment_bytes=segment_bytes, keyring=lambda: ring)
    return spool, spool.open_stream("s-1", label="delivery stream 's' of account 123456789012")


def _disk(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*.seg")))


async def _read_all(stream: StreamSpool) -> list[bytes]:
    got: list[bytes] = []
    cursor = BatchCursor(stream, RAW)
    while cursor.has_unread():
        await cursor.read(1 << 20, lambda _p, e, a, b: got.extend(bytes(e.record(i)) for i in range(a, b)))
    return got


def test_records_are_not_on_disk_in_clear_and_read_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        await spool.append(stream, [b"plain-before"], 1, 12)
        assert stream.encryption.begin(spool.keyring) == "k1"
        await spool.append(stream, [SECRET, SECRET + b"-2"], 2, 2 * len(SECRET) + 2)
        disk = _disk(tmp_path)
        assert SECRET not in disk
        assert b"plain-before" in disk  # stored before encryption was enabled: plain, as on AWS
        assert await _read_all(stream) == [b"plain-before", SECRET, SECRET + b"-2"]
        # A delivery worker reads records from the segment file only for plain entries.
        frames = stream.read_frames(RAW, 0, 1 << 20)
        assert [bool(f.path) for f in frames] == [True, False]
        stream.encryption.end()
        await spool.append(stream, [b"plain-after"], 3, 11)
        assert b"plain-after" in _disk(tmp_path)
        assert await _read_all(stream) == [b"plain-before", SECRET, SECRET + b"-2", b"plain-after"]
        spool.close()

    asyncio.run(scenario())


def test_processed_entries_are_sealed_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        stream.encryption.begin(spool.keyring)
        await spool.append(stream, [b"raw-" + SECRET], 1, 4 + len(SECRET))
        feeder = ProcessCursor(stream)
        taken: list[RecordEntry] = []
        await feeder.read(1 << 20, lambda e, _first: taken.append(e))
        await feeder.append([("", [(b"out-" + SECRET, 1)])], (1, 0))
        assert SECRET not in _disk(tmp_path)
        spool.close()
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        assert ProcessCursor(stream).position == (1, 0)  # read from the newest processed entry, opened
        got: list[bytes] = []
        await BatchCursor(stream, PROC).read(1 << 20, lambda _p, e, a, b: got.extend(
            bytes(e.record(i)) for i in range(a, b)))
        assert got == [b"out-" + SECRET]
        spool.close()

    asyncio.run(scenario())


def test_restart_reads_with_the_keyring_and_a_missing_key_refuses_to_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        stream.encryption.begin(spool.keyring)
        await spool.append(stream, [SECRET], 1, len(SECRET))
        spool.close()  # or a crash: the key file was durable before the first sealed entry
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        assert not stream.encryption.sealing  # the owner decides (the daemon, from the catalog)
        assert await _read_all(stream) == [SECRET]
        spool.close()
        with pytest.raises(MissingKeyError, match=r"delivery stream 's' of account 123456789012 .* key id 'k1', "
                                                  r"which is not in the keyring"):
            _open(tmp_path, {"k2": _key(2)})
        with pytest.raises(MissingKeyError, match=r"delivery stream 's' .*'k1'.* a different key"):
            _open(tmp_path, {"k1": _key(9)})

    asyncio.run(scenario())


def test_rotation_new_generation_under_the_newest_key_and_old_entries_stay_readable(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        stream.encryption.begin(spool.keyring)
        await spool.append(stream, [b"under-k1"], 1, 8)
        spool.close()
        spool, stream = _open(tmp_path, {"k1": _key(1), "k2": _key(2)})  # k2 sorts last: the newest
        assert stream.encryption.begin(spool.keyring) == "k2"
        await spool.append(stream, [b"under-k2"], 2, 8)
        doc = orjson.loads((tmp_path / "s-1" / KEYS_FILE).read_bytes())
        assert [(k["generation"], k["kek_id"]) for k in doc["data_keys"]] == [(0, "k1"), (1, "k2")]
        assert await _read_all(stream) == [b"under-k1", b"under-k2"]
        assert b"under-k" not in _disk(tmp_path)
        spool.close()

    asyncio.run(scenario())


def test_a_generation_whose_entries_are_gone_is_forgotten_so_its_key_may_leave(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)}, segment_bytes=4096)
        stream.encryption.begin(spool.keyring)
        for i in range(40):
            await spool.append(stream, [b"x" * 300], i, 300)
        spool.close()
        spool, stream = _open(tmp_path, {"k1": _key(1), "k2": _key(2)}, segment_bytes=4096)  # k1's generation retired
        stream.encryption.begin(spool.keyring)
        for i in range(40):
            await spool.append(stream, [b"y" * 300], i, 300)
        spool.release(stream, RAW, (stream.log.committed_next_seq, 0))  # everything delivered
        spool.close()
        spool, stream = _open(tmp_path, {"k2": _key(2)}, segment_bytes=4096)  # k1 removed from the keyring
        doc = orjson.loads((tmp_path / "s-1" / KEYS_FILE).read_bytes())
        assert [k["kek_id"] for k in doc["data_keys"]] == ["k2"]
        spool.close()

    asyncio.run(scenario())


def test_an_altered_or_moved_sealed_entry_does_not_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool, stream = _open(tmp_path, {"k1": _key(1)})
        stream.encryption.begin(spool.keyring)
        await spool.append(stream, [SECRET], 1, len(SECRET))
        frame = stream.log.read_frames(0, 1 << 20)[0]
        with pytest.raises(UnreadableEntry, match="says it is entry 0"):
            stream.encryption.open(0, 5, frame.payload)  # moved to another position
        with pytest.raises(UnreadableEntry, match="failed authentication"):
            stream.encryption.open(1, 0, frame.payload)  # moved to the processed log
        altered = bytearray(frame.payload)
        altered[-1] ^= 1
        with pytest.raises(UnreadableEntry, match="failed authentication"):
            stream.encryption.open(0, 0, memoryview(altered))
        spool.close()

    asyncio.run(scenario())


def test_a_retained_encrypted_spool_is_counted_with_the_keyring(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "spool"
        spool, stream = _open(root, {"k1": _key(1)})
        stream.encryption.begin(spool.keyring)
        await spool.append(stream, [SECRET, b"two"], 1, len(SECRET) + 3)
        directory = spool.detach_stream("s-1")
        spool.close()
        with pytest.raises(MissingKeyError):
            await retained.count(directory, processes=False)
        ring = Keyring({"k1": _key(1)})
        assert await retained.count(directory, processes=False, keyring=lambda: ring) == (2, len(SECRET) + 3)
        kept, records, _size = await retained.retain(directory, tmp_path / "deleted", stream="s", account="a",
                                                     processes=False, definition=None, keep=True,
                                                     keyring=lambda: ring)
        assert kept is not None and records == 2
        assert (kept.path / KEYS_FILE).exists() and os.listdir(kept.path / "records")

    asyncio.run(scenario())
