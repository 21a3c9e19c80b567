"""Ingest benchmark: PutRecordBatch of 500 × 1 KiB through boto3, durably acknowledged.

Measures, in one run and under the same load:

* records/s and MB/s acknowledged by the daemon (every acknowledgement means
  fsynced to the spool), with p50/p99 acknowledgement latency (the time a
  PutRecordBatch call takes, seen by the client);
* the daemon's own CPU time (user+sys of its process tree) per 1,000 records,
  including delivery of everything it accepted to a local directory;
* the same figures for the floor server (``bench/floor.py``: read the body,
  orjson, pybase64-decode every record, per-record reply, nothing else), and
  the daemon's over the floor's: records/s and CPU per 1,000 records;
* the same two servers again under a minimal raw-HTTP client (one pre-built
  request replayed on keep-alive sockets), which shows each server's own
  ceiling when the client costs almost nothing;
* the daemon once more under the boto3 load with authentication on
  (``auth.mode: sigv4``): every call is signed by boto3 for real and verified
  by the daemon (signature, body hash, IAM policy), and its CPU per 1,000
  records is held against the same daemon's without authentication.

The load client is several processes, each with several threads and one boto3
client per thread: by default 2 processes × 4 threads, 500 records of 1 KiB per
call (the load issue 12's goals are stated for). On a 2-core machine the client
competes with the server for CPU, so throughput is bounded by both; the
CPU-per-record figures are the ones that compare servers.

    python bench/ingest.py [--duration 15] [--processes 2] [--threads 4] [--repeat 3] [--boto3-only]

``--repeat N`` measures the floor and the daemon under boto3 N times in turn
and holds the median ratios against the goals; ``--boto3-only`` leaves out the
SigV4 and raw-client runs. ``--sse-only`` measures the daemon under boto3
without and with server-side encryption of the stream (its spool sealed with
AES-256-GCM, ``firehose.sse``), ``--repeat`` pairs, and reports the CPU ratio.

Goals (checked, exit status 1 if one is not met), under the boto3 load in the
same run: the daemon's records/s at least 0.85 of the floor's, its CPU per
1,000 records at most 1.3 × the floor's, at least 100,000 records/s, and with
SigV4 verification at most 1.15 × the daemon's own CPU without it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
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


def bench_daemon(args: argparse.Namespace, workdir: Path, client: str = "boto3", *, sigv4: bool = False,
                 sse: bool = False) -> dict[str, Any]:
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
                "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 1}},
            **({"DeliveryStreamEncryptionConfigurationInput": {"KeyType": "AWS_OWNED_CMK"}} if sse else {})}],
    }))
    env = {**os.environ, "FIREHOSE_KEK_BENCH": "b7" * 32} if sse else None  # the keyring's one key (hex)
    proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(config)], cwd=REPO, env=env)
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
        name = f"firehose ({client} client{', sigv4' if sigv4 else ''}{', sse' if sse else ''})"
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


#: Goals from issue 12, under the boto3 load in the same run: the daemon's records/s at least this share of
#: the floor's, and its CPU per 1,000 records at most this multiple of the floor's.
GOAL_THROUGHPUT_RATIO = 0.85
GOAL_CPU_RATIO = 1.3
#: The earlier absolute goal: records/s acknowledged through boto3.
GOAL_RECORDS_PER_S = 100_000


def _print_row(row: dict[str, Any]) -> None:
    print(f"{row['server']:>32}: {row['records_per_s']:>9,.0f} records/s  {row['mb_per_s']:6.1f} MB/s  "
          f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
          f"CPU {row['cpu_ms_per_1000_records']:5.2f} ms/1000 records "
          f"(client {row['client_cpu_ms_per_1000_records']:5.2f})", flush=True)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def compare(floor: dict[str, Any], daemon: dict[str, Any]) -> dict[str, float]:
    """The daemon's figures over the floor's, from one pair of runs under the same load."""
    return {"throughput_ratio": daemon["records_per_s"] / floor["records_per_s"],
            "cpu_ratio": daemon["cpu_ms_per_1000_records"] / floor["cpu_ms_per_1000_records"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=2, help="load client processes (boto3 load)")
    parser.add_argument("--threads", type=int, default=4, help="threads per load process, one boto3 client each")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--boto3-only", action="store_true",
                        help="only the floor and the daemon under the boto3 load (no SigV4 or raw-client runs)")
    parser.add_argument("--sigv4-only", action="store_true",
                        help="only the authentication comparison: the daemon under boto3 without and with SigV4")
    parser.add_argument("--sse-only", action="store_true",
                        help="only the encryption comparison: the daemon under boto3 without and with stream SSE")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of boto3 runs, floor then daemon (the median ratios are held against the goals);"
                             " with --sigv4-only: pairs of runs without and with SigV4")
    args = parser.parse_args()

    if args.sigv4_only:
        return _sigv4_only(args)
    if args.sse_only:
        return _sse_only(args)
    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-"))
    pairs: list[dict[str, Any]] = []
    extra: dict[str, dict[str, Any]] = {}
    try:
        for i in range(args.repeat):
            floor = bench_floor(args)
            _print_row(floor)
            daemon = bench_daemon(args, workdir / f"boto3-{i}")
            _print_row(daemon)
            ratios = compare(floor, daemon)
            pairs.append({"floor": floor, "firehose": daemon, **ratios})
            print(f"run {i + 1}: records/s {ratios['throughput_ratio']:.2f} of the floor's, "
                  f"CPU per 1,000 records {ratios['cpu_ratio']:.2f}x the floor's", flush=True)
        if not args.boto3_only:
            extra["firehose_sigv4"] = bench_daemon(args, workdir / "sigv4", sigv4=True)
            extra["floor_raw"] = bench_floor(args, "raw")
            extra["firehose_raw"] = bench_daemon(args, workdir / "raw", "raw")
            for row in extra.values():
                _print_row(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # The pair with the median CPU ratio stands for the run; each ratio's own median is held against its goal.
    median = sorted(pairs, key=lambda p: p["cpu_ratio"])[len(pairs) // 2]
    throughput_ratio = statistics.median(p["throughput_ratio"] for p in pairs)
    cpu_ratio = statistics.median(p["cpu_ratio"] for p in pairs)
    rate = statistics.median(p["firehose"]["records_per_s"] for p in pairs)
    report: dict[str, Any] = {"args": vars(args), "runs": pairs, "floor": median["floor"],
                              "firehose": median["firehose"], **extra, "throughput_ratio_to_floor": throughput_ratio,
                              "cpu_ratio_to_floor": cpu_ratio}
    load = f"boto3, {args.processes} processes x {args.threads} threads, {args.batch} x {args.record_size} B per call"
    print(f"under the load ({load}):")
    for name in ("floor", "firehose"):
        lat = ", ".join(f"{p[name]['p50_ms']:.1f}/{p[name]['p99_ms']:.1f}" for p in pairs)
        print(f"  {name} acknowledgement latency p50/p99: {lat} ms")
    met_rate_ratio = throughput_ratio >= GOAL_THROUGHPUT_RATIO
    print(f"  daemon records/s / floor's: {throughput_ratio:.2f}{_list(pairs, 'throughput_ratio')} "
          f"(goal >= {GOAL_THROUGHPUT_RATIO}: {_verdict(met_rate_ratio)})")
    met_cpu = cpu_ratio <= GOAL_CPU_RATIO
    print(f"  daemon CPU per 1,000 records / floor's: {cpu_ratio:.2f}x{_list(pairs, 'cpu_ratio')} "
          f"(goal <= {GOAL_CPU_RATIO}x: {_verdict(met_cpu)})")
    during = statistics.median(p["firehose"]["cpu_seconds_during_load"] / p["firehose"]["cpu_seconds"] for p in pairs)
    print(f"  (the daemon's CPU includes delivering what it accepted; {during:.0%} of it fell in the load window)")
    met_rate = rate >= GOAL_RECORDS_PER_S
    print(f"  daemon records/s through boto3: {rate:,.0f} (goal >= {GOAL_RECORDS_PER_S:,}: {_verdict(met_rate)})")
    met_auth = True
    if "firehose_sigv4" in extra:
        auth_ratio = extra["firehose_sigv4"]["cpu_ms_per_1000_records"] / median["firehose"]["cpu_ms_per_1000_records"]
        report["sigv4_cpu_ratio"] = auth_ratio
        met_auth = _report_sigv4(auth_ratio)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if met_rate_ratio and met_cpu and met_rate and met_auth else 1


def _list(pairs: list[dict[str, Any]], key: str) -> str:
    """`` (median of N: a, b, c)`` for repeated runs, nothing for one."""
    if len(pairs) < 2:
        return ""
    return f" (median of {len(pairs)}: {', '.join(f'{p[key]:.2f}' for p in pairs)})"


def _report_sigv4(ratio: float) -> bool:
    met = ratio <= 1.15
    print(f"daemon CPU per record with SigV4 / without: {ratio:.3f}x (goal <= 1.15x: {_verdict(met)})")
    return met


def _sse_only(args: argparse.Namespace) -> int:
    """The daemon under boto3 without and with server-side encryption, ``--repeat`` times in turn; the median
    CPU ratio is reported (no goal: what sealing costs, for docs/benchmarks.md)."""
    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-"))
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            plain = bench_daemon(args, workdir / f"plain-{i}")
            sealed = bench_daemon(args, workdir / f"sse-{i}", sse=True)
            for row in (plain, sealed):
                _print_row(row)
            ratio = sealed["cpu_ms_per_1000_records"] / plain["cpu_ms_per_1000_records"]
            runs.append({"firehose": plain, "firehose_sse": sealed, "sse_cpu_ratio": ratio})
            print(f"run {i + 1}: SSE / none = {ratio:.3f}x CPU per 1,000 records", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = sorted(r["sse_cpu_ratio"] for r in runs)
    median = ratios[len(ratios) // 2]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "median_sse_cpu_ratio": median},
                                              indent=2))
    print(f"daemon CPU per 1,000 records with SSE / without: {median:.3f}x "
          f"(median of {', '.join(f'{r:.3f}' for r in ratios)})")
    return 0


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
