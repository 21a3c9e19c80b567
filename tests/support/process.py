"""Child processes the tests start (the daemon, the agent, the Kinesis sidecar), stopped by their own pid."""

from __future__ import annotations

import signal
import subprocess


def stop_gently(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM a process that is still running, SIGKILL it if it does not end within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ChildProcess:
    """A process the tests started, stopped only by its own pid."""

    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
