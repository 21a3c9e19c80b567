"""Index files of a segment log: opening reads them instead of the segments' frames; a missing, damaged or
stale index is rebuilt; torn tails are cut as without one; every power-cut state recovers."""

from __future__ import annotations

import random
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import firehose.storage.log as log_module
from firehose.storage import segindex
from firehose.storage.log import SegmentLog
from tests.support.crashfs import PowerCut, Recorder, scratch_dir

HEAD = 8  # the owner's header kept per indexed entry: here a big-endian counter, as an arrival time would be


def entry(n: int, size: int = 40) -> bytes:
    return struct.pack(">Q", n) + bytes([n % 251]) * size


def open_log(path: Path, segment_bytes: int = 4096) -> SegmentLog:
    return SegmentLog(path, segment_bytes=segment_bytes, index_heads=HEAD)


def fill(path: Path, count: int, *, segment_bytes: int = 4096, close: bool = True, batch: int = 1) -> SegmentLog:
    log = open_log(path, segment_bytes)
    for n in range(0, count, batch):
        log.write([[entry(i)] for i in range(n, min(count, n + batch))])
        log.sync()
    if close:
        log.close()
    return log


def contents(log: SegmentLog) -> list[tuple[int, bytes]]:
    return [(seq, bytes(p)) for seq, p in log.iter_all()]


def expected(count: int) -> list[tuple[int, bytes]]:
    return [(n, entry(n)) for n in range(count)]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


@pytest.fixture
def frame_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the frames whose checksum is computed: recovery checks every frame it reads."""
    calls = [0]
    real = log_module._checksum

    def counting(seq: int, parts: Any) -> int:
        calls[0] += 1
        return real(seq, parts)

    monkeypatch.setattr(log_module, "_checksum", counting)
    yield calls


def below(n: int) -> Any:
    return lambda head: struct.unpack(">Q", head)[0] < n


def test_reopening_reads_no_frame_and_finds_every_entry(tmp_path: Path, frame_reads: list[int]) -> None:
    fill(tmp_path, 300)
    assert len(segments(tmp_path)) > 3
    assert len(list(tmp_path.glob("*.idx"))) == len(segments(tmp_path))
    frame_reads[0] = 0
    log = open_log(tmp_path)
    assert frame_reads[0] == 0  # neither a sealed segment nor the (indexed at close) active one was read
    assert log.newest() == (299, entry(299)[:HEAD])
    assert contents(log) == expected(300)
    for n in (0, 1, 63, 64, 65, 150, 299):
        start = log.seek(below(n))
        assert start <= n and n - start <= 64
        assert [seq for seq, _ in log.read(start, 1 << 20)][: n - start + 1][-1] == n
    assert log.seek(below(0)) == 0 and log.seek(below(10**6)) <= 299
    assert log.write([[entry(300)]]) == 300  # the sequence goes on
    log.sync()
    assert contents(log)[-1] == (300, entry(300))


def test_after_a_crash_only_the_active_segments_tail_is_read(tmp_path: Path, frame_reads: list[int]) -> None:
    segment_bytes = 2 << 20  # a checkpoint of the active segment's index every 128 KiB
    log = open_log(tmp_path, segment_bytes)
    n = 0
    while True:  # until there are sealed segments and the active segment's index is behind its last entry
        log.write([[entry(n, 20_000)]])
        log.sync()
        n += 1
        active = segments(tmp_path)[-1]
        summary = segindex.read_summary(active, int(active.stem), HEAD)
        if len(segments(tmp_path)) > 2 and summary is not None and summary.last_seq < n - 1:
            break
    frame_reads[0] = 0
    again = open_log(tmp_path, segment_bytes)  # log was not closed: as after kill -9
    # The frames after the active segment's last index (at most 1/16 segment), no others.
    assert 0 < frame_reads[0] == n - 1 - summary.last_seq <= (128 << 10) // 20_000 + 1
    assert contents(again) == [(i, entry(i, 20_000)) for i in range(n)]


def test_points_of_sealed_segments_are_kept_for_a_few_segments_only(tmp_path: Path) -> None:
    fill(tmp_path, 2000, batch=20)
    log = open_log(tmp_path)
    assert len(log._segments) > 20
    assert contents(log) == expected(2000)
    for n in range(0, 2000, 97):
        log.seek(below(n))
    in_memory = [s for s in log._segments if s.index_seqs]
    assert len(in_memory) <= 3  # the active segment and the two last read


@pytest.mark.parametrize("damage", ["missing", "summary", "points", "other segment", "truncated"])
def test_a_missing_or_damaged_index_is_rebuilt_and_the_data_stays_right(tmp_path: Path, damage: str) -> None:
    fill(tmp_path, 300)
    victim = segments(tmp_path)[1]
    index = segindex.index_path(victim)
    body = bytearray(index.read_bytes())
    if damage == "missing":
        index.unlink()
    elif damage == "summary":
        body[20] ^= 0xFF
        index.write_bytes(body)
    elif damage == "points":
        body[-1] ^= 0xFF
        index.write_bytes(body)
    elif damage == "other segment":
        index.write_bytes(segindex.index_path(segments(tmp_path)[2]).read_bytes())
    else:
        index.write_bytes(body[: len(body) // 2])
    log = open_log(tmp_path)
    assert contents(log) == expected(300)
    for n in range(300):
        start = log.seek(below(n))
        assert start <= n and n - start <= 64
    log.close()
    assert segindex.read_summary(victim, int(victim.stem), HEAD) is not None  # written again
    assert contents(open_log(tmp_path)) == expected(300)


def test_an_index_older_than_its_segment_is_used_and_the_rest_scanned(tmp_path: Path, frame_reads: list[int],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "_CHECKPOINT_MIN_BYTES", 1)
    log = fill(tmp_path, 100, close=False)
    last = segments(tmp_path)[-1]
    old = segindex.index_path(last).read_bytes()
    for n in range(100, 110):
        log.write([[entry(n)]])
        log.sync()
    log.close()
    segindex.index_path(last).write_bytes(old)  # the newer index was lost (its rename was not durable)
    frame_reads[0] = 0
    again = open_log(tmp_path)
    assert 10 <= frame_reads[0] < 64
    assert contents(again) == expected(110)


def test_an_index_covering_more_than_its_segment_is_ignored(tmp_path: Path) -> None:
    fill(tmp_path, 300)
    sealed = segments(tmp_path)[1]
    frames = contents(open_log(tmp_path))
    data = sealed.read_bytes()
    sealed.write_bytes(data[: len(data) - 10])  # shorter than its index says: the index is stale
    log = open_log(tmp_path)
    # The segment is scanned as without an index: its cut-off last frame is an unfinished write.
    lost = {seq for seq, _ in frames} - {seq for seq, _ in contents(log)}
    assert len(lost) == 1
    assert [f for f in frames if f[0] not in lost] == contents(log)


def test_a_torn_tail_is_cut_after_the_indexed_prefix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 300)
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(b"FHS1\x40\x00\x00\x00half a frame")
    log = open_log(tmp_path)
    assert "Cut a torn tail" in caplog.text
    assert contents(log) == expected(300)
    log.write([[entry(300)]])
    log.sync()
    log.close()
    assert contents(open_log(tmp_path)) == expected(301)


def test_deleted_segments_take_their_index_along_and_orphans_go(tmp_path: Path) -> None:
    log = fill(tmp_path, 300, close=False)
    freed = log.drop_before(200)
    assert freed > 0
    assert {p.stem for p in tmp_path.glob("*.idx")} <= {p.stem for p in segments(tmp_path)}
    log.close()
    (tmp_path / f"{1:020d}.idx").write_bytes(b"left by a crash")
    (tmp_path / f"{2:020d}.idx.tmp").write_bytes(b"unfinished")
    again = open_log(tmp_path)
    assert not (tmp_path / f"{1:020d}.idx").exists() and not (tmp_path / f"{2:020d}.idx.tmp").exists()
    assert contents(again)[-1] == (299, entry(299)) and contents(again)[0][0] <= 200


def test_logs_without_index_heads_write_no_index(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_bytes=4096)
    for n in range(300):
        log.write([[entry(n)]])
        log.sync()
    log.close()
    assert list(tmp_path.glob("*.idx")) == [] and len(segments(tmp_path)) > 3
    with pytest.raises(TypeError):
        SegmentLog(tmp_path, segment_bytes=4096).seek(below(3))


# -- power loss ------------------------------------------------------------------------------


def _workload(root: Path, rec: Recorder) -> None:
    rng = random.Random(3)
    log = SegmentLog(root / "log", segment_bytes=1024, index_heads=HEAD)
    n = 0
    for _ in range(11):
        batch = [entry(n + i, rng.choice((20, 200, 600))) for i in range(rng.randint(1, 3))]
        first = log.write([[b] for b in batch])
        log.sync()
        rec.mark(("ack", [(first + i, b) for i, b in enumerate(batch)]))
        n += len(batch)
        if rng.random() < 0.2:
            rec.mark(("release", n - 3))  # entries before it may go (in any order after a power cut)
            log.drop_before(n - 3)
    log.close()


def test_every_power_cut_state_of_an_indexed_log_recovers_every_acknowledged_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "_CHECKPOINT_MIN_BYTES", 1)  # the active segment indexed as it grows too
    root = Path(tempfile.mkdtemp(prefix="segindex-", dir=scratch_dir()))
    try:
        rec = Recorder(root)
        with rec.recording():
            _workload(root, rec)
        cut = PowerCut(rec.ops)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert any(op.kind == "fsync" and op.path.endswith(".idx.tmp") for op in cut.ops)  # sealed: fsynced
    fsynced = {op.inode for op in cut.ops if op.kind == "fsync"}
    assert any(op.kind == "create" and op.path.endswith(".idx.tmp") and op.inode not in fsynced
               for op in cut.ops)  # the active segment's checkpoints: not fsynced
    assert any(op.kind == "rename" and op.name2.endswith(".idx") for op in cut.ops)
    assert any(op.kind == "unlink" and op.path.endswith(".idx") for op in cut.ops)
    rng = random.Random(5)
    acked: dict[int, bytes] = {}
    released = 0
    checked = 0
    for k in range(len(cut.ops) + 1):
        if k and cut.ops[k - 1].kind == "mark":
            kind, what = cut.ops[k - 1].mark
            if kind == "ack":
                acked.update(what)
            else:
                released = what
        for _state, image in cut.states(k, rng, 1):
            state_dir = Path(tempfile.mkdtemp(prefix="segindex-state-", dir=scratch_dir()))
            try:
                image.write(state_dir)
                for _ in range(2):  # the first open may rebuild indexes; the second reads them
                    got = dict(contents(SegmentLog(state_dir / "log", segment_bytes=1024, index_heads=HEAD)))
                    assert all(got.get(seq) == data for seq, data in acked.items()
                               if seq >= released), f"crash point {k}: an acknowledged entry lost"
                    assert all(int.from_bytes(data[:HEAD], "big") == seq for seq, data in got.items())
                checked += 1
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
    assert checked > 200
