"""Group commit: one thread writes and fsyncs for every log.

Concurrent PutRecordBatch calls each need their data on disk before they are
answered. Doing one fsync per call would cap throughput at the disk's fsync
rate; instead every call enqueues its entry, and this thread takes everything
queued, writes it (one write per log), fsyncs each log it touched once, and
then completes all of those calls together. While an fsync is running, new
calls queue up and share the next one, so the number of fsyncs adapts to the
load without any timer.

Encoding frames and computing checksums also happens here, off the event loop
that answers clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firehose.errors import SpoolError
from firehose.storage.log import Payload, SegmentLog

log = logging.getLogger("firehose.storage")

#: Called in the committer thread with the first sequence number, or the error.
Completion = Callable[[int | BaseException], None]


@dataclass(slots=True)
class _Pending:
    log: SegmentLog
    payloads: Sequence[Payload]
    done: Completion


class GroupCommitter:
    """Owns the write/fsync thread. ``submit`` may be called from any thread."""

    def __init__(self, name: str = "spool-commit") -> None:
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.commits = 0  # fsync rounds, for metrics and tests

    def submit(self, log_: SegmentLog, payloads: Sequence[Payload], done: Completion) -> None:
        with self._cond:
            if self._stopping:
                raise SpoolError("the spool is shutting down")
            self._queue.append(_Pending(log_, payloads, done))
            self._cond.notify()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                batch = list(self._queue)
                self._queue.clear()
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        by_log: dict[int, list[_Pending]] = {}
        for item in batch:
            by_log.setdefault(id(item.log), []).append(item)
        results: list[tuple[_Pending, int | BaseException]] = []
        for items in by_log.values():
            target = items[0].log
            payloads = [p for item in items for p in item.payloads]
            try:
                first = target.write(payloads)
                target.sync()
            except SpoolError as exc:
                results.extend((item, exc) for item in items)
                continue
            except Exception as exc:  # a bug must not kill the thread and hang every caller
                log.exception("Unexpected error in the spool committer.")
                results.extend((item, SpoolError(str(exc))) for item in items)
                continue
            seq = first
            for item in items:
                results.append((item, seq))
                seq += len(item.payloads)
        self.commits += 1
        for item, result in results:
            try:
                item.done(result)
            except Exception:
                log.exception("A spool completion callback failed.")


async def commit(committer: GroupCommitter, log_: SegmentLog, payloads: Sequence[Payload]) -> int:
    """Append entries durably; returns the first sequence number once fsynced."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def _resolve(result: int | BaseException) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    committer.submit(log_, payloads, lambda result: loop.call_soon_threadsafe(_resolve, result))
    return await future
