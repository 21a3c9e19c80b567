"""A delivery outage as users see it, measured: ``firehose serve`` with N streams whose S3 endpoint is
down (nothing listens on its port), fed by boto3 PutRecordBatch calls, and the daemon's resident
memory sampled from ``/proc`` while it takes the load and once it has settled.

Used by ``tests/test_memory.py`` (the bound) and ``bench/memory.py`` (the figures in
docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.waiting import wait_until

MiB = 1024 * 1024


def rss_bytes(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (the peak), RssAnon and RssFile of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class OutageFigures:
    streams: int
    accepted_bytes: int
    idle_rss: int
    peak_rss: int  # VmHWM: the most the process was resident at any time
    settled_rss: int  # after the load, with every destination still down
    settled_anon: int
    settled_file: int
    buffered_bytes: int  # what the streams report holding (/readyz)


def run_outage(tmp: Path, *, streams: int, mib_per_stream: int, record_bytes: int = 1024,
               clients: int = 4, settings: dict[str, Any] | None = None, settle_s: float = 8.0) -> OutageFigures:
    """Start the daemon, put ``mib_per_stream`` into each stream while S3 is down, measure, stop."""
    from tests.support.aws import firehose_client

    port, dead = free_port(), free_port()  # nothing listens on ``dead``: every S3 call is refused
    conf = {"state_dir": str(tmp / "state"), "spool": {"max_bytes": "8GiB"},
            "s3": {"endpoint_url": f"http://127.0.0.1:{dead}", "max_attempts": 1,
                   "access_key_id": "testing", "secret_access_key": "testing"},
            "delivery": {"backoff_max_seconds": 2}, **(settings or {})}
    names = [f"outage-{i}" for i in range(streams)]
    path = write_config(tmp / "firehose.yaml", conf, [local_stream(n, "down", size_mb=5, interval=1) for n in names])
    daemon = DaemonProcess(path, port, tmp / "daemon.log").start(timeout=60)
    try:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        idle = rss_bytes(pid)["VmRSS"]
        record = (os.urandom(record_bytes).hex() * 2)[:record_bytes].encode()
        calls = streams * mib_per_stream * MiB // (record_bytes * 500)
        work = itertools.cycle(names)
        lock = threading.Lock()
        left = [calls]

        def load() -> None:
            client = firehose_client(daemon.endpoint, retries={"max_attempts": 10, "mode": "standard"})
            batch = [{"Data": record}] * 500
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                    name = next(work)
                reply = client.put_record_batch(DeliveryStreamName=name, Records=batch)
                assert reply["FailedPutCount"] == 0

        threads = [threading.Thread(target=load) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(settle_s)  # retries keep failing meanwhile
        wait_until(lambda: all(s["consecutive_failures"] > 0 for s in _streams(daemon, names)), timeout=30)
        settled = rss_bytes(pid)
        buffered = sum(int(s.get("buffered_bytes", 0)) for s in _streams(daemon, names))
        return OutageFigures(streams, calls * 500 * record_bytes, idle, settled["VmHWM"], settled["VmRSS"],
                             settled["RssAnon"], settled["RssFile"], buffered)
    finally:
        daemon.stop()


def _streams(daemon: DaemonProcess, names: list[str]) -> list[dict[str, Any]]:
    found = daemon.readiness()["streams"]
    return [found[n] for n in names]
