"""The daemon under test: in-process on its own event loop (``RunningDaemon``), or ``firehose serve`` as a
child process (``DaemonProcess``, for kill -9 and signal tests).

Both answer ``idle(name)``: nothing of that delivery stream is buffered, in flight or unread in the
spool. A test that must show something did *not* happen waits for that instead of sleeping: once a
stream is idle, everything it had accepted or read has been delivered, so a duplicate or a stray
record would be in the output already.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firehose.settings import Config
from tests.support.aws import firehose_client
from tests.support.process import ChildProcess
from tests.support.waiting import wait_until


class RunningDaemon:
    """A daemon on its own event loop in a background thread."""

    def __init__(self, config: Config) -> None:
        from firehose.daemon import Daemon

        self.config = config
        self.port = config.settings.port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.daemon = Daemon(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        wait_until(lambda: self.daemon._started or self._error or not self._thread.is_alive(), timeout=20)
        if self._error:
            raise self._error

    def _main(self) -> None:
        import uvloop

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                self.loop = runner.get_loop()
                runner.run(self.daemon.serve())
        except BaseException as exc:  # surfaced to the test
            self._error = exc

    def client(self, **config: Any) -> Any:
        return firehose_client(self.endpoint, **config)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the daemon's loop and return its result."""
        assert self.loop is not None
        result: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                result["v"] = fn()
            except BaseException as exc:
                result["e"] = exc
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        if "e" in result:
            raise result["e"]
        return result.get("v")

    def idle(self, name: str) -> bool:
        return bool(self.call(lambda: self.daemon.pipeline(name).idle()))

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.daemon.request_stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "daemon did not stop"


class DaemonProcess(ChildProcess):
    """``firehose serve`` as a child process (for kill -9 and signal tests)."""

    def __init__(self, config_path: Path, port: int, log_path: Path, env: dict[str, str] | None = None,
                 *, max_descriptors: int | None = None) -> None:
        self.config_path = config_path
        #: RLIMIT_NOFILE (soft and hard) for the daemon, as systemd's LimitNOFILE= would set it.
        self.max_descriptors = max_descriptors
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds from the last start's process spawn until /readyz answered 200 (to within 20 ms).
        self.ready_seconds = 0.0

    def start(self, timeout: float = 20, *, ready: bool = True) -> DaemonProcess:
        """Start and wait until ``/readyz`` answers 200; with ``ready=False`` only until it is up and
        no longer "starting" (it may then refuse puts, e.g. with its spool's disk full)."""
        started = time.monotonic()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firehose", "serve", "--config", str(self.config_path), "--port", str(self.port)],
            stdout=log, stderr=log, env=self.env, preexec_fn=self._limit_descriptors,
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except urllib.error.HTTPError as err:
                return not ready and json.loads(err.read()).get("reason") not in (None, "starting")
            except OSError:
                return False

        wait_until(up, timeout=timeout, interval=0.02)
        self.ready_seconds = time.monotonic() - started
        return self

    def _limit_descriptors(self) -> None:
        if self.max_descriptors is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_descriptors, self.max_descriptors))

    def readiness(self) -> dict[str, Any]:
        """``/readyz``'s details (its body also when it answers 503: starting, stopping, spool full)."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/readyz", timeout=5) as r:
                body = r.read()
        except urllib.error.HTTPError as err:
            body = err.read()
        details: dict[str, Any] = json.loads(body)
        return details

    def idle(self, name: str) -> bool:
        """The stream's ``idle`` as ``/readyz`` shows it (the same ``Pipeline.idle`` as ``RunningDaemon``'s)."""
        return bool(self.readiness()["streams"][name]["idle"])
