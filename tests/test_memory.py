"""Memory is bounded by configuration, not by backlog or traffic (memory.max_buffered_bytes).

The outage test runs the real daemon with every destination down under boto3 load and reads its
resident memory from /proc; the budget tests drive a deliverer against a destination that fails.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from firehose.catalog import StreamState
from firehose.definitions import DeliveryStreamDefinition
from firehose.destinations.base import DELIVERED, ObjectDestination, Outcome
from firehose.errors import DestinationError
from firehose.pipeline import Pipeline, StreamConfig
from firehose.pipeline.memory import Charge, MemoryBudget
from firehose.records import ObjectBatch
from firehose.settings import Settings
from firehose.spool import Spool
from firehose.telemetry import Metrics
from tests.support.outage import MiB, run_outage

#: The documented bound (docs/benchmarks.md, memory.max_buffered_bytes): ten streams, every
#: destination down, the default budget.
BOUND = 256 * MiB


def test_ten_streams_with_every_destination_down_stay_under_256_mib(tmp_path: Path) -> None:
    figures = run_outage(tmp_path, streams=10, mib_per_stream=20)
    backlog = figures.accepted_bytes
    assert backlog >= 190 * MiB  # the backlog alone is most of the bound: it must be on disk, not in memory
    assert figures.buffered_bytes <= Settings().memory.max_buffered_bytes
    assert figures.settled_rss < BOUND, figures
    assert figures.peak_rss < BOUND + 32 * MiB, figures  # request bodies being parsed come on top


def test_the_budget_counts_what_every_holder_takes_and_wakes_readers_when_room_returns() -> None:
    budget = MemoryBudget(10)
    woken: list[int] = []
    budget.subscribe(lambda: woken.append(1))
    buffers = Charge(budget, 8)
    batch = buffers.split(5)  # moved, not taken twice
    assert budget.used == 8 and budget.room() == 2 and buffers.bytes == 3 and batch.bytes == 5
    buffers.add(4)  # a read may pass the budget by what one read hands over
    assert budget.spent() and budget.room() == 0
    batch.release()
    assert woken == [1] and budget.used == 7
    batch.release()  # given back once only
    buffers.release()
    assert budget.used == 0 and woken == [1]


def test_the_setting_takes_sizes_and_refuses_less_than_a_mebibyte() -> None:
    assert Settings.model_validate({"memory": {"max_buffered_bytes": "128MiB"}}).memory.max_buffered_bytes == 128 * MiB
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        Settings.model_validate({"memory": {"max_buffered_bytes": 1000}})


class _Watching(ObjectDestination):
    """Fails its first attempts; notes what the budget counts while each attempt holds its batch."""

    name = "s3"

    def __init__(self, budget: MemoryBudget, failures: int) -> None:
        self.budget = budget
        self.failures = failures
        self.seen: list[tuple[int, int, bool]] = []  # (budget used, built bytes, is the last attempt)

    async def check(self) -> None:
        return None

    async def deliver(self, batch: ObjectBatch) -> Outcome:
        built = sum(len(p) for p in batch.parts if not isinstance(p, memoryview))
        self.seen.append((self.budget.used, built, self.failures == 0))
        if self.failures:
            self.failures -= 1
            raise DestinationError("down")
        return DELIVERED


def test_an_attempt_charges_the_body_it_built_and_gives_it_back_with_its_records(tmp_path: Path) -> None:
    """A compressed body is a copy the records' charge does not cover: while an attempt holds it, the
    budget counts it too (so other streams read less), and after the batch every byte is given back."""
    definition = DeliveryStreamDefinition.model_validate({
        "DeliveryStreamName": "s", "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::b",
            "CompressionFormat": "GZIP", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}})
    settings = Settings.model_validate({"delivery": {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02}})
    state = StreamState(name="s", definition=definition, version_id=1, created_ms=0, updated_ms=0, active_ms=0,
                        incarnation="i1", origin="api")
    budget = MemoryBudget(64 * MiB)
    destination = _Watching(budget, failures=2)
    records = [os.urandom(256).hex().encode() for _ in range(200)]  # 100 KiB that gzip halves

    async def run() -> None:
        spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
        p = Pipeline(state, StreamConfig.build(definition, 1, settings), spool.open_stream(state.spool_key),
                     destination, settings, Metrics(), memory=budget)
        p.start()
        await spool.append(spool.open_stream("s-i1"), records, 1_700_000_000_000, sum(map(len, records)))
        deadline = time.monotonic() + 10
        while not p.idle():
            assert time.monotonic() < deadline, "the batch was not delivered"
            await asyncio.sleep(0.02)
        await p.stop(1)
        spool.close()

    asyncio.run(run())
    assert [last for *_, last in destination.seen] == [False, False, True]
    size = sum(map(len, records))
    for used, built, _ in destination.seen:
        assert 0 < built < size and used >= size + built
    assert budget.used == 0
