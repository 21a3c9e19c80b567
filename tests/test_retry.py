"""The retry policy: full-jitter backoff, deadlines from the first attempt or failure, limits, cancellation.

Deterministic throughout: the random source, the clock and the sleep are injected, and a fake
sleep advances the fake clock, so time passes only as the policy says it does.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable

import pytest

from firehose.retry import Attempts, Backoff, Deadline, RetryExpired, retry_until


def highest(lo: float, hi: float) -> float:
    """A "random" source that always draws the top of the range: every delay is its ceiling."""
    return hi


class FakeTime:
    """A clock that only moves when slept on (or when an operation says it took time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """An operation that fails ``failures`` times (taking ``takes`` seconds each attempt), then returns "ok"."""

    def __init__(self, time_: FakeTime, failures: int, takes: float = 0.0,
                 error: Callable[[int], Exception] = lambda n: OSError(f"failure {n}")) -> None:
        self.time, self.failures, self.takes, self.error = time_, failures, takes, error
        self.calls = 0
        self.raised: list[Exception] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.time.now += self.takes
        if self.calls <= self.failures:
            exc = self.error(self.calls)
            self.raised.append(exc)
            raise exc
        return "ok"


def run(coro: Awaitable[str]) -> str:
    async def main() -> str:
        return await coro
    return asyncio.run(main())


# -- Backoff ------------------------------------------------------------------------


def test_ceilings_double_from_the_base_up_to_the_cap() -> None:
    b = Backoff(base=1.0, cap=60.0)
    assert [b.ceiling(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert Backoff(0.25, 1.0).ceiling(1) == 0.25


def test_a_delay_is_drawn_from_zero_to_its_ceiling() -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(lo: float, hi: float) -> float:
        drawn.append((lo, hi))
        return (lo + hi) / 2

    b = Backoff(base=0.5, cap=3.0, uniform=uniform)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert drawn == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]


def test_full_jitter_spans_the_whole_window_not_only_its_upper_half() -> None:
    rng = random.Random(12345)
    b = Backoff(base=1.0, cap=8.0, uniform=rng.uniform)
    for attempt in (1, 3, 10):
        ceiling = b.ceiling(attempt)
        delays = [b.delay(attempt) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling * 0.05 and max(delays) > ceiling * 0.95
        assert sum(d < ceiling / 2 for d in delays) > 800  # about half below the middle


def test_the_real_random_source_stays_within_bounds() -> None:
    b = Backoff(base=0.1, cap=10.0)
    for attempt in range(1, 40):
        assert 0.0 <= b.delay(attempt) <= b.ceiling(attempt)


def test_a_loop_failing_for_days_does_not_overflow_the_exponent() -> None:
    b = Backoff(base=1.0, cap=60.0, uniform=highest)
    assert b.ceiling(10**9) == 60.0 and b.delay(5000) == 60.0
    assert Backoff(base=1e300, cap=math.inf).ceiling(2000) == math.inf


def test_a_base_of_zero_retries_at_once() -> None:
    assert Backoff(0.0, 5.0, uniform=highest).delay(7) == 0.0


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 1.0), (1.0, -0.5), (math.nan, 1.0), (1.0, math.nan)])
def test_a_negative_or_nan_base_or_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="at least 0"):
        Backoff(base, cap)


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff(1.0, 2.0).delay(0)


def test_backoffs_compare_by_base_and_cap_only() -> None:
    assert Backoff(1.0, 2.0) == Backoff(1.0, 2.0, uniform=highest)
    assert Backoff(1.0, 2.0) != Backoff(1.0, 3.0)


# -- retry_until ---------------------------------------------------------------------


def test_returns_the_first_success_after_sleeping_the_backoff_between_attempts() -> None:
    t = FakeTime()
    op = Flaky(t, failures=3)
    result = run(retry_until(op, backoff=Backoff(1.0, 3.0, uniform=highest), clock=t.clock, sleep=t.sleep))
    assert result == "ok" and op.calls == 4
    assert t.slept == [1.0, 2.0, 3.0]


def test_a_first_success_does_not_sleep() -> None:
    t = FakeTime()
    op = Flaky(t, failures=0)
    assert run(retry_until(op, backoff=Backoff(1.0, 3.0), clock=t.clock, sleep=t.sleep)) == "ok"
    assert op.calls == 1 and t.slept == []


def test_on_failure_sees_every_error_with_its_attempt_number() -> None:
    t = FakeTime()
    op = Flaky(t, failures=3)
    seen: list[tuple[Exception, int]] = []
    run(retry_until(op, backoff=Backoff(0.1, 1.0), on_failure=lambda exc, n: seen.append((exc, n)),
                    clock=t.clock, sleep=t.sleep))
    assert seen == [(op.raised[0], 1), (op.raised[1], 2), (op.raised[2], 3)]


def test_without_a_limit_it_retries_for_as_long_as_it_takes() -> None:
    t = FakeTime()
    op = Flaky(t, failures=200, takes=30.0)
    assert run(retry_until(op, backoff=Backoff(1.0, 60.0, uniform=highest), clock=t.clock, sleep=t.sleep)) == "ok"
    assert op.calls == 201 and len(t.slept) == 200 and max(t.slept) == 60.0


def test_errors_outside_retry_on_propagate_at_once() -> None:
    t = FakeTime()
    op = Flaky(t, failures=5, error=lambda n: KeyError(n) if n == 2 else OSError(n))
    seen: list[int] = []
    with pytest.raises(KeyError):
        run(retry_until(op, backoff=Backoff(1.0, 1.0), retry_on=(OSError,),
                        on_failure=lambda exc, n: seen.append(n), clock=t.clock, sleep=t.sleep))
    assert op.calls == 2 and seen == [1] and len(t.slept) == 1


def test_an_error_raised_by_on_failure_ends_the_run() -> None:
    t = FakeTime()
    op = Flaky(t, failures=5)

    def on_failure(exc: Exception, attempt: int) -> None:
        if attempt == 2:
            raise RuntimeError("not worth retrying")

    with pytest.raises(RuntimeError, match="not worth"):
        run(retry_until(op, backoff=Backoff(1.0, 1.0), on_failure=on_failure, clock=t.clock, sleep=t.sleep))
    assert op.calls == 2


def test_max_attempts_bounds_the_calls_and_the_last_error_is_kept() -> None:
    t = FakeTime()
    op = Flaky(t, failures=10)
    with pytest.raises(RetryExpired) as info:
        run(retry_until(op, backoff=Backoff(1.0, 4.0, uniform=highest), max_attempts=3,
                        clock=t.clock, sleep=t.sleep))
    assert op.calls == 3 and t.slept == [1.0, 2.0]  # no sleep after the last attempt
    assert info.value.attempts == 3 and info.value.last is op.raised[-1]
    assert info.value.__cause__ is op.raised[-1]
    assert "3 attempts" in str(info.value) and "failure 3" in str(info.value)


def test_one_attempt_means_no_retry() -> None:
    t = FakeTime()
    op = Flaky(t, failures=1)
    with pytest.raises(RetryExpired):
        run(retry_until(op, backoff=Backoff(1.0, 1.0), max_attempts=1, clock=t.clock, sleep=t.sleep))
    assert op.calls == 1 and t.slept == []


def test_max_attempts_below_one_is_refused() -> None:
    t = FakeTime()
    with pytest.raises(ValueError, match="max_attempts"):
        run(retry_until(Flaky(t, 0), backoff=Backoff(1.0, 1.0), max_attempts=0, clock=t.clock, sleep=t.sleep))


# -- deadlines -----------------------------------------------------------------------
#
# Every attempt takes 4 s and every backoff 1 s, so failures come at 4, 9, 14, 19, ... s from the
# first attempt, and at 0, 5, 10, 15, ... s from the first failure.


def expire(deadline: Deadline | Callable[[], Deadline | None] | None, failures: int = 100) -> tuple[int, float]:
    """(attempts made, elapsed seconds) when the run gave up."""
    t = FakeTime()
    op = Flaky(t, failures=failures, takes=4.0)
    with pytest.raises(RetryExpired) as info:
        run(retry_until(op, backoff=Backoff(1.0, 1.0, uniform=highest), deadline=deadline,
                        clock=t.clock, sleep=t.sleep))
    assert info.value.last is op.raised[-1] and op.calls == info.value.attempts
    assert len(t.slept) == op.calls - 1  # no sleep after the failure that ended the run
    return info.value.attempts, info.value.elapsed


def test_a_deadline_from_the_first_attempt_ends_the_run_at_the_first_failure_past_it() -> None:
    assert expire(Deadline(10.0)) == (3, 14.0)  # 4 and 9 are inside, 14 is past
    assert expire(Deadline(9.0)) == (2, 9.0)  # a failure exactly at the deadline ends the run


def test_a_deadline_from_the_first_failure_does_not_count_the_first_attempt() -> None:
    assert expire(Deadline(6.0, since="first_attempt")) == (2, 9.0)
    assert expire(Deadline(6.0, since="first_failure")) == (3, 14.0)  # 10 s after the failure at 4 s


def test_a_deadline_of_zero_allows_no_retry() -> None:
    assert expire(Deadline(0.0, since="first_attempt")) == (1, 4.0)
    assert expire(Deadline(0.0, since="first_failure")) == (1, 4.0)


def test_a_success_before_the_deadline_is_returned() -> None:
    t = FakeTime()
    op = Flaky(t, failures=2, takes=4.0)
    assert run(retry_until(op, backoff=Backoff(1.0, 1.0), deadline=Deadline(12.0),
                           clock=t.clock, sleep=t.sleep)) == "ok"


def test_a_deadline_function_is_asked_after_every_failure() -> None:
    asked: list[int] = []

    def deadline() -> Deadline | None:
        asked.append(len(asked) + 1)
        return None if len(asked) < 3 else Deadline(0.0)  # e.g. no limit until the batch is built

    assert expire(deadline) == (3, 14.0)
    assert asked == [1, 2, 3]


def test_a_deadline_and_max_attempts_together_end_at_whichever_comes_first() -> None:
    t = FakeTime()
    op = Flaky(t, failures=100, takes=4.0)
    with pytest.raises(RetryExpired) as info:
        run(retry_until(op, backoff=Backoff(1.0, 1.0), deadline=Deadline(1000.0), max_attempts=2,
                        clock=t.clock, sleep=t.sleep))
    assert info.value.attempts == 2


# -- cancellation -------------------------------------------------------------------


def test_cancelled_error_from_the_operation_propagates_even_if_retry_on_names_it() -> None:
    t = FakeTime()
    calls: list[int] = []
    seen: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.CancelledError
        return "ok"  # a loop that swallowed the cancellation would get here

    retry_on: tuple[type[Exception], ...] = (BaseException,)  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        run(retry_until(op, backoff=Backoff(1.0, 1.0), retry_on=retry_on,
                        on_failure=lambda exc, n: seen.append(n), clock=t.clock, sleep=t.sleep))
    assert calls == [1] and seen == [] and t.slept == []


def test_cancelling_a_task_that_waits_out_its_backoff_ends_it() -> None:
    async def main() -> tuple[int, bool]:
        calls = 0

        async def op() -> str:
            nonlocal calls
            calls += 1
            raise OSError("down")

        task = asyncio.create_task(retry_until(op, backoff=Backoff(3600.0, 3600.0)))
        while calls == 0:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # now in its (real, hour-long) backoff
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return calls, task.cancelled()

    assert asyncio.run(main()) == (1, True)


# -- Attempts, for loops that retry only what failed ----------------------------------


def test_attempts_retrying_only_the_failed_part_until_the_deadline() -> None:
    """The shape of a record destination's loop: each attempt sends what is left; on giving up,
    what is left is known (it goes to the error output)."""

    async def main() -> tuple[list[int], list[int], list[float]]:
        t = FakeTime()
        pending = list(range(10))
        sent: list[int] = []
        run_ = Attempts(Backoff(1.0, 8.0, uniform=highest), clock=t.clock, sleep=t.sleep)
        while pending:
            t.now += 2.0  # the attempt takes 2 s; odd records keep failing, the rest go through
            sent += [i for i in pending if i % 2 == 0]
            pending = [i for i in pending if i % 2]
            if not pending:
                break
            run_.failed()
            if run_.expired(Deadline(5.0, since="first_failure")):
                break
            await run_.wait()
        return sent, pending, t.slept

    sent, left, slept = asyncio.run(main())
    # failures at 2, 5 (2 + 1 + 2) and 9 (5 + 2 + 2) s: 7 s after the first one, past 5
    assert sent == [0, 2, 4, 6, 8] and left == [1, 3, 5, 7, 9] and slept == [1.0, 2.0]


def test_attempts_before_any_failure() -> None:
    async def main() -> tuple[float, bool, list[float]]:
        t = FakeTime()
        a = Attempts(Backoff(1.0, 1.0), clock=t.clock, sleep=t.sleep)
        t.now = 50.0
        await a.wait()
        return a.elapsed(), a.expired(Deadline(0.0)), t.slept

    assert asyncio.run(main()) == (0.0, False, [])


def test_attempts_time_each_failure_once_when_it_is_recorded() -> None:
    t = FakeTime()
    t.now = 100.0
    a = Attempts(Backoff(1.0, 1.0), clock=t.clock, sleep=t.sleep)
    t.now = 103.0
    assert a.failed() == 1
    t.now = 110.0
    assert a.failed() == 2
    t.now = 500.0  # the caller dawdled: the decision is still about the failure at 110
    assert a.elapsed() == 10.0 and a.elapsed("first_failure") == 7.0
    assert a.expired(Deadline(10.0)) and not a.expired(Deadline(7.5, since="first_failure"))
    assert not a.expired(None)
