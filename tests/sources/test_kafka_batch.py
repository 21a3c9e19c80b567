"""Kafka messages made into one spool entry: the run-at-a-time path and the per-message one agree."""

from __future__ import annotations

import base64
from typing import Any

from confluent_kafka import KafkaError, Message

from firehose.sources.kafka_batch import KafkaBatch
from firehose.spool import entry as spool_entry

RECEIVED = 5_000


def msg(p: int, offset: int, value: bytes | None = b"v", *, ts: int = 1_000, key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None) -> Message:
    return Message(topic="t", partition=p, offset=offset, value=value, key=key, headers=headers,
                   timestamp=(1, ts))


def entry_of(batch: KafkaBatch, checkpoints: dict[int, int]) -> spool_entry.RecordEntry:
    payload = batch.payload(checkpoints, lambda value, arrival, p, o: b"too large %d/%d" % (p, o), "errors", "data")
    return spool_entry.decode(1, memoryview(b"".join(payload)))


def records(entry: spool_entry.RecordEntry) -> list[tuple[Any, ...]]:
    assert entry.kafka is not None
    return [(*spool_entry.kafka_record(entry.kafka, i)[:2], bytes(entry.record(i)), entry.arrival(i))
            for i in range(entry.count)]


def test_runs_of_new_consecutive_offsets_are_taken_whole() -> None:
    batch = KafkaBatch(topic="t", keep=False, limit=100)
    messages = [msg(0, o, b"a%d" % o, ts=2_000 + o) for o in range(10, 14)] + [msg(1, o) for o in range(3)]
    batch.add(messages, positions={0: 9}, assigned={0, 1}, not_before={}, received=RECEIVED, on_error=print)
    batch.add([msg(0, 14, b"a14"), msg(1, 3, ts=-1)], positions={0: 9}, assigned={0, 1}, not_before={},
              received=RECEIVED, on_error=print)
    assert batch.runs == [[0, 10, 4], [1, 0, 3], [0, 14, 1], [1, 3, 1]]
    assert batch.moved == {0: 14, 1: 3}
    assert batch.records == 9 and batch.size == 4 * 3 + 3 + 3 + 1
    entry = entry_of(batch, {0: 14, 1: 3})
    assert entry.checkpoints == {"0": "14", "1": "3"}
    assert records(entry)[:5] == [(0, 10, b"a10", 2_010), (0, 11, b"a11", 2_011), (0, 12, b"a12", 2_012),
                                  (0, 13, b"a13", 2_013), (1, 0, b"v", 1_000)]
    assert records(entry)[-1] == (1, 3, b"v", RECEIVED)  # no timestamp: when it was read


def test_what_is_not_new_or_not_assigned_or_too_old_is_left_and_the_rest_kept_in_order() -> None:
    errors: list[Any] = []
    batch = KafkaBatch(topic="t", keep=True, limit=4)
    not_before = {2: 1_500}
    messages = [
        msg(0, 4), msg(0, 5, None, key=b"k", headers=[("h", b"x"), ("n", None)]),  # 4 spooled already; a tombstone
        msg(0, 7, b"gap"),  # a compacted topic's gap
        Message(topic="t", partition=0, error=KafkaError(KafkaError._PARTITION_EOF)),
        msg(1, 0),  # not assigned (revoked)
        msg(2, 0, ts=1_000), msg(2, 1, ts=1_600), msg(2, 2, ts=1_000),  # read from 1,500: from offset 1 on
        msg(3, 0, b"large"), msg(3, 1, b"ok"),
    ]
    batch.add(messages, positions={0: 4}, assigned={0, 2, 3}, not_before=not_before, received=RECEIVED,
              on_error=errors.append)
    assert len(errors) == 1 and not_before == {}
    assert batch.moved == {0: 7, 2: 2, 3: 1}
    assert batch.runs == [[0, 5, 1], [0, 7, 1], [2, 1, 2], [3, 1, 1]]
    entry = entry_of(batch, {0: 7, 2: 2, 3: 1})
    assert [r[:3] for r in records(entry)] == [(0, 5, b""), (0, 7, b"gap"), (2, 1, b"v"), (2, 2, b"v"),
                                               (3, 1, b"ok"), (3, 0, b"too large 3/0")]
    assert entry.partitions == (("data", 0, 5), ("errors", 5, 6))
    assert entry.kafka is not None
    assert entry.kafka["keys"] == [base64.b64encode(b"k").decode(), None, None, None, None, None]
    assert entry.kafka["headers"][0] == [["h", base64.b64encode(b"x").decode()], ["n", None]]


def test_a_batch_with_nothing_new_moves_nothing() -> None:
    batch = KafkaBatch(topic="t", keep=False, limit=100)
    batch.add([msg(0, 1), msg(0, 2)], positions={0: 2}, assigned={0}, not_before={}, received=RECEIVED,
              on_error=print)
    assert batch.moved == {} and batch.records == 0


def test_a_tombstone_or_a_gap_inside_a_new_run_is_taken_message_by_message() -> None:
    """A run is taken whole only when its ends are count - 1 apart and every message has a value; a
    tombstone becomes an empty record and a compacted gap keeps each record's own offset."""
    batch = KafkaBatch(topic="t", keep=False, limit=100)
    batch.add([msg(0, 0, b"a"), msg(0, 1, None), msg(0, 2, b"ccc"), msg(1, 5, b"x"), msg(1, 9, b"yy")],
              positions={}, assigned={0, 1}, not_before={}, received=RECEIVED, on_error=print)
    assert batch.runs == [[0, 0, 3], [1, 5, 1], [1, 9, 1]]
    assert batch.lengths == [1, 0, 3, 1, 2] and batch.size == 7
    entry = entry_of(batch, {0: 2, 1: 9})
    assert [r[:3] for r in records(entry)] == [(0, 0, b"a"), (0, 1, b""), (0, 2, b"ccc"), (1, 5, b"x"),
                                               (1, 9, b"yy")]
