"""Batching, partial-failure retry, backoff on throttling and network errors; checkpoint durability."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from firehose.agent import sender
from firehose.agent.checkpoints import CheckpointStore, Position
from firehose.agent.config import parse_config
from firehose.agent.sender import Batch, Batcher, Client, SendStats, deliver
from firehose.errors import ConfigError
from firehose.retry import Backoff


def make_flow(**extra: Any) -> Any:
    config, _ = parse_config({"flows": [{"filePattern": "/x", "deliveryStream": "s",
                                         "retryInitialBackoffMillis": 1, "retryMaxBackoffMillis": 20, **extra}]})
    return config.flows[0]


class ScriptedFirehose:
    """put_record_batch answers from a script: per call, an exception or the error code per record."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        data = [r["Data"] for r in Records]
        self.calls.append(data)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        codes = step or [None] * len(data)
        return {"FailedPutCount": sum(c is not None for c in codes),
                "RequestResponses": [{"ErrorCode": c, "ErrorMessage": "x"} if c else {"RecordId": "1"}
                                     for c in codes]}


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ServiceUnavailableException", "Message": "Slow down."}},
                       "PutRecordBatch")


def run(script: list[Any], records: list[bytes], **flow: Any) -> tuple[ScriptedFirehose, SendStats, bool]:
    fake = ScriptedFirehose(script)
    stats = SendStats()
    ok = deliver(Client(make_flow(**flow), fake), Batch(records=records), make_flow(**flow), stats,
                 threading.Event(), lambda: None)
    return fake, stats, ok


def test_partial_failure_retries_only_the_failed_records() -> None:
    records = [b"a\n", b"b\n", b"c\n", b"d\n"]
    fake, stats, ok = run([[None, "ServiceUnavailableException", None, "InternalFailure"],
                           ["ServiceUnavailableException", None]], records)
    assert ok
    assert fake.calls == [records, [b"b\n", b"d\n"], [b"b\n"]]
    assert stats.records_sent == 4 and stats.retries == 2 and stats.throttled == 2


def test_throttling_and_network_errors_back_off_and_never_give_up() -> None:
    script = [throttled(), EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), throttled(), None]
    fake, stats, ok = run(script, [b"x\n"])
    assert ok and len(fake.calls) == 4 and stats.errors == 3 and stats.records_sent == 1


def test_records_refused_as_invalid_are_skipped_and_counted() -> None:
    fake, stats, ok = run([["InvalidArgumentException", None]], [b"bad\n", b"good\n"])
    assert ok and len(fake.calls) == 1
    assert stats.records_failed_permanently == 1 and stats.records_sent == 1


def test_a_shutdown_deadline_stops_retrying() -> None:
    fake = ScriptedFirehose([throttled()] * 1000)
    flow = make_flow()
    deadline = time.monotonic() + 0.2
    ok = deliver(Client(flow, fake), Batch(records=[b"x\n"]), flow, SendStats(), threading.Event(), lambda: deadline)
    assert not ok and time.monotonic() - deadline < 0.5


def test_backoff_doubles_while_calls_fail_up_to_the_flows_maximum_and_holds_while_records_get_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(sender, "_sleep", lambda delay, stop, give_up_at: slept.append(delay) or True)
    # Every delay at the top of its full-jitter range, so each is its ceiling.
    monkeypatch.setattr(sender, "Backoff", lambda base, cap: Backoff(base, cap, uniform=lambda lo, hi: hi))
    busy = "ServiceUnavailableException"
    script = [throttled()] * 3 + [[None, busy, busy], [busy, busy], [None, busy]] + [throttled()] * 3 + [None]
    fake, stats, ok = run(script, [b"a\n", b"b\n", b"c\n"], retryInitialBackoffMillis=2, retryMaxBackoffMillis=20)
    assert ok and stats.records_sent == 3
    assert [round(d * 1000, 6) for d in slept] == [2, 4, 8, 8, 16, 16, 20, 20, 20]


def test_backoff_delays_are_drawn_below_their_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(sender, "_sleep", lambda delay, stop, give_up_at: slept.append(delay) or True)
    fake, stats, ok = run([throttled()] * 40, [b"x\n"], retryInitialBackoffMillis=8, retryMaxBackoffMillis=8)
    assert ok and len(slept) == 40 and all(0 <= d <= 0.008 for d in slept)
    assert len(set(slept)) > 30  # random, not a fixed delay


def test_batches_are_cut_by_count_bytes_and_age() -> None:
    now = [0.0]
    batcher = Batcher(make_flow(maxBufferSizeRecords=3, maxBufferSizeBytes=10, maxBufferAgeMillis=1000),
                      clock=lambda: now[0])
    pos = lambda offset: Position("/x", 1, 2, 0, b"", offset)  # noqa: E731
    full = batcher.add(7, [b"aa\n"] * 4, [3, 6, 9, 12], pos, 12)
    assert [b.records for b in full] == [[b"aa\n"] * 3]
    assert full[0].positions[7].offset == 9  # the checkpoint this batch completes
    full = batcher.add(7, [b"bbbbbbbb\n"], [21], pos, 21)  # 3 + 9 bytes > 10
    assert [b.records for b in full] == [[b"aa\n"]]
    assert not batcher.due()
    now[0] = 1.5
    assert batcher.due()
    last = batcher.take()
    assert last.records == [b"bbbbbbbb\n"] and last.positions[7].offset == 21


def test_aggregation_packs_lines_into_one_firehose_record() -> None:
    batcher = Batcher(make_flow(aggregatedRecordSizeBytes=8))
    pos = lambda offset: Position("/x", 1, 2, 0, b"", offset)  # noqa: E731
    batcher.add(1, [b"ab\n", b"cd\n", b"ef\n"], [3, 6, 9], pos, 9)
    assert batcher.take().records == [b"ab\ncd\n", b"ef\n"]


def test_checkpoints_are_durable_sqlite_and_refused_on_tmpfs(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state" / "checkpoints.sqlite")
    rows: dict[int, int] = {}
    store.commit("flow", {1: Position("/a", 1, 2, 3, b"fp", 100)}, rows)
    store.commit("flow", {1: Position("/a.1", 1, 2, 3, b"fp", 250)}, rows)
    [row] = store.load("flow")
    assert (row.path, row.offset) == ("/a.1", 250)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    db = sqlite3.connect(tmp_path / "state" / "checkpoints.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    target = Path("/dev/shm") / f"agent-test-{id(store)}"
    with pytest.raises(ConfigError, match="tmpfs"):
        CheckpointStore(target / "checkpoints.sqlite")
    assert not target.exists()  # refused before anything was created

