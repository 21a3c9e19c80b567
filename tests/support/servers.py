"""Real servers the tests start on loopback: moto's S3 server, PostgreSQL (initdb/pg_ctl) and osmem-server
(OpenSearch API).

Fixtures in ``conftest.py`` start one of each per test session (a test that takes its server down
starts its own, and so does ``bench/destinations.py``); each is stopped by its own process or data
directory, never by name.

PostgreSQL runs from the Debian package's binaries (``scripts/system-packages`` installs them), on a
free port, with its socket and data in a temporary directory, SCRAM password authentication over TCP,
and fsync off. It refuses to run as root, so under root it runs as ``nobody`` through ``runuser``.

osmem-server is an in-memory server for the OpenSearch 3.x REST API (no JVM), from PyPI. It exits when
its stdin closes or this process dies, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.support.aws import s3_client
from tests.support.ports import free_port
from tests.support.process import stop_gently
from tests.support.waiting import wait_until


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
        stop_gently(self.proc)
        self.proc = None

    def client(self) -> Any:
        return s3_client(self.endpoint)


@dataclass
class PostgresServer:
    port: int = 0
    user: str = "firehose"
    password: str = "s3cret-pw"
    database: str = "warehouse"
    root: Path | None = None

    def url(self, scheme: str = "postgresql", port: int | None = None, database: str | None = None) -> str:
        """The ClusterJDBCURL that reaches this server."""
        return f"jdbc:{scheme}://127.0.0.1:{port or self.port}/{database or self.database}"

    def connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database or self.database, autocommit=True)

    def create_database(self, name: str) -> str:
        with self.connect("postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def start(self) -> PostgresServer:
        """Start on ``port`` (a free one when 0)."""
        bindir = _postgres_bin()
        # Under /tmp rather than pytest's tmp_path: the server user must be able to reach it.
        self.root = root = Path(tempfile.mkdtemp(prefix="firehose-pg-"))
        self.port = self.port or free_port()
        data, logfile, pwfile = root / "data", root / "server.log", root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(root, "nobody")
            shutil.chown(pwfile, "nobody")
        init = subprocess.run(_as_server_user([
            str(bindir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        ]), capture_output=True, text=True)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr}")
        options = (f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c synchronous_commit=off")
        # -w: pg_ctl returns once the server accepts connections (or fails after -t seconds).
        start = subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile),
                                                "-o", options, "-w", "-t", "30", "start"]),
                               capture_output=True, text=True)
        if start.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {start.stderr}\n{logfile.read_text()}")
        self.create_database(self.database)
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():  # this data directory's server, even if -w timed out
            subprocess.run(_as_server_user([str(_postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                            "stop"]), check=True, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def _postgres_bin() -> Path:
    """The directory with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed; scripts/test installs "
                           "the Debian package postgresql (scripts/system-packages)")
    return Path(versions[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL will not run as root: as root, run it as ``nobody``."""
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class OpenSearchServer:
    """osmem-server on a free loopback port."""

    def __init__(self, port: int = 0) -> None:
        self.url = f"http://127.0.0.1:{port or free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OpenSearchServer:
        from osmem_server import resolve_binary

        args = ["--addr", self.url.removeprefix("http://"), "--no-ja", "--parent-pid", str(os.getpid())]
        self.proc = proc = subprocess.Popen([resolve_binary(), *args], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL)
        wait_until(lambda: proc.poll() is not None or _answers(self.url), timeout=20)
        if proc.poll() is not None:
            raise RuntimeError("osmem-server exited during startup")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
