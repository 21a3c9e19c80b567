"""The batch ledger: seals survive restarts, done batches do not come back, compaction keeps state."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firehose.spool.committer import GroupCommitter
from firehose.spool.ledger import Ledger


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_seals_are_replayed_until_done(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        a = run(ledger.seal((0, 0), (0, 10), "k/a", 1, {"version": 1}))
        b = run(ledger.seal((0, 10), (3, 2), "k/b", 2, {}))
        run(ledger.done([a.batch_id]))
        ledger.close()

        again = Ledger(tmp_path, committer)
        assert [s.key for s in again.pending()] == ["k/b"]
        assert again.pending()[0].start == (0, 10) and again.pending()[0].end == (3, 2)
        assert again.high == (3, 2)
        assert again.low_watermark == (0, 10)
        assert again.next_batch_id == b.batch_id + 1
        run(again.done([b.batch_id]))
        assert again.low_watermark == again.high == (3, 2)
    finally:
        committer.stop()


def test_done_out_of_order_keeps_low_watermark_at_the_oldest_open_seal(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        s1 = run(ledger.seal((0, 0), (1, 0), "1", 0, {}))
        s2 = run(ledger.seal((1, 0), (2, 0), "2", 0, {}))
        run(ledger.done([s2.batch_id]))
        assert ledger.low_watermark == (0, 0)
        run(ledger.done([s1.batch_id]))
        assert ledger.low_watermark == (2, 0)
    finally:
        committer.stop()


def test_compaction_drops_old_segments_and_keeps_open_seals(tmp_path: Path) -> None:
    committer = GroupCommitter()
    try:
        ledger = Ledger(tmp_path, committer)
        keep = run(ledger.seal((0, 0), (0, 1), "keep-me", 0, {}))
        for i in range(1, 4000):
            s = run(ledger.seal((i, 0), (i, 1), "x" * 200, 0, {}))
            run(ledger.done([s.batch_id]))
        segments = list(tmp_path.glob("*.seg"))
        assert sum(p.stat().st_size for p in segments) < 3 * 1024 * 1024
        ledger.close()
        again = Ledger(tmp_path, committer)
        assert [s.key for s in again.pending()] == ["keep-me"]
        assert again.pending()[0].batch_id == keep.batch_id
        assert again.high == (3999, 1)
    finally:
        committer.stop()
