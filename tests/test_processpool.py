"""The conversion worker pool outlives a worker that dies: the task it ran fails, the next one runs."""

from __future__ import annotations

import functools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from firehose.processpool import RenewingProcessPool


def _die() -> None:
    os._exit(9)  # what the OOM killer or a crash in a native writer leaves behind


def test_a_pool_whose_worker_died_is_replaced_at_the_next_submission() -> None:
    spawn = multiprocessing.get_context("spawn")
    pool = RenewingProcessPool(functools.partial(ProcessPoolExecutor, 1, mp_context=spawn))
    try:
        assert pool.submit(pow, 2, 10).result(timeout=60) == 1024
        with pytest.raises(BrokenProcessPool):
            pool.submit(_die).result(timeout=60)
        assert pool.submit(pow, 3, 3).result(timeout=60) == 27
        assert pool.renewed == 1
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(pow, 2, 2)
