"""Agent test helpers: an agent in-process or as a subprocess, and reading back what was delivered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firehose.agent.config import parse_config
from firehose.agent.runner import Agent
from tests.conftest import ChildProcess, read_local, wait_until


def flow(pattern: Path | str, stream: str = "logs", **extra: Any) -> dict[str, Any]:
    """A flows entry in agent.json spelling, quick to flush."""
    return {"filePattern": str(pattern), "deliveryStream": stream, "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000, "minTimeBetweenFilePollsMillis": 20, "rotateWaitMillis": 1000, **extra}


def agent_json(endpoint: str, flows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"firehose.endpoint": endpoint, "log.statusReportingPeriodSeconds": 60, "flows": flows, **extra}


def delivered_lines(root: Path) -> list[bytes]:
    return [line for body in read_local(root).values() for line in body.splitlines(keepends=True)]


def wait_for_lines(root: Path, expected: int, timeout: float = 20) -> list[bytes]:
    """Wait until at least ``expected`` lines were delivered, then return them all."""
    def enough() -> list[bytes] | None:
        lines = delivered_lines(root)
        return lines if len(lines) >= expected else None

    return list(wait_until(enough, timeout=timeout, interval=0.1))


def duplicates(lines: list[bytes]) -> int:
    return sum(n - 1 for n in Counter(lines).values() if n > 1)


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start an in-process agent on a config dict; stopped (cleanly) at the end of the test."""
    agents: list[Agent] = []

    def start(config: dict[str, Any], state_dir: Path | None = None) -> Agent:
        parsed, _ = parse_config(config)
        agent = Agent(parsed, state_dir or tmp_path / "agent-state")
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        if not agent._stopped:
            agent.stop()


class AgentProcess(ChildProcess):
    """``python -m firehose agent`` as a child process (for SIGTERM and kill -9)."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.directory = directory
        self.config_path = directory / "agent.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = directory / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> AgentProcess:
        """Start it with this process's environment, or ``env`` instead."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firehose", "agent", "--config", str(self.config_path),
                 "--state-dir", str(self.directory / "state")], stdout=log, stderr=log,
                env=dict(os.environ) if env is None else env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], AgentProcess]]:
    made: list[AgentProcess] = []

    def make(config: dict[str, Any]) -> AgentProcess:
        p = AgentProcess(config, tmp_path)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak runs only when asked for with ``-m soak``."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    keep = [i for i in items if "soak" not in i.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "soak" in i.keywords])
        items[:] = keep
