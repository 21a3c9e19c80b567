"""A process pool that replaces itself when a worker dies, instead of refusing every later task.

``concurrent.futures.ProcessPoolExecutor`` marks itself broken for good when one of its
processes exits abruptly (the kernel's OOM killer, a crash in a native library on one batch):
every later ``submit`` raises ``BrokenProcessPool``. For the daemon that would mean every
conversion of every stream failing until a restart. ``RenewingProcessPool`` keeps the
semantics of one executor but starts a fresh pool on the first submission after a breakage.
The tasks that were running when the worker died still fail with ``BrokenProcessPool``: the
caller retries them, and gives up on a batch that keeps killing its worker (``deliver.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger("firehose.processpool")

T = TypeVar("T")


def exit_with_parent(interval: float = 1.0) -> None:
    """For a pool's initializer: the worker exits within ``interval`` seconds of its parent's death.

    A ``ProcessPoolExecutor`` worker waits for tasks on a pipe whose writing end its sibling workers
    hold as well (the queue is pickled whole into each), so when the daemon is killed with SIGKILL its
    workers never see the pipe close and would wait for ever, holding their memory. A daemon thread
    watches for the worker being handed to another parent (the parent died) instead; polling the
    parent's id works on every POSIX system, unlike Linux's PR_SET_PDEATHSIG, which also fires when
    merely the thread that spawned the worker ends."""
    spawner = multiprocessing.parent_process()  # known from the start, even if it died meanwhile
    parent = spawner.pid if spawner is not None and spawner.pid is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class RenewingProcessPool(Executor):
    """An executor over ``make()``'s pools: a broken one is shut down and replaced at the next submit."""

    def __init__(self, make: Callable[[], ProcessPoolExecutor]) -> None:
        self._make = make
        self._pool = make()
        self._lock = threading.Lock()
        self._closed = False
        #: How many times a broken pool was replaced.
        self.renewed = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                if self._closed:
                    raise
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._make()
                self.renewed += 1
                log.warning("A worker process died; started a new pool of worker processes.",
                            extra={"renewed": self.renewed})
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)
