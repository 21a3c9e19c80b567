"""``firehose top`` against a running daemon: per-stream rates between two reads of /metrics.json."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from firehose.commands.top import Reading, rows
from tests.support.aws import CREDS
from tests.support.config import local_stream


def test_rows_are_rates_between_two_reads_and_levels_now() -> None:
    before = Reading(100.0, {"s": {"firehose_incoming_records_total": 100.0,
                                   "firehose_delivery_to_s3_records_total": 50.0}}, {})
    now = Reading(102.0, {"s": {"firehose_incoming_records_total": 300.0,
                                "firehose_delivery_to_s3_records_total": 150.0,
                                "firehose_delivery_to_s3_data_freshness_seconds": 4.0,
                                "firehose_buffered_bytes": 2048.0}}, {})
    [row] = rows(before, now)
    assert row["in rec/s"] == 100.0 and row["out rec/s"] == 50.0 and row["errors/s"] == 0.0
    assert row["freshness"] == 4.0 and row["buffered"] == 2048.0
    [first] = rows(None, now)
    assert first["in rec/s"] is None, "no rate before a second read"


def test_an_http_endpoints_processed_records_are_attempts_not_deliveries() -> None:
    before = Reading(0.0, {"h": {"firehose_delivery_to_http_endpoint_records_total": 0.0,
                                 "firehose_delivery_to_http_endpoint_processed_records_total": 0.0}}, {})
    now = Reading(1.0, {"h": {"firehose_delivery_to_http_endpoint_records_total": 10.0,
                              "firehose_delivery_to_http_endpoint_processed_records_total": 30.0}}, {})
    assert rows(before, now)[0]["out rec/s"] == 10.0


def test_top_shows_each_stream_with_its_incoming_rate(start_daemon: Any) -> None:
    daemon = start_daemon([local_stream("orders", size_mb=64, interval=60)])
    client = daemon.client()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            client.put_record_batch(DeliveryStreamName="orders", Records=[{"Data": b"x" * 100}] * 100)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        env = {"AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"],
               "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-m", "firehose", "top", "--endpoint-url", daemon.endpoint,
                              "--iterations", "2", "--interval", "0.5"], capture_output=True, text=True, timeout=60,
                             env=env)
    finally:
        stop.set()
        worker.join(30)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "orders" in line]
    assert len(lines) == 2, out.stdout
    in_rate = lines[-1].split("│")[2].strip().replace(",", "")
    assert in_rate.isdigit() and int(in_rate) > 0, out.stdout
    assert "spool" in out.stdout
