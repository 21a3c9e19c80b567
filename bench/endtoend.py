"""End-to-end benchmark: records put → objects readable, into moto's S3 server and a local directory.

Two figures the other benchmarks do not give (issue 12, "How to know it worked"):

* **Sustained delivery with ZSTD into S3.** A light client (pre-built
  PutRecordBatch bodies of 500 JSON records of about 1 KiB, replayed on 4
  keep-alive connections) puts ``--megabytes`` of records as fast as the
  daemon acknowledges them, into a stream with ``CompressionFormat: ZSTD``
  delivering to moto's S3 server (``moto.server`` on loopback). Measured: MB/s
  of record bytes from the first put until the daemon's last delivery (the
  ``last_delivery_ms`` /readyz reports once the stream is idle), checked by
  reading every object back from S3 and decompressing it (every byte put must
  be there). Next to it, in the same run and on the same records in the same
  order: the raw ``zstandard`` compressor at the daemon's level (with the
  content checksum the daemon writes), fed the same 500-record pieces, one
  frame per object of the same size. The pool of distinct bodies (64 calls,
  about 30 MB) is much larger than zstd's window, so replaying it does not
  flatter compression.
* **Acknowledgement to readable, ``IntervalInSeconds: 0``.** One boto3 client
  puts a batch (``--latency-batch`` records of about 1 KiB), and the clock runs
  from the moment PutRecordBatch returns until the object holding it can be
  read: in a local-directory bucket (the embedded default: the file under its
  final name, its contents checked) and in moto's S3 (listed, fetched, its
  contents checked). ``--puts`` puts one after the other, a random 0-20 ms
  apart so that nothing periodic in the daemon lines up with them. The
  watcher polls (every 2 ms locally, every 10 ms on S3, where each look costs
  moto a listing), so the figures are late by half a period on average; it
  removes each object once seen, so every look costs what the first did.
  Next to the S3 figure, moto's own part: the same bytes sent with one
  PutObject, timed from its start until the same watcher reads them.

The daemon's CPU time (user+sys of its process tree, from /proc) is reported
for each phase; moto's and the client's too for the sustained one.

    python bench/endtoend.py [--megabytes 512] [--puts 200] [--repeat 3] [--only delivery,latency]
                             [--json FILE]

Goals: at least 50 MB/s delivered; acknowledgement to readable p99 at most 250 ms.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import boto3  # noqa: E402
import orjson  # noqa: E402
import pybase64  # noqa: E402
import zstandard  # noqa: E402
from botocore.config import Config  # noqa: E402
from destinations import Daemon, tree_cpu_seconds  # noqa: E402
from ingest import cpu_seconds, free_port  # noqa: E402
from processing import make_records  # noqa: E402

from firehose.encoding.compress import ZSTD_LEVEL  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/bench"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
BATCH = 500
POOL_CALLS = 64  # distinct PutRecordBatch bodies replayed by the sustained load
GOAL_MB_PER_S = 50.0
GOAL_P99_MS = 250.0


# -- moto's S3 server ------------------------------------------------------------------------


class MotoS3:
    """``python -m moto.server`` on a free loopback port, stopped by its own process handle."""

    def __init__(self) -> None:
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, **CREDS)

    def __enter__(self) -> MotoS3:
        port = self.endpoint.rsplit(":", 1)[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("moto.server did not come up") from None
                time.sleep(0.1)

    def __exit__(self, *_exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def settings(self) -> dict[str, Any]:
        """The daemon's ``s3:`` section that reaches this server."""
        return {"s3": {"endpoint_url": self.endpoint, "region": "us-east-1", "access_key_id": "testing",
                       "secret_access_key": "testing"}}

    def objects(self, bucket: str) -> list[str]:
        client = self.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys


def s3_stream(name: str, bucket: str, size_mb: int, interval_s: int, **extra: Any) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "ExtendedS3DestinationConfiguration": {
        "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
        "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval_s}, **extra}}


# -- sustained delivery with ZSTD --------------------------------------------------------------


def record_pool() -> list[list[bytes]]:
    """POOL_CALLS distinct batches of BATCH JSON records (about 950 bytes each, newline-terminated)."""
    records = make_records(POOL_CALLS * BATCH)
    return [records[i:i + BATCH] for i in range(0, len(records), BATCH)]


def put_bodies(stream: str, pool: list[list[bytes]]) -> list[bytes]:
    return [orjson.dumps({"DeliveryStreamName": stream, "Records": [
        {"Data": pybase64.b64encode(r).decode()} for r in batch]}) for batch in pool]


def calls_for(megabytes: float, pool: list[list[bytes]]) -> int:
    per_call = sum(map(len, pool[0]))
    return max(1, round(megabytes * 1e6 / per_call))


def raw_zstd(pool: list[list[bytes]], calls: int, object_bytes: int) -> dict[str, Any]:
    """The raw compressor on the same records in the same order: one frame per ``object_bytes`` of
    records, fed the same 500-record pieces the daemon feeds it, at its level and with its checksum."""
    pieces = [b"".join(batch) for batch in pool]
    total = compressed = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    stream = compressor.compressobj()
    in_object = 0
    for i in range(calls):
        piece = pieces[i % len(pieces)]
        compressed += len(stream.compress(piece))
        total += len(piece)
        in_object += len(piece)
        if in_object >= object_bytes:
            compressed += len(stream.flush())
            stream, in_object = compressor.compressobj(), 0
    compressed += len(stream.flush())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"bytes": total, "seconds": seconds, "mb_per_s": total / seconds / 1e6, "cpu_seconds": cpu,
            "ratio": total / compressed}


def put_all(port: int, bodies: list[bytes], calls: int, connections: int) -> tuple[float, float]:
    """Put ``calls`` bodies (the pool replayed in order) over keep-alive connections; (first put, last ack)
    as epoch seconds. A call with failed records is an error: the spool is sized so none fail."""
    counter = itertools.count()
    lock = threading.Lock()
    errors: list[str] = []
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Firehose_20150804.PutRecordBatch"}

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    i = next(counter)
                if i >= calls or errors:
                    return
                conn.request("POST", "/", bodies[i % len(bodies)], headers)
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status != 200 or orjson.loads(answer)["FailedPutCount"]:
                    errors.append(f"{resp.status} {answer[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"puts failed: {errors[0]}")
    return started, time.time()


def read_back(moto: MotoS3, bucket: str) -> tuple[int, int, int]:
    """(objects, record bytes after decompression, records) in the bucket."""
    client = moto.client()
    keys = moto.objects(bucket)
    total = lines = 0
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        data = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(body)
        total += len(data)
        lines += data.count(b"\n")
    return len(keys), total, lines


def bench_delivery(workdir: Path, args: argparse.Namespace, pool: list[list[bytes]]) -> dict[str, Any]:
    calls = calls_for(args.megabytes, pool)
    raw = raw_zstd(pool, calls, args.size_mb * 1024 * 1024)
    bodies = put_bodies("zstd", pool)
    with MotoS3() as moto:
        moto.client().create_bucket(Bucket="sustained")
        stream = s3_stream("zstd", "sustained", args.size_mb, args.interval, CompressionFormat="ZSTD")
        daemon = Daemon(workdir, stream, moto.settings())
        try:
            daemon.start()
            assert daemon.proc is not None and moto.proc is not None
            os.sync()  # nothing written before is written back while the clock runs
            cpu0, moto0 = tree_cpu_seconds(daemon.proc.pid), cpu_seconds(moto.proc.pid)
            client0 = resource.getrusage(resource.RUSAGE_SELF)
            first_put, last_ack = put_all(daemon.port, bodies, calls, args.connections)
            client1 = resource.getrusage(resource.RUSAGE_SELF)
            deadline = time.monotonic() + 900
            while True:
                idle, last_delivery_ms = daemon.idle("zstd")
                if idle and last_delivery_ms is not None and last_delivery_ms / 1000 >= last_ack:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not deliver everything within 900 s")
                time.sleep(0.1)
            cpu = tree_cpu_seconds(daemon.proc.pid) - cpu0
            moto_cpu = cpu_seconds(moto.proc.pid) - moto0
        finally:
            daemon.stop()
        objects, delivered, records = read_back(moto, "sustained")
    if delivered != raw["bytes"] or records != calls * BATCH:
        raise RuntimeError(f"S3 holds {delivered} bytes in {records} records; {raw['bytes']} bytes in "
                           f"{calls * BATCH} records were put")
    seconds = last_delivery_ms / 1000 - first_put
    client_cpu = (client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime)
    return {"megabytes": delivered / 1e6, "records": records, "objects": objects,
            "seconds": seconds, "mb_per_s": delivered / seconds / 1e6,
            "ingest_seconds": last_ack - first_put, "ingest_mb_per_s": delivered / (last_ack - first_put) / 1e6,
            "daemon_cpu_seconds": cpu, "daemon_cpu_ms_per_mb": cpu / (delivered / 1e6) * 1000,
            "moto_cpu_seconds": moto_cpu, "client_cpu_seconds": client_cpu,
            "raw_zstd_mb_per_s": raw["mb_per_s"], "raw_zstd_cpu_seconds": raw["cpu_seconds"],
            "zstd_ratio": raw["ratio"], "vs_raw_zstd": delivered / seconds / 1e6 / raw["mb_per_s"]}


# -- acknowledgement to readable ------------------------------------------------------------


def marker(i: int) -> bytes:
    return f"put-{i:06d}-".encode()


def latency_batch(i: int, n: int, rng: random.Random) -> list[dict[str, bytes]]:
    """n records of about 1 KiB, each naming put ``i``, so the object holding them can be told apart."""
    return [{"Data": marker(i) + rng.randbytes(500).hex().encode()[:1000] + b"\n"} for _ in range(n)]


class LocalWatcher:
    """Finds a new object in a local-directory bucket: a file under its final name (written atomically)."""

    poll_s = 0.002

    def __init__(self, root: Path) -> None:
        self.root = root

    def new(self) -> dict[str, bytes]:
        out = {}
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith("."):
                    path = os.path.join(dirpath, name)
                    out[path] = Path(path).read_bytes()
        return out

    def remove(self, keys: list[str]) -> None:
        for path in keys:
            os.unlink(path)


class S3Watcher:
    """Finds a new object in a bucket of moto's server: listed, then fetched."""

    poll_s = 0.010

    def __init__(self, moto: MotoS3, bucket: str) -> None:
        self.client = moto.client()
        self.bucket = bucket

    def new(self) -> dict[str, bytes]:
        listing = self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1000)
        return {o["Key"]: self.client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                for o in listing.get("Contents", [])}

    def remove(self, keys: list[str]) -> None:
        for key in keys:
            self.client.delete_object(Bucket=self.bucket, Key=key)


def wait_for(watcher: LocalWatcher | S3Watcher, marker: bytes, timeout: float = 60) -> float:
    """Until an object holding ``marker`` is readable: the time it was seen (perf_counter). The objects
    found are removed once seen (so each look stays as cheap as the first); an object without the
    marker is an error (one put, one object)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = watcher.new()
        if found:
            seen = time.perf_counter()
            watcher.remove(list(found))
            if not any(marker in body for body in found.values()):
                raise RuntimeError(f"a new object without {marker!r}")
            return seen
        time.sleep(watcher.poll_s)
    raise RuntimeError(f"no object with {marker!r} after {timeout} s")


def measure_latency(daemon: Daemon, stream: str, watcher: LocalWatcher | S3Watcher, puts: int, batch: int
                    ) -> dict[str, Any]:
    client = boto3.client("firehose", endpoint_url=daemon.endpoint, **CREDS,
                          config=Config(retries={"max_attempts": 1}))
    rng = random.Random(12)
    client.put_record_batch(DeliveryStreamName=stream, Records=latency_batch(-1, batch, rng))  # warm-up
    wait_for(watcher, marker(-1))
    assert daemon.proc is not None
    cpu0 = tree_cpu_seconds(daemon.proc.pid)
    latencies: list[float] = []
    calls: list[float] = []
    for i in range(puts):
        time.sleep(rng.uniform(0, 0.020))
        records = latency_batch(i, batch, rng)
        t0 = time.perf_counter()
        resp = client.put_record_batch(DeliveryStreamName=stream, Records=records)
        acked = time.perf_counter()
        if resp["FailedPutCount"]:
            raise RuntimeError(f"put {i} failed: {resp}")
        latencies.append(wait_for(watcher, marker(i)) - acked)
        calls.append(acked - t0)
    cpu = tree_cpu_seconds(daemon.proc.pid) - cpu0
    return {"puts": puts, "batch": batch, **percentiles("ack_to_readable", latencies),
            **percentiles("put_call", calls), "daemon_cpu_ms_per_put": cpu / puts * 1000}


def measure_direct_s3(moto: MotoS3, watcher: S3Watcher, puts: int, batch: int) -> dict[str, Any]:
    """moto's own part: the same bytes sent with one PutObject, from its start until the same watcher
    reads them. What the daemon's figure can be held against."""
    client = moto.client()
    rng = random.Random(12)
    latencies = []
    for i in range(-1, puts):
        time.sleep(rng.uniform(0, 0.020))
        body = b"".join(r["Data"] for r in latency_batch(i, batch, rng))
        t0 = time.perf_counter()
        client.put_object(Bucket=watcher.bucket, Key=f"direct/{i:06d}", Body=body)
        seen = wait_for(watcher, marker(i))
        if i >= 0:  # the first is a warm-up
            latencies.append(seen - t0)
    return {"puts": puts, "batch": batch, **percentiles("put_to_readable", latencies)}


def percentiles(name: str, seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {f"{name}_p50_ms": 1000 * statistics.median(ordered),
            f"{name}_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            f"{name}_max_ms": 1000 * ordered[-1]}


def bench_latency(workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    local = workdir / "local"
    daemon = Daemon(workdir / "daemon-local", s3_stream("lat", "latency", 5, 0),
                    {"buckets": {"latency": {"directory": str(local)}}})
    try:
        daemon.start()
        rows.append({"target": "local directory",
                     **measure_latency(daemon, "lat", LocalWatcher(local), args.puts, args.latency_batch)})
    finally:
        daemon.stop()
    with MotoS3() as moto:
        moto.client().create_bucket(Bucket="latency")
        daemon = Daemon(workdir / "daemon-s3", s3_stream("lat", "latency", 5, 0), moto.settings())
        try:
            daemon.start()
            rows.append({"target": "S3 (moto)",
                         **measure_latency(daemon, "lat", S3Watcher(moto, "latency"), args.puts, args.latency_batch)})
        finally:
            daemon.stop()
        moto.client().create_bucket(Bucket="direct")
        rows.append({"target": "S3 (moto), PutObject directly",
                     **measure_direct_s3(moto, S3Watcher(moto, "direct"), args.puts, args.latency_batch)})
    return rows


# -- report -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="delivery,latency", help="comma-separated: delivery, latency")
    parser.add_argument("--megabytes", type=float, default=512, help="record bytes put in the sustained run")
    parser.add_argument("--size-mb", type=int, default=64, help="BufferingHints.SizeInMBs of the sustained run")
    parser.add_argument("--interval", type=int, default=0, help="BufferingHints.IntervalInSeconds, sustained run")
    parser.add_argument("--connections", type=int, default=4, help="put connections of the sustained run")
    parser.add_argument("--puts", type=int, default=200, help="puts timed to readable, per target")
    parser.add_argument("--latency-batch", type=int, default=500, help="records of about 1 KiB per timed put")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each part; medians are held against goals")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    only = set(args.only.split(","))
    report: dict[str, Any] = {"args": vars(args), "delivery": [], "latency": []}
    met = True
    with tempfile.TemporaryDirectory(prefix="firehose-bench-") as tmp:
        if "delivery" in only:
            pool = record_pool()
            for run in range(args.repeat):
                workdir = Path(tmp) / f"delivery-{run}"
                row = bench_delivery(workdir, args, pool)
                shutil.rmtree(workdir, ignore_errors=True)
                report["delivery"].append(row)
                print(f"delivery {run + 1}: {row['megabytes']:.0f} MB in {row['objects']} ZSTD objects: "
                      f"{row['mb_per_s']:.1f} MB/s delivered (ingest {row['ingest_mb_per_s']:.1f} MB/s), raw zstd "
                      f"{row['raw_zstd_mb_per_s']:.1f} MB/s (ratio {row['zstd_ratio']:.2f}); CPU: daemon "
                      f"{row['daemon_cpu_seconds']:.1f} s ({row['daemon_cpu_ms_per_mb']:.1f} ms/MB), moto "
                      f"{row['moto_cpu_seconds']:.1f} s, client {row['client_cpu_seconds']:.1f} s", flush=True)
            rate = statistics.median(r["mb_per_s"] for r in report["delivery"])
            ok = rate >= GOAL_MB_PER_S
            met &= ok
            print(f"sustained ZSTD delivery into S3: {rate:.1f} MB/s (median of {args.repeat}; raw zstd "
                  f"{statistics.median(r['raw_zstd_mb_per_s'] for r in report['delivery']):.1f} MB/s) "
                  f"(goal >= {GOAL_MB_PER_S:.0f} MB/s: {'met' if ok else 'NOT MET'})", flush=True)
        if "latency" in only:
            for run in range(args.repeat):
                workdir = Path(tmp) / f"latency-{run}"
                rows = bench_latency(workdir, args)
                shutil.rmtree(workdir, ignore_errors=True)
                for row in rows:
                    row["run"] = run + 1
                    report["latency"].append(row)
                    if "put_to_readable_p50_ms" in row:
                        print(f"latency {run + 1}, {row['target']}: PutObject start to readable p50 "
                              f"{row['put_to_readable_p50_ms']:.1f} ms, p99 {row['put_to_readable_p99_ms']:.1f} ms",
                              flush=True)
                        continue
                    print(f"latency {run + 1}, {row['target']}: acknowledgement to readable p50 "
                          f"{row['ack_to_readable_p50_ms']:.1f} ms, p99 {row['ack_to_readable_p99_ms']:.1f} ms, "
                          f"max {row['ack_to_readable_max_ms']:.1f} ms; the put itself p50 "
                          f"{row['put_call_p50_ms']:.1f} ms, p99 {row['put_call_p99_ms']:.1f} ms; daemon CPU "
                          f"{row['daemon_cpu_ms_per_put']:.1f} ms per put", flush=True)
            for target in dict.fromkeys(r["target"] for r in report["latency"] if "ack_to_readable_p99_ms" in r):
                p99 = statistics.median(r["ack_to_readable_p99_ms"] for r in report["latency"]
                                        if r["target"] == target)
                ok = p99 <= GOAL_P99_MS
                met &= ok
                print(f"acknowledgement to readable, {target}: p99 {p99:.1f} ms (median of {args.repeat}) "
                      f"(goal <= {GOAL_P99_MS:.0f} ms: {'met' if ok else 'NOT MET'})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
