"""The local-directory destination: S3 key layout on disk, atomic and idempotent writes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from firehose.destinations.base import DestinationContext
from firehose.destinations.local import LocalDirectoryDestination
from firehose.records import ObjectBatch
from firehose.settings import Settings


def deliver(dest: LocalDirectoryDestination, key: str, *parts: bytes) -> None:
    batch = ObjectBatch("s", key, tuple(parts), sum(map(len, parts)), len(parts), 0)
    asyncio.run(dest.deliver(batch))


def make(tmp_path: Path) -> LocalDirectoryDestination:
    ctx = DestinationContext(stream="s", settings=Settings(), executor=ThreadPoolExecutor(2))
    return LocalDirectoryDestination(tmp_path / "bucket", ctx)


def test_writes_the_key_as_a_path_and_the_parts_back_to_back(tmp_path: Path) -> None:
    dest = make(tmp_path)
    asyncio.run(dest.check())
    deliver(dest, "2024/01/02/03/s-1-2024-01-02-03-04-05-u", b"one\n", memoryview(b"two\n"))
    assert (tmp_path / "bucket/2024/01/02/03/s-1-2024-01-02-03-04-05-u").read_bytes() == b"one\ntwo\n"


def test_delivering_the_same_key_again_replaces_the_object(tmp_path: Path) -> None:
    dest = make(tmp_path)
    deliver(dest, "k/obj", b"first")
    (tmp_path / "bucket/k/.firehose-tmp-obj").write_bytes(b"left by a crash")
    deliver(dest, "k/obj", b"second")
    assert sorted(p.name for p in (tmp_path / "bucket/k").iterdir()) == ["obj"]
    assert (tmp_path / "bucket/k/obj").read_bytes() == b"second"


def test_keys_cannot_escape_the_directory(tmp_path: Path) -> None:
    dest = make(tmp_path)
    deliver(dest, "../../etc/x", b"data")
    deliver(dest, "/abs//double", b"data")
    inside = sorted(str(p.relative_to(tmp_path / "bucket")) for p in (tmp_path / "bucket").rglob("*") if p.is_file())
    assert inside == ["%2E%2E/%2E%2E/etc/x", "%2F/abs/%2F/double"]
    assert not (tmp_path / "etc").exists()
