"""The Lambda step retries a failed invocation NumberOfRetries times, then fails its records (a fake pool)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from firehose.processing.transform import FunctionRef, InvocationError, LambdaProcessor, TransformInput

FUNCTION = FunctionRef(arn="arn:aws:lambda:us-east-1:123456789012:function:f", name="f", path=Path("f.py"),
                       handler="handler")
RECORDS = [TransformInput("r0", b"a", 1), TransformInput("r1", b"b", 2)]


class FailingPool:
    """Fails the first ``failures`` invocations with Lambda.FunctionError, then echoes the records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.invocations = 0

    async def invoke(self, fn: FunctionRef, head: dict[str, Any], records: list[TransformInput]) -> Any:
        self.invocations += 1
        if self.invocations <= self.failures:
            raise InvocationError("Lambda.FunctionError", f"boom {self.invocations}")
        n = len(records)
        return ["Ok"] * n, [r.data for r in records], [None] * n, [""] * n, [""] * n


def run(failures: int, retries: int) -> tuple[Any, FailingPool, LambdaProcessor]:
    pool = FailingPool(failures)
    processor = LambdaProcessor(FUNCTION, pool, retries=retries, backoff_s=0.001, max_backoff_s=0.002)  # type: ignore[arg-type]
    return asyncio.run(processor.run(RECORDS)), pool, processor


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_a_failed_invocation_is_retried_and_the_results_say_after_how_many_attempts(failures: int) -> None:
    results, pool, processor = run(failures, retries=3)
    assert results.result == ["Ok", "Ok"] and results.data == [b"a", b"b"]
    assert results.attempts == failures + 1 == pool.invocations == processor.invocations


@pytest.mark.parametrize("retries", [0, 2])
def test_after_number_of_retries_every_record_fails_with_the_last_error(retries: int) -> None:
    results, pool, _ = run(failures=100, retries=retries)
    assert pool.invocations == retries + 1 and results.attempts == retries + 1
    assert results.result == ["ProcessingFailed"] * 2 and results.code == ["Lambda.FunctionError"] * 2
    assert results.message == [f"boom {retries + 1}"] * 2
