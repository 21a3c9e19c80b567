"""Agent fixtures: ``firehose agent`` as a child process (``run_agent``, in-process, is in the root conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess


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
