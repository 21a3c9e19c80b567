"""The agent reloads without a restart: flows added start, flows removed stop, the rest run on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firehose.agent.config import parse_config
from firehose.agent.runner import Agent
from firehose.errors import ConfigError
from tests.support.agent import agent_json, flow
from tests.support.config import local_stream
from tests.support.delivered import delivered_lines, wait_for_lines


def test_a_reload_starts_new_flows_stops_removed_ones_and_refuses_a_bad_config(start_daemon: Any,
                                                                                 tmp_path: Path) -> None:
    daemon = start_daemon([local_stream("logs", interval=0)])
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"a1\n")
    b.write_bytes(b"b1\n")
    configs = [agent_json(daemon.endpoint, [flow(a)])]

    def reread() -> Any:
        config = configs[-1]
        if config is None:
            raise ConfigError("agent.json: flows[0]: bogus: unknown key")
        return parse_config(config)[0]

    agent = Agent(reread(), tmp_path / "agent-state", reread=reread)
    agent.start()
    try:
        wait_for_lines(tmp_path / "out", 1)
        configs.append(None)  # invalid: refused, nothing changes
        assert agent.reload() is False
        assert [r.flow.file_pattern for r in agent.flows] == [str(a)]
        configs.append(agent_json(daemon.endpoint, [flow(b)]))  # a removed, b added
        assert agent.reload() is True
        assert [r.flow.file_pattern for r in agent.flows] == [str(b)]
        with a.open("ab") as f:
            f.write(b"a2\n")
        with b.open("ab") as f:
            f.write(b"b2\n")
        lines = wait_for_lines(tmp_path / "out", 3)
        assert sorted(lines) == [b"a1\n", b"b1\n", b"b2\n"], "b read from its start, a no longer read"
    finally:
        agent.stop()
    assert b"a2\n" not in delivered_lines(tmp_path / "out")
