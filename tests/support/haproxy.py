"""HAProxy (the Debian package) in front of a fleet of daemons, as ``docs/scaling.md`` sets it up.

Started in the foreground (``-db``) on a free loopback port with a generated config: round robin
over the daemons, each health-checked with ``GET /readyz`` every 200 ms (one failure marks a node
down, two successes up again), and a stats page whose CSV tells the tests what HAProxy thinks of
each node. Stopped by its pid.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import urllib.request
from pathlib import Path

from tests.support.ports import free_port
from tests.support.process import stop_gently
from tests.support.waiting import wait_until

CONFIG = """\
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A refused connection (a killed node) is tried once more on another node: nothing was sent yet.
    retries 2
    option redispatch

frontend api
    bind 127.0.0.1:{port}
    default_backend daemons

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend daemons
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 2
{servers}
"""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (str(p) if (p := Path("/usr/sbin/haproxy")).exists() else None)


class HaproxyServer:
    def __init__(self, backends: dict[str, int], directory: Path) -> None:
        """``backends``: server name → the daemon's port on 127.0.0.1."""
        self.port, self.stats_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in backends.items())
        self.config = directory / "haproxy.cfg"
        self.config.write_text(CONFIG.format(port=self.port, stats_port=self.stats_port, servers=servers))
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HaproxyServer:
        binary = haproxy_binary()
        assert binary is not None, "haproxy is not installed (scripts/system-packages installs it)"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=log, stderr=log)
        wait_until(lambda: self._stats() is not None, timeout=10, interval=0.05)
        return self

    def _stats(self) -> dict[str, str] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return None
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "daemons"}

    def status(self) -> dict[str, str]:
        """Each node's state as HAProxy's health checks see it: ``UP``, ``DOWN``, ``UP 1/2`` ..."""
        return self._stats() or {}

    def stop(self) -> None:
        stop_gently(self.proc)
