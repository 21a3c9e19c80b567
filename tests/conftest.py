"""Fixtures: free ports, a daemon in-process or as a subprocess, boto3 clients, a moto S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

from firehose.settings import Config, load_config

ROLE = "arn:aws:iam::123456789012:role/firehose"
REGION = "us-east-1"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def firehose_client(endpoint: str, **config: Any) -> Any:
    return boto3.client("firehose", endpoint_url=endpoint, config=BotoConfig(**config), **CREDS)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, **CREDS)


def local_stream(name: str, bucket: str = "local", *, size_mb: int = 1, interval: int = 0,
                 **extra: Any) -> dict[str, Any]:
    """A CreateDeliveryStream body for an ExtendedS3 destination."""
    dest = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval},
        **extra,
    }
    return {"DeliveryStreamName": name, "ExtendedS3DestinationConfiguration": dest}


def write_config(path: Path, settings: dict[str, Any], streams: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({**settings, "delivery_streams": streams}, sort_keys=False))
    return path


# -- the daemon, in-process ------------------------------------------------------


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


# -- the daemon, as a subprocess ---------------------------------------------------


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


class DaemonProcess(ChildProcess):
    """``firehose serve`` as a child process (for kill -9 and signal tests)."""

    def __init__(self, config_path: Path, port: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> DaemonProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firehose", "serve", "--config", str(self.config_path), "--port", str(self.port)],
            stdout=log, stderr=log, env=self.env,
        )
        log.close()
        import urllib.request

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(up, timeout=timeout)
        return self


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


# -- S3 ----------------------------------------------------------------------------


class MotoServer:
    """moto's S3-compatible server as a child process on loopback."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = s3_client(self.endpoint)

        def up() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:
                return False

        wait_until(up, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def client(self) -> Any:
        return s3_client(self.endpoint)


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


def list_objects(client: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def read_local(root: Path) -> dict[str, bytes]:
    """Every object under a local bucket directory, keyed by its S3-style key."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".firehose-tmp-"):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the loopback S3 server; nothing here may reach real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KINESIS",
                "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def assert_delivered_once(objects: list[bytes], sent: list[bytes]) -> None:
    """Every sent line exactly once; each object a contiguous run of the send order.

    Objects cut within the same second sort by their UUID, so the order of
    keys says nothing about the order of objects; the order inside each does.
    """
    lines = [line for body in objects for line in body.splitlines(keepends=True)]
    assert sorted(lines) == sorted(sent)
    position = {line: i for i, line in enumerate(sent)}
    for body in objects:
        got = body.splitlines(keepends=True)
        start = position[got[0]]
        assert got == sent[start : start + len(got)]


# -- PostgreSQL and OpenSearch -------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    from tests.servers import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def opensearch_server() -> Iterator[Any]:
    from tests.servers import OpenSearchServer

    server = OpenSearchServer().start()
    try:
        yield server
    finally:
        server.stop()
