"""The process-wide memory budget for spooled records held in memory (``memory.max_buffered_bytes``).

Every stream's buffers and the batches it is delivering hold records read from the spool (views of
its mapped segments), and an attempt also holds what it built from them when that is a copy (a
compressed, encrypted or converted body; an uncompressed body is sent from the records in place,
``destinations/bodyfile.py``); the budget counts both, across all streams, so what the process
holds is bounded by configuration and not by how far behind a destination is or how fast records
arrive. The records themselves stay in the spool: a stream that finds the budget spent reads
nothing more, and reads the rest once another stream gave memory back.

Invariants:

* ``used`` is the sum of every holder's charge; each holder gives back exactly what it took
  (``Charge`` makes that hard to get wrong).
* Readers ask for at most ``room()`` before they read; a read hands over whole spool entries, so
  one read may pass the budget by at most one entry (up to 5 MiB), and a batch being retried takes
  its records again even when the budget is spent (one batch per stream at a time, see
  ``pipeline/deliver.py``), as does the body an attempt builds from them. Waiting for memory
  there could deadlock: the memory it waits for may be held by buffers that are waiting for the
  same stream's retries to end.
* Listeners are called when memory is given back while the budget was spent, so streams that
  stopped reading wake up. Used from the daemon's event loop only (no locking).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

__all__ = ["Charge", "MemoryBudget", "limit_malloc_arenas", "reclaim_after_failure"]

#: At most one full collection per this many seconds, however many attempts fail.
_RECLAIM_EVERY_S = 5.0
_last_reclaim = 0.0


def reclaim_after_failure() -> None:
    """Collect cyclic garbage after a failed delivery attempt (at most every few seconds).

    The daemon runs the cyclic collector rarely (``telemetry.tune_gc``); a failed attempt leaves
    its request in reference cycles inside the HTTP and AWS libraries (exception, request, body:
    megabytes per batch), which would otherwise wait for the next full collection. In an outage of
    ten streams that was gigabytes within seconds. A full collection costs milliseconds (what the
    daemon built at start is frozen out of it), so a failing destination pays that, not memory.
    """
    global _last_reclaim
    now = time.monotonic()
    if now - _last_reclaim >= _RECLAIM_EVERY_S:
        _last_reclaim = now
        gc.collect()

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (default: eight per core), before the daemon starts its threads.

    Every thread that allocates may get an arena of its own, and memory freed in one stays with it:
    with the destinations' thread pool that kept tens of megabytes per arena that no buffer held.
    Two arenas cost no measurable throughput (the event loop does the allocating). Does nothing
    where the C library is not glibc or ``MALLOC_ARENA_MAX`` is set.
    """
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(_M_ARENA_MAX, arenas)


class MemoryBudget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._listeners: set[Callable[[], None]] = set()

    def room(self) -> int:
        """Bytes that may still be read into memory (0 when the budget is spent)."""
        return max(0, self.max_bytes - self.used)

    def spent(self) -> bool:
        return self.used >= self.max_bytes

    def take(self, n: int) -> None:
        self.used += n

    def give(self, n: int) -> None:
        was_spent = self.spent()
        self.used -= n
        if was_spent and not self.spent():
            for listener in list(self._listeners):
                listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever room appears again after the budget was spent."""
        self._listeners.add(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.discard(listener)


class Charge:
    """What one holder (a batch, a buffer) has taken from the budget; ``release`` gives all of it back."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: MemoryBudget, n: int = 0) -> None:
        self._budget = budget
        self.bytes = 0
        self.add(n)

    def add(self, n: int) -> None:
        if n:
            self._budget.take(n)
            self.bytes += n

    def split(self, n: int) -> Charge:
        """Move ``n`` of these bytes to a new holder (records taken from a buffer into a batch)."""
        n = min(n, self.bytes)
        self.bytes -= n
        moved = Charge(self._budget)
        moved.bytes = n
        return moved

    def release(self, n: int | None = None) -> None:
        """Give back ``n`` bytes (all of them by default)."""
        n = self.bytes if n is None else min(n, self.bytes)
        if n:
            self.bytes -= n
            self._budget.give(n)
