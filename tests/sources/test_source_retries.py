"""How the Kinesis source retries a shard's reads and its appends to the spool (fakes, no servers).

A throttled GetRecords is retried with the same iterator and is not reported; an expired
iterator is replaced at once, without counting as a failure; any other error is reported and
reading goes on from a fresh iterator; a full spool holds the records and retries; each failure
waits out the shared backoff (``firehose.retry``), counted from the last success.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from firehose.errors import ServiceUnavailableException
from firehose.retry import Backoff
from firehose.settings import KinesisSettings
from firehose.sources import kinesis
from firehose.sources.kinesis import KinesisSource

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


class ScriptedKinesis:
    """get_records answers from a script (an exception, or a response); iterators are numbered."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[str] = []
        self.iterators = 0

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        self.iterators += 1
        self.calls.append(f"iterator {kwargs['ShardIteratorType']} -> it{self.iterators}")
        return {"ShardIterator": f"it{self.iterators}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        self.calls.append(f"get_records {ShardIterator}")
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class FullThenRoomySpool:
    """A spool that is full for the first ``full`` appends."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.appends = 0

    async def append_sourced(self, stream: Any, payload: Any) -> int:
        self.appends += 1
        if self.appends <= self.full:
            raise ServiceUnavailableException("Slow down. The spool is full.")
        return self.appends


def test_a_shards_reads_and_appends_retry_as_their_failures_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    ceilings: list[float] = []

    def uniform(lo: float, hi: float) -> float:
        ceilings.append(hi)
        return 0.0  # no real waiting; the ceiling says which failure of a run this was

    monkeypatch.setattr(kinesis, "_BACKOFF", Backoff(1.0, 8.0, uniform=uniform))
    record = {"Data": b"hello", "PartitionKey": "k", "SequenceNumber": "49", "ApproximateArrivalTimestamp": 1.0}
    fake = ScriptedKinesis([
        client_error("ProvisionedThroughputExceededException"),
        client_error("ExpiredIteratorException"),
        client_error("InternalFailure"),
        {"Records": [record], "MillisBehindLatest": 0, "NextShardIterator": None},  # a closed shard, read to its end
    ])
    spool = FullThenRoomySpool(full=2)
    stream = SimpleNamespace(log=SimpleNamespace(size_bytes=0), processed=SimpleNamespace(size_bytes=0))
    source = KinesisSource(name="s", stream_arn=ARN, spool=spool, stream=stream,  # type: ignore[arg-type]
                           settings=KinesisSettings(), client_factory=lambda: fake)
    errors: list[str | None] = []
    note = source._note_error
    monkeypatch.setattr(source, "_note_error", lambda *a, **k: (note(*a, **k), errors.append(source.state.last_error)))

    asyncio.run(source._read_shard("shardId-0"))

    assert fake.calls == [
        "iterator TRIM_HORIZON -> it1",
        "get_records it1",  # throttled: the same iterator again
        "get_records it1",  # expired: a new one at once
        "iterator TRIM_HORIZON -> it2",
        "get_records it2",  # failed: reported, and a new iterator
        "iterator TRIM_HORIZON -> it3",
        "get_records it3",
    ]
    # Two failures while reading (throttle, error: the expired iterator is none), two full spools.
    assert ceilings == [1.0, 2.0, 1.0, 2.0]
    assert errors == ["ClientError: An error occurred (InternalFailure) when calling the GetRecords operation: "
                      "InternalFailure", "ServiceUnavailableException: Slow down. The spool is full.",
                      "ServiceUnavailableException: Slow down. The spool is full."]
    assert spool.appends == 3 and source._checkpoints == {"shardId-0": "49"}
    assert source.state.shards["shardId-0"].records == 1
