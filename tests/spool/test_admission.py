"""Admission: the spool's byte limit, the free space it keeps on its disk, and what /readyz is told."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from firehose.errors import ConfigError, ServiceUnavailableException, SpoolError
from firehose.spool.admission import READY_ROOM_BYTES, Admission, is_disk_full

MiB = 1024 * 1024


class Disk:
    """A filesystem of ``total`` bytes with ``free`` free, as ``statvfs`` reports it."""

    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free

    def statvfs(self, _path: Path) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, self.total // 4096, self.free // 4096, self.free // 4096,
                                  0, 0, 0, 0, 255))


def test_at_the_limit_appends_are_refused_and_readyz_says_so_until_there_is_room(tmp_path: Path) -> None:
    a = Admission(tmp_path, max_bytes=8 * MiB, reserve_bytes=0)
    for _ in range(7):
        a.admit(MiB)
    assert a.refusal() is None  # a typical put still fits
    a.admit(MiB - 100)
    with pytest.raises(ServiceUnavailableException, match="spool is full"):
        a.admit(4 * MiB)
    assert a.refusal() is not None and a.refusal().startswith("spool full")  # type: ignore[union-attr]
    a.returned(2 * MiB)
    # Room for a typical put again, but not for the 4 MiB one that was refused: still not ready.
    assert a.refusal() is not None
    a.returned(3 * MiB)
    assert a.refusal() is None
    a.admit(4 * MiB)


def test_an_entry_larger_than_the_limit_is_taken_when_nothing_else_is_spooled(tmp_path: Path) -> None:
    a = Admission(tmp_path, max_bytes=8 * MiB, reserve_bytes=0)
    a.admit(10 * MiB)  # a Kinesis GetRecords batch may be 10 MiB: never refused for ever
    with pytest.raises(ServiceUnavailableException):
        a.admit(1)


def test_appends_that_would_leave_less_than_the_reserve_free_are_refused(tmp_path: Path) -> None:
    disk = Disk(total=1024 * MiB, free=80 * MiB)
    now = [0.0]
    a = Admission(tmp_path, max_bytes=1 << 40, reserve_bytes=64 * MiB, clock=lambda: now[0],
                  statvfs=disk.statvfs)
    assert a.refusal() is None
    a.admit(8 * MiB)
    disk.free -= 8 * MiB
    a.admit(7 * MiB)  # 65 MiB free before it
    disk.free -= 7 * MiB
    with pytest.raises(ServiceUnavailableException, match="disk is nearly full"):
        a.admit(2 * MiB)
    assert "disk nearly full" in (a.refusal() or "")
    disk.free += 10 * MiB  # delivered segments deleted
    a.freed()
    assert a.refusal() is None
    a.admit(2 * MiB)


def test_free_space_taken_by_others_is_noticed_within_a_second(tmp_path: Path) -> None:
    disk = Disk(total=1024 * MiB, free=500 * MiB)
    now = [0.0]
    a = Admission(tmp_path, max_bytes=1 << 40, reserve_bytes=64 * MiB, clock=lambda: now[0],
                  statvfs=disk.statvfs)
    disk.free = 65 * MiB  # another program filled the disk
    a.admit(2 * MiB)  # the estimate is under a second old
    now[0] += 1.5
    with pytest.raises(ServiceUnavailableException):
        a.admit(2 * MiB)


def test_a_filesystem_smaller_than_the_reserve_is_refused_at_start_naming_the_setting(tmp_path: Path) -> None:
    disk = Disk(total=32 * MiB, free=32 * MiB)
    with pytest.raises(ConfigError, match=r"spool\.reserve_bytes \(64\.0 MiB\)"):
        Admission(tmp_path, max_bytes=1 << 30, reserve_bytes=64 * MiB, statvfs=disk.statvfs)


def test_the_spool_counts_on_a_smaller_filesystem_than_its_limit(tmp_path: Path) -> None:
    disk = Disk(total=100 * MiB, free=100 * MiB)
    a = Admission(tmp_path, max_bytes=1 << 30, reserve_bytes=20 * MiB, statvfs=disk.statvfs)
    assert a.capacity == 80 * MiB


def test_the_reserve_file_is_given_up_on_a_full_disk_and_made_again_when_there_is_room(tmp_path: Path) -> None:
    disk = Disk(total=1024 * MiB, free=500 * MiB)
    a = Admission(tmp_path, max_bytes=1 << 30, reserve_bytes=16 * MiB, statvfs=disk.statvfs)
    reserve = tmp_path / ".reserve"
    assert reserve.stat().st_size == 8 * MiB and reserve.stat().st_blocks * 512 >= 8 * MiB
    assert a.reserve.give_up()
    assert not reserve.exists() and not a.reserve.give_up()
    disk.free = 20 * MiB  # less than the reserve plus the file: not yet
    a.freed()
    assert not reserve.exists()
    disk.free = 30 * MiB
    a.freed()
    assert reserve.stat().st_size == 8 * MiB


def test_a_write_that_found_the_disk_full_keeps_readyz_at_503_until_space_returns(tmp_path: Path) -> None:
    disk = Disk(total=1024 * MiB, free=0)
    a = Admission(tmp_path, max_bytes=1 << 30, reserve_bytes=0, statvfs=disk.statvfs)
    a.admit(MiB)
    error = SpoolError("write to spool failed")
    error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(error)
    a.returned(MiB)
    a.write_failed(error)
    assert "disk full" in (a.refusal() or "")
    disk.free = READY_ROOM_BYTES
    assert a.refusal() is None
