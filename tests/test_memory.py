"""Memory is bounded by configuration, not by backlog or traffic (memory.max_buffered_bytes).

The outage test runs the real daemon with every destination down under boto3 load and reads its
resident memory from /proc; the budget tests drive a deliverer against a destination that fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firehose.pipeline.memory import Charge, MemoryBudget
from firehose.settings import Settings
from tests.support.outage import MiB, run_outage

#: The documented bound (docs/benchmarks.md, memory.max_buffered_bytes): ten streams, every
#: destination down, the default budget.
BOUND = 256 * MiB


@pytest.mark.soak  # 15 s of outage; bench/memory.py measures the same with figures
@pytest.mark.xfail(strict=True, reason="not yet: a refused S3 connection leaves each attempt's request body in "
                   "botocore reference cycles; measured 0.8 GB settled with ten streams (docs/benchmarks.md)")
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
