"""SIGTERM: stop accepting, deliver what is buffered, exit cleanly; what cannot be delivered waits in the spool."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.delivered import read_local
from tests.support.waiting import wait_until


def test_sigterm_flushes_buffers_and_exits_cleanly(tmp_path: Path, daemon_process: Any) -> None:
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "c.yaml",
        {"state_dir": str(tmp_path / "state"), "buckets": {"local": {"directory": str(out)}}},
        [local_stream("s", size_mb=128, interval=900)],  # nothing would flush for 15 minutes
    )
    daemon = daemon_process(config).start()
    client = firehose_client(daemon.endpoint)
    client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"%d\n" % i} for i in range(100)])
    assert read_local(out) == {}
    assert daemon.terminate() == 0
    assert b"".join(read_local(out).values()) == b"".join(b"%d\n" % i for i in range(100))
    log = daemon.log_path.read_text()
    assert "Stopping" in log and "Stopped." in log


def unwritable_destination(tmp_path: Path, out: Path, *, shutdown_timeout: float,
                           streams: list[dict[str, Any]]) -> Path:
    """A config whose local bucket cannot be written (a file stands where its directory should be)."""
    out.write_text("a file where the directory should be")
    return write_config(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "state"), "buckets": {"local": {"directory": str(out)}},
        "delivery": {"shutdown_timeout_seconds": shutdown_timeout, "backoff_base_seconds": 0.1}}, streams)


def failing(daemon: Any, stream: str) -> bool:
    """Whether ``/readyz`` shows the stream's delivery failing."""
    with urllib.request.urlopen(daemon.endpoint + "/readyz") as r:
        return bool(json.loads(r.read())["streams"][stream]["consecutive_failures"] > 0)


def test_undeliverable_data_stays_in_the_spool_across_a_restart(tmp_path: Path, daemon_process: Any) -> None:
    out = tmp_path / "out"
    config = unwritable_destination(tmp_path, out, shutdown_timeout=1, streams=[local_stream("s", interval=0)])
    daemon = daemon_process(config).start()
    firehose_client(daemon.endpoint).put_record(DeliveryStreamName="s", Record={"Data": b"kept\n"})
    wait_until(lambda: failing(daemon, "s"))
    assert daemon.terminate() == 0
    assert "Left undelivered batches in the spool" in daemon.log_path.read_text()

    out.unlink()  # the destination is fixed
    daemon = daemon_process(config).start()
    wait_until(lambda: read_local(out))
    assert b"".join(read_local(out).values()) == b"kept\n"
    daemon.terminate()


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(tmp_path: Path, daemon_process: Any) -> None:
    """Two daemons appending to one spool would corrupt it; the second says so and exits."""
    import subprocess
    import sys

    from tests.support.ports import free_port

    config = write_config(tmp_path / "f.yaml", {"state_dir": str(tmp_path / "state"), "log_level": "WARNING",
                                                "buckets": {"local": {"directory": str(tmp_path / "out")}}},
                          [local_stream("s")])
    first = daemon_process(config).start()
    out = subprocess.run([sys.executable, "-m", "firehose", "serve", "--config", str(config), "--port",
                          str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"the state directory {tmp_path / 'state'} is in use by another process" in out.stderr
    assert first.proc is not None and first.proc.poll() is None  # the first one is untouched


def test_a_deleted_stream_stops_at_once_even_while_its_destination_fails(tmp_path: Path,
                                                                         daemon_process: Any) -> None:
    """DeleteDeliveryStream does not wait out a retry loop, and says what happened to the records
    it had not delivered (not that they are delivered after the next start: its spool is gone)."""
    config = unwritable_destination(tmp_path, tmp_path / "out", shutdown_timeout=20, streams=[])
    daemon = daemon_process(config).start()
    client = firehose_client(daemon.endpoint)
    client.create_delivery_stream(DeliveryStreamName="s", ExtendedS3DestinationConfiguration={
        "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::local",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
    wait_until(lambda: client.describe_delivery_stream(DeliveryStreamName="s")
               ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE")
    client.put_record(DeliveryStreamName="s", Record={"Data": b"doomed\n"})
    wait_until(lambda: failing(daemon, "s"))
    started = time.monotonic()
    client.delete_delivery_stream(DeliveryStreamName="s")
    wait_until(lambda: "Deleted a delivery stream." in daemon.log_path.read_text(), timeout=10)
    assert time.monotonic() - started < 5, "no 20 s wait for a retry loop"
    log = daemon.log_path.read_text()
    assert "Deleted a delivery stream that held undelivered records" in log and "Left undelivered batches" not in log
    spool = tmp_path / "state" / "spool"  # (its .reserve file stays: free space kept for any stream)
    assert not spool.exists() or not any(p.is_dir() for p in spool.iterdir())
    assert [p.name.endswith("-123456789012-s") for p in (tmp_path / "state" / "deleted").iterdir()] == [True]
    assert daemon.terminate() == 0
