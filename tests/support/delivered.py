"""Reading back what a delivery stream delivered: objects in a local bucket directory or an S3 bucket, and
the lines and records in them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until


def read_local(root: Path) -> dict[str, bytes]:
    """Every object under a local bucket directory, keyed by its S3-style key."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".firehose-tmp-"):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def list_objects(client: Any, bucket: str) -> list[str]:
    """Every key in an S3 bucket, sorted."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def delivered_lines(root: Path) -> list[bytes]:
    """Every line of every object under a local bucket directory, each with its line end."""
    return [line for body in read_local(root).values() for line in body.splitlines(keepends=True)]


def delivered_records(root: Path, prefix: str) -> list[bytes]:
    """The lines of the objects whose keys start with ``prefix``, without their line ends: the records of
    a delivery stream whose producer ended each one with a newline."""
    lines: list[bytes] = []
    for key, body in read_local(root).items():
        if key.startswith(prefix):
            lines += body.splitlines()
    return lines


def wait_for_lines(root: Path, expected: int, timeout: float = 20) -> list[bytes]:
    """Wait until at least ``expected`` lines were delivered, then return them all."""
    def enough() -> list[bytes] | None:
        lines = delivered_lines(root)
        return lines if len(lines) >= expected else None

    return list(wait_until(enough, timeout=timeout, interval=0.1))


def duplicates(lines: list[bytes]) -> int:
    """How many lines are extra copies of another."""
    return sum(n - 1 for n in Counter(lines).values() if n > 1)


def assert_delivered_once(objects: list[bytes], sent: list[bytes]) -> None:
    """Every sent line exactly once; each object a contiguous run of the send order.

    Objects cut within the same second sort by their UUID, so the order of
    keys says nothing about the order of objects; the order inside each does.
    """
    lines = [line for body in objects for line in body.splitlines(keepends=True)]
    assert sorted(lines) == sorted(sent)
    position = {line: i for i, line in enumerate(sent)}
    for body in objects:
        got = body.splitlines(keepends=True)
        start = position[got[0]]
        assert got == sent[start : start + len(got)]
