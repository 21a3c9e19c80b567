"""The Kinesis sidecar as the tests run it: ``firehose streams serve`` as a child process, boto3 clients,
unique stream names, and reading a stream back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config as BotoConfig

from tests.support.aws import CREDS
from tests.support.ports import free_port
from tests.support.process import ChildProcess, stop_gently
from tests.support.waiting import wait_until


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
        stop_gently(self.proc, 15)

    def log(self) -> str:
        return self.log_path.read_text()


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
