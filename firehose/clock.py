"""The wall clock as the daemon records it: whole milliseconds since the Unix epoch.

Arrival times, seal times, error-output timestamps, catalog and shard-store
times are all this number (as AWS shows them: ``ApproximateArrivalTimestamp``,
``attemptEndingTimestamp``, ...). It is wall time, so it may step back when the
system clock is set; durations and deadlines use ``time.monotonic`` instead.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, rounded down (from integer nanoseconds: no float rounding)."""
    return time.time_ns() // 1_000_000
