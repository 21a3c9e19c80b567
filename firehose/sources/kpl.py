"""KPL aggregated records: several user records packed into one Kinesis record.

Layout: magic ``F3 89 9A C2`` | protobuf ``AggregatedRecord`` | MD5 of the
protobuf bytes. The message is parsed with the protobuf runtime and the
message class from awslabs' own ``aws_kinesis_agg`` package (the reference
implementation of the format). Anything that fails a check (short, wrong
magic, digest mismatch, undecodable message) is not aggregated and passes
through as one record, exactly as the awslabs de-aggregators treat it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from aws_kinesis_agg.messages_pb2 import AggregatedRecord  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


class UserRecord(NamedTuple):
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    subsequence: int


def deaggregate(data: bytes, partition_key: str, explicit_hash_key: str | None = None) -> list[UserRecord]:
    """The user records inside a Kinesis record (the record itself if it is not aggregated)."""
    plain = [UserRecord(data, partition_key, explicit_hash_key, 0)]
    if len(data) <= len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        return plain
    body, digest = data[len(MAGIC):-_DIGEST], data[-_DIGEST:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        return plain
    try:
        message = AggregatedRecord.FromString(body)
    except DecodeError:
        return plain
    keys, hashes = message.partition_key_table, message.explicit_hash_key_table
    out: list[UserRecord] = []
    for i, record in enumerate(message.records):
        if record.partition_key_index >= len(keys):
            return plain  # inconsistent tables: not something a KPL wrote
        ehk = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(hashes):
                return plain
            ehk = hashes[record.explicit_hash_key_index]
        out.append(UserRecord(record.data, keys[record.partition_key_index], ehk, i))
    return out
