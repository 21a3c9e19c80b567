"""One daemon against two behind HAProxy on this machine, under the same boto3 load (``docs/scaling.md``).

Three runs, each with the load of ``bench/ingest.py`` (boto3, ``--processes`` × ``--threads``,
500 × 1 KiB records per PutRecordBatch, delivery to a local directory included):

* **one daemon**, called directly;
* **one daemon behind HAProxy**: the load balancer's own cost (its CPU per 1,000 records, and
  what the extra hop does to throughput and latency);
* **two daemons behind HAProxy**, round robin, each with its own state directory.

For each: acknowledged records/s, p50/p99 latency, the daemons' CPU per 1,000 records (their
process trees, summed) and HAProxy's. On two cores the client, the load balancer and the daemons
share the same CPUs, so two daemons cannot be faster here than one; the figures say what a node
costs and what the load balancer costs, which is what sizing a fleet on real machines needs.

    python bench/scaling.py --part fleet [--duration 10] [--processes 2] [--threads 4] [--json FILE]
    python bench/fleet.py [--duration 10] [--processes 2] [--threads 4] [--json FILE]   # the same

Needs ``haproxy`` (``scripts/system-packages`` installs it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import REPO, _ready_details, cpu_seconds, free_port, run_load, summarize, wait_http  # noqa: E402

HAPROXY = """\
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend api
    bind 127.0.0.1:{port}
    default_backend daemons
backend daemons
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s
{servers}
"""


def _start_daemon(workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    state = workdir / name
    state.mkdir(parents=True)
    config = state / "bench.yaml"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "state_dir": str(state / "state"), "log_level": "WARNING",
        "cluster": {"mode": "fleet", "node_id": name},
        "spool": {"max_bytes": "8GiB"},
        "buckets": {"bench": {"directory": str(workdir / "out")}},
        "delivery_streams": [{
            "DeliveryStreamName": "bench",
            "ExtendedS3DestinationConfiguration": {
                "RoleARN": "arn:aws:iam::123456789012:role/bench", "BucketARN": "arn:aws:s3:::bench",
                "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 1}}}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(config)], cwd=REPO)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/readyz")
    return proc, endpoint


def _start_haproxy(workdir: Path, endpoints: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    servers = "\n".join(f"    server n{i} {e.removeprefix('http://')}" for i, e in enumerate(endpoints))
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    time.sleep(2.5)  # health checks mark every node up (rise 2 × inter 1 s)
    wait_http(endpoint + "/readyz")
    return proc, endpoint


def run(args: argparse.Namespace, nodes: int, balanced: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="firehose-fleet-bench-"))
    daemons: list[tuple[subprocess.Popen[bytes], str]] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        daemons = [_start_daemon(workdir, f"node-{i}") for i in range(nodes)]
        endpoint = daemons[0][1]
        if balanced:
            proxy, endpoint = _start_haproxy(workdir, [e for _, e in daemons])
        before = {p.pid: cpu_seconds(p.pid) for p, _ in daemons}
        proxy_before = cpu_seconds(proxy.pid) if proxy else 0.0
        load = run_load(endpoint, "bench", args, daemons[0][0].pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
                _ready_details(e)["streams"]["bench"]["idle"] for _, e in daemons):
            time.sleep(0.1)
        daemon_cpu = sum(cpu_seconds(p.pid) - before[p.pid] for p, _ in daemons)
        name = f"{nodes} daemon{'s' if nodes > 1 else ''}{' behind HAProxy' if balanced else ''}"
        row = summarize(name, load, daemon_cpu, args.record_size)
        if proxy is not None:
            row["haproxy_cpu_ms_per_1000_records"] = (
                1000 * (cpu_seconds(proxy.pid) - proxy_before) / row["records"] * 1000 if row["records"] else None)
        return row
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for proc, _ in daemons:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)


def _print(row: dict[str, Any]) -> None:
    lb = row.get("haproxy_cpu_ms_per_1000_records")
    print(f"  {row['server']:<28} {row['records_per_s']:>9,.0f} records/s  p50/p99 {row['p50_ms']:.1f}/"
          f"{row['p99_ms']:.1f} ms  daemons' CPU {row['cpu_ms_per_1000_records']:.2f} ms/1,000"
          + (f"  HAProxy CPU {lb:.2f} ms/1,000" if lb is not None else ""), flush=True)


def fleet_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for nodes, balanced in ((1, False), (1, True), (2, True)):
        rows.append(run(args, nodes, balanced))
        _print(rows[-1])
    return rows


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2, help="load client processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per load process, one boto3 client each")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--record-size", type=int, default=1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    print("boto3 load: one daemon, one behind HAProxy, two behind HAProxy")
    rows = fleet_rows(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
