"""The destination interface: one delivery attempt, nothing more.

A destination is one class with a config model and three coroutines:

* ``check()``: a health check; raises ``DestinationUnavailable``.
* ``deliver(batch)``: one attempt. It never sleeps, never loops on retries and
  never writes error output: the pipeline owns backoff, retry durations, error
  output and releasing the spool. It returns an ``Outcome`` or raises
  ``DestinationError`` (whose ``retriable`` flag decides). An unexpected
  exception counts as "retry everything" and is logged with its traceback.
* ``aclose()``: release clients.

Constructors only store things: no I/O, no network. Blocking client libraries
run in the context's thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from firehose.records import ObjectBatch, RecordBatch
from firehose.retry import Since
from firehose.settings import Settings

P = TypeVar("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failure:
    """A record of the batch (by index) that was not delivered, and why.

    ``code`` and ``reason`` become the error document's ``errorCode`` and
    ``errorMessage``; ``extra`` adds destination fields to it (``esDocumentId``,
    ``esIndexName``, ``EventId``, ...). ``error_output=False`` marks a rejection
    the protocol says must not be written to the error output (an HTTP endpoint's
    413): the pipeline logs and counts it instead.
    """

    index: int
    reason: str
    code: str = ""
    extra: dict[str, object] | None = None
    retry_after: float | None = None
    error_output: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """Records to retry and records rejected; every record not listed was delivered.

    An object destination lists all of its records or none.
    """

    retry: tuple[Failure, ...] = ()
    rejected: tuple[Failure, ...] = ()
    #: The destination refused the credentials (OpenSearch's HTTP 401/403: ``AuthFailure``).
    auth_failed: bool = False
    #: Seconds from sending each acknowledged request to its acknowledgement (Splunk's ``DataAckLatency``).
    ack_seconds: tuple[float, ...] = ()

    @property
    def delivered_all(self) -> bool:
        return not self.retry and not self.rejected


DELIVERED = Outcome()


@dataclass(frozen=True)
class DestinationContext:
    stream: str
    settings: Settings
    executor: Executor
    #: Shared HTTP client (TLS verification and CA bundle from ``settings.http``).
    http: Any = None
    #: The delivery stream's ARN (Firehose sends it to HTTP endpoints).
    stream_arn: str = ""
    #: The daemon's worker processes (made on first use), for CPU-heavy work that would otherwise
    #: hold the GIL against the event loop (Redshift's PostgreSQL mode parses batches there).
    processes: Callable[[], Executor] | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking call in the destinations' thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_process(self, fn: Callable[..., T], *args: object) -> T:
        """Run picklable CPU work in a worker process (in the thread pool when there are none)."""
        pool = self.processes() if self.processes is not None else self.executor
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


class Destination(ABC, Generic[P]):
    name: ClassVar[str]
    #: Seconds the pipeline keeps retrying a batch before it gives up on the records left
    #: (None: forever, as Firehose does for S3). Record destinations set it from RetryOptions.
    retry_seconds: float | None = None
    #: When the retry clock starts: at the first attempt (OpenSearch: the duration covers all
    #: attempts) or at the first failure (Splunk, HTTP endpoint).
    retry_clock: ClassVar[Since] = "first_failure"
    #: ``!{firehose:error-output-type}`` for records this destination gave up on.
    error_output_type: ClassVar[str] = ""
    #: The module this class runs in worker processes (``ctx.run_process``), if any: every worker
    #: imports it as it starts (``destinations.worker_modules``), not on its first batch.
    worker_module: ClassVar[str | None] = None

    @property
    def uses_workers(self) -> bool:
        """Whether this destination, as configured, delivers in worker processes: the daemon then
        starts them with the stream, which delivers once they are up. Only a class with a
        ``worker_module`` may say True."""
        return False

    async def warm_up(self) -> None:
        """Load what delivering needs that is slow to load (libraries of a second or more), before the
        first batch: the daemon awaits it, within limits, before it reports ready and before the stream
        delivers. It must not need the destination to be reachable (that is ``check``)."""
        return None

    @abstractmethod
    async def check(self) -> None: ...

    @abstractmethod
    async def deliver(self, batch: P) -> Outcome: ...

    async def expired(self, batch: P, reason: str) -> None:
        """The retry duration ran out for ``batch`` (object destinations with a duration, e.g.
        Redshift writing the skipped manifest to errors/). Record destinations need nothing:
        the pipeline writes their failed records to the error output."""
        return None

    async def aclose(self) -> None:
        return None

    def describe(self) -> str:
        """Where this destination writes, for logs and /readyz."""
        return self.name


ObjectDestination = Destination[ObjectBatch]
RecordDestination = Destination[RecordBatch]
