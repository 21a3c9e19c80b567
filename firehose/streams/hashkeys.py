"""Partition keys → hash keys, and how a stream's hash key space is cut into shards.

Kinesis routes a record by the MD5 of its partition key read as a 128-bit
unsigned integer (or by an explicit hash key), to the open shard whose
inclusive range contains it. Ranges are decimal strings on the wire.
"""

from __future__ import annotations

import hashlib

MAX_HASH_KEY = 2**128 - 1


def hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8"), usedforsecurity=False).digest(), "big")


def initial_ranges(count: int) -> list[tuple[int, int]]:
    """[start, end] per shard, as AWS and kinesalite lay out a new stream."""
    size = 2**128 // count
    ranges = [(i * size, (i + 1) * size - 1) for i in range(count)]
    ranges[-1] = (ranges[-1][0], MAX_HASH_KEY)
    return ranges


def parse_hash_key(value: object) -> int | None:
    """A decimal hash key string within 0 … 2^128−1, else None."""
    if not isinstance(value, str) or not value.isdigit() or (len(value) > 1 and value[0] == "0") or len(value) > 39:
        return None
    n = int(value)
    return n if n <= MAX_HASH_KEY else None
