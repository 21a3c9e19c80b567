"""KPL aggregated records: several user records packed into one Kinesis record.

Layout: magic ``F3 89 9A C2`` | protobuf ``AggregatedRecord`` | MD5 of the
protobuf bytes. The message is parsed by the protobuf runtime from the
KPL's own ``messages.proto`` definition, declared here (in a private pool, so
it cannot clash with another copy of the same schema in the process).
Anything that fails a check (short, wrong magic, digest mismatch,
undecodable message) is not aggregated and passes through as one record,
exactly as the awslabs de-aggregators treat it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16
_PACKAGE = "aws.kinesis.protobuf"


def _aggregated_record_class() -> type[Message]:
    """``AggregatedRecord`` from the KPL's messages.proto (proto2), built with the protobuf runtime."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="kpl_messages.proto", package=_PACKAGE, syntax="proto2")
    tag = proto.message_type.add(name="Tag")
    tag.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_REQUIRED)
    tag.field.add(name="value", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    record = proto.message_type.add(name="Record")
    record.field.add(name="partition_key_index", number=1, type=field.TYPE_UINT64, label=field.LABEL_REQUIRED)
    record.field.add(name="explicit_hash_key_index", number=2, type=field.TYPE_UINT64, label=field.LABEL_OPTIONAL)
    record.field.add(name="data", number=3, type=field.TYPE_BYTES, label=field.LABEL_REQUIRED)
    record.field.add(name="tags", number=4, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                     type_name=f".{_PACKAGE}.Tag")
    aggregated = proto.message_type.add(name="AggregatedRecord")
    aggregated.field.add(name="partition_key_table", number=1, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    aggregated.field.add(name="explicit_hash_key_table", number=2, type=field.TYPE_STRING,
                         label=field.LABEL_REPEATED)
    aggregated.field.add(name="records", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                         type_name=f".{_PACKAGE}.Record")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.AggregatedRecord"))


AggregatedRecord = _aggregated_record_class()


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
    keys, hashes = message.partition_key_table, message.explicit_hash_key_table  # type: ignore[attr-defined]
    out: list[UserRecord] = []
    for i, record in enumerate(message.records):  # type: ignore[attr-defined]
        if record.partition_key_index >= len(keys):
            return plain  # inconsistent tables: not something a KPL wrote
        ehk = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(hashes):
                return plain
            ehk = hashes[record.explicit_hash_key_index]
        out.append(UserRecord(record.data, keys[record.partition_key_index], ehk, i))
    return out
