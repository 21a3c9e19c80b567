"""Fixtures for the Kinesis sidecar: the real ``firehose streams serve`` process on loopback, boto3 clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from tests.conftest import CREDS, ChildProcess, free_port, wait_until


class StreamsServer(ChildProcess):
    """``firehose streams serve`` as a child process (so tests can kill -9 it)."""

    def __init__(self, state_dir: Path, log_path: Path, config: Path | None = None, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "firehose", "streams", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--state-dir", str(self.state_dir)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        wait_until(self._ready, timeout=30)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"streams server exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.endpoint}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, **config: Any) -> Any:
        config.setdefault("retries", {"total_max_attempts": 1})
        return boto3.client("kinesis", endpoint_url=self.endpoint, config=BotoConfig(**config), **CREDS)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def streams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    """One shared server for tests that each use their own stream names."""
    root = tmp_path_factory.mktemp("kinesis")
    server = StreamsServer(root / "state", root / "server.log")
    yield server
    server.stop()


@pytest.fixture
def kinesis(streams_server: StreamsServer) -> Any:
    return streams_server.client()


@pytest.fixture
def start_streams_server(tmp_path: Path) -> Iterator[Callable[..., StreamsServer]]:
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


_counter = iter(range(10**6))


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 100000}"


def read_shard(client: Any, stream: str, shard_id: str, kind: str = "TRIM_HORIZON", **kwargs: Any) -> list[dict]:
    """Every record of a shard from the given position to the current end."""
    it = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType=kind,
                                   **kwargs)["ShardIterator"]
    out: list[dict] = []
    while it:
        resp = client.get_records(ShardIterator=it, Limit=10000)
        out.extend(resp["Records"])
        if not resp["Records"] and resp["MillisBehindLatest"] == 0:
            break
        it = resp.get("NextShardIterator")
    return out


def read_all(client: Any, stream: str) -> list[dict]:
    shards = client.list_shards(StreamName=stream)["Shards"]
    return [r for s in shards for r in read_shard(client, stream, s["ShardId"])]
