"""Admission: whether the spool takes one more append, why not, and the room kept for bookkeeping.

Two limits decide, checked before a byte is written:

* ``spool.max_bytes``: the bytes of record segments on disk plus appends in
  flight. An append that would pass it is refused.
* ``spool.reserve_bytes``: free space kept on the spool's filesystem. An
  append that would leave less free is refused, so a spool whose limit is
  larger than its disk stops taking data before the disk is full, and the
  space that recording deliveries needs (the ledger, processed entries) is
  still there when the destination comes back. Part of it (up to
  ``RESERVE_FILE_BYTES``) is also held in a file, ``.reserve``, which is given
  up when a bookkeeping write finds the disk full anyway (something else
  filled it): deliveries can still be recorded, which frees spool segments.
  The file is made again once there is room.

A refusal is ``ServiceUnavailableException`` (HTTP 503, which SDKs retry);
nothing already acknowledged is touched. An entry larger than ``max_bytes``
itself is admitted when nothing else is spooled, so no entry is refused for
ever.

``refusal`` says, for ``/readyz``, whether puts would be refused now and why:
less room under the limit than a put may need (the largest refused since room
was last made, at least ``READY_ROOM_BYTES``), too little free disk, or a
write that failed for lack of space and has not been followed by a success or
by more free space.

The free space is measured with ``statvfs`` at most once a second on the put
path (and whenever the estimate says the reserve is near), so admission stays
a few arithmetic operations per call.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from firehose.errors import ConfigError, ServiceUnavailableException

log = logging.getLogger("firehose.spool")

#: /readyz says "not ready" while less than this is left under the limit (or free on the disk): a
#: typical PutRecordBatch fits in it (the largest is 4 MiB of data; a refused one raises the bar).
READY_ROOM_BYTES = 1024 * 1024
#: At most this much of the reserve is held in ``.reserve``: room for many thousands of ledger entries.
RESERVE_FILE_BYTES = 8 * 1024 * 1024
#: The least room a filesystem must have beyond the reserve for the spool to be worth starting.
MIN_ROOM_BYTES = 8 * 1024 * 1024
_MEASURE_EVERY_S = 1.0
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is "no space left" / "quota exceeded"."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


class ReserveFile:
    """``<root>/.reserve``: space held for bookkeeping, given up when the disk is full."""

    def __init__(self, root: Path, size: int) -> None:
        self.path = root / ".reserve"
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def make(self) -> bool:
        """Allocate the file (its blocks, not only its length); whether it is there now."""
        if self.size <= 0 or self.held:
            return self.size > 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.debug("Could not make the spool's reserve file.", extra={"error": str(exc)})
            return False
        return True

    def give_up(self) -> bool:
        """Delete the file; whether that freed anything."""
        if not self.path.exists():
            return False
        with contextlib.suppress(OSError):
            self.path.unlink()
            log.warning("The spool's disk is full; used the reserved space to record deliveries.",
                        extra={"freed_bytes": self.size})
            return True
        return False


class Admission:
    """The spool's byte count and both limits. Thread-safe; every method is short."""

    def __init__(self, root: Path, *, max_bytes: int, reserve_bytes: int,
                 clock: Callable[[], float] = time.monotonic,
                 statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._clock = clock
        self._statvfs = statvfs
        self._lock = threading.Lock()
        self.used = 0  # bytes of record segments on disk plus appends in flight
        self._refused_need = 0  # the largest append refused for room under the limit, until there is room for it
        self._free = 0  # free bytes on the filesystem when last measured
        self._measured_at = -1e18
        self._since = 0  # bytes admitted since then
        self._failed_free: int | None = None  # free bytes when a write last failed for lack of space
        self.reserve = ReserveFile(root, min(reserve_bytes, RESERVE_FILE_BYTES))
        #: What the spool can really hold: ``max_bytes``, or less when its filesystem is smaller.
        self.capacity = max_bytes
        if reserve_bytes:
            self._check_filesystem()
            self._measure()

    def _check_filesystem(self) -> None:
        st = self._statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        self.capacity = min(self.max_bytes, total - self.reserve_bytes)
        if total < self.reserve_bytes + MIN_ROOM_BYTES:
            raise ConfigError(
                f"spool.reserve_bytes ({_mib(self.reserve_bytes)}) leaves less than {_mib(MIN_ROOM_BYTES)} for "
                f"the spool on the filesystem of {self.root} ({_mib(total)} in all): lower spool.reserve_bytes "
                "or give the state directory a larger filesystem"
            )

    # -- counting ------------------------------------------------------------------

    def admit(self, need: int) -> None:
        """Count ``need`` bytes in, or raise ServiceUnavailableException (nothing counted)."""
        with self._lock:
            used = self.used
            if used + need > self.max_bytes and used > 0:
                self._refused_need = max(self._refused_need, need)
                raise ServiceUnavailableException(
                    f"Slow down. The spool is full ({used} of {self.max_bytes} bytes); "
                    "delivery is behind. Retry with backoff."
                )
            if self.reserve_bytes:
                free = self._free - self._since
                if self._clock() - self._measured_at > _MEASURE_EVERY_S or free - need < self.reserve_bytes:
                    free = self._measure()
                if free - need < self.reserve_bytes:
                    self._refused_need = max(self._refused_need, need)
                    raise ServiceUnavailableException(
                        f"Slow down. The spool's disk is nearly full ({free} bytes free, {self.reserve_bytes} "
                        "kept free by spool.reserve_bytes); delivery is behind. Retry with backoff."
                    )
                self._since += need
            self.used = used + need

    def add(self, n: int) -> None:
        """Count bytes that are not refused (processed entries, a stream's spool found at start)."""
        with self._lock:
            self.used += n
            self._since += n

    def returned(self, n: int) -> None:
        """Bytes no longer spooled: an append that failed, or segments deleted."""
        if n:
            with self._lock:
                self.used -= n

    def freed(self) -> None:
        """Space was freed on the disk: measure again, and make the reserve file again if it was used."""
        if self.reserve_bytes:
            with self._lock:
                self._measure()

    def write_failed(self, exc: BaseException) -> None:
        """An append could not be made durable; remember it if it was for lack of space."""
        if is_disk_full(exc):
            with self._lock:
                self._failed_free = self._measure_free()

    def written(self) -> None:
        if self._failed_free is not None:
            with self._lock:
                self._failed_free = None

    # -- free space ------------------------------------------------------------------

    def _measure_free(self) -> int:
        try:
            st = self._statvfs(self.root)
        except OSError:
            return self._free
        return st.f_bavail * st.f_frsize

    def _measure(self) -> int:
        """Measure the free space (lock held); make the reserve file again when there is room for it."""
        free = self._measure_free()
        reserve = self.reserve
        if reserve.size and free >= self.reserve_bytes + reserve.size and not reserve.held and reserve.make():
            free = self._measure_free()
        self._free, self._since, self._measured_at = free, 0, self._clock()
        return free

    # -- readiness -------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why puts would be refused now (for /readyz), or None when they would be taken."""
        with self._lock:
            want = max(READY_ROOM_BYTES, self._refused_need)
            room = self.max_bytes - self.used
            free = self._measure() if self.reserve_bytes else None
            if room >= self._refused_need and (free is None or free - self._refused_need >= self.reserve_bytes):
                self._refused_need = 0  # what was refused would be taken now
            if room < want and self.used > 0:
                return f"spool full: {room} bytes left of {self.max_bytes}, delivery is behind"
            if free is not None and free - want < self.reserve_bytes:
                return (f"spool disk nearly full: {free} bytes free, {self.reserve_bytes} kept free "
                        "(spool.reserve_bytes), delivery is behind")
            if self._failed_free is not None:
                if (free if free is not None else self._measure_free()) <= self._failed_free:
                    return "spool disk full: the last write found no space left on the device"
                self._failed_free = None
            return None
