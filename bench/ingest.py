"""Ingest benchmark: PutRecordBatch of 500 × 1 KiB through boto3, durably acknowledged.

Measures, in one run and under the same load:

* records/s and MB/s acknowledged by the daemon (every acknowledgement means
  fsynced to the spool), with p50/p99 call latency;
* the daemon's own CPU time (user+sys of its process tree) per 1,000 records,
  including delivery of everything it accepted to a local directory;
* the same CPU figure for the floor server (``bench/floor.py``: parse, decode,
  reply, nothing else), and the ratio of the two;
* the same two servers again under a minimal raw-HTTP client (one pre-built
  request replayed on keep-alive sockets), which shows each server's own
  ceiling when the client costs almost nothing;
* the daemon once more under the boto3 load with authentication on
  (``auth.mode: sigv4``): every call is signed by boto3 for real and verified
  by the daemon (signature, body hash, IAM policy), and its CPU per 1,000
  records is held against the same daemon's without authentication.

The load client is several processes, each with several threads and one boto3
client per thread. On a 2-core machine the client competes with the server
for CPU, so throughput is bounded by both; the CPU-per-record figures are the
ones that compare servers.

    python bench/ingest.py [--duration 15] [--processes 3] [--threads 3]

Goals (checked, exit status 1 if missed): at least 100,000 records/s through
boto3, daemon CPU per 1,000 records at most 2.5 × the floor's, and with
SigV4 verification at most 1.15 × the daemon's own without it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user+sys of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None):
                return  # it answered
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


# -- load client ------------------------------------------------------------------


#: The principal the sigv4 run signs as; its policy allows PutRecordBatch on the benchmark's stream only.
BENCH_KEY, BENCH_SECRET, BENCH_ACCOUNT = "AKIABENCHMARK0000001", "bench-secret-key", "123456789012"
BENCH_TOKEN = "bench-scraper-token"


def _worker(endpoint: str, stream: str, threads: int, batch: int, size: int, start_at: float, stop_at: float,
            out: Any) -> None:
    import boto3
    from botocore.config import Config

    records = [{"Data": os.urandom(size // 2).hex().encode()[:size]} for _ in range(batch)]
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def loop() -> None:
        client = boto3.client(
            "firehose", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=BENCH_KEY,
            aws_secret_access_key=BENCH_SECRET,
            # Parameter validation is client-side only (the wire is identical); high-rate
            # producers turn it off, and it is 20% of boto3's CPU per call here.
            config=Config(retries={"max_attempts": 1}, max_pool_connections=4, parameter_validation=False))
        mine: list[tuple[int, float]] = []
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            t0 = time.perf_counter()
            resp = client.put_record_batch(DeliveryStreamName=stream, Records=records)
            elapsed = time.perf_counter() - t0
            mine.append((batch - resp["FailedPutCount"], elapsed))
        with lock:
            results.extend(mine)

    _run_threads(loop, threads, start_at, results, out)


def _run_threads(loop: Any, threads: int, start_at: float, results: list[tuple[int, float]], out: Any) -> None:
    """Run the load threads; report their results and the process's CPU during the timed window."""
    import resource

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    while time.time() < start_at:
        time.sleep(0.001)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for t in ts:
        t.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.put((results, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime))


#: What the raw client's records hold: random hex by default, or JSON documents (for processing benchmarks).
PAYLOAD = {"kind": "hex"}


def _payload(size: int, i: int) -> bytes:
    if PAYLOAD["kind"] == "json":
        import processing

        return processing.make_records(1, seed=i)[0]
    return os.urandom(size // 2).hex().encode()[:size]


def _raw_worker(endpoint: str, stream: str, threads: int, batch: int, size: int, start_at: float, stop_at: float,
                out: Any) -> None:
    """The cheapest possible client: one pre-built request replayed over keep-alive sockets.

    It shows what the server can do when the client costs almost nothing.
    """
    import base64

    host, port = endpoint.removeprefix("http://").split(":")
    records = [{"Data": base64.b64encode(_payload(size, i)).decode()} for i in range(batch)]
    body = json.dumps({"DeliveryStreamName": stream, "Records": records}).encode()
    request = (
        f"POST / HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/x-amz-json-1.1\r\n"
        f"X-Amz-Target: Firehose_20150804.PutRecordBatch\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def loop() -> None:
        sock = socket.create_connection((host, int(port)))
        mine: list[tuple[int, float]] = []
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            t0 = time.perf_counter()
            sock.sendall(request)
            buf = b""
            while True:
                buf += sock.recv(1 << 20)
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length"))
                    if len(rest) >= length:
                        break
            failed = json.loads(rest[:length])["FailedPutCount"]
            mine.append((batch - failed, time.perf_counter() - t0))
        sock.close()
        with lock:
            results.extend(mine)

    _run_threads(loop, threads, start_at, results, out)


def run_load(endpoint: str, stream: str, args: argparse.Namespace, server_pid: int, client: str = "boto3"
             ) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # let every process import boto3 and build its records first
    stop_at = start_at + args.duration
    PAYLOAD["kind"] = "json" if client == "json" else "hex"
    target = _worker if client == "boto3" else _raw_worker
    processes, threads = (args.processes, args.threads) if client == "boto3" else (1, 4)
    procs = [ctx.Process(target=target, args=(endpoint, stream, threads, args.batch, args.record_size,
                                              start_at, stop_at, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.01)
    cpu0 = cpu_seconds(server_pid)
    results: list[tuple[int, float]] = []
    client_cpu = 0.0
    for _ in procs:
        got, cpu = queue.get()
        results.extend(got)
        client_cpu += cpu
    wall = time.time() - start_at
    for p in procs:
        p.join()
    return {"results": results, "wall": wall, "cpu_during_load": cpu_seconds(server_pid) - cpu0, "cpu0": cpu0,
            "client_cpu": client_cpu, "started": start_at}


def summarize(name: str, load: dict[str, Any], cpu: float, record_size: int) -> dict[str, Any]:
    results = load["results"]
    n = sum(r for r, _ in results)
    lat = sorted(t for _, t in results)
    wall = load["wall"]
    return {
        "server": name,
        "records": n,
        "records_per_s": n / wall,
        "mb_per_s": n * record_size / wall / 1e6,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "cpu_seconds": cpu,
        "cpu_ms_per_1000_records": 1000 * cpu / n * 1000 if n else None,
        "client_cpu_ms_per_1000_records": 1000 * load["client_cpu"] / n * 1000 if n else None,
    }


# -- the two servers ------------------------------------------------------------


def _auth_settings() -> dict[str, Any]:
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "firehose:PutRecordBatch",
        "Resource": f"arn:aws:firehose:us-east-1:{BENCH_ACCOUNT}:deliverystream/bench"}]}
    return {"mode": "sigv4", "bearer_tokens": [BENCH_TOKEN], "principals": [{
        "access_key_id": BENCH_KEY, "secret": BENCH_SECRET, "account_id": BENCH_ACCOUNT, "name": "bench",
        "policies": [policy]}]}


def _ready_details(endpoint: str) -> dict[str, Any]:
    request = urllib.request.Request(endpoint + "/readyz", headers={"Authorization": f"Bearer {BENCH_TOKEN}"})
    try:
        with urllib.request.urlopen(request) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:  # 503 while not ready
        return json.loads(exc.read())  # type: ignore[no-any-return]


def bench_daemon(args: argparse.Namespace, workdir: Path, client: str = "boto3", *, sigv4: bool = False
                 ) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "bench.yaml"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "state_dir": str(workdir / "state"), "log_level": "WARNING",
        **({"auth": _auth_settings()} if sigv4 else {}),
        "spool": {"max_bytes": "8GiB"},
        "buckets": {"bench": {"directory": str(workdir / "out")}},
        "delivery_streams": [{
            "DeliveryStreamName": "bench",
            "ExtendedS3DestinationConfiguration": {
                "RoleARN": "arn:aws:iam::123456789012:role/bench", "BucketARN": "arn:aws:s3:::bench",
                "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 1}}}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(config)], cwd=REPO)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(endpoint + "/readyz")
        load = run_load(endpoint, "bench", args, proc.pid, client)
        # Include delivery: wait until everything accepted has been written out.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _ready_details(endpoint)["streams"]["bench"]["idle"]:
                break
            time.sleep(0.1)
        cpu = cpu_seconds(proc.pid) - load["cpu0"]
        delivered = sum(p.stat().st_size for p in (workdir / "out").rglob("*") if p.is_file())
        name = f"firehose ({client} client{', sigv4' if sigv4 else ''})"
        summary = summarize(name, load, cpu, args.record_size)
        summary["cpu_seconds_during_load"] = load["cpu_during_load"]
        summary["delivered_bytes"] = delivered
        return summary
    finally:
        proc.terminate()
        proc.wait(60)


def bench_floor(args: argparse.Namespace, client: str = "boto3") -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "floor.py"), str(port)])
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(endpoint + "/")
        load = run_load(endpoint, "floor", args, proc.pid, client)
        return summarize(f"floor ({client} client)", load, load["cpu_during_load"], args.record_size)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--sigv4-only", action="store_true",
                        help="only the authentication comparison: the daemon under boto3 without and with SigV4")
    parser.add_argument("--repeat", type=int, default=1, help="with --sigv4-only: pairs of runs (median ratio)")
    args = parser.parse_args()

    if args.sigv4_only:
        return _sigv4_only(args)
    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-"))
    try:
        floor = bench_floor(args)
        daemon = bench_daemon(args, workdir / "boto3")
        daemon_sigv4 = bench_daemon(args, workdir / "sigv4", sigv4=True)
        floor_raw = bench_floor(args, "raw")
        daemon_raw = bench_daemon(args, workdir / "raw", "raw")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = daemon["cpu_ms_per_1000_records"] / floor["cpu_ms_per_1000_records"]
    auth_ratio = daemon_sigv4["cpu_ms_per_1000_records"] / daemon["cpu_ms_per_1000_records"]
    report = {"args": vars(args), "floor": floor, "firehose": daemon, "firehose_sigv4": daemon_sigv4,
              "floor_raw": floor_raw, "firehose_raw": daemon_raw, "cpu_ratio_to_floor": ratio,
              "sigv4_cpu_ratio": auth_ratio}
    for row in (floor, daemon, daemon_sigv4, floor_raw, daemon_raw):
        print(f"{row['server']:>24}: {row['records_per_s']:>9,.0f} records/s  {row['mb_per_s']:6.1f} MB/s  "
              f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
              f"CPU {row['cpu_ms_per_1000_records']:5.2f} ms/1000 records "
              f"(client {row['client_cpu_ms_per_1000_records']:5.2f})")
    met_cpu = ratio <= 2.5
    met_rate = daemon["records_per_s"] >= 100_000
    print(f"daemon CPU per record / floor's (boto3 load): {ratio:.2f}x "
          f"(goal <= 2.5x: {'met' if met_cpu else 'MISSED'})")
    print(f"records/s through boto3: {daemon['records_per_s']:,.0f} "
          f"(goal >= 100,000: {'met' if met_rate else 'MISSED'}; "
          f"{daemon['records_per_s'] / floor['records_per_s']:.0%} of the floor's under the same client)")
    met_auth = _report_sigv4(auth_ratio)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if met_cpu and met_rate and met_auth else 1


def _report_sigv4(ratio: float) -> bool:
    met = ratio <= 1.15
    print(f"daemon CPU per record with SigV4 / without: {ratio:.3f}x (goal <= 1.15x: {'met' if met else 'MISSED'})")
    return met


def _sigv4_only(args: argparse.Namespace) -> int:
    """The daemon under boto3 without and with SigV4, ``--repeat`` times in turn; the median ratio is the one
    held against the goal (runs of one build spread by several percent on a shared machine)."""
    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-"))
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            daemon = bench_daemon(args, workdir / f"none-{i}")
            daemon_sigv4 = bench_daemon(args, workdir / f"sigv4-{i}", sigv4=True)
            ratio = daemon_sigv4["cpu_ms_per_1000_records"] / daemon["cpu_ms_per_1000_records"]
            runs.append({"firehose": daemon, "firehose_sigv4": daemon_sigv4, "sigv4_cpu_ratio": ratio})
            for row in (daemon, daemon_sigv4):
                print(f"{row['server']:>32}: {row['records_per_s']:>9,.0f} records/s  "
                      f"CPU {row['cpu_ms_per_1000_records']:5.2f} ms/1000 records "
                      f"(client {row['client_cpu_ms_per_1000_records']:5.2f})")
            print(f"run {i + 1}: SigV4 / none = {ratio:.3f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = sorted(r["sigv4_cpu_ratio"] for r in runs)
    median = ratios[len(ratios) // 2]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "median_sigv4_cpu_ratio": median},
                                              indent=2))
    print(f"ratios: {', '.join(f'{r:.3f}' for r in ratios)}")
    return 0 if _report_sigv4(median) else 1


if __name__ == "__main__":
    raise SystemExit(main())
