"""The conversion worker pool outlives a worker that dies: the task it ran fails, the next one runs; and
its workers do not outlive the daemon."""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from firehose.processpool import RenewingProcessPool
from tests.support.waiting import wait_until


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


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed with SIGKILL leaves no worker behind: ``exit_with_parent`` (which every pool of the
    daemon's starts with) ends each worker within about a second."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, signal
        from concurrent.futures import ProcessPoolExecutor
        from firehose.processpool import exit_with_parent

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=exit_with_parent, initargs=(0.1,))
            for future in [pool.submit(os.getpid) for _ in range(4)]:
                future.result()
            print(" ".join(str(pid) for pid in pool._processes), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0

    wait_until(lambda: all(gone(pid) for pid in pids), timeout=10)
