"""Group commit: one thread writes and fsyncs for every log.

Concurrent PutRecordBatch calls each need their data on disk before they are
answered. Doing one fsync per call would cap throughput at the disk's fsync
rate; instead every call enqueues its entry, and this thread takes everything
queued, writes it (one write per log), fsyncs each log it touched once, and
then completes all of those calls together. While an fsync is running, new
calls queue up and share the next one, so the number of fsyncs adapts to the
load without any timer.

Encoding frames, computing checksums and sealing the entries of encrypted
streams (``log.Deferred``) also happen here, off the event loop that answers
clients.

A write to a log that ``uses_reserve`` (bookkeeping, such as a ledger) that
fails because the disk is full is tried once more after ``on_disk_full`` freed
reserved space: recording a delivery is what frees the spool's space, so it
must not be stopped by a full disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firehose.errors import SpoolError
from firehose.storage.log import Deferred, Payload, SegmentLog

log = logging.getLogger("firehose.storage")

#: What a commit gives its caller: the first sequence number, or the error.
Result = int | BaseException


@dataclass(slots=True)
class _Pending:
    log: SegmentLog
    payloads: Sequence[Payload | Deferred]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


class GroupCommitter:
    """Owns the write/fsync thread. ``submit`` may be called from any thread.

    The hand-offs are as cheap as they can be, since every acknowledged call makes two: a
    C-level queue wakes the thread (no ``Condition`` in Python), and one round's results go
    back to each event loop in a single ``call_soon_threadsafe`` (one wake-up of the loop per
    fsync, not one per call).
    """

    def __init__(self, name: str = "spool-commit", *, on_disk_full: Callable[[], bool] | None = None) -> None:
        #: Frees reserved space (committer thread); whether it freed any.
        self._on_disk_full = on_disk_full
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submits before the stop sentinel
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.commits = 0  # fsync rounds, for metrics and tests

    def submit(self, log_: SegmentLog, payloads: Sequence[Payload | Deferred], loop: asyncio.AbstractEventLoop,
               future: asyncio.Future[int]) -> None:
        """Queue entries for ``log_``; ``future`` (of ``loop``) gets the first sequence number."""
        with self._lock:
            if self._stopping:
                raise SpoolError("the spool is shutting down")
            self._queue.put(_Pending(log_, payloads, loop, future))

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[_Pending] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            while True:  # everything queued meanwhile shares this round's fsync
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _write(self, target: SegmentLog, payloads: list[Payload | Deferred]) -> int:
        """Write and fsync; a bookkeeping write that found the disk full gets one more try."""
        try:
            first = target.write(payloads)
            target.sync()
        except SpoolError as exc:
            if not (target.uses_reserve and _disk_full(exc) and self._on_disk_full and self._on_disk_full()):
                raise
            first = target.write(payloads)
            target.sync()
        return first

    def _commit(self, batch: list[_Pending]) -> None:
        by_log: dict[int, list[_Pending]] = {}
        for item in batch:
            by_log.setdefault(id(item.log), []).append(item)
        results: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Result]]] = {}
        for items in by_log.values():
            target = items[0].log
            payloads = [p for item in items for p in item.payloads]
            try:
                first = self._write(target, payloads)
            except SpoolError as exc:
                for item in items:
                    results.setdefault(item.loop, []).append((item.future, exc))
                continue
            except Exception as exc:  # a bug must not kill the thread and hang every caller
                log.exception("Unexpected error in the spool committer.")
                for item in items:
                    results.setdefault(item.loop, []).append((item.future, SpoolError(str(exc))))
                continue
            seq = first
            for item in items:
                results.setdefault(item.loop, []).append((item.future, seq))
                seq += len(item.payloads)
        self.commits += 1
        for loop, done in results.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, done)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


def _resolve_all(done: list[tuple[asyncio.Future[int], Result]]) -> None:
    """On the event loop: complete one round's futures (a cancelled caller's is skipped)."""
    for future, result in done:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def commit(committer: GroupCommitter, log_: SegmentLog, payloads: Sequence[Payload | Deferred]) -> int:
    """Append entries durably; returns the first sequence number once fsynced."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    committer.submit(log_, payloads, loop, future)
    return await future
