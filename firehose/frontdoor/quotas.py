"""Throughput quotas: token buckets, and Firehose's per-stream quotas on DirectPut streams.

AWS holds each DirectPut delivery stream to a number of records, requests and
MiB per second, PutRecord and PutRecordBatch together (firehose-api.md §3.4).
With ``quotas.enabled`` the daemon does the same, so producers meet
``ServiceUnavailableException`` "Slow down." and exercise their back-off as
they would on AWS: a call beyond the request rate fails as a whole (503),
and the records of a PutRecordBatch beyond the record or byte rate fail one
by one with that error code while the first ones are accepted. Off by
default: a self-hosted daemon should take what its disk can.

The Kinesis sidecar's per-shard limits (``kinesis.enforce_limits``) use the
same buckets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from firehose.settings import QuotaSettings

MiB = 1024 * 1024


@dataclass
class Bucket:
    rate: float
    #: Most tokens it holds (one second of rate unless given).
    capacity: float | None = None
    level: float | None = None
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.capacity is None:
            self.capacity = self.rate
        if self.level is None:
            self.level = self.capacity

    def _refill(self, now: float) -> None:
        assert self.level is not None and self.capacity is not None
        if now > self.stamp:  # a clock reading from before the last one adds nothing
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def available(self, now: float | None = None) -> float:
        self._refill(time.monotonic() if now is None else now)
        assert self.level is not None
        return self.level

    def take(self, amount: float) -> None:
        """Spend ``amount`` (may go negative: the debt is paid before the next call succeeds)."""
        assert self.level is not None
        self.level -= amount


class StreamQuota:
    """One delivery stream's buckets."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.requests = Bucket(settings.requests_per_second)
        self.records = Bucket(settings.records_per_second)
        self.bytes = Bucket(settings.mib_per_second * MiB)

    def admit_call(self, now: float | None = None) -> bool:
        if self.requests.available(time.monotonic() if now is None else now) < 1:
            return False
        self.requests.take(1)
        return True

    def admit_records(self, sizes: Sequence[int], now: float | None = None) -> int:
        """How many of the first records fit the record and byte rates (they are taken)."""
        now = time.monotonic() if now is None else now
        records, size_left = self.records.available(now), self.bytes.available(now)
        admitted = used = 0
        for size in sizes:
            if admitted + 1 > records or used + size > size_left:
                break
            admitted += 1
            used += size
        self.records.take(admitted)
        self.bytes.take(used)
        return admitted


class Quotas:
    """Per-stream quotas, keyed by whatever identifies a stream (made on first use); None when off."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.settings = settings
        self._streams: dict[object, StreamQuota] = {}

    def stream(self, key: object) -> StreamQuota | None:
        if not self.settings.enabled:
            return None
        quota = self._streams.get(key)
        if quota is None:
            quota = self._streams[key] = StreamQuota(self.settings)
        return quota

    def forget(self, key: object) -> None:
        self._streams.pop(key, None)
