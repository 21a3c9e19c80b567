"""The agent as the tests configure and run it: agent.json entries, and ``firehose agent`` as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.process import ChildProcess
from tests.support.waiting import wait_until

#: What the agent logs once it handles SIGTERM (``AgentRunner.run`` installs the handlers, then starts).
STARTED = "checkpoints in "


def flow(pattern: Path | str, stream: str = "logs", **extra: Any) -> dict[str, Any]:
    """A flows entry in agent.json spelling, quick to flush."""
    return {"filePattern": str(pattern), "deliveryStream": stream, "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000, "minTimeBetweenFilePollsMillis": 20, "rotateWaitMillis": 1000, **extra}


def agent_json(endpoint: str, flows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"firehose.endpoint": endpoint, "log.statusReportingPeriodSeconds": 60, "flows": flows, **extra}


class AgentProcess(ChildProcess):
    """``python -m firehose agent`` as a child process (for SIGTERM and kill -9)."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.directory = directory
        self.config_path = directory / "agent.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = directory / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, env: dict[str, str] | None = None) -> AgentProcess:
        """Start it with this process's environment, or ``env`` instead."""
        self._starts = self.log().count(STARTED) + 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firehose", "agent", "--config", str(self.config_path),
                 "--state-dir", str(self.directory / "state")], stdout=log, stderr=log,
                env=dict(os.environ) if env is None else env)
        return self

    def wait_started(self, timeout: float = 30) -> None:
        """Until this start's agent has its signal handlers (it logs where its checkpoints are just after);
        a SIGTERM before that ends the process with Python's default action."""
        want = self._starts
        wait_until(lambda: self.log().count(STARTED) >= want, timeout=timeout, interval=0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
