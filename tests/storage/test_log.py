"""The segment log: framing, recovery of torn tails and corruption, segment deletion, group commit."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from firehose.errors import SpoolError
from firehose.storage.committer import GroupCommitter, commit
from firehose.storage.log import HEADER_SIZE, SegmentLog


def payloads(*items: bytes) -> list[list[bytes]]:
    return [[p] for p in items]


def read_all(log: SegmentLog) -> list[tuple[int, bytes]]:
    return [(seq, bytes(p)) for seq, p in log.iter_all()]


def test_entries_are_invisible_until_synced_then_read_back_in_order(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    first = log.write(payloads(b"a", b"bb", b"ccc"))
    assert first == 0
    assert log.read(0, 1 << 20) == []  # written, not fsynced: not visible
    log.sync()
    assert read_all(log) == [(0, b"a"), (1, b"bb"), (2, b"ccc")]
    assert [bytes(p) for _, p in log.read(1, 1 << 20)] == [b"bb", b"ccc"]
    assert log.committed_next_seq == 3


def test_multi_part_payload_is_written_contiguously(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write([[b"head", b"-", b"tail"]])
    log.sync()
    assert read_all(log) == [(0, b"head-tail")]


def test_reopen_recovers_entries_and_continues_sequence(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"one", b"two"))
    log.sync()
    log.close()
    again = SegmentLog(tmp_path)
    assert read_all(again) == [(0, b"one"), (1, b"two")]
    assert again.write(payloads(b"three")) == 2
    again.sync()
    assert read_all(again)[-1] == (2, b"three")


def test_torn_tail_is_cut_off_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"x" * 100, b"y" * 100))
    log.sync()
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:  # a frame cut off half-way, as a crash mid-write leaves it
        f.write(b"FHS1" + (500).to_bytes(4, "little") + b"\x02" * 30)
    with caplog.at_level(logging.WARNING, logger="firehose.spool"):
        again = SegmentLog(tmp_path)
    assert "torn tail" in caplog.text
    assert seg.stat().st_size == good_size
    assert [s for s, _ in read_all(again)] == [0, 1]


def test_checksum_mismatch_in_the_tail_is_detected(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"a" * 50, b"b" * 50))
    log.sync()
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF  # flip a byte in the last payload
    seg.write_bytes(bytes(data))
    again = SegmentLog(tmp_path)
    assert read_all(again) == [(0, b"a" * 50)]


def test_zero_filled_tail_is_not_mistaken_for_entries(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"data"))
    log.sync()
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(b"\x00" * 4096)  # preallocated-but-unwritten blocks after a power cut
    assert read_all(SegmentLog(tmp_path)) == [(0, b"data")]


def test_corruption_in_an_older_segment_is_moved_aside_not_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = SegmentLog(tmp_path, segment_bytes=200)
    for i in range(6):
        log.write(payloads(bytes([65 + i]) * 150))
        log.sync()
    log.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 3
    data = bytearray(segs[0].read_bytes())
    data[HEADER_SIZE + 3] ^= 0xFF
    segs[0].write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="firehose.spool"):
        again = SegmentLog(tmp_path)
    assert "corrupt" in caplog.text
    aside = segs[0].with_name(segs[0].name + ".corrupt")
    assert aside.exists() and aside.stat().st_size > 0
    second_first = int(segs[1].name.split(".")[0])
    assert second_first > 0
    # Everything from the bad frame on in that segment is set aside; later segments are intact.
    assert [s for s, _ in read_all(again)] == list(range(second_first, 6))
    assert aside.read_bytes().count(b"B" * 150) == (1 if second_first > 1 else 0)


def test_rolls_segments_and_drop_before_deletes_only_whole_old_segments(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_bytes=1000)
    for i in range(20):
        log.write(payloads(b"%03d" % i * 100))
        log.sync()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 4
    freed = log.drop_before(10)
    assert freed > 0
    remaining = read_all(log)
    assert remaining[0][0] <= 10  # nothing at or after 10 was dropped
    assert [s for s, _ in remaining] == list(range(remaining[0][0], 20))
    assert log.size_bytes == sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    # The active segment is never dropped, even when everything is released.
    log.drop_before(1000)
    assert read_all(log)[-1][0] == 19


def test_read_respects_budget_but_returns_at_least_one_entry(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"a" * 1000, b"b" * 1000, b"c" * 1000))
    log.sync()
    assert len(log.read(0, 1)) == 1
    assert len(log.read(0, 1500)) == 2
    big = b"z" * (3 << 20)  # larger than a single read chunk
    log.write(payloads(big))
    log.sync()
    assert bytes(log.read(3, 1)[0][1]) == big


def test_reads_seek_by_sequence_across_segments(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_bytes=4096)
    for i in range(500):
        log.write(payloads(str(i).encode()))
    log.sync()
    for seq in (0, 1, 63, 64, 65, 250, 499):
        got = log.read(seq, 1)
        assert got[0][0] == seq and bytes(got[0][1]) == str(seq).encode()
    assert log.read(500, 1 << 20) == []


def test_failed_write_burns_sequence_numbers_and_keeps_durable_data(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"kept"))
    log.sync()
    def failing_sync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", failing_sync)
        mp.setattr(os, "fdatasync", failing_sync)
        log.write(payloads(b"lost"))
        with pytest.raises(SpoolError):
            log.sync()
    assert read_all(log) == [(0, b"kept")]
    seq = log.write(payloads(b"after"))
    log.sync()
    assert seq == 2  # 1 was given to the failed write and is never reused
    assert read_all(log) == [(0, b"kept"), (2, b"after")]
    log.close()
    assert read_all(SegmentLog(tmp_path)) == [(0, b"kept"), (2, b"after")]


def test_group_commit_shares_fsyncs_between_concurrent_appends(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    committer = GroupCommitter()
    calls = 0
    real_sync = log.sync
    gate = threading.Event()

    def slow_sync() -> None:
        nonlocal calls
        calls += 1
        gate.wait(0.05)  # a slow disk: appends queue up behind the running fsync
        real_sync()

    log.sync = slow_sync  # type: ignore[method-assign]

    async def main() -> list[int]:
        return await asyncio.gather(*(commit(committer, log, [[b"r%d" % i]]) for i in range(200)))

    try:
        seqs = asyncio.run(main())
    finally:
        committer.stop()
    assert sorted(seqs) == list(range(200))
    assert calls < 50, f"{calls} fsync rounds for 200 appends"
    assert len(read_all(log)) == 200


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from firehose.storage.log import SegmentLog
    log = SegmentLog(Path(sys.argv[1]), segment_bytes=64 * 1024)
    i = log.next_seq
    while True:
        log.write([[b"%08d" % i + b"." * 200]])
        log.sync()
        print(i, flush=True)  # acknowledged only after sync returned
        i += 1
    """
)


def test_kill_9_mid_append_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    acked: list[int] = []
    for _round in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(300):
            acked.append(int(proc.stdout.readline()))
        proc.kill()
        proc.wait()
    recovered = {seq: bytes(p) for seq, p in SegmentLog(tmp_path).iter_all()}
    missing = [a for a in acked if a not in recovered]
    assert not missing
    for seq in acked:
        assert recovered[seq].startswith(b"%08d" % seq)


def test_frames_say_where_each_payload_lies_on_disk(tmp_path: Path) -> None:
    """A worker process reads records from the segment file itself, at the frame's offset."""
    log = SegmentLog(tmp_path, segment_bytes=64)  # a new segment every few entries
    items = [bytes([65 + i]) * (10 + 7 * i) for i in range(8)]
    for item in items:
        log.write(payloads(item))
    log.sync()
    frames = log.read_frames(2, 1 << 20)
    assert [f.seq for f in frames] == list(range(2, 8))
    assert len({f.path for f in frames}) > 1  # the frames come from more than one segment
    for frame in frames:
        with open(frame.path, "rb") as f:
            f.seek(frame.offset)
            assert f.read(len(frame.payload)) == items[frame.seq] == bytes(frame.payload)
    assert [(f.seq, bytes(f.payload)) for f in frames] == [(s, bytes(p)) for s, p in log.read(2, 1 << 20)]


def failing_writes(mp: pytest.MonkeyPatch, *, keep: int = 10) -> list[int]:
    """Make every ``writev`` write its first ``keep`` bytes, then fail as a full disk does; returns the
    list of fds it failed on."""
    real = os.writev
    failed: list[int] = []

    def writev(fd: int, buffers: list[bytes]) -> int:
        failed.append(fd)
        real(fd, [b"".join(bytes(b) for b in buffers)[:keep]])
        raise OSError(28, "No space left on device")

    mp.setattr(os, "writev", writev)
    return failed


def test_writes_failing_on_a_full_disk_leave_no_empty_segments_and_no_partial_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"kept"))
    log.sync()
    size = next(tmp_path.glob("*.seg")).stat().st_size
    with pytest.MonkeyPatch.context() as mp:
        failed = failing_writes(mp)
        for _ in range(50):
            with pytest.raises(SpoolError):
                log.write(payloads(b"never acknowledged" * 10))
    assert len(failed) == 50
    segs = sorted(tmp_path.glob("*.seg"))
    # The segment with durable data is cut back to it and sealed; one new segment is tried again and
    # again (kept empty), not one more per failure.
    assert len(segs) == 2
    assert segs[0].stat().st_size == size and segs[1].stat().st_size == 0
    assert log.write(payloads(b"after")) > 0  # the disk has room again
    log.sync()
    log.close()
    with caplog.at_level(logging.INFO, logger="firehose.spool"):
        again = SegmentLog(tmp_path)
    assert "corrupt" not in caplog.text and "torn" not in caplog.text
    assert not list(tmp_path.glob("*.corrupt"))
    assert [bytes(p) for _, p in read_all(again)] == [b"kept", b"after"]


def test_an_unfinished_write_in_an_older_segment_is_cut_quietly_not_called_corruption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a failed write leaves when cutting it back failed too (or the process died first)."""
    log = SegmentLog(tmp_path, segment_bytes=100)
    log.write(payloads(b"a" * 150))
    log.sync()
    first = next(tmp_path.glob("*.seg"))
    log.write(payloads(b"b" * 150))  # the next segment
    log.sync()
    log.close()
    with open(first, "ab") as f:  # a frame's first bytes: header and part of the payload
        f.write(b"FHS1" + (300).to_bytes(4, "little") + b"\x07" * 40)
    with caplog.at_level(logging.INFO, logger="firehose.spool"):
        again = SegmentLog(tmp_path)
    assert "unfinished write" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not list(tmp_path.glob("*.corrupt"))
    assert [bytes(p) for _, p in read_all(again)] == [b"a" * 150, b"b" * 150]


def test_a_bad_frame_with_good_frames_after_it_in_an_older_segment_is_corruption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = SegmentLog(tmp_path, segment_bytes=400)
    for i in range(4):
        log.write(payloads(bytes([65 + i]) * 150))
        log.sync()
    log.close()
    segs = sorted(tmp_path.glob("*.seg"))
    data = bytearray(segs[0].read_bytes())
    data[4:8] = (1 << 30).to_bytes(4, "little")  # the first frame's length: it now runs past the end
    segs[0].write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="firehose.spool"):
        SegmentLog(tmp_path)
    assert "corrupt" in caplog.text
    assert segs[0].with_name(segs[0].name + ".corrupt").stat().st_size == len(data)


def test_drop_before_can_take_the_active_segment_and_the_sequence_goes_on(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"a", b"b", b"c"))
    log.sync()
    assert log.drop_before(3) == 0  # without include_active the active segment stays
    freed = log.drop_before(3, include_active=True)
    assert freed > 0 and log.size_bytes == 0
    assert [p.name for p in tmp_path.glob("*.seg")] == [f"{3:020d}.seg"]  # an empty segment holds the place
    assert read_all(log) == []
    assert log.write(payloads(b"d")) == 3
    log.sync()
    log.drop_before(4, include_active=True)
    log.close()
    again = SegmentLog(tmp_path)  # a restart with everything delivered: numbers are never reused
    assert again.committed_next_seq == 4 and again.write(payloads(b"e")) == 4


def test_drop_before_keeps_an_active_segment_that_is_not_all_released(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"a", b"b"))
    log.sync()
    assert log.drop_before(1, include_active=True) == 0
    log.write(payloads(b"c"))  # written, not yet fsynced: not released either
    assert log.drop_before(2, include_active=True) == 0
    log.sync()
    assert [s for s, _ in read_all(log)] == [0, 1, 2]
    assert log.reclaim() == 0  # the highest release point so far is 2


def test_a_bookkeeping_write_on_a_full_disk_uses_the_reserve_and_tries_again(tmp_path: Path) -> None:
    ledger = SegmentLog(tmp_path / "ledger", uses_reserve=True)
    records = SegmentLog(tmp_path / "records")
    given_up: list[bool] = []
    committer = GroupCommitter(on_disk_full=lambda: given_up.append(True) or True)
    real = os.writev
    fail_next = [True]

    def writev(fd: int, buffers: list[bytes]) -> int:
        if fail_next[0]:
            fail_next[0] = False
            raise OSError(28, "No space left on device")
        return real(fd, buffers)

    async def main() -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "writev", writev)
            await commit(committer, ledger, [[b"done"]])
            assert given_up == [True]
            fail_next[0] = True
            with pytest.raises(SpoolError):  # record data does not get the reserve
                await commit(committer, records, [[b"data"]])
            assert given_up == [True]

    try:
        asyncio.run(main())
    finally:
        committer.stop()
    assert [bytes(p) for _, p in read_all(ledger)] == [b"done"]


def test_a_log_that_keeps_its_newest_entry_carries_it_over_when_everything_is_released(tmp_path: Path) -> None:
    """A source's checkpoints live in its newest entry: freeing the space must not lose them."""
    log = SegmentLog(tmp_path, keep_last=True)
    log.write(payloads(b"a" * 1000, b"b" * 1000, b"checkpoint"))
    log.sync()
    freed = log.drop_before(3, include_active=True)
    assert freed == 2 * (HEADER_SIZE + 1000)
    assert [p.name for p in tmp_path.glob("*.seg")] == [f"{2:020d}.seg"]
    assert log.drop_before(3, include_active=True) == 0  # nothing but the kept entry is left
    log.close()
    again = SegmentLog(tmp_path)
    assert again.committed_next_seq == 3 and read_all(again) == [(2, b"checkpoint")]
    assert again.write(payloads(b"next")) == 3


def test_a_reader_past_every_entry_is_not_left_waiting_for_a_burnt_number(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.write(payloads(b"a"))
    log.sync()
    with pytest.MonkeyPatch.context() as mp:
        failing_writes(mp)
        with pytest.raises(SpoolError):
            log.write(payloads(b"lost"))  # burns 1
    log.drop_before(1, include_active=True)
    assert not log.has_committed_from(1)
    log.write(payloads(b"b"))
    log.sync()
    assert log.has_committed_from(1) and log.read(1, 1 << 20)[0][0] == 2


def test_an_acknowledged_entry_in_a_new_log_directory_survives_power_loss(tmp_path: Path) -> None:
    """A log opened on a directory that does not exist yet makes that directory durable: once ``sync``
    returned, no power cut can take the directory and the fsynced segment in it."""
    import random

    from tests.support.crashfs import PowerCut, Recorder

    rec = Recorder(tmp_path)
    with rec.recording():
        seglog = SegmentLog(tmp_path / "spool" / "s" / "records")
        seglog.write([[b"acknowledged"]])
        seglog.sync()
        seglog.close()
    cut = PowerCut(rec.ops)
    for _state, image in cut.states(len(rec.ops), random.Random(0), 50):
        [segment] = [p for p in image.files if p.endswith(".seg")]
        assert segment.startswith("spool/s/records/") and b"acknowledged" in (image.files[segment] or b"")
