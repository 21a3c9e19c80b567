"""Kinesis Data Streams benchmark: PutRecords (500 × 1 KiB) and GetRecords, firehose next to kinesalite.

Both servers are started here on loopback ports and driven by the same client in the same run:

* **kinesalite** (the npm package, an established Kinesis implementation), pinned to
  ``KINESALITE_VERSION`` and installed with npm into a cache directory outside the work tree
  (``KINESALITE_DIR``, default ``~/.cache/firehose-bench/kinesalite``). It runs in memory (memdown,
  no ``--path``), so its acknowledgements are not durable: nothing is written to disk, let alone
  fsynced. It is started through its module with ``createStreamMs``/``deleteStreamMs``/
  ``updateStreamMs`` at 0 (its CLI flags of the same names) and bound to 127.0.0.1, which its CLI
  cannot do (it listens on every interface).
* **firehose** ``streams serve`` with a fresh state directory: an acknowledgement means the
  records are durable.

For each server, on a fresh stream of ``--shards`` shards:

1. **PutRecords**: ``--processes`` × ``--threads`` client connections each send 500-record batches
   of 1 KiB records until ``--records`` records are acknowledged. Every record carries a unique
   8-byte id (then fixed random padding) and a random partition key; records that fail inside a
   batch are retried and counted once, throttled calls are retried after a short pause.
2. **GetRecords**: every shard is read concurrently (one process per shard) from TRIM_HORIZON with
   Limit 10000 until caught up (an empty answer with MillisBehindLatest 0, or no next iterator).
3. **Check**: every acknowledged id must be read back exactly once, with its data intact; lost,
   duplicated, unknown or corrupted records fail the run (exit status 1).

Measured per phase: records/s over the wall time from a start barrier to the last answer, the
server's CPU time (user+sys of its process tree, from ``/proc``) per 1,000 records and the client's.
The machine has 2 cores and the client competes with the server, so the default client is a raw
one: ``http.client`` keep-alive connections, every PutRecords body built with orjson before the
clock starts, GetRecords answers read by pattern (see ``parse_get_records``), and an
``Authorization`` header of the usual SigV4 shape (neither server checks the signature;
kinesalite requires the header). ``--client boto3`` drives both servers through boto3 instead
(retries and parameter validation off), for the figure an ordinary producer would see.

Neither server is throttled: kinesalite enforces no per-shard rate (nor the 5 MiB PutRecords
total; it refuses bodies over 7 MiB and records over 1 MiB), and firehose's AWS-like shard
limits are off by default. The calls stay within AWS's limits anyway: 500 KiB per PutRecords,
at most 10,000 records (under 10 MiB) per GetRecords.

    python bench/streams.py [--records 200000] [--shards 2] [--client raw|boto3] [--repeat 1]
                            [--only kinesalite,firehose] [--keep]

``--only firehose,firehose-kms`` compares firehose with a stream encrypted at rest
(StartStreamEncryption, a keyring of one key) against the same without encryption.

Goals (firehose / kinesalite in the same run, exit status 1 if missed): at least 5x for PutRecords
and 3x for GetRecords records/s. JSON results go to ``bench/results/streams-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import binascii
import functools
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import orjson  # noqa: E402
import pybase64  # noqa: E402
from ingest import cpu_seconds, free_port  # noqa: E402

KINESALITE_VERSION = "3.3.3"
RESULTS = REPO / "bench" / "results"
STREAM = "bench"
RECORD_SIZE = 1024
BATCH = 500
GET_LIMIT = 10_000
GOALS = {"put": 5.0, "get": 3.0}
#: Whole calls answered with these are retried after a pause (Kinesis' throttling answers).
RETRYABLE = {"ProvisionedThroughputExceededException", "LimitExceededException", "ServiceUnavailable",
             "InternalFailure"}

# -- records -----------------------------------------------------------------------------------------
#
# A record is an 8-byte big-endian id followed by fixed random padding. 9 bytes are exactly 12 base64
# characters, so the encoded record is b64(id + pad[0]) + b64(pad[1:]): the tail is encoded once and
# each record costs one 9-byte encoding, and a reader recovers the id from the first 12 characters.

PAD = random.Random(20131202).randbytes(RECORD_SIZE - 8)
PAD_TAIL_B64 = pybase64.b64encode(PAD[1:]).decode()


def record_b64(rid: int) -> str:
    """The base64 Data of record ``rid`` (what the raw client sends)."""
    return pybase64.b64encode(rid.to_bytes(8, "big") + PAD[:1]).decode() + PAD_TAIL_B64


def record_bytes(rid: int) -> bytes:
    """The raw Data of record ``rid`` (what boto3 is given; it does the base64 itself)."""
    return rid.to_bytes(8, "big") + PAD


def id_of_b64(data: str) -> int:
    """The id held by a base64 Data string, from its first 12 characters only."""
    return int.from_bytes(binascii.a2b_base64(data[:12])[:8], "big")


def partition_keys(n: int) -> list[str]:
    """n random 16-character partition keys (random so records spread over shards as producers' do)."""
    hexed = os.urandom(8 * n).hex()
    return [hexed[16 * i:16 * i + 16] for i in range(n)]


#: The reader takes what it needs from a GetRecords answer (15 MB of JSON for 10,000 records) by
#: pattern instead of decoding it into a string per record and comparing each: 2.8 instead of 3.6 ms
#: of client CPU per 1,000 records, which on 2 cores is CPU the server gets. The patterns are
#: checked against the record count, and anything unexpected falls back to orjson.
DATA_HEAD = re.compile(rb'"Data"\s*:\s*"([A-Za-z0-9+/]{12})')
DATA_TAIL = (PAD_TAIL_B64 + '"').encode()
NEXT_ITERATOR = re.compile(rb'"NextShardIterator"\s*:\s*("[^"]*")')
MILLIS_BEHIND = re.compile(rb'"MillisBehindLatest"\s*:\s*(\d+)')


def parse_get_records(body: bytes) -> tuple[list[int], str | None, int, int]:
    """ids, next iterator, MillisBehindLatest and corrupted-record count of a GetRecords answer.

    Every record's data is checked whole: its first 12 base64 characters hold the id and the rest
    must be the shared padding, which is counted in one pass over the body.
    """
    heads = DATA_HEAD.findall(body)
    if len(heads) != body.count(b'"Data"'):
        return _parse_get_records_fully(body)
    ids = [int.from_bytes(binascii.a2b_base64(h)[:8], "big") for h in heads]
    corrupted = len(heads) - body.count(DATA_TAIL)
    if corrupted:  # find out exactly which, the slow way
        return _parse_get_records_fully(body)
    # The answer's other keys sit before "Records" or after its end: look only there, so that where a
    # server puts them does not change the client's cost.
    outside = body[:body.find(b'"Records"')] + body[-4096:]
    it = NEXT_ITERATOR.search(outside)
    behind = MILLIS_BEHIND.search(outside)
    if not it or not behind:  # a closed shard (no iterator), or a layout not foreseen
        return _parse_get_records_fully(body)
    return ids, orjson.loads(it.group(1)), int(behind.group(1)), 0


def _parse_get_records_fully(body: bytes) -> tuple[list[int], str | None, int, int]:
    """The same with orjson, comparing every record's data with what was put."""
    answer = orjson.loads(body)
    datas = [r["Data"] for r in answer["Records"]]
    ids = [id_of_b64(d) for d in datas]
    corrupted = sum(1 for rid, d in zip(ids, datas, strict=True) if d != record_b64(rid))
    return ids, answer.get("NextShardIterator"), int(answer.get("MillisBehindLatest", 0)), corrupted


# -- clients ------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A call answered with an error: the AWS error type and the HTTP status."""

    def __init__(self, kind: str, status: int, message: str = "") -> None:
        super().__init__(f"{kind} ({status}): {message}")
        self.kind = kind
        self.status = status


class Client(Protocol):
    """The data-plane calls a load worker makes; one implementation per client library."""

    def prepare_put(self, stream: str, ids: list[int]) -> Any:
        """Build what ``put_records`` sends for ``ids`` (before the clock starts, where possible)."""

    def put_records(self, prepared: Any, ids: list[int]) -> list[int]:
        """Send one prepared PutRecords batch; return the ids that failed inside it."""

    def shard_iterator(self, stream: str, shard_id: str) -> str:
        """A TRIM_HORIZON iterator for one shard."""

    def get_records(self, iterator: str, limit: int) -> tuple[list[int], str | None, int, int]:
        """One GetRecords call: the ids read, the next iterator, MillisBehindLatest, and how many
        records came back with data other than what was put."""


class RawClient:
    """awsJson1_1 over one ``http.client`` keep-alive connection, orjson both ways.

    The signature is not computed (neither server checks it), but the headers have SigV4's shape so
    that a server which insists on their presence, as kinesalite does, accepts the calls.
    """

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        day = time.strftime("%Y%m%d", time.gmtime())
        self.headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDBENCH/{day}/us-east-1/kinesis/aws4_request, "
                             f"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={'0' * 64}",
        }

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One call; raises ApiError for an error answer."""
        return self.send(operation, orjson.dumps(payload))

    def send(self, operation: str, body: bytes) -> dict[str, Any]:
        """One call with a body already serialized."""
        data = self.send_raw(operation, body)
        return orjson.loads(data) if data else {}

    def send_raw(self, operation: str, body: bytes) -> bytes:
        """One call with a body already serialized; the answer's body, unparsed."""
        headers = {**self.headers, "X-Amz-Target": f"Kinesis_20131202.{operation}"}
        self.conn.request("POST", "/", body, headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            try:
                error = orjson.loads(data)
            except orjson.JSONDecodeError:
                error = {}
            kind = str(error.get("__type", "HTTP")).rsplit("#", 1)[-1]
            raise ApiError(kind, response.status, str(error.get("message", data[:200])))
        return data

    def prepare_put(self, stream: str, ids: list[int]) -> bytes:
        keys = partition_keys(len(ids))
        return orjson.dumps({"StreamName": stream, "Records": [
            {"Data": record_b64(rid), "PartitionKey": key} for rid, key in zip(ids, keys, strict=True)]})

    def put_records(self, prepared: bytes, ids: list[int]) -> list[int]:
        answer = self.send("PutRecords", prepared)
        if not answer.get("FailedRecordCount"):
            return []
        return [rid for rid, entry in zip(ids, answer["Records"], strict=True) if entry.get("ErrorCode")]

    def shard_iterator(self, stream: str, shard_id: str) -> str:
        answer = self.call("GetShardIterator", {"StreamName": stream, "ShardId": shard_id,
                                                "ShardIteratorType": "TRIM_HORIZON"})
        return str(answer["ShardIterator"])

    def get_records(self, iterator: str, limit: int) -> tuple[list[int], str | None, int, int]:
        body = self.send_raw("GetRecords", orjson.dumps({"ShardIterator": iterator, "Limit": limit}))
        return parse_get_records(body)

    def close(self) -> None:
        self.conn.close()


class Boto3Client:
    """The same calls through boto3: what an ordinary producer or consumer costs.

    Retries are off (throttling is retried by the worker, the same way for both clients) and so is
    client-side parameter validation, which changes nothing on the wire.
    """

    def __init__(self, endpoint: str) -> None:
        import boto3
        from botocore.config import Config

        self.client = boto3.client(
            "kinesis", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDBENCH",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 1}, parameter_validation=False, read_timeout=300,
                          max_pool_connections=2))

    def _call(self, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            raise ApiError(str(error.get("Code", "HTTP")), status, str(error.get("Message", ""))) from exc

    def prepare_put(self, stream: str, ids: list[int]) -> dict[str, Any]:
        keys = partition_keys(len(ids))
        return {"StreamName": stream, "Records": [
            {"Data": record_bytes(rid), "PartitionKey": key} for rid, key in zip(ids, keys, strict=True)]}

    def put_records(self, prepared: dict[str, Any], ids: list[int]) -> list[int]:
        answer = self._call(self.client.put_records, **prepared)
        if not answer.get("FailedRecordCount"):
            return []
        return [rid for rid, entry in zip(ids, answer["Records"], strict=True) if entry.get("ErrorCode")]

    def shard_iterator(self, stream: str, shard_id: str) -> str:
        answer = self._call(self.client.get_shard_iterator, StreamName=stream, ShardId=shard_id,
                            ShardIteratorType="TRIM_HORIZON")
        return str(answer["ShardIterator"])

    def get_records(self, iterator: str, limit: int) -> tuple[list[int], str | None, int, int]:
        answer = self._call(self.client.get_records, ShardIterator=iterator, Limit=limit)
        datas = [r["Data"] for r in answer["Records"]]
        corrupted = sum(1 for d in datas if len(d) != RECORD_SIZE or d[8:] != PAD)
        return ([int.from_bytes(d[:8], "big") for d in datas], answer.get("NextShardIterator"),
                int(answer.get("MillisBehindLatest", 0)), corrupted)

    def close(self) -> None:
        self.client.close()


def make_client(kind: str, endpoint: str) -> RawClient | Boto3Client:
    return Boto3Client(endpoint) if kind == "boto3" else RawClient(endpoint)


# -- load workers (forked processes, so that the client's CPU is not one GIL) ----------------------


@dataclass
class Tally:
    """What one load thread did: ids acknowledged or read, calls, retries and call latencies."""

    ids: array = field(default_factory=lambda: array("q"))
    calls: int = 0
    failed_records: int = 0
    throttled_calls: int = 0
    corrupted: int = 0
    latencies: list[float] = field(default_factory=list)
    finished: float = 0.0


def _put_batches(client: RawClient | Boto3Client, stream: str, batches: list[tuple[list[int], Any]],
                 tally: Tally) -> None:
    """Send prepared batches until every id is acknowledged; a batch's failed records are sent again
    next (counted once), a throttled call is repeated after a pause."""
    pending = deque(batches)
    while pending:
        ids, prepared = pending.popleft()
        t0 = time.perf_counter()
        try:
            failed = client.put_records(prepared, ids)
        except ApiError as exc:
            if exc.kind not in RETRYABLE and exc.status < 500:
                raise
            tally.throttled_calls += 1
            pending.appendleft((ids, prepared))
            time.sleep(0.05)
            continue
        tally.latencies.append(time.perf_counter() - t0)
        tally.calls += 1
        if failed:
            tally.failed_records += len(failed)
            gone = set(failed)
            tally.ids.extend(rid for rid in ids if rid not in gone)
            pending.appendleft((failed, client.prepare_put(stream, failed)))
            time.sleep(0.05)  # records fail alone when their shard is over its limit: back off as producers do
        else:
            tally.ids.extend(ids)
    tally.finished = time.time()


def _read_shard(client: RawClient | Boto3Client, iterator: str, tally: Tally) -> None:
    """Read one shard from its iterator until caught up (empty and 0 ms behind) or closed."""
    it: str | None = iterator
    while it:
        t0 = time.perf_counter()
        try:
            ids, it, behind, corrupted = client.get_records(it, GET_LIMIT)
        except ApiError as exc:
            if exc.kind not in RETRYABLE and exc.status < 500:
                raise
            tally.throttled_calls += 1
            time.sleep(0.05)
            continue
        tally.latencies.append(time.perf_counter() - t0)
        tally.calls += 1
        tally.ids.extend(ids)
        tally.corrupted += corrupted
        if not ids and behind == 0:
            break
    tally.finished = time.time()


ABORTED = "another load process failed to start"


def _run_threads(jobs: list[Callable[[Tally], None]], barrier: Any, out: Any) -> None:
    """Run one thread per job, all released when every process has passed the barrier (that is when
    the parent starts the clock); report their tallies and this process's CPU from then on."""
    tallies = [Tally() for _ in jobs]
    errors: list[BaseException] = []
    go = threading.Event()

    def run(job: Callable[[Tally], None], tally: Tally) -> None:
        go.wait()
        try:
            job(tally)
        except BaseException as exc:  # reported to the parent, which fails the run
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j, t), daemon=True) for j, t in zip(jobs, tallies, strict=True)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        out.put({"error": ABORTED, "cpu": 0.0, "tallies": []})
        return
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    go.set()
    for t in threads:
        t.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    out.put({"error": repr(errors[0]) if errors else None, "cpu": cpu,
             "tallies": [{**vars(t), "ids": t.ids.tobytes()} for t in tallies]})


def _worker(setup: Callable[..., list[Callable[[Tally], None]]], args: tuple[Any, ...], barrier: Any,
            out: Any) -> None:
    """A load process: build its jobs, then run them from the barrier. If building fails, the
    barrier is broken so that the parent stops waiting, and the error is reported."""
    try:
        jobs = setup(*args)
    except BaseException as exc:
        barrier.abort()
        out.put({"error": repr(exc), "cpu": 0.0, "tallies": []})
        return
    _run_threads(jobs, barrier, out)


def _put_jobs(kind: str, endpoint: str, stream: str, ranges: list[tuple[int, int]]) -> list[Callable[[Tally], None]]:
    """A connection per range, every batch of the range built before the clock starts."""
    jobs: list[Callable[[Tally], None]] = []
    for lo, hi in ranges:
        client = make_client(kind, endpoint)
        batches = [(ids, client.prepare_put(stream, ids))
                   for ids in (list(range(i, min(i + BATCH, hi))) for i in range(lo, hi, BATCH))]
        jobs.append(functools.partial(_put_batches, client, stream, batches))
    return jobs


def _get_jobs(kind: str, endpoint: str, stream: str, shard_id: str) -> list[Callable[[Tally], None]]:
    """One reader per shard (one process each), its iterator taken before the clock starts."""
    client = make_client(kind, endpoint)
    iterator = client.shard_iterator(stream, shard_id)
    return [functools.partial(_read_shard, client, iterator)]


def run_phase(server: Server, specs: list[tuple[Callable[..., list[Callable[[Tally], None]]], tuple[Any, ...]]],
              timeout: float = 1800) -> dict[str, Any]:
    """Fork one load process per spec, release them together once all are ready, and time the phase
    against the server's CPU."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(len(specs) + 1)
    procs = [ctx.Process(target=_worker, args=(setup, args, barrier, queue)) for setup, args in specs]
    for p in procs:
        p.start()
    try:
        cpu0 = server.cpu()
        try:
            barrier.wait(timeout=600)
        except threading.BrokenBarrierError:
            pass  # a worker failed to start; its report says why
        start = time.time()
        reports = [queue.get(timeout=timeout) for _ in procs]
        cpu1 = server.cpu()
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    errors = sorted((r["error"] for r in reports if r["error"]), key=lambda e: e == ABORTED)
    if errors:
        raise RuntimeError(f"{server.name}: load worker failed: {errors[0]}")
    tallies = [t for r in reports for t in r["tallies"]]
    ids = array("q")
    for t in tallies:
        ids.frombytes(t["ids"])
    latencies = sorted(x for t in tallies for x in t["latencies"])
    wall = max(t["finished"] for t in tallies) - start
    n = len(ids)
    return {
        "ids": ids,
        "records": n,
        "seconds": wall,
        "records_per_s": n / wall,
        "mb_per_s": n * RECORD_SIZE / wall / 1e6,
        "calls": sum(t["calls"] for t in tallies),
        "failed_records_retried": sum(t["failed_records"] for t in tallies),
        "throttled_calls": sum(t["throttled_calls"] for t in tallies),
        "corrupted_records": sum(t["corrupted"] for t in tallies),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_ms_per_1000": 1e6 * (cpu1 - cpu0) / n if n else None,
        "client_cpu_ms_per_1000": 1e6 * sum(r["cpu"] for r in reports) / n if n else None,
    }


# -- servers -----------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, its reaped children and its live descendants (any worker processes)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                total += tree_cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Server:
    """A server process started for one run, its endpoint and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def kinesalite_dir() -> Path:
    return Path(os.environ.get("KINESALITE_DIR") or Path.home() / ".cache" / "firehose-bench" / "kinesalite")


def ensure_kinesalite() -> Path:
    """Install the pinned kinesalite with npm (once) and return its package directory.

    Optional dependencies are left out: leveldown is only loaded for an on-disk store (``--path``),
    and the in-memory store (memdown) is what is measured here.
    """
    package = kinesalite_dir() / "node_modules" / "kinesalite"
    try:
        if json.loads((package / "package.json").read_text())["version"] == KINESALITE_VERSION:
            return package
    except (OSError, ValueError, KeyError):
        pass
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        print("kinesalite needs Node.js and npm (e.g. `apt-get install nodejs npm`); "
              "run with --only firehose to skip it", file=sys.stderr)
        raise SystemExit(2)
    kinesalite_dir().mkdir(parents=True, exist_ok=True)
    print(f"installing kinesalite@{KINESALITE_VERSION} with npm into {kinesalite_dir()}", file=sys.stderr)
    subprocess.run([npm, "install", "--prefix", str(kinesalite_dir()), "--omit=optional", "--no-audit",
                    "--no-fund", "--loglevel=error", f"kinesalite@{KINESALITE_VERSION}"], check=True)
    return package


#: Starts kinesalite through its module so that it can be bound to loopback (its CLI binds every interface).
KINESALITE_MAIN = (
    "const [pkg, port] = process.argv.slice(1);"
    "require(pkg)({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0})"
    ".listen(+port, '127.0.0.1', () => console.log('listening on ' + port));"
)


def start_kinesalite(workdir: Path) -> Server:
    package = ensure_kinesalite()
    port = free_port()
    log = workdir / "kinesalite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([shutil.which("node") or "node", "-e", KINESALITE_MAIN, str(package), str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    return Server("kinesalite", proc, f"http://127.0.0.1:{port}", log)


def start_firehose(workdir: Path, *, encrypted: bool = False, limits: bool = False) -> Server:
    """``encrypted``: with a keyring (one random key), and the stream encrypted at rest once created;
    ``limits``: AWS's per-shard limits enforced (``kinesis.enforce_limits``)."""
    port = free_port()
    log = workdir / "firehose.log"
    config: list[str] = []
    settings: dict[str, Any] = {}
    if encrypted:
        (workdir / "keys").mkdir(exist_ok=True)
        (workdir / "keys" / "bench.key").write_text(os.urandom(32).hex())
        settings["encryption"] = {"keys_dir": str(workdir / "keys")}
    if limits:
        settings["kinesis"] = {"enforce_limits": True}
    if settings:
        (workdir / "firehose.yaml").write_text(json.dumps(settings))
        config = ["--config", str(workdir / "firehose.yaml")]
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "firehose", "streams", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--state-dir", str(workdir / "state"), *config],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return Server("firehose-kms" if encrypted else "firehose", proc, f"http://127.0.0.1:{port}", log)


TARGETS: dict[str, Callable[[Path], Server]] = {"kinesalite": start_kinesalite, "firehose": start_firehose,
                                                "firehose-kms": functools.partial(start_firehose, encrypted=True)}


def wait_ready(server: Server, timeout: float = 60) -> None:
    """Poll ListStreams until the server answers it (a cheap call both servers have)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        client = RawClient(server.endpoint)
        try:
            client.call("ListStreams", {})
            return
        except (OSError, http.client.HTTPException, ApiError):
            time.sleep(0.05)
        finally:
            client.close()
    raise RuntimeError(f"{server.name} did not answer ListStreams within {timeout:.0f} s:\n{server.log_tail()}")


def create_stream(server: Server, shards: int) -> list[str]:
    """Create the stream, wait until it is ACTIVE, and return its shard ids."""
    client = RawClient(server.endpoint)
    try:
        client.call("CreateStream", {"StreamName": STREAM, "ShardCount": shards})
        deadline = time.monotonic() + 60
        if server.name == "firehose-kms":  # encryption at rest: StartStreamEncryption once it is ACTIVE
            while client.call("DescribeStreamSummary", {"StreamName": STREAM})[
                    "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
                time.sleep(0.02)
            client.call("StartStreamEncryption", {"StreamName": STREAM, "EncryptionType": "KMS",
                                                  "KeyId": "alias/aws/kinesis"})
        while client.call("DescribeStreamSummary", {"StreamName": STREAM})[
                "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: stream not ACTIVE after 60 s")
            time.sleep(0.02)
        try:
            found = client.call("ListShards", {"StreamName": STREAM})["Shards"]
        except ApiError:
            found = client.call("DescribeStream", {"StreamName": STREAM})["StreamDescription"]["Shards"]
        return [str(s["ShardId"]) for s in found]
    finally:
        client.close()


# -- one run -----------------------------------------------------------------------------------------


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) in ``parts`` contiguous ranges, so that every load thread owns its own ids."""
    edges = [n * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def verify(acked: array, read: array, n: int) -> dict[str, int]:
    """Count acknowledged ids not read back (lost), read more than once (duplicated), and read but
    never acknowledged or out of range (unknown)."""
    was_acked = bytearray(n)
    for rid in acked:
        was_acked[rid] = 1
    seen = bytearray(n)
    unknown = duplicated = 0
    for rid in read:
        if not 0 <= rid < n or not was_acked[rid]:
            unknown += 1
        elif seen[rid]:
            duplicated += 1
        else:
            seen[rid] = 1
    lost = sum(was_acked) - sum(seen)
    return {"acknowledged": len(acked), "read": len(read), "lost": lost, "duplicated": duplicated,
            "unknown": unknown}


def bench_target(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start one server, put ``args.records`` records, read them all back, check them, stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = TARGETS[name](workdir)
    try:
        wait_ready(server)
        shards = create_stream(server, args.shards)
        ranges = split(args.records, args.processes * args.threads)
        put = run_phase(server, [(_put_jobs, (args.client, server.endpoint, STREAM,
                                                 ranges[i * args.threads:(i + 1) * args.threads]))
                                 for i in range(args.processes)])
        get = run_phase(server, [(_get_jobs, (args.client, server.endpoint, STREAM, shard))
                                 for shard in shards])
        check = verify(put.pop("ids"), get.pop("ids"), args.records)
        check["corrupted"] = get["corrupted_records"]
        if server.proc.poll() is not None:
            raise RuntimeError(f"{name} exited during the run:\n{server.log_tail()}")
        return {"target": name, "shards": shards, "put": put, "get": get, "check": check}
    finally:
        server.stop()


def run_once(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results = {name: bench_target(name, args, workdir / name) for name in args.only}
    ratios: dict[str, float] = {}
    if "kinesalite" in results and "firehose" in results:
        for phase in ("put", "get"):
            ratios[phase] = (results["firehose"][phase]["records_per_s"]
                             / results["kinesalite"][phase]["records_per_s"])
    return {"targets": results, "ratios": ratios}


# -- fan-out: SubscribeToShard next to GetRecords polling -------------------------------------------
#
# ``--fanout``: FANOUT_CONSUMERS consumers read streams of FANOUT_SHARDS shards either way:
#
# * fanout: each consumer holds one SubscribeToShard per shard and reads what the event stream pushes;
# * polling: each consumer polls every shard as the KCL's polling consumer does by default: GetRecords
#   with Limit 10,000, at least KCL_IDLE_S (1.5 s, its idleTimeBetweenReadsInMillis) from one
#   successful call to the next whatever it returned, and KCL_IDLE_S again after a
#   ProvisionedThroughputExceededException.
#
# Two parts, one invocation:
#
# 1. **Live, no limits** (one server with AWS's limits off, as by default): ``--fanout-rounds`` rounds of
#    a put-only phase, then each way of reading (which one first alternates), each on a fresh stream,
#    consumers starting at LATEST before the producer puts ``--fanout-records`` records flat out
#    (2 connections, 500 per call). Per phase: records/s
#    delivered (both consumers' records over the wall time from the first put to the last record
#    received), put-to-receive latency from the acknowledgement of the PutRecords call that stored a
#    record to the read that returned it (p50/p99; a record received before its producer saw the
#    acknowledgement counts 0), and the server's CPU per 1,000 records delivered, total (PutRecords
#    included, the same in every phase) and the read side alone (minus the round's put-only phase's);
#    each figure is the median of the rounds (the machine is shared: one round can be off by 20 %).
# 2. **Backlog, AWS's limits on**: two streams preloaded with the same ``--fanout-backlog`` records
#    (with the limits off), then the server restarted on the same state with
#    ``kinesis.enforce_limits`` (per shard: 5 GetRecords calls/s and 2 MiB/s shared by every polling
#    consumer, 2 MiB/s per fan-out consumer, 1 MiB/s and 1,000 records/s of writes). Consumers start
#    at TRIM_HORIZON while a producer keeps putting LIVE_RATE records/s (within the write limits).
#    Per consumer: the records it received until it had the whole backlog, over that time (one that
#    has caught up reads on, as it would, until the other has too); the figure is the mean of the
#    consumers. This is what enhanced fan-out is for: a polling consumer
#    shares a shard's 2 MiB/s with the others, a fan-out consumer has its own.

FANOUT_SHARDS = 4
FANOUT_CONSUMERS = 2
FANOUT_GOALS = {"ratio": 2.0, "p99_ms": 200.0}
#: The KCL's default idleTimeBetweenReadsInMillis (PollingConfig / SimpleRecordsFetcherFactory, KCL 2.x).
KCL_IDLE_S = 1.5
#: Records/s the backlog phases' producer keeps putting (in calls of LIVE_BATCH): about 100 per shard.
LIVE_RATE = 400
LIVE_BATCH = 40
_FRAME_HEAD = 12


def _named_stream(endpoint: str, name: str, shards: int) -> tuple[str, list[str]]:
    client = RawClient(endpoint)
    try:
        client.call("CreateStream", {"StreamName": name, "ShardCount": shards})
        summary = client.call("DescribeStreamSummary", {"StreamName": name})["StreamDescriptionSummary"]
        found = client.call("ListShards", {"StreamName": name})["Shards"]
        return str(summary["StreamARN"]), [str(x["ShardId"]) for x in found]
    finally:
        client.close()


def _event_ids(payload: bytes) -> list[int]:
    heads = DATA_HEAD.findall(payload)
    if len(heads) != payload.count(b'"Data"') or len(heads) != payload.count(DATA_TAIL):
        return [id_of_b64(r["Data"]) for r in orjson.loads(payload)["Records"]]
    return [int.from_bytes(binascii.a2b_base64(h)[:8], "big") for h in heads]


def _subscribe_thread(endpoint: str, consumer: str, shard: str, ready: Any, got: list[tuple[float, list[int]]],
                      errors: list[str], start: str) -> None:
    """One subscription, resubscribing from its continuation when the server ends it (5 minutes)."""
    client = RawClient(endpoint)
    position: dict[str, Any] = {"Type": start}
    first = True
    try:
        while True:
            headers = {**client.headers, "X-Amz-Target": "Kinesis_20131202.SubscribeToShard"}
            client.conn.request("POST", "/", orjson.dumps({"ConsumerARN": consumer, "ShardId": shard,
                                                           "StartingPosition": position}), headers)
            response = client.conn.getresponse()
            if response.status != 200:
                errors.append(f"SubscribeToShard: {response.status} {response.read()[:200]!r}")
                return
            buffer = b""
            while True:
                chunk = response.read1(1 << 20)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= _FRAME_HEAD and len(buffer) >= int.from_bytes(buffer[:4], "big"):
                    total = int.from_bytes(buffer[:4], "big")
                    head = int.from_bytes(buffer[4:8], "big")
                    headers_raw, payload = buffer[_FRAME_HEAD:_FRAME_HEAD + head], buffer[_FRAME_HEAD + head:total - 4]
                    buffer = buffer[total:]
                    if b"SubscribeToShardEvent" not in headers_raw:
                        continue
                    if first:
                        ready.release()
                        first = False
                    ids = _event_ids(payload)
                    if ids:
                        got.append((time.time(), ids))
                    cont = MILLIS_BEHIND.search(payload) and re.search(rb'"ContinuationSequenceNumber":"(\d+)"',
                                                                       payload)
                    if cont:
                        position = {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": cont.group(1).decode()}
            time.sleep(1.0)  # one subscribe per second per consumer and shard
    except Exception as exc:  # reported by the process
        errors.append(repr(exc))


def _poll_thread(endpoint: str, stream: str, shard: str, ready: Any, got: list[tuple[float, list[int]]],
                 errors: list[str], start: str) -> None:
    """One shard read as the KCL's polling consumer reads it by default (see KCL_IDLE_S)."""
    client = RawClient(endpoint)
    try:
        iterator: str | None = str(client.call("GetShardIterator", {"StreamName": stream, "ShardId": shard,
                                                                    "ShardIteratorType": start})["ShardIterator"])
        ready.release()
        last = 0.0
        while iterator:
            if (idle := last + KCL_IDLE_S - time.monotonic()) > 0:
                time.sleep(idle)
            try:
                ids, iterator, _behind, _bad = client.get_records(iterator, GET_LIMIT)
            except ApiError as exc:
                if exc.kind != "ProvisionedThroughputExceededException":
                    raise
                time.sleep(KCL_IDLE_S)
                continue
            last = time.monotonic()
            if ids:
                got.append((time.time(), ids))
    except Exception as exc:
        errors.append(repr(exc))


def _consumer_process(kind: str, endpoint: str, target: str, shards: list[str], expected: int, out: Any,
                      ready: Any, start: str = "LATEST", backlog: int = 0, finish: Any = None) -> None:
    """One consumer (every shard, a thread each) until it has ``expected`` records, or with ``backlog``,
    every id below it (the rest are live records put meanwhile); reports what it received, then with
    ``finish`` reads on (as a consumer that caught up does, taking its share of the shard's limits)
    until that is set."""
    got: list[tuple[float, list[int]]] = []
    errors: list[str] = []
    run = _subscribe_thread if kind == "fanout" else _poll_thread
    cpu0 = time.process_time()
    for shard in shards:
        threading.Thread(target=run, args=(endpoint, target, shard, ready, got, errors, start), daemon=True).start()
    deadline = time.monotonic() + 900
    seen = 0
    while not errors and time.monotonic() < deadline:
        batches = list(got)
        if backlog:
            seen = sum(1 for _t, ids in batches for rid in ids if rid < backlog)
            if seen >= backlog:
                break
        elif sum(len(ids) for _t, ids in batches) >= expected:
            break
        time.sleep(0.05 if backlog else 0.02)
    times = array("d")
    ids_out = array("q")
    for t, ids in list(got):
        ids_out.extend(ids)
        times.extend([t] * len(ids))
    out.put({"ids": ids_out.tobytes(), "times": times.tobytes(), "errors": errors,
             "cpu": time.process_time() - cpu0})
    if finish is not None:
        finish.wait(900)


def _produce(endpoint: str, stream: str, n: int, threads: int = 2) -> tuple[float, array]:
    """Put records [0, n) in 500-record calls from ``threads`` connections; (start, ack time per call)."""
    acks = array("d", [0.0]) * ((n + BATCH - 1) // BATCH)
    batches = [(b, list(range(b * BATCH, min(n, (b + 1) * BATCH)))) for b in range(len(acks))]
    bodies = {b: RawClient.prepare_put(None, stream, ids) for b, ids in batches}  # type: ignore[arg-type]

    def work(mine: list[tuple[int, list[int]]]) -> None:
        client = RawClient(endpoint)
        for b, ids in mine:
            while client.put_records(bodies[b], ids):
                time.sleep(0.01)  # none fail with the server's limits off; retried whole if one did
            acks[b] = time.time()
        client.close()

    start = time.time()
    workers = [threading.Thread(target=work, args=(batches[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return start, acks


def _fanout_phase(server: Server, kind: str, n: int, name: str) -> dict[str, Any]:
    """Put ``n`` records into a new stream ``name`` while FANOUT_CONSUMERS consumers read them (``kind``:
    fanout, polling or none)."""
    arn, shards = _named_stream(server.endpoint, name, FANOUT_SHARDS)
    ctx = mp.get_context("fork")
    out, ready = ctx.Queue(), ctx.Semaphore(0)
    procs = []
    if kind != "none":
        targets = [name] * FANOUT_CONSUMERS
        if kind == "fanout":
            client = RawClient(server.endpoint)
            targets = [str(client.call("RegisterStreamConsumer", {"StreamARN": arn, "ConsumerName": f"c{i}"})[
                "Consumer"]["ConsumerARN"]) for i in range(FANOUT_CONSUMERS)]
            client.close()
        procs = [ctx.Process(target=_consumer_process, args=(kind, server.endpoint, t, shards, n, out, ready))
                 for t in targets]
        for p in procs:
            p.start()
        for _ in range(len(procs) * len(shards)):
            if not ready.acquire(timeout=60):
                raise RuntimeError(f"{kind}: consumers did not start")
    cpu0 = server.cpu()
    start, acks = _produce(server.endpoint, name, n)
    reports = [out.get(timeout=660) for _ in procs]
    cpu1 = server.cpu()
    for p in procs:
        p.join(10)
    result: dict[str, Any] = {"records": n, "server_cpu_s": cpu1 - cpu0,
                              "put_records_per_s": n / (max(acks) - start)}
    if not procs:
        return result
    errors = [e for r in reports for e in r["errors"]]
    if errors:
        raise RuntimeError(f"{kind}: consumer failed: {errors[0]}")
    latencies: list[float] = []
    last = 0.0
    delivered = 0
    for r in reports:
        ids, times = array("q"), array("d")
        ids.frombytes(r["ids"])
        times.frombytes(r["times"])
        check = verify(array("q", range(n)), ids, n)
        if check["lost"] or check["duplicated"] or check["unknown"]:
            raise RuntimeError(f"{kind}: a consumer read {check}")
        delivered += len(ids)
        last = max(last, max(times))
        latencies += [max(0.0, t - acks[rid // BATCH]) for rid, t in zip(ids, times, strict=True)]
    latencies.sort()
    result.update(delivered=delivered, delivered_per_s=delivered / (last - start),
                  p50_ms=1000 * latencies[len(latencies) // 2],
                  p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                  server_cpu_ms_per_1000=1e6 * (cpu1 - cpu0) / delivered,
                  client_cpu_ms_per_1000=1e6 * sum(r["cpu"] for r in reports) / delivered)
    return result


def _produce_live(endpoint: str, stream: str, first_id: int, stop: threading.Event, acked: list[int]) -> None:
    """LIVE_RATE records/s in calls of LIVE_BATCH, ids from ``first_id``, until ``stop``; throttled
    records are put again."""
    client = RawClient(endpoint)
    rid, began = first_id, time.monotonic()
    try:
        while not stop.is_set():
            ids = list(range(rid, rid + LIVE_BATCH))
            while ids and not stop.is_set():
                ids = client.put_records(client.prepare_put(stream, ids), ids)
                if ids:
                    time.sleep(0.05)
            rid += LIVE_BATCH
            acked[0] = rid - first_id
            stop.wait(max(0.0, began + (rid - first_id) / LIVE_RATE - time.monotonic()))
    finally:
        client.close()


def _backlog_phase(server: Server, kind: str, name: str, targets: list[str], shards: list[str],
                   backlog: int) -> dict[str, Any]:
    """FANOUT_CONSUMERS consumers read ``name`` from TRIM_HORIZON (``backlog`` records there) while live
    records keep arriving, each until it has the whole backlog."""
    ctx = mp.get_context("fork")
    out, ready, finish = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    stop, live = threading.Event(), [0]
    producer = threading.Thread(target=_produce_live, args=(server.endpoint, name, backlog, stop, live))
    start = time.time()
    producer.start()
    procs = [ctx.Process(target=_consumer_process, args=(kind, server.endpoint, t, shards, 0, out, ready,
                                                         "TRIM_HORIZON", backlog, finish)) for t in targets]
    for p in procs:
        p.start()
    try:
        reports = [out.get(timeout=960) for _ in procs]
    finally:
        finish.set()
        stop.set()
        producer.join()
        for p in procs:
            p.join(10)
    errors = [e for r in reports for e in r["errors"]]
    if errors:
        raise RuntimeError(f"{kind} (backlog): consumer failed: {errors[0]}")
    rates, took = [], []
    for r in reports:
        ids, times = array("q"), array("d")
        ids.frombytes(r["ids"])
        times.frombytes(r["times"])
        caught_up = max(t for rid, t in zip(ids, times, strict=True) if rid < backlog)
        check = verify(array("q", range(backlog)), array("q", (rid for rid in ids if rid < backlog)), backlog)
        if check["lost"] or check["duplicated"] or check["unknown"]:
            raise RuntimeError(f"{kind} (backlog): a consumer read {check}")
        received = sum(1 for t in times if t <= caught_up)
        rates.append(received / (caught_up - start))
        took.append(caught_up - start)
    return {"backlog": backlog, "live_records": live[0], "per_consumer_records_per_s": rates,
            "records_per_s_per_consumer": statistics.mean(rates), "seconds_to_catch_up": took}


def _preload(endpoint: str, name: str, n: int) -> list[str]:
    _arn, shards = _named_stream(endpoint, name, FANOUT_SHARDS)
    _produce(endpoint, name, n)
    return shards


def bench_fanout(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    backlog = args.fanout_backlog
    server = start_firehose(workdir)
    try:
        wait_ready(server)
        n = args.fanout_records
        _preload(server.endpoint, "warm-up", min(n, 20_000))  # the first calls' one-off costs out of the figures
        rounds = []
        for r in range(args.fanout_rounds):  # the two ways in turn first: neither always follows the other
            order = ("none", "fanout", "polling") if r % 2 == 0 else ("none", "polling", "fanout")
            got = {kind: _fanout_phase(server, kind, n, f"{kind}-{n}-{r}") for kind in order}
            for kind in ("fanout", "polling"):
                p = got[kind]
                p["read_cpu_ms_per_1000"] = 1e6 * (p["server_cpu_s"] - got["none"]["server_cpu_s"]) / p["delivered"]
            rounds.append(got)
        phases: dict[str, Any] = {kind: {key: statistics.median(r[kind][key] for r in rounds)
                                         for key in rounds[0][kind]} for kind in ("none", "fanout", "polling")}
        phases["rounds"] = rounds
        shards = {kind: _preload(server.endpoint, f"backlog-{kind}", backlog) for kind in ("fanout", "polling")}
    finally:
        server.stop()
    server = start_firehose(workdir, limits=True)  # the same state: the backlogs are there
    try:
        wait_ready(server)
        client = RawClient(server.endpoint)
        arn = client.call("DescribeStreamSummary", {"StreamName": "backlog-fanout"})[
            "StreamDescriptionSummary"]["StreamARN"]
        consumers = [str(client.call("RegisterStreamConsumer", {"StreamARN": arn, "ConsumerName": f"c{i}"})[
            "Consumer"]["ConsumerARN"]) for i in range(FANOUT_CONSUMERS)]
        client.close()
        limited = {"fanout": _backlog_phase(server, "fanout", "backlog-fanout", consumers, shards["fanout"], backlog),
                   "polling": _backlog_phase(server, "polling", "backlog-polling",
                                             ["backlog-polling"] * FANOUT_CONSUMERS, shards["polling"], backlog)}
        return {**phases, "limited": limited}
    finally:
        server.stop()


def print_fanout(phases: dict[str, Any], args: argparse.Namespace) -> bool:
    """The tables; whether the goals are met."""
    print(f"\n1. Live, limits off: {args.fanout_records:,} records of {RECORD_SIZE} B put in batches of {BATCH} "
          f"into {FANOUT_SHARDS} shards while {FANOUT_CONSUMERS} consumers read them; medians of "
          f"{args.fanout_rounds} rounds (put alone: "
          f"{phases['none']['put_records_per_s']:,.0f} records/s, server CPU "
          f"{1e6 * phases['none']['server_cpu_s'] / args.fanout_records:.1f} ms/1k)")
    print(f"{'consumers':<10} {'delivered rec/s':>16} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/1k':>10} "
          f"{'read CPU ms/1k':>15} {'client ms/1k':>13}")
    for kind in ("fanout", "polling"):
        p = phases[kind]
        print(f"{kind:<10} {p['delivered_per_s']:>16,.0f} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f} "
              f"{p['server_cpu_ms_per_1000']:>10.2f} {p['read_cpu_ms_per_1000']:>15.2f} "
              f"{p['client_cpu_ms_per_1000']:>13.2f}")
    limited = phases["limited"]
    print(f"\n2. Backlog, AWS's limits on: {args.fanout_backlog:,} records at TRIM_HORIZON, {LIVE_RATE} records/s "
          f"put meanwhile; each consumer until it has the backlog")
    print(f"{'consumers':<10} {'records/s per consumer':>23} {'seconds to catch up':>20} {'live put':>9}")
    for kind in ("fanout", "polling"):
        p = limited[kind]
        print(f"{kind:<10} {p['records_per_s_per_consumer']:>23,.0f} "
              f"{' / '.join(f'{t:.1f}' for t in p['seconds_to_catch_up']):>20} {p['live_records']:>9,}")
    f, g = phases["fanout"], phases["polling"]
    ratio = limited["fanout"]["records_per_s_per_consumer"] / limited["polling"]["records_per_s_per_consumer"]
    goals = {f"records/s per consumer with AWS's limits, fan-out / polling {ratio:.2f}x "
             f"(goal >= {FANOUT_GOALS['ratio']:g}x)": ratio >= FANOUT_GOALS["ratio"],
             f"fan-out p99 {f['p99_ms']:.0f} ms (goal < {FANOUT_GOALS['p99_ms']:g} ms)":
             f["p99_ms"] < FANOUT_GOALS["p99_ms"],
             f"server CPU per 1,000 delivered fan-out {f['server_cpu_ms_per_1000']:.2f} vs polling "
             f"{g['server_cpu_ms_per_1000']:.2f} ms (goal: no higher)":
             f["server_cpu_ms_per_1000"] <= g["server_cpu_ms_per_1000"]}
    phases["goals"] = {"ratio": ratio, "fanout_p99_ms": f["p99_ms"],
                       "cpu_ms_per_1000": {"fanout": f["server_cpu_ms_per_1000"],
                                           "polling": g["server_cpu_ms_per_1000"]}}
    for text, met in goals.items():
        print(f"{text}: {'met' if met else 'MISSED'}")
    return all(goals.values())


# -- report ------------------------------------------------------------------------------------------


def spread(values: list[float], fmt: str, unit: str = "") -> str:
    """The median, and the range when there is more than one run."""
    med = format(statistics.median(values), fmt) + unit
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def print_report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    header = ("target", "put rec/s", "put CPU ms/1k", "client ms/1k", "get rec/s", "get CPU ms/1k", "client ms/1k")
    rows = [header]
    for name in args.only:
        got = [run["targets"][name] for run in runs]

        def col(phase: str, key: str, fmt: str, got: list[dict[str, Any]] = got) -> str:
            return spread([g[phase][key] for g in got], fmt)

        rows.append((name, col("put", "records_per_s", ",.0f"), col("put", "server_cpu_ms_per_1000", ".1f"),
                     col("put", "client_cpu_ms_per_1000", ".1f"), col("get", "records_per_s", ",.0f"),
                     col("get", "server_cpu_ms_per_1000", ".1f"), col("get", "client_cpu_ms_per_1000", ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"\n{args.records:,} records of {RECORD_SIZE} B in batches of {BATCH}, {args.shards} shards, "
          f"{args.client} client ({args.processes}x{args.threads} put connections, one reader per shard), "
          f"{len(runs)} run(s); median (range)")
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths,
                                                                                           strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for name in args.only:
        for run in runs:
            t = run["targets"][name]
            c = t["check"]
            throttled = t["put"]["throttled_calls"] + t["get"]["throttled_calls"]
            print(f"{name}: acknowledged {c['acknowledged']:,}, read {c['read']:,}, lost {c['lost']}, "
                  f"duplicated {c['duplicated']}, unknown {c['unknown']}, corrupted {c['corrupted']}; "
                  f"retried {t['put']['failed_records_retried']} failed records, {throttled} throttled calls")
    if "firehose" in args.only and "firehose-kms" in args.only:
        for phase, label in (("put", "PutRecords"), ("get", "GetRecords")):
            values = [run["targets"]["firehose-kms"][phase]["records_per_s"]
                      / run["targets"]["firehose"][phase]["records_per_s"] for run in runs]
            print(f"encrypted / plain, {label} records/s: {spread(values, '.2f', 'x')}")
    if runs[0]["ratios"]:
        for phase, label in (("put", "PutRecords"), ("get", "GetRecords")):
            values = [run["ratios"][phase] for run in runs]
            met = statistics.median(values) >= GOALS[phase]
            print(f"firehose / kinesalite, {label} records/s: {spread(values, '.2f', 'x')} "
                  f"(goal >= {GOALS[phase]:g}x: {'met' if met else 'MISSED'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records to put (and read back) per server")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--client", choices=("raw", "boto3"), default="raw")
    parser.add_argument("--processes", type=int, help="put client processes (default 2 raw, 3 boto3)")
    parser.add_argument("--threads", type=int, help="put connections per process (default 2 raw, 3 boto3)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole comparison; median and range")
    parser.add_argument("--only", default="kinesalite,firehose", help="comma-separated targets")
    parser.add_argument("--keep", action="store_true", help="keep the servers' working directories")
    parser.add_argument("--fanout", action="store_true",
                        help="instead: SubscribeToShard next to GetRecords polling on firehose (see FANOUT_SHARDS)")
    parser.add_argument("--fanout-records", type=int, default=100_000, help="records put in each live fan-out phase")
    parser.add_argument("--fanout-rounds", type=int, default=3,
                        help="rounds of the live fan-out phases (each figure is the median of the rounds)")
    parser.add_argument("--fanout-backlog", type=int, default=100_000,
                        help="records waiting at TRIM_HORIZON in each fan-out phase with AWS's limits")
    args = parser.parse_args()
    if args.fanout:
        return main_fanout(args)
    args.only = [t for t in args.only.split(",") if t]
    if unknown := set(args.only) - set(TARGETS):
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    args.processes = args.processes or (3 if args.client == "boto3" else 2)
    args.threads = args.threads or (3 if args.client == "boto3" else 2)

    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-streams-"))
    runs = []
    try:
        for i in range(args.repeat):
            runs.append(run_once(args, workdir / f"run{i}"))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(runs, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"streams-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "kinesalite_version": KINESALITE_VERSION,
                               "record_size": RECORD_SIZE, "batch": BATCH, "get_limit": GET_LIMIT,
                               "runs": runs}, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    bad = [run["targets"][n]["check"] for run in runs for n in args.only]
    if any(c["lost"] or c["duplicated"] or c["unknown"] or c["corrupted"] for c in bad):
        print("FAILED: records lost, duplicated, unknown or corrupted", file=sys.stderr)
        return 1
    if runs[0]["ratios"] and any(statistics.median([r["ratios"][p] for r in runs]) < GOALS[p] for p in GOALS):
        return 1
    return 0


def main_fanout(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="firehose-bench-fanout-"))
    try:
        phases = bench_fanout(args, workdir / "firehose")
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    met = print_fanout(phases, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"streams-fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "record_size": RECORD_SIZE, "batch": BATCH,
                               "shards": FANOUT_SHARDS, "consumers": FANOUT_CONSUMERS, "kcl_idle_s": KCL_IDLE_S,
                               "live_rate": LIVE_RATE, "phases": phases}, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
