"""The batch ledger: seals survive restarts, done batches do not come back, watermarks and compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firehose.partitions import DEFAULT_PARTITION, data_partition
from firehose.spool.ledger import Ledger
from firehose.storage.committer import GroupCommitter

P = DEFAULT_PARTITION


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_seals_are_replayed_until_done(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        a = run(ledger.seal("raw", P, (0, 0), (0, 10), "k/a", 1, {"version": 1}, low={"raw": (0, 0)}))
        b = run(ledger.seal("raw", P, (0, 10), (3, 2), "k/b", 2, {}, low={"raw": (0, 0)}))
        run(ledger.done([a.batch_id], low={"raw": (0, 10)}))
        ledger.close()

        again = Ledger(tmp_path, committer)
        [pending] = again.pending()
        assert pending.key == "k/b" and pending.start == (0, 10) and pending.end == (3, 2)
        assert again.high["raw"] == (3, 2)
        assert again.low["raw"] == (0, 10)
        assert again.next_batch_id == b.batch_id + 1
        assert again.open_start("raw") == (0, 10)
        run(again.done([b.batch_id], low={"raw": (3, 2)}))
        assert again.open_start("raw") is None
    finally:
        committer.stop()


def test_done_seals_above_the_watermark_are_remembered_for_skipping(tmp_path: Path) -> None:
    """A partition's object may be delivered while another partition still buffers older records."""
    committer = GroupCommitter()
    a, b = data_partition({"k": "a"}), data_partition({"k": "b"})
    try:
        ledger = Ledger(tmp_path, committer)
        sa = run(ledger.seal("proc", a, (0, 0), (5, 3), "a", 0, {}, low={"proc": (0, 0)}))
        run(ledger.done([sa.batch_id], low={"proc": (0, 0)}))  # partition b still holds records from entry 0
        ledger.close()
        again = Ledger(tmp_path, committer)
        [covering] = again.covering("proc")
        assert covering.holds("proc", a, (2, 1)) and not covering.holds("proc", b, (2, 1))
        assert not covering.holds("raw", a, (2, 1))
        run(again.done([], low={"proc": (6, 0)}))
        assert again.covering("proc") == []  # below the watermark now: forgotten
    finally:
        committer.stop()


def test_explicit_positions_hold_exactly_those_records(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        s = run(ledger.seal("proc", "overflow", (1, 2), (4, 1), "e", 0, {}, positions=((1, 2), (4, 0))))
        assert s.holds("proc", "anything", (4, 0)) and not s.holds("proc", "anything", (2, 0))
        ledger.close()
        [again] = Ledger(tmp_path, committer).pending()
        assert again.positions == ((1, 2), (4, 0))
    finally:
        committer.stop()


def test_compaction_drops_old_segments_and_keeps_state(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        keep = run(ledger.seal("raw", P, (0, 0), (0, 1), "keep-me", 0, {}))
        for i in range(1, 1500):
            s = run(ledger.seal("raw", P, (i, 0), (i, 1), "x" * 700, 0, {}))
            run(ledger.done([s.batch_id], low={"raw": (0, 0)}))
        segments = list(tmp_path.glob("*.seg"))
        assert sum(p.stat().st_size for p in segments) < 3 * 1024 * 1024
        ledger.close()
        again = Ledger(tmp_path, committer)
        assert [s.key for s in again.pending()] == ["keep-me"]
        assert again.pending()[0].batch_id == keep.batch_id
        assert again.high["raw"] == (1499, 1)
        assert len(again.covering("raw")) == 1500  # done ones stay known: the watermark is still at (0, 0)
    finally:
        committer.stop()


def test_release_point_keeps_what_open_seals_need(tmp_path: Path) -> None:
    """Reading may resume past an open seal's start; its spool data must stay until it is done."""
    committer = GroupCommitter()
    a, b = data_partition({"k": "a"}), data_partition({"k": "b"})
    try:
        ledger = Ledger(tmp_path, committer)
        # b's batch is cut while nothing else is buffered: the resume point jumps past its start.
        sb = run(ledger.seal("proc", b, (370, 45), (549, 66), "b", 0, {}, low={"proc": (549, 66)}))
        assert ledger.low["proc"] == (549, 66)
        assert ledger.release_point("proc") == (370, 45)
        run(ledger.seal("proc", a, (549, 66), (600, 0), "a", 0, {}, low={"proc": (370, 45)}))
        run(ledger.done([sb.batch_id], low={"proc": (600, 0)}))
        assert ledger.release_point("proc") == (549, 66)
    finally:
        committer.stop()
