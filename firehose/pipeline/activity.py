"""What a stream did, told to a person at a pace a person can read.

A busy stream delivers many objects a second and a failing transform fails
thousands of records: one log line each would drown everything else. So the
deliverer and the feeder report here, and each stream logs at most one INFO
line per ``log.summary_seconds`` about what it delivered (objects, records,
bytes, the last key) and at most one WARNING per window about records that
went to the error output (processing, conversion, partitioning, a destination
that gave up), with counts by cause and the latest reason for each. A
window's line is written when the window ends, so the last deliveries before a
quiet spell are not held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

log = logging.getLogger("firehose.pipeline")


class ActivityLog:
    """One stream's summary lines. Used from the event loop only."""

    def __init__(self, stream: str, every_seconds: float) -> None:
        self._stream = stream
        self._every = every_seconds
        self._objects = self._records = self._bytes = 0
        self._last_key = ""
        self._destination = ""
        self._failed: Counter[str] = Counter()
        self._reasons: dict[str, str] = {}
        self._timer: asyncio.TimerHandle | None = None

    def delivered(self, destination: str, key: str, records: int, size: int) -> None:
        self._objects += 1
        self._records += records
        self._bytes += size
        self._last_key = key
        self._destination = destination
        self._schedule()

    def failed(self, cause: str, records: int, reason: str = "") -> None:
        """``records`` went to the error output because of ``cause`` (an error output type);
        ``reason``, when known, says why (the window's line shows the latest one per cause)."""
        if records:
            self._failed[cause] += records
            if reason:
                self._reasons[cause] = reason
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._every, self.flush)

    def flush(self) -> None:
        """Write the window's lines now (also when the stream stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._objects:
            log.info("Delivered.", extra={"stream": self._stream, "destination": self._destination,
                                          "objects": self._objects, "records": self._records,
                                          "bytes": self._bytes, "last_key": self._last_key})
            self._objects = self._records = self._bytes = 0
        if self._failed:
            reasons = {"reasons": dict(sorted(self._reasons.items()))} if self._reasons else {}
            log.warning("Records went to the error output.",
                        extra={"stream": self._stream, **{cause: n for cause, n in sorted(self._failed.items())},
                               **reasons})
            self._failed.clear()
            self._reasons.clear()
