"""The agent's status for the daemon's console: the agent's listener answers ``/status`` with its flows,
and the daemon reads the agents ``console.agents`` lists at ``/console/api/agents`` (the page reads only
the daemon), saying which agent could not be read and why."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from firehose.settings import Settings
from tests.support.agent import agent_json, flow
from tests.support.config import local_stream
from tests.support.delivered import delivered_lines
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return dict(json.load(resp))


def test_the_daemons_console_shows_each_agents_flows_and_which_agent_it_cannot_read(
        start_daemon: Any, run_agent: Any, tmp_path: Path) -> None:
    agent_port, dead = free_port(), f"http://127.0.0.1:{free_port()}"
    daemon = start_daemon([local_stream("logs", interval=0)])
    agent_url = f"http://127.0.0.1:{agent_port}"
    other = start_daemon([], state_dir=tmp_path / "other", console={"agents": [agent_url, dead, daemon.endpoint]})
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(50)))
    agent = run_agent(agent_json(daemon.endpoint, [flow(log)], **{"metrics.port": agent_port}))
    wait_until(lambda: len(delivered_lines(tmp_path / "out")) == 50, timeout=30)
    wait_until(lambda: status(agent_port)["flows"][0]["records_sent"] == 50, timeout=10)

    [own] = status(agent_port)["flows"]
    assert (own["flow"], own["label"], own["destination"], own["stream"]) == (
        f"fh:logs:{log}", f"logs <- {log}", "firehose", "logs")
    assert (own["lines_read"], own["bytes_sent"], own["bytes_behind"], own["send_errors"], own["failed"]) == (
        50, log.stat().st_size, 0, 0, False)
    assert own["files"] == [{"path": str(log), "bytes_behind": 0}] and own["files_tracked"] == 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/elsewhere", timeout=5)
    assert missing.value.code == 404

    agents = httpx.get(f"{other.endpoint}/console/api/agents").json()["agents"]
    assert [(a["url"], a["ok"]) for a in agents] == [(agent_url, True), (dead, False), (daemon.endpoint, False)]
    assert [(f["flow"], f["records_sent"]) for f in agents[0]["flows"]] == [(own["flow"], 50)]
    assert agents[0]["agent"]["pid"] > 0
    assert "cannot read" in agents[1]["error"] and agents[1]["flows"] == []
    assert agents[2]["error"] == f"HTTP 404 from {daemon.endpoint}/status"
    assert httpx.get(f"{daemon.endpoint}/console/api/agents").json() == {"agents": []}
    agent.stop()


def test_agent_urls_must_be_http() -> None:
    assert Settings(console={"agents": ["http://10.0.0.5:9108/"]}).console.agents == ["http://10.0.0.5:9108"]
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        Settings(console={"agents": ["10.0.0.5:9108"]})
