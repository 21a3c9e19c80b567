"""SQL applications: a 10-second tumbling count and sum per key over 1,000,000 JSON records from a Kinesis stream,
next to DuckDB computing the same result directly, in one run.

Both sides read the same records from the same Kinesis stream (the daemon's sidecar, 4 shards, loaded before
either clock starts):

* **the application**: CreateApplication and StartApplication (TRIM_HORIZON) through boto3; its pump counts and
  sums per key and 10-second event-time window (``GROUP BY KEY, STEP(EVENT_TIME BY 10 s), STEP(ROWTIME BY
  10 s)``, AWS's recommended form); its rows go to a delivery stream writing to a local directory. The clock
  runs from StartApplication until the delivered rows account for every record. ROWTIME runs 60 times faster
  than the wall clock (``testing.analytics_clock_rate``) so the last window closes within a fraction of a
  second of its last record instead of up to 10 s later: a window's wait is latency, not work.
* **direct**: GetRecords over every shard with boto3 (the same client the application uses), the records
  joined and read by Arrow's JSON reader, and DuckDB's ``GROUP BY key, time_bucket(10 s, event time)`` over
  the Arrow table.

The results must be identical (the application's partial rows of one key and event window summed, as AWS
says its users do); the goal is the application's records/s at least 0.6 of direct's. The daemon's CPU per
1,000 records is reported too (its process tree, from StartApplication to the last row delivered).

    python bench/analytics.py [--records 1000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import REPO, cpu_seconds, free_port, wait_http  # noqa: E402

GOAL = 0.6
SHARDS = 4
KEYS = 100
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bench"
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
CODE = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (K VARCHAR(8), EVENT_WINDOW TIMESTAMP, N BIGINT, TOTAL DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM K, STEP("SOURCE_SQL_STREAM_001".T BY INTERVAL '10' SECOND), COUNT(*), SUM(V)
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY K, STEP("SOURCE_SQL_STREAM_001".T BY INTERVAL '10' SECOND),
           STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND);
"""
INPUT = {
    "NamePrefix": "SOURCE_SQL_STREAM",
    "KinesisStreamsInput": {"ResourceARN": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/bench", "RoleARN": ROLE},
    "InputSchema": {
        "RecordFormat": {"RecordFormatType": "JSON", "MappingParameters": {"JSONMappingParameters": {
            "RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "K", "SqlType": "VARCHAR(8)", "Mapping": "$.k"},
                          {"Name": "T", "SqlType": "TIMESTAMP", "Mapping": "$.t"},
                          {"Name": "V", "SqlType": "DOUBLE", "Mapping": "$.v"}]}}


def records(n: int) -> list[bytes]:
    """Records of about 100 bytes: a key, an event time over 10 minutes (ISO, ms), a value, some padding."""
    base = 1_767_225_600_000
    out = []
    for i in range(n):
        t = base + (i * 7919) % 600_000
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}"
        out.append(json.dumps({"k": f"key{i % KEYS}", "t": stamp, "v": (i % 1000) / 10,
                               "note": "padding-for-a-hundred-bytes"}).encode())
    return out


def load(kinesis_endpoint: str, data: list[bytes]) -> None:
    import boto3

    chunks = [data[i:i + 500] for i in range(0, len(data), 500)]

    def put(part: list[list[bytes]]) -> None:
        client = boto3.client("kinesis", endpoint_url=kinesis_endpoint, **CREDS)
        for chunk in part:
            resp = client.put_records(StreamName="bench", Records=[
                {"Data": r, "PartitionKey": str(hash(r) % 1000)} for r in chunk])
            assert resp["FailedRecordCount"] == 0
    threads = [threading.Thread(target=put, args=(chunks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def direct(kinesis_endpoint: str, n: int) -> tuple[float, dict[tuple[str, str], tuple[int, float]]]:
    """GetRecords over every shard, Arrow's JSON reader, DuckDB's GROUP BY: seconds and the result."""
    import io

    import boto3
    import duckdb
    import pyarrow as pa
    import pyarrow.json as pa_json

    started = time.perf_counter()
    client = boto3.client("kinesis", endpoint_url=kinesis_endpoint, **CREDS)
    datas: list[bytes] = []
    for shard in client.list_shards(StreamName="bench")["Shards"]:
        iterator = client.get_shard_iterator(StreamName="bench", ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            got = client.get_records(ShardIterator=iterator, Limit=10000)
            datas.extend(r["Data"] for r in got["Records"])
            if not got["Records"] and got.get("MillisBehindLatest", 0) == 0:
                break
            iterator = got.get("NextShardIterator")
    schema = pa.schema([("k", pa.string()), ("t", pa.timestamp("ms")), ("v", pa.float64())])
    table = pa_json.read_json(io.BytesIO(b"\n".join(datas)), parse_options=pa_json.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore"))
    con = duckdb.connect()
    con.register("records", table)
    rows = con.execute("SELECT k, strftime(time_bucket(INTERVAL '10' SECOND, t, TIMESTAMP '1970-01-01'), "
                       "'%Y-%m-%d %H:%M:%S'), count(*), sum(v) FROM records GROUP BY ALL").fetchall()
    elapsed = time.perf_counter() - started
    assert len(datas) == n, f"direct read {len(datas)} records of {n}"
    return elapsed, {(k, w): (c, s) for k, w, c, s in rows}


def delivered(out: Path) -> dict[tuple[str, str], tuple[int, float]]:
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for path in out.rglob("*"):
        if path.is_file():
            for line in path.read_bytes().splitlines():
                row = json.loads(line)
                entry = sums[(row["K"], row["EVENT_WINDOW"][:19])]
                entry[0] += row["N"]
                entry[1] += row["TOTAL"]
    return {k: (int(v[0]), v[1]) for k, v in sums.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    import boto3

    work = Path(tempfile.mkdtemp(prefix="firehose-analytics-bench-"))
    port, kinesis_port = free_port(), free_port()
    config = work / "bench.yaml"
    config.write_text(json.dumps({
        "port": port, "state_dir": str(work / "state"), "log_level": "WARNING",
        "spool": {"max_bytes": "4GiB"},
        "buckets": {"bench": {"directory": str(work / "out")}},
        "kinesis": {"enabled": True, "port": kinesis_port, "streams": [{"StreamName": "bench",
                                                                         "ShardCount": SHARDS}]},
        "analytics": {"tick_seconds": 0.5, "poll_seconds": 0.05},
        "testing": {"analytics_clock_rate": 60},
        "delivery_streams": [{"DeliveryStreamName": "stats", "ExtendedS3DestinationConfiguration": {
            "RoleARN": ROLE, "BucketARN": "arn:aws:s3:::bench",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}}],
    }))
    proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(config)], cwd=REPO)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        kinesis = f"http://127.0.0.1:{kinesis_port}"
        data = records(args.records)
        print(f"loading {len(data):,} records into the Kinesis stream ...", flush=True)
        load(kinesis, data)

        direct_s, expected = direct(kinesis, len(data))
        print(f"direct (GetRecords + Arrow JSON + DuckDB): {direct_s:.2f} s, {len(data) / direct_s:,.0f} records/s",
              flush=True)

        client = boto3.client("kinesisanalytics", endpoint_url=f"http://127.0.0.1:{port}", **CREDS)
        client.create_application(ApplicationName="bench", Inputs=[INPUT], ApplicationCode=CODE, Outputs=[{
            "Name": "DESTINATION_SQL_STREAM", "DestinationSchema": {"RecordFormatType": "JSON"},
            "KinesisFirehoseOutput": {"ResourceARN": f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/stats",
                                      "RoleARN": ROLE}}])
        cpu0 = cpu_seconds(proc.pid)
        started = time.perf_counter()
        client.start_application(ApplicationName="bench", InputConfigurations=[
            {"Id": "1.1", "InputStartingPositionConfiguration": {"InputStartingPosition": "TRIM_HORIZON"}}])
        got: dict[tuple[str, str], tuple[int, float]] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            got = delivered(work / "out")
            if sum(c for c, _ in got.values()) >= len(data):
                break
            time.sleep(0.2)
        app_s = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    identical = got.keys() == expected.keys() and all(
        got[k][0] == expected[k][0] and abs(got[k][1] - expected[k][1]) < 1e-6 * max(1.0, abs(expected[k][1]))
        for k in expected)
    ratio = direct_s / app_s
    print(f"application (StartApplication to the last row delivered): {app_s:.2f} s, "
          f"{len(data) / app_s:,.0f} records/s, daemon CPU {1000 * cpu / len(data) * 1000:.2f} ms per 1,000 records")
    print(f"results identical: {identical} ({len(expected)} key x window groups)")
    met = ratio >= GOAL and identical
    print(f"application / direct: {ratio:.2f} (goal >= {GOAL}: {'met' if met else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": len(data), "direct_seconds": direct_s,
                                               "application_seconds": app_s, "ratio": ratio,
                                               "daemon_cpu_ms_per_1000": 1000 * cpu / len(data) * 1000,
                                               "identical": identical}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
