"""Logs for log systems: ``log.format: json`` makes every line of the daemon one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port


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
