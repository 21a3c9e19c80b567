"""Agent benchmark: lines shipped from a file to the daemon on loopback, next to what bounds it.

In one run, against one daemon (a local-directory delivery stream):

1. **the daemon's own ingest ceiling** for 200-byte records: the raw client of
   ``bench/ingest.py`` (one pre-built PutRecordBatch replayed over keep-alive
   sockets), records/s acknowledged;
2. **a plain read** of the backlog file: ``cat FILE > /dev/null``, lines/s and MB/s;
3. **the agent draining a backlog**: ``firehose agent`` as its own process,
   START_OF_FILE on a file of ``--lines`` 200-byte lines, until every line is
   acknowledged: lines/s, MB/s, the agent's CPU time per 1,000 lines and the
   share of one core it used;
4. **the agent on a growing file**: a writer appends 200-byte lines at
   ``--rate`` lines/s for ``--duration`` s; the agent's lag (bytes not yet
   acknowledged) is sampled, and its CPU share over the window is reported.

CPU is user+sys of the agent process from ``/proc``. Goal (checked, exit status
1 if missed): at ``--rate`` 50,000 lines/s the agent keeps up (its lag does not
grow) using at most one core.

    python bench/agent.py [--lines 1000000] [--rate 50000] [--duration 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402  (the load client and /proc helpers of the ingest benchmark)

REPO = Path(__file__).resolve().parent.parent
LINE = 200


def make_lines(n: int, start: int = 0) -> bytes:
    """``n`` distinct 200-byte lines (newline included)."""
    pad = "x" * (LINE - 12)
    return "".join(f"{i:010d} {pad}\n" for i in range(start, start + n)).encode()


def start_daemon(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = ingest.free_port()
    config = workdir / "firehose.yaml"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "state_dir": str(workdir / "state"), "log_level": "WARNING",
        "spool": {"max_bytes": "8GiB"}, "buckets": {"bench": {"directory": str(workdir / "out")}},
        "delivery_streams": [{"DeliveryStreamName": "bench", "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/bench", "BucketARN": "arn:aws:s3:::bench",
            "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 1}}}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(config)], cwd=REPO)
    endpoint = f"http://127.0.0.1:{port}"
    ingest.wait_http(endpoint + "/readyz")
    return proc, endpoint


def ceiling(endpoint: str, daemon_pid: int, duration: float) -> dict[str, Any]:
    args = argparse.Namespace(duration=duration, processes=1, threads=4, batch=500, record_size=LINE)
    load = ingest.run_load(endpoint, "bench", args, daemon_pid, client="raw")
    s = ingest.summarize("daemon ceiling (raw client)", load, load["cpu_during_load"], LINE)
    return {"lines_per_s": s["records_per_s"], "mb_per_s": s["mb_per_s"],
            "daemon_cpu_ms_per_1000": s["cpu_ms_per_1000_records"]}


def plain_read(path: Path, lines: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)
    wall = time.perf_counter() - t0
    return {"lines_per_s": lines / wall, "mb_per_s": path.stat().st_size / wall / 1e6, "seconds": wall}


class AgentProc:
    def __init__(self, workdir: Path, endpoint: str, pattern: Path, name: str) -> None:
        self.metrics_port = ingest.free_port()
        config = workdir / f"agent-{name}.json"
        config.write_text(json.dumps({
            "firehose.endpoint": endpoint, "awsAccessKeyId": "bench", "awsSecretAccessKey": "bench",
            "metrics.port": self.metrics_port, "log.statusReportingPeriodSeconds": 600,
            "flows": [{"filePattern": str(pattern), "deliveryStream": "bench", "initialPosition": "START_OF_FILE",
                       "maxBufferAgeMillis": 1000}]}))
        self.log = open(workdir / f"agent-{name}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "firehose", "agent", "--config", str(config),
                                      "--state-dir", str(workdir / f"agent-{name}-state")],
                                     cwd=REPO, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the agent did not start")

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("firehose_agent_records_sent_total"):
                out["sent"] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("firehose_agent_bytes_behind{"):
                out["behind"] = out.get("behind", 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def cpu(self) -> float:
        return ingest.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def agent_backlog(workdir: Path, endpoint: str, path: Path, lines: int) -> dict[str, Any]:
    agent = AgentProc(workdir, endpoint, path, "backlog")
    try:
        cpu0, t0 = agent.cpu(), time.perf_counter()
        while agent.scrape().get("sent", 0) < lines:
            time.sleep(0.05)
        wall, cpu = time.perf_counter() - t0, agent.cpu() - cpu0
    finally:
        agent.stop()
    return {"lines_per_s": lines / wall, "mb_per_s": lines * LINE / wall / 1e6, "seconds": wall,
            "agent_cpu_ms_per_1000": 1000 * cpu / lines * 1000, "cores": cpu / wall}


def agent_growing(workdir: Path, endpoint: str, rate: int, duration: float) -> dict[str, Any]:
    path = workdir / "growing.log"
    path.touch()
    agent = AgentProc(workdir, endpoint, path, "growing")
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    written, lags = 0, []
    try:
        with open(path, "ab", buffering=0) as f:
            cpu0, t0 = agent.cpu(), time.perf_counter()
            next_at, next_sample = t0, t0 + 1.0
            while (now := time.perf_counter()) < t0 + duration:
                if now < next_at:
                    time.sleep(next_at - now)
                f.write(make_lines(per_tick, written))
                written += per_tick
                next_at += tick
                if now >= next_sample:
                    lags.append(agent.scrape().get("behind", 0.0))
                    next_sample += 1.0
            wall, cpu = time.perf_counter() - t0, agent.cpu() - cpu0
        sent_at_end = agent.scrape().get("sent", 0)
        catch0 = time.perf_counter()
        while agent.scrape().get("sent", 0) < written:
            time.sleep(0.05)
        catch_up = time.perf_counter() - catch0
    finally:
        agent.stop()
    return {"rate_written": written / wall, "lines": written, "lines_sent_by_end": sent_at_end,
            "catch_up_seconds": catch_up, "lag_bytes_samples": lags, "max_lag_bytes": max(lags, default=0),
            "agent_cpu_ms_per_1000": 1000 * cpu / written * 1000, "cores": cpu / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="backlog file size in 200-byte lines")
    parser.add_argument("--rate", type=int, default=50_000, help="growing-file write rate, lines/s")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="firehose-agent-bench-"))
    daemon = None
    try:
        daemon, endpoint = start_daemon(workdir)
        ceil = ceiling(endpoint, daemon.pid, min(args.duration, 10.0))
        backlog = workdir / "backlog.log"
        with open(backlog, "wb") as f:
            for start in range(0, args.lines, 100_000):
                f.write(make_lines(min(100_000, args.lines - start), start))
        read = plain_read(backlog, args.lines)
        drained = agent_backlog(workdir, endpoint, backlog, args.lines)
        growing = agent_growing(workdir, endpoint, args.rate, args.duration)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"args": vars(args), "daemon_ceiling": ceil, "plain_read": read, "agent_backlog": drained,
              "agent_growing": growing, "cpus": os.cpu_count()}
    print(f"{'daemon ingest ceiling':>28}: {ceil['lines_per_s']:>10,.0f} lines/s {ceil['mb_per_s']:7.1f} MB/s")
    print(f"{'cat FILE > /dev/null':>28}: {read['lines_per_s']:>10,.0f} lines/s {read['mb_per_s']:7.1f} MB/s")
    print(f"{'agent, backlog':>28}: {drained['lines_per_s']:>10,.0f} lines/s {drained['mb_per_s']:7.1f} MB/s  "
          f"CPU {drained['agent_cpu_ms_per_1000']:.2f} ms/1000 lines, {drained['cores']:.2f} cores")
    print(f"{'agent, growing file':>28}: written {growing['rate_written']:,.0f} lines/s; sent by the end "
          f"{growing['lines_sent_by_end']:,.0f}/{growing['lines']:,}; caught up {growing['catch_up_seconds']:.2f} s "
          f"later; max lag {growing['max_lag_bytes'] / 1e6:.2f} MB; CPU {growing['agent_cpu_ms_per_1000']:.2f} "
          f"ms/1000 lines, {growing['cores']:.2f} cores")
    keeps_up = growing["catch_up_seconds"] < 3.0 and growing["cores"] <= 1.0
    print(f"goal: keeps up with {args.rate:,} lines/s using at most one core: {'met' if keeps_up else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if keeps_up else 1


if __name__ == "__main__":
    raise SystemExit(main())
