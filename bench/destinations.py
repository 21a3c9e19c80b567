"""Destination benchmark: the daemon delivering a backlog, next to the same server driven by its own client.

For each destination, in one run, on loopback, with the same N records of about 200 bytes of JSON:

* **daemon**: the records are put (PutRecordBatch) while the destination is down, so they wait in
  the spool; the daemon is stopped, the server started, and the daemon started again. Measured:
  from the daemon answering /readyz with 200 (which waits for worker processes a stream needs)
  until it delivered its last batch (the ``last_delivery_ms`` /readyz reports, once it is idle
  and the server holds every record), so the figure is delivery alone (spool read, batching,
  encoding, the protocol, retries of nothing), and the CPU time of the daemon and its worker
  processes per 1,000 records over that span (until it is seen idle).
* **direct**: the same records, in batches of the same size, sent by the usual client library
  for that server, one request at a time:

  ==============  ===============================  ==========================================
  destination     server                           direct client
  ==============  ===============================  ==========================================
  opensearch      osmem-server (OpenSearch API)    opensearch-py ``helpers.bulk``
  redshift        PostgreSQL (``jdbc:postgresql``)  psycopg ``COPY ... FROM STDIN`` (rows)
  splunk          the HEC receiver of the tests    httpx: raw POSTs of 1 MB, then ack polling
  http_endpoint   the receiver of the tests        httpx: protocol requests (base64 JSON)
  iceberg         a SQLite catalog, file warehouse  pyiceberg ``table.append`` of the same batches
                                                   as Arrow tables (read from JSON beforehand)
  ==============  ===============================  ==========================================

  Iceberg's "server down" is its catalog's directory being a file while the records are put; the
  daemon then reads the JSON records into Arrow itself, the direct side is given them as Arrow.

  The Splunk and HTTP endpoint receivers are the Python stand-ins from ``tests/support/receivers``: the
  same for both sides, so the ratio compares the senders.

    python bench/destinations.py [--records 100000] [--only opensearch,redshift] [--repeat 3]
                                 [--settings JSON] [--json FILE]

With ``--repeat``, each destination is measured that many times (a fresh daemon and server each
time) and its median ratio is the one held against the goal: single runs on a small, shared
machine vary by a tenth either way.

Goal: the daemon delivers at least 80% of the direct records/s for every destination.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
import orjson  # noqa: E402
from ingest import cpu_seconds, free_port, wait_http  # noqa: E402


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (the daemon's worker processes)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += cpu_seconds(int(stat.parent.name))
    return total

ROLE = "arn:aws:iam::123456789012:role/bench"
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::stage"}
BATCH_MB = 4
BATCH_BYTES = BATCH_MB * 1024 * 1024
SPLUNK_REQUEST_BYTES = 1_000_000


def make_records(n: int) -> list[bytes]:
    kinds = ["click", "view", "purchase", "signup"]
    return [orjson.dumps({"id": i, "name": f"user-{i % 9973:05d}-{'x' * 120}", "kind": kinds[i % 4],
                          "n": i * 0.5}) + b"\n" for i in range(n)]


def batches(records: list[bytes], limit: int = BATCH_BYTES) -> Iterator[list[bytes]]:
    out: list[bytes] = []
    size = 0
    for r in records:
        if out and size + len(r) > limit:
            yield out
            out, size = [], 0
        out.append(r)
        size += len(r)
    if out:
        yield out


# -- the daemon ---------------------------------------------------------------------------


#: Daemon settings given with --settings, over the benchmark's own.
SETTINGS: dict[str, Any] = {}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``, section by section."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Daemon:
    """``firehose serve`` as a child process with one delivery stream; ``settings`` (then ``--settings``)
    are laid over the benchmark's own."""

    def __init__(self, workdir: Path, stream: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "firehose.json"
        self.config.write_text(json.dumps(merged(merged({
            "port": self.port, "state_dir": str(workdir / "state"), "log_level": "ERROR",
            "spool": {"max_bytes": "8GiB"}, "buckets": {"stage": {"directory": str(workdir / "stage")}},
            "delivery": {"shutdown_timeout_seconds": 0, "backoff_max_seconds": 0.5},
            "delivery_streams": [stream]}, settings or {}), SETTINGS)))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        self.proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(self.config)],
                                     cwd=REPO)
        wait_http(self.endpoint + "/healthz", timeout=60)
        while not self.ready():
            time.sleep(0.02)
        return time.monotonic()

    def ready(self) -> bool:
        """/readyz answers 200 (the daemon's worker processes, if it needs any, are up)."""
        try:
            with urllib.request.urlopen(self.endpoint + "/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def put_all(self, stream: str, records: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        headers = {"Content-Type": "application/x-amz-json-1.1",
                   "X-Amz-Target": "Firehose_20150804.PutRecordBatch"}
        for i in range(0, len(records), 500):
            body = orjson.dumps({"DeliveryStreamName": stream, "Records": [
                {"Data": base64.b64encode(r).decode()} for r in records[i:i + 500]]})
            conn.request("POST", "/", body, headers)
            answer = orjson.loads(conn.getresponse().read())
            if answer.get("FailedPutCount"):
                raise RuntimeError(f"put failed: {answer}")
        conn.close()

    def idle(self, stream: str) -> tuple[bool, int | None]:
        """Whether the stream is idle, and when it last delivered a batch (epoch ms)."""
        with urllib.request.urlopen(self.endpoint + "/readyz", timeout=5) as r:
            state = json.loads(r.read())["streams"][stream]
            return bool(state["idle"]), state["last_delivery_ms"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def drain(workdir: Path, stream: dict[str, Any], records: list[bytes],
          start_server: Callable[[], Any], delivered: Callable[[], int]) -> dict[str, Any]:
    """Spool the records with the destination down, then time the daemon delivering them."""
    daemon = Daemon(workdir, stream)
    name = stream["DeliveryStreamName"]
    try:
        daemon.start()
        daemon.put_all(name, records)
        daemon.stop()
        os.sync()  # the spool just written is on disk: no writeback of it competes with the drain
        with start_server():
            started = daemon.start()
            started_epoch = time.time()
            assert daemon.proc is not None
            cpu0 = tree_cpu_seconds(daemon.proc.pid)
            deadline = started + 600
            # The server is asked for its count only once the daemon says it is idle: polling it
            # meanwhile would load the server the daemon is being measured against. The clock
            # stops when the daemon delivered its last batch (as /readyz reports it), not when
            # this loop next looks, nor after the count.
            while True:
                idle, last_delivery_ms = daemon.idle(name)
                if idle and last_delivery_ms is not None and delivered() >= len(records):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: {delivered()} of {len(records)} delivered after 600 s")
                time.sleep(0.1)  # each look costs the daemon a request; when it ended does not depend on it
            elapsed = last_delivery_ms / 1000 - started_epoch
            cpu = tree_cpu_seconds(daemon.proc.pid) - cpu0
            count = delivered()
    finally:
        daemon.stop()
    if count != len(records):
        raise RuntimeError(f"{name}: {count} records delivered, {len(records)} sent")
    return {"records_per_s": len(records) / elapsed, "seconds": elapsed,
            "cpu_ms_per_1000_records": cpu / len(records) * 1e6}


def timed(fn: Callable[[], None]) -> float:
    os.sync()  # nothing written before (the daemon's run) is written back meanwhile
    started = time.monotonic()
    fn()
    return time.monotonic() - started


# -- OpenSearch ------------------------------------------------------------------------------


def bench_opensearch(workdir: Path, records: list[bytes]) -> dict[str, Any]:
    from opensearchpy import OpenSearch, helpers

    from tests.support.servers import OpenSearchServer

    server = OpenSearchServer()
    port = int(server.url.rsplit(":", 1)[1])
    client = OpenSearch(hosts=[server.url], timeout=120)

    def count(index: str) -> int:
        client.indices.refresh(index=index)
        return int(client.count(index=index)["count"])

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        server.start()
        try:
            yield
        finally:
            server.stop()

    stream = {"DeliveryStreamName": "search", "AmazonopensearchserviceDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterEndpoint": f"http://127.0.0.1:{port}", "IndexName": "daemon",
        "IndexRotationPeriod": "NoRotation", "BufferingHints": {"SizeInMBs": BATCH_MB, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": 7200}, "S3Configuration": S3}}

    def daemon_count() -> int:
        try:
            return count("daemon")
        except Exception:
            return 0

    daemon = drain(workdir / "os", stream, records, running, daemon_count)
    with running():
        def direct() -> None:
            actions = ({"_index": "direct", "_id": f"d-{i}", "_source": orjson.loads(r)} for i, r in enumerate(records))
            helpers.bulk(client, actions, chunk_size=len(records), max_chunk_bytes=BATCH_BYTES, refresh=False)
        seconds = timed(direct)
        assert count("direct") == len(records)
    client.close()
    return result("opensearch", "opensearch-py helpers.bulk", records, daemon, seconds)


# -- Redshift / PostgreSQL ------------------------------------------------------------------------


def bench_redshift(workdir: Path, records: list[bytes]) -> dict[str, Any]:
    from tests.support.servers import PostgresServer

    port = free_port()
    pg = PostgresServer(port=port)  # the daemon's first attempts find nothing listening there
    table = "CREATE TABLE {} (id bigint, name text, kind text, n double precision)"
    url = f"jdbc:postgresql://127.0.0.1:{port}/warehouse"

    stream = {"DeliveryStreamName": "rows", "RedshiftDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterJDBCURL": url, "Username": pg.user, "Password": pg.password,
        "CopyCommand": {"DataTableName": "events", "DataTableColumns": "id,name,kind,n",
                        "CopyOptions": "JSON 'auto'"},
        "RetryOptions": {"DurationInSeconds": 7200},
        "S3Configuration": {**S3, "BufferingHints": {"SizeInMBs": BATCH_MB, "IntervalInSeconds": 0}}}}

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        pg.start()
        try:
            with pg.connect() as conn:
                conn.execute(table.format("events"))
                conn.execute(table.format("direct"))
            yield
        finally:
            pg.stop()

    def daemon_count() -> int:
        try:
            with pg.connect() as conn:
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]
        except Exception:
            return 0

    daemon = drain(workdir / "pg", stream, records, running, daemon_count)
    with running():
        with pg.connect() as conn:
            conn.autocommit = False

            def direct() -> None:
                for batch in batches(records):
                    with conn.cursor() as cur, cur.copy("COPY direct (id, name, kind, n) FROM STDIN") as copy:
                        for r in batch:
                            doc = orjson.loads(r)
                            copy.write_row((doc["id"], doc["name"], doc["kind"], doc["n"]))
                    conn.commit()
            seconds = timed(direct)
            assert conn.execute("SELECT count(*) FROM direct").fetchone() == (len(records),)
    return result("redshift", "psycopg COPY FROM STDIN", records, daemon, seconds)


# -- Splunk HEC --------------------------------------------------------------------------------


def bench_splunk(workdir: Path, records: list[bytes]) -> dict[str, Any]:
    from tests.support.receivers.splunk import TOKEN, SplunkReceiver

    port = free_port()
    holder: dict[str, SplunkReceiver] = {}

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        with SplunkReceiver(port=port) as hec:
            holder["hec"] = hec
            yield

    def indexed() -> int:
        hec = holder.get("hec")
        return 0 if hec is None else sum(req.body.count(b"\n") for req in list(hec.indexed))

    stream = {"DeliveryStreamName": "hec", "SplunkDestinationConfiguration": {
        "HECEndpoint": f"http://127.0.0.1:{port}", "HECEndpointType": "Raw", "HECToken": TOKEN,
        "HECAcknowledgmentTimeoutInSeconds": 180, "BufferingHints": {"SizeInMBs": BATCH_MB, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": 7200}, "S3Configuration": S3}}
    daemon = drain(workdir / "splunk", stream, records, running, indexed)
    with running():
        channel = str(uuid.uuid4())
        headers = {"Authorization": f"Splunk {TOKEN}", "X-Splunk-Request-Channel": channel,
                   "Content-Type": "application/json"}

        def direct() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
                for batch in batches(records):
                    acks = [client.post("/services/collector/raw", content=b"".join(part)).json()["ackId"]
                            for part in batches(batch, SPLUNK_REQUEST_BYTES)]
                    while acks:
                        done = client.post("/services/collector/ack", json={"acks": acks}).json()["acks"]
                        acks = [a for a in acks if not done.get(str(a))]
                        if acks:
                            time.sleep(0.1)
        seconds = timed(direct)
        assert indexed() == len(records)
    return result("splunk", "httpx raw POST + ack polling", records, daemon, seconds)


# -- HTTP endpoint -----------------------------------------------------------------------------


def bench_http_endpoint(workdir: Path, records: list[bytes]) -> dict[str, Any]:
    from tests.support.receivers.http_endpoint import HttpEndpointReceiver

    port = free_port()
    holder: dict[str, HttpEndpointReceiver] = {}

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        with HttpEndpointReceiver(port=port) as receiver:
            holder["r"] = receiver
            yield

    def accepted() -> int:
        r = holder.get("r")
        return 0 if r is None else len(r.accepted())

    stream = {"DeliveryStreamName": "hook", "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": f"http://127.0.0.1:{port}/ingest", "Name": "bench"},
        "BufferingHints": {"SizeInMBs": BATCH_MB, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": 7200}, "S3Configuration": S3}}
    daemon = drain(workdir / "http", stream, records, running, accepted)
    with running():
        def direct() -> None:
            with httpx.Client(timeout=60) as client:
                for batch in batches(records):
                    rid = str(uuid.uuid4())
                    body = orjson.dumps({"requestId": rid, "timestamp": int(time.time() * 1000),
                                         "records": [{"data": base64.b64encode(r).decode()} for r in batch]})
                    answer = client.post(f"http://127.0.0.1:{port}/ingest", content=body, headers={
                        "Content-Type": "application/json", "X-Amz-Firehose-Request-Id": rid,
                        "X-Amz-Firehose-Protocol-Version": "1.0",
                        "X-Amz-Firehose-Source-Arn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/hook"})
                    assert answer.status_code == 200 and answer.json()["requestId"] == rid
        seconds = timed(direct)
        assert accepted() == len(records)
    return result("http_endpoint", "httpx protocol requests", records, daemon, seconds)


# -- Iceberg ------------------------------------------------------------------------------------


def bench_iceberg(workdir: Path, records: list[bytes]) -> dict[str, Any]:
    import io

    import pyarrow.json as pj
    from pyiceberg.catalog.sql import SqlCatalog

    home = workdir / "catalog"
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("the catalog is down")  # a file where the catalog's directory goes: delivery fails
    schema = pj.read_json(io.BytesIO(b"".join(records[:100]))).schema

    def catalog(where: Path) -> SqlCatalog:
        return SqlCatalog("default", uri=f"sqlite:///{where / 'catalog.db'}", warehouse=(where / "wh").as_uri())

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        home.unlink()
        home.mkdir()
        cat = catalog(home)
        cat.create_namespace("bench")
        cat.create_table(("bench", "events"), schema=schema)
        yield

    def committed() -> int:
        table = catalog(home).load_table(("bench", "events"))
        snap = table.current_snapshot()
        return 0 if snap is None or snap.summary is None else int(snap.summary["total-records"] or 0)

    stream = {"DeliveryStreamName": "ice", "IcebergDestinationConfiguration": {
        "RoleARN": ROLE, "CatalogConfiguration": {},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": "bench", "DestinationTableName": "events"}],
        "BufferingHints": {"SizeInMBs": BATCH_MB, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": 7200}, "S3Configuration": S3}}
    settings = {"catalogs": {"default": {"type": "sql", "uri": f"sqlite:///{home / 'catalog.db'}",
                                         "warehouse": (home / "wh").as_uri()}}}
    global SETTINGS
    saved, SETTINGS = SETTINGS, merged(settings, SETTINGS)
    try:
        daemon = drain(workdir / "ice", stream, records, running, committed)
    finally:
        SETTINGS = saved
    direct_home = workdir / "direct"
    direct_home.mkdir()
    cat = catalog(direct_home)
    cat.create_namespace("bench")
    table = cat.create_table(("bench", "events"), schema=schema)
    arrow = [pj.read_json(io.BytesIO(b"".join(batch)), parse_options=pj.ParseOptions(explicit_schema=schema))
             for batch in batches(records)]
    seconds = timed(lambda: [table.append(t) for t in arrow] and None)
    assert int(table.current_snapshot().summary["total-records"]) == len(records)
    return result("iceberg", "pyiceberg append (Arrow)", records, daemon, seconds)


# -- report --------------------------------------------------------------------------------


def result(name: str, client: str, records: list[bytes], daemon: dict[str, Any], direct_s: float) -> dict[str, Any]:
    direct = len(records) / direct_s
    return {"destination": name, "direct_client": client, "records": len(records),
            "daemon_records_per_s": daemon["records_per_s"], "direct_records_per_s": direct,
            "ratio": daemon["records_per_s"] / direct,
            "daemon_cpu_ms_per_1000_records": daemon["cpu_ms_per_1000_records"]}


BENCHES = {"opensearch": bench_opensearch, "redshift": bench_redshift, "splunk": bench_splunk,
           "http_endpoint": bench_http_endpoint, "iceberg": bench_iceberg}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--search-records", type=int, default=40_000,
                        help="records for opensearch (osmem-server indexes a few thousand documents/s)")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated destinations")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per destination (daemon, then direct, each time); the median ratio counts")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="daemon settings as JSON, laid over the benchmark's own")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    SETTINGS.update(args.settings)
    records = make_records(args.records)
    rows = []
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="firehose-bench-") as tmp:
        for name in args.only.split(","):
            ratios = []
            for run in range(args.repeat):
                workdir = Path(tmp) / f"{name}-{run}"
                workdir.mkdir()
                row = BENCHES[name](workdir, records[:args.search_records] if name == "opensearch" else records)
                shutil.rmtree(workdir)  # hundreds of MB of spool and staged objects: not kept across runs
                rows.append(row)
                ratios.append(row["ratio"])
                print(f"{row['destination']:>14}: daemon {row['daemon_records_per_s']:>9,.0f} records/s "
                      f"(CPU {row['daemon_cpu_ms_per_1000_records']:.1f} ms/1000)   direct "
                      f"{row['direct_records_per_s']:>9,.0f} records/s ({row['direct_client']})   "
                      f"ratio {row['ratio']:.2f}", flush=True)
            medians[name] = statistics.median(ratios)
            if args.repeat > 1:
                print(f"{name:>14}: median ratio {medians[name]:.2f} of {args.repeat} runs "
                      f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    worst = min(medians.values())
    print(f"worst daemon / direct: {worst:.2f} (goal >= 0.80)")
    return 0 if worst >= 0.8 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
