"""KPL de-aggregation against records packed by awslabs' own aggregator."""

from __future__ import annotations

import hashlib

from aws_kinesis_agg.aggregator import RecordAggregator

from firehose.sources.kpl import MAGIC, deaggregate


def aggregated(n: int) -> tuple[str, bytes]:
    aggregator = RecordAggregator()
    for i in range(n):
        aggregator.add_user_record(f"pk-{i % 3}", f"record-{i}".encode(), "12345" if i == 1 else None)
    pk, _ehk, data = aggregator.clear_and_get().get_contents()
    return pk, data


def test_user_records_come_out_with_keys_and_subsequence_numbers() -> None:
    pk, data = aggregated(5)
    records = deaggregate(data, pk)
    assert [r.data for r in records] == [f"record-{i}".encode() for i in range(5)]
    assert [r.partition_key for r in records] == ["pk-0", "pk-1", "pk-2", "pk-0", "pk-1"]
    assert [r.subsequence for r in records] == [0, 1, 2, 3, 4]
    assert records[1].explicit_hash_key == "12345" and records[0].explicit_hash_key is None


def test_anything_not_a_valid_aggregate_passes_through_whole() -> None:
    pk, data = aggregated(3)
    body = data[len(MAGIC):-16]
    garbage = b"\xff\xfe not protobuf"
    for raw in (b"plain text", MAGIC + b"short", data[:-1] + bytes([data[-1] ^ 1]),  # digest mismatch
                b"\x00\x00\x00\x00" + data[4:],  # wrong magic
                MAGIC + garbage + hashlib.md5(garbage).digest()):  # right digest, undecodable message
        (record,) = deaggregate(raw, "outer")
        assert record.data == raw and record.partition_key == "outer" and record.subsequence == 0
    assert len(deaggregate(MAGIC + body + hashlib.md5(body).digest(), pk)) == 3
