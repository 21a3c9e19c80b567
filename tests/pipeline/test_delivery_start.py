"""Delivery of a stream that needs worker processes begins once they are up (``Pipeline.start``'s
``deliver_after``); until then its records wait in the spool, and a stop does not wait for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from firehose import destinations
from firehose.catalog import StreamState
from firehose.definitions import DeliveryStreamDefinition
from firehose.destinations import DestinationContext
from firehose.pipeline import Pipeline, StreamConfig
from firehose.settings import Settings
from firehose.spool import Spool
from firehose.telemetry import Metrics
from tests.support.delivered import read_local


def pipeline(tmp_path: Path, spool: Spool, executor: ThreadPoolExecutor) -> Pipeline:
    definition = DeliveryStreamDefinition.model_validate({
        "DeliveryStreamName": "s", "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::local",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}})
    settings = Settings.model_validate({"buckets": {"local": {"directory": str(tmp_path / "out")}}})
    state = StreamState(name="s", definition=definition, version_id=1, created_ms=0, updated_ms=0, active_ms=0,
                        incarnation="i1", origin="api")
    ctx = DestinationContext(stream="s", settings=settings, executor=executor)
    return Pipeline(state, StreamConfig.build(definition, 1, settings), spool.open_stream(state.spool_key),
                    destinations.build(definition, ctx).destination, settings, Metrics())


async def started(tmp_path: Path, scenario: Callable[[Pipeline, asyncio.Future[None]], Awaitable[None]]) -> None:
    """Run ``scenario`` with a pipeline started to deliver after a future it is given, and one
    record spooled."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    with ThreadPoolExecutor(2) as executor:
        p = pipeline(tmp_path, spool, executor)
        workers_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        p.start(deliver_after=workers_up)
        await spool.append(spool.open_stream("s-i1"), [b"kept\n"], 1_700_000_000_000, 5)
        await scenario(p, workers_up)
    spool.close()


async def wait_idle(p: Pipeline, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not p.idle():
        assert time.monotonic() < deadline, "the pipeline did not become idle"
        await asyncio.sleep(0.02)


async def delivered_by_a_pipeline_told_to_wait_for_nothing(tmp_path: Path) -> None:
    """The same stream and record, in a spool and output of their own, delivered with no ``deliver_after``:
    once it is idle, a pipeline that did not wait would have delivered too."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    with ThreadPoolExecutor(2) as executor:
        p = pipeline(tmp_path, spool, executor)
        p.start()
        await spool.append(spool.open_stream("s-i1"), [b"kept\n"], 1_700_000_000_000, 5)
        await wait_idle(p)
        await p.stop(1)
    spool.close()
    assert list(read_local(tmp_path / "out").values()) == [b"kept\n"]


def test_delivery_waits_for_what_it_is_told_to_then_delivers_what_was_spooled(tmp_path: Path) -> None:
    async def scenario(p: Pipeline, workers_up: asyncio.Future[None]) -> None:
        await delivered_by_a_pipeline_told_to_wait_for_nothing(tmp_path / "control")
        assert read_local(tmp_path / "out") == {}
        assert not p.idle()
        workers_up.set_result(None)
        await wait_idle(p)
        assert list(read_local(tmp_path / "out").values()) == [b"kept\n"]
        await p.stop(1)

    asyncio.run(started(tmp_path, scenario))


def test_a_stream_stopped_before_its_delivery_began_stops_at_once(tmp_path: Path) -> None:
    async def scenario(p: Pipeline, never: asyncio.Future[None]) -> None:
        begun = time.monotonic()
        await asyncio.wait_for(p.stop(30), timeout=5)
        assert time.monotonic() - begun < 2
        assert not never.cancelled(), "what other streams wait for is not cancelled"
        assert read_local(tmp_path / "out") == {}  # the record stays in the spool

    asyncio.run(started(tmp_path, scenario))


def test_reading_resumes_after_the_records_seals_hold_without_a_gap() -> None:
    """After a restart the raw log is read from the end of what seals hold contiguously: a sealed
    backlog is read once, by its seals; a gap (records no seal holds) is read."""
    from firehose.partitions import DEFAULT_PARTITION
    from firehose.spool.cursor import sealed_through as _sealed_through
    from firehose.spool.ledger import Seal

    def seal(start: tuple[int, int], end: tuple[int, int], partition: str = DEFAULT_PARTITION,
             positions: tuple[tuple[int, int], ...] | None = None) -> Seal:
        return Seal(0, "raw", partition, start, end, "k", 0, positions=positions)

    held = [seal((3, 0), (5, 200)), seal((0, 10), (3, 0)), seal((5, 200), (9, 0))]
    assert _sealed_through((0, 10), held) == (9, 0)
    assert _sealed_through((0, 0), held) == (0, 0)  # records 0..9 of entry 0 are in no seal
    assert _sealed_through((0, 10), [seal((0, 10), (3, 0)), seal((3, 1), (9, 0))]) == (3, 0)
    assert _sealed_through((0, 10), [seal((0, 10), (3, 0), partition='{"e":"x"}')]) == (0, 10)
    assert _sealed_through((0, 10), [seal((0, 10), (3, 0), positions=((0, 10),))]) == (0, 10)
    assert _sealed_through((4, 0), [seal((0, 10), (3, 0))]) == (4, 0)
