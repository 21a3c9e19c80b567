"""Logs for log systems: ``log.format: json`` makes every line of the daemon one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.repo import REPO
from tests.support.waiting import wait_until


def test_json_logs_are_one_object_per_line_with_the_fields_of_the_text_form(tmp_path: Path) -> None:
    config = write_config(tmp_path / "firehose.yaml", {
        "state_dir": str(tmp_path / "state"), "log_level": "INFO", "log": {"format": "json"},
        "buckets": {"local": {"directory": str(tmp_path / "out")}}}, [local_stream("orders")])
    daemon = DaemonProcess(config, free_port(), tmp_path / "daemon.log").start()
    try:
        firehose_client(daemon.endpoint).put_record(DeliveryStreamName="orders", Record={"Data": b"x\n"})
    finally:
        assert daemon.terminate() == 0
    lines = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    created = [line for line in lines if line["message"] == "Created a delivery stream declared in the config."]
    assert created and created[0]["stream"] == "orders" and created[0]["level"] == "INFO"
    assert created[0]["time"].endswith("+00:00")
    assert any(line["message"] == "Stopped." for line in lines)


def test_each_stream_sums_up_what_it_delivered_and_what_went_to_the_error_output(tmp_path: Path) -> None:
    """One INFO line per stream and window for deliveries, one WARNING for records sent to the error
    output (here: a transform refused them), with counts, rather than a line per object or record."""
    processing = {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:json_filter"},
        {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]}
    config = write_config(tmp_path / "firehose.yaml", {
        "state_dir": str(tmp_path / "state"), "log_level": "INFO", "log": {"format": "json", "summary_seconds": 0.5},
        "transforms_dir": str(REPO / "transforms"), "buckets": {"local": {"directory": str(tmp_path / "out")}}},
        [local_stream("orders", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                      ProcessingConfiguration=processing)])
    daemon = DaemonProcess(config, free_port(), tmp_path / "daemon.log").start()
    try:
        client = firehose_client(daemon.endpoint)
        for i in range(5):
            client.put_record_batch(DeliveryStreamName="orders", Records=[
                {"Data": b'{"n": %d}\n' % (10 * i + j)} for j in range(10)] + [{"Data": b"not json\n"}])
        wait_until(lambda: daemon.idle("orders"), timeout=30)

        def summaries() -> list[dict]:  # type: ignore[type-arg]
            return [json.loads(line) for line in daemon.log_path.read_text().splitlines()
                    if '"Delivered."' in line or "error output" in line]

        wait_until(lambda: sum(s.get("processing-failed", 0) for s in summaries()) >= 5, timeout=10)
        wait_until(lambda: sum(s.get("records", 0) for s in summaries() if s["message"] == "Delivered.") >= 50,
                   timeout=10)
    finally:
        daemon.terminate()
    lines = summaries()
    delivered = [s for s in lines if s["message"] == "Delivered."]
    assert sum(s["records"] for s in delivered) == 50 and all(s["stream"] == "orders" for s in delivered)
    assert sum(s["objects"] for s in delivered) >= len(delivered), "a line sums up the window's objects"
    failed = [s for s in lines if s["message"] == "Records went to the error output."]
    assert sum(s["processing-failed"] for s in failed) == 5 and all(s["level"] == "WARNING" for s in failed)
