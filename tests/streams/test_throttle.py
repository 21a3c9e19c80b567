"""Per-shard limits as AWS documents them, on a clock the test controls."""

from __future__ import annotations

from firehose.streams.throttle import ShardLimits


def test_a_10_mib_read_makes_the_next_calls_wait_about_five_seconds() -> None:
    limits = ShardLimits()
    t0 = limits.read_bytes.stamp
    assert limits.admit_read(t0)
    limits.charge_read(10 * 1024 * 1024)
    assert not limits.admit_read(t0 + 1.0)
    assert not limits.admit_read(t0 + 4.9)
    assert limits.admit_read(t0 + 5.1)


def test_five_reads_a_second_then_throttled_then_allowed_again() -> None:
    limits = ShardLimits()
    t0 = limits.read_calls.stamp
    assert all(limits.admit_read(t0) for _ in range(5))
    assert not limits.admit_read(t0)
    assert limits.admit_read(t0 + 0.25)  # 5 calls/s: one more after a fifth of a second


def test_writes_are_held_to_1000_records_and_1_mib_a_second() -> None:
    limits = ShardLimits()
    t0 = limits.write_records.stamp
    assert sum(limits.admit_write(10, t0) for _ in range(1500)) == 1000
    assert limits.admit_write(10, t0 + 0.01)  # ten more records' worth of tokens
    fresh = ShardLimits()
    t1 = fresh.write_bytes.stamp
    assert fresh.admit_write(1024 * 1024 - 1, t1)
    assert not fresh.admit_write(1024, t1 + 0.0001)
    assert fresh.admit_write(1024, t1 + 0.01)
