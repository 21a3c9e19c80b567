"""Retrying until it works: exponential backoff with full jitter, within a deadline when there is one.

Every loop that retries something (delivery to a destination, the agent's
sender, the Kinesis source, the transform worker pool) takes its delays from a
``Backoff`` and, when it is asynchronous, runs its attempts through
``retry_until`` (or, when it retries only the part that failed, through an
``Attempts`` it drives itself). Each loop keeps its own base and cap (delivery
from ``delivery.backoff_base_seconds``/``backoff_max_seconds``, the agent from
its flow's ``retryInitialBackoffMillis``/``retryMaxBackoffMillis``); the
mechanism is this one.

Full jitter: the delay before retrying after failure ``n`` (counted from 1) is
drawn uniformly from ``[0, min(cap, base * 2**(n - 1))]``. Clients that failed
together (a destination coming back, a throttled shard) then spread their
retries over the whole window instead of arriving in a wave, which is why AWS
recommends it over a fixed share plus jitter.

A run of attempts ends with the operation's result, with ``RetryExpired`` once
its deadline or its number of attempts is used up, or with an exception the
run does not retry. ``asyncio.CancelledError`` always propagates at once: a
retry loop never outlives the task that runs it.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from firehose.errors import SpoolError

T = TypeVar("T")

#: Failures that say nothing about the work being retried and heal by themselves (the spool
#: cannot write, no file descriptors or memory for now): retried for as long as they last.
HEALING = (SpoolError, OSError, MemoryError)
#: Attempts at work that is a pure function of its input (building a batch's objects, running
#: the processing chain on it) before an unexpected error is taken to be the input's: retrying
#: it for ever would hold up everything behind it, so its records go to the error output.
POISON_ATTEMPTS = 3

#: Where a deadline is measured from: the run's first attempt, or its first failure.
Since = Literal["first_attempt", "first_failure"]

#: Beyond this many doublings every ceiling is the cap; bounding the exponent keeps ``2.0 ** n``
#: from overflowing in a loop that has been failing for days.
_MAX_DOUBLINGS = 1000


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: ``delay(n)`` is uniform in ``[0, min(cap, base * 2**(n-1))]``.

    ``base`` is the ceiling of the first delay and ``cap`` the largest ceiling; both are seconds and
    at least 0 (a base of 0 retries at once, as tests like). ``uniform`` is the random source,
    ``random.uniform`` unless a test injects a deterministic one.
    """

    base: float
    cap: float
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.cap >= 0):  # also refuses NaN
            raise ValueError(f"backoff base and cap must be at least 0, not {self.base!r} and {self.cap!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt ``attempt`` (from 1): ``min(cap, base * 2**(attempt-1))``."""
        if attempt < 1:
            raise ValueError(f"attempts are counted from 1, not {attempt}")
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1): uniform in ``[0, ceiling(attempt)]``."""
        return self.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a run of attempts may go on failing: ``seconds`` from its first attempt or first failure.

    This is Firehose's RetryOptions ``DurationInSeconds``: OpenSearch measures it from the first
    attempt, Splunk and HTTP endpoints from the first failure (a destination's ``retry_clock``). A
    failure at or after the deadline ends the run (so a duration of 0 allows no retry); an attempt
    under way is never cut short, so a run may end up to one backoff and one attempt past it.
    """

    seconds: float
    since: Since = "first_attempt"


class RetryExpired(Exception):
    """A run of attempts ended without success: its deadline passed, or its attempts ran out.

    ``last`` is the last attempt's error (also this exception's ``__cause__``), ``attempts`` how
    many were made and ``elapsed`` the seconds from the first attempt to the last failure.
    """

    def __init__(self, last: Exception, attempts: int, elapsed: float) -> None:
        super().__init__(f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
                         f"in {elapsed:.3f}s: {type(last).__name__}: {last}")
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed


class Attempts:
    """One run of attempts at an operation: its failures counted and timed, its backoff slept.

    ``retry_until`` is built on it; a loop that does not fit ``retry_until`` (one that retries
    only the records that failed, and must know which were left when it gives up) drives it
    itself: ``failed()`` after each failed attempt, then ``expired(deadline)`` to decide, then
    ``wait()``. Times come from ``clock`` (monotonic seconds): the run starts when this is made,
    and every failure is timed once, when ``failed()`` records it, so a decision never depends on
    how long the caller took in between.
    """

    def __init__(self, backoff: Backoff, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.backoff = backoff
        self._clock = clock
        self._sleep = sleep
        #: Failed attempts so far; the number of the latest one.
        self.failures = 0
        self.started = clock()
        self.first_failure: float | None = None
        self.last_failure: float | None = None

    def failed(self) -> int:
        """Record a failed attempt, timed now; returns its number (from 1)."""
        now = self._clock()
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = now
        self.last_failure = now
        return self.failures

    def elapsed(self, since: Since = "first_attempt") -> float:
        """Seconds from the first attempt (or first failure) to the latest failure; 0 before any failure."""
        if self.last_failure is None or self.first_failure is None:
            return 0.0
        origin = self.started if since == "first_attempt" else self.first_failure
        return self.last_failure - origin

    def expired(self, deadline: Deadline | None) -> bool:
        """Whether the latest failure came at or after ``deadline`` (never, without one or a failure)."""
        return deadline is not None and self.failures > 0 and self.elapsed(deadline.since) >= deadline.seconds

    async def wait(self) -> None:
        """Sleep the backoff's delay for the latest failure (at once, before any failure)."""
        if self.failures:
            await self._sleep(self.backoff.delay(self.failures))


def forget_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in ``exc``'s tracebacks (and its causes').

    A failed attempt's traceback holds the frames it went through, and with them what it was
    sending (a batch of megabytes). Libraries often leave such an exception in a reference cycle
    (botocore keeps the exception in a frame of its own traceback), which only the cyclic collector
    frees, and the daemon runs that rarely (``telemetry.tune_gc``): without this, every failed
    attempt of an outage would keep its batch in memory for minutes. Call it once the exception has
    been logged.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]


async def retry_until(operation: Callable[[], Awaitable[T]], *, backoff: Backoff,
                      deadline: Deadline | Callable[[], Deadline | None] | None = None,
                      max_attempts: int | None = None,
                      on_failure: Callable[[Exception, int], object] | None = None,
                      retry_on: tuple[type[Exception], ...] = (Exception,),
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """Await ``operation()`` until it returns, sleeping ``backoff`` between attempts; its result.

    After each failure (an exception of ``retry_on``) ``on_failure(exc, attempt)`` is called (for
    logs and metrics; an exception it raises ends the run), then the run ends with
    ``RetryExpired`` if ``deadline`` has passed or ``max_attempts`` were made, else it sleeps
    ``backoff.delay(attempt)`` and tries again. Without either limit it retries for as long as it
    takes. ``deadline`` may be a function, asked after every failure, for a limit that depends on
    the state of the operation (e.g. only once a batch was built, or a destination that a reload
    replaced). Exceptions outside ``retry_on`` propagate at once, as does
    ``asyncio.CancelledError`` whatever ``retry_on`` says.
    """
    if max_attempts is not None and max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    run = Attempts(backoff, clock=clock, sleep=sleep)
    while True:
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except retry_on as exc:
            attempt = run.failed()
            if on_failure is not None:
                on_failure(exc, attempt)
            limit = deadline() if callable(deadline) else deadline
            if run.expired(limit) or (max_attempts is not None and attempt >= max_attempts):
                raise RetryExpired(exc, attempt, run.elapsed()) from exc
            forget_frames(exc)
        # Wait outside the handler: the failed attempt's exception (its traceback holds the frames of
        # the attempt, and with them what it was sending) is gone before the backoff begins.
        await run.wait()
