"""The whole product in one path: the agent tails a log into the Kinesis sidecar (inside the daemon), and a
delivery stream reading that Kinesis stream writes the lines to a local directory, each exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.delivered import delivered_records
from tests.support.kinesis_source import kinesis_settings, source_stream
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def test_agent_to_kinesis_sidecar_to_delivery_stream(start_daemon: Any, run_agent: Any, tmp_path: Path) -> None:
    kport = free_port()
    start_daemon([source_stream("logs-to-files", "logs")], kinesis=kinesis_settings(kport, ("logs", 2)))
    log = tmp_path / "app.log"
    first = [f"{i:05d} GET /page/{i} 200".encode() for i in range(3000)]
    log.write_bytes(b"".join(line + b"\n" for line in first))
    run_agent({"kinesis.endpoint": f"http://127.0.0.1:{kport}", "flows": [
        {"filePattern": str(log), "kinesisStream": "logs", "partitionKeyOption": "DETERMINISTIC",
         "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000}]})
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_records(out, "logs-to-files/")) >= len(first), timeout=40)
    more = [f"{i:05d} POST /api 201".encode() for i in range(3000, 3500)]
    with open(log, "ab") as f:
        f.write(b"".join(line + b"\n" for line in more))
    wait_until(lambda: len(delivered_records(out, "logs-to-files/")) >= len(first) + len(more), timeout=40)
    assert sorted(delivered_records(out, "logs-to-files/")) == sorted(first + more)
