"""Deleting a stream that still holds records: it goes at once (as on AWS), a WARNING says how many
acknowledged records it had not delivered, and its spool is kept for ``delete.retain_hours`` under
``<state>/deleted/``, from where ``firehose replay`` sends the records to another stream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from firehose.spool import retained
from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.delivered import read_local
from tests.support.waiting import wait_until


def config(tmp_path: Path, **settings: Any) -> Path:
    """A daemon whose bucket ``broken`` cannot be written (a file stands where its directory should be)
    and whose bucket ``ok`` can."""
    (tmp_path / "broken").write_text("a file where the directory should be")
    return write_config(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "state"), "log": {"format": "json"},
        "buckets": {"broken": {"directory": str(tmp_path / "broken")}, "ok": {"directory": str(tmp_path / "out")}},
        "delivery": {"backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5}, **settings}, [])


def log_lines(daemon: Any, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if message in line.get("message", "")]


def create(client: Any, name: str, bucket: str, **extra: Any) -> None:
    client.create_delivery_stream(**local_stream(name, bucket, **extra))
    wait_until(lambda: client.describe_delivery_stream(DeliveryStreamName=name)
               ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE")


def replay_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firehose", "replay", "--state-dir", str(tmp_path / "state"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "PATH": "/usr/bin:/bin"})


def delivered_records(out: Path) -> list[bytes]:
    return [line for body in read_local(out).values() for line in body.splitlines()]


def test_a_deleted_backlog_is_retained_counted_and_replayed_to_another_stream(tmp_path: Path,
                                                                              daemon_process: Any) -> None:
    daemon = daemon_process(config(tmp_path)).start()
    client = firehose_client(daemon.endpoint)
    create(client, "doomed", "broken")
    sent = [b"record-%05d" % i for i in range(1250)]
    for i in range(0, len(sent), 250):
        client.put_record_batch(DeliveryStreamName="doomed",
                                Records=[{"Data": r + b"\n"} for r in sent[i:i + 250]])
    client.delete_delivery_stream(DeliveryStreamName="doomed")
    wait_until(lambda: log_lines(daemon, "Deleted a delivery stream."), timeout=20)
    [warning] = log_lines(daemon, "Deleted a delivery stream that held undelivered records")
    assert warning["level"] == "WARNING" and warning["records"] == 1250
    assert warning["bytes"] == sum(len(r) + 1 for r in sent)

    [kept] = retained.listing(tmp_path / "state" / "deleted")
    assert (kept.stream, kept.records) == ("doomed", 1250)
    assert kept.definition is not None and kept.definition["DeliveryStreamName"] == "doomed"
    listed = replay_cli(tmp_path, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(e["name"], e["records"]) for e in json.loads(listed.stdout)] == [(kept.name, 1250)]

    # A stream created again under the name starts empty.
    create(client, "doomed", "ok")
    assert client.describe_delivery_stream(DeliveryStreamName="doomed")["DeliveryStreamDescription"]
    create(client, "rescue", "ok", ErrorOutputPrefix="errors/")
    result = replay_cli(tmp_path, kept.name, "--to", "rescue", "--endpoint-url", daemon.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 1250 and summary["failed"] == 0
    wait_until(lambda: len(delivered_records(tmp_path / "out")) >= 1250, timeout=30)
    assert sorted(delivered_records(tmp_path / "out")) == sent, "each record once, none lost"
    assert not kept.path.exists(), "a replayed spool is removed"
    assert retained.listing(tmp_path / "state" / "deleted") == []
    assert daemon.terminate() == 0


def test_an_interrupted_replay_resumes_after_what_was_accepted(tmp_path: Path, daemon_process: Any) -> None:
    daemon = daemon_process(config(tmp_path)).start()
    client = firehose_client(daemon.endpoint)
    create(client, "doomed", "broken")
    for first in (0, 350):
        client.put_record_batch(DeliveryStreamName="doomed",
                                Records=[{"Data": b"%d\n" % i} for i in range(first, first + 350)])
    client.delete_delivery_stream(DeliveryStreamName="doomed")
    wait_until(lambda: retained.listing(tmp_path / "state" / "deleted"), timeout=20)
    [kept] = retained.listing(tmp_path / "state" / "deleted")
    kept.record_progress(500, "rescue")  # as a replay stopped after its first batch leaves it
    create(client, "rescue", "ok")
    result = replay_cli(tmp_path, "doomed", "--to", "rescue", "--endpoint-url", daemon.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 200
    wait_until(lambda: len(delivered_records(tmp_path / "out")) >= 200, timeout=30)
    assert sorted(delivered_records(tmp_path / "out"), key=int) == [b"%d" % i for i in range(500, 700)]
    daemon.terminate()


def test_an_empty_stream_retains_nothing_and_retention_zero_discards(tmp_path: Path, daemon_process: Any) -> None:
    daemon = daemon_process(config(tmp_path, delete={"retain_hours": 0})).start()
    client = firehose_client(daemon.endpoint)
    create(client, "empty", "ok")
    client.put_record(DeliveryStreamName="empty", Record={"Data": b"delivered\n"})
    wait_until(lambda: read_local(tmp_path / "out"), timeout=20)
    wait_until(lambda: daemon.idle("empty"), timeout=20)
    client.delete_delivery_stream(DeliveryStreamName="empty")
    create(client, "doomed", "broken")
    client.put_record(DeliveryStreamName="doomed", Record={"Data": b"lost\n"})
    client.delete_delivery_stream(DeliveryStreamName="doomed")
    wait_until(lambda: len(log_lines(daemon, "Deleted a delivery stream.")) == 2, timeout=20)
    [warning] = log_lines(daemon, "Deleted a delivery stream that held undelivered records")
    assert warning["stream"] == "doomed" and warning["records"] == 1 and "discarded" in warning["message"]
    deleted = tmp_path / "state" / "deleted"
    assert not deleted.exists() or list(deleted.iterdir()) == []
    spool = tmp_path / "state" / "spool"
    assert not any(p.is_dir() for p in spool.iterdir())
    daemon.terminate()


def test_retained_spools_expire_after_retain_hours(tmp_path: Path, daemon_process: Any) -> None:
    path = config(tmp_path)
    daemon = daemon_process(path).start()
    client = firehose_client(daemon.endpoint)
    create(client, "doomed", "broken")
    client.put_record(DeliveryStreamName="doomed", Record={"Data": b"kept\n"})
    client.delete_delivery_stream(DeliveryStreamName="doomed")
    deleted = tmp_path / "state" / "deleted"
    wait_until(lambda: retained.listing(deleted), timeout=20)
    [kept] = retained.listing(deleted)
    assert retained.expire(deleted, 24) == [] and kept.path.exists()
    kept.record_progress(0, "rescue")  # a replay is sending it: expiry waits for it
    assert retained.expire(deleted, 0) == [] and kept.path.exists()
    (kept.path / retained.PROGRESS).unlink()
    assert retained.expire(deleted, 24, now_ms=kept.deleted_ms + 24 * 3_600_000) == [kept]
    assert not kept.path.exists()
    assert daemon.terminate() == 0

    # The daemon expires them itself, at start: one deleted a day and a half ago goes.
    daemon = daemon_process(path).start()
    create(client := firehose_client(daemon.endpoint), "again", "broken")
    client.put_record(DeliveryStreamName="again", Record={"Data": b"kept\n"})
    client.delete_delivery_stream(DeliveryStreamName="again")
    wait_until(lambda: retained.listing(deleted), timeout=20)
    [kept] = retained.listing(deleted)
    manifest = json.loads((kept.path / retained.MANIFEST).read_text())
    manifest["deleted_ms"] = int(time.time() * 1000) - 36 * 3_600_000
    (kept.path / retained.MANIFEST).write_text(json.dumps(manifest))
    assert daemon.terminate() == 0
    daemon = daemon_process(path).start()
    wait_until(lambda: not kept.path.exists(), timeout=20)
    assert log_lines(daemon, "Removed a deleted stream's retained spool")
    daemon.terminate()


def test_a_processing_streams_backlog_is_replayed_as_the_chain_left_it(tmp_path: Path, daemon_process: Any) -> None:
    """Records the chain had processed are kept as its output (their raw form is gone once processed):
    here the delimiter it appended; each record is replayed once."""
    daemon = daemon_process(config(tmp_path)).start()
    client = firehose_client(daemon.endpoint)
    create(client, "doomed", "broken", ProcessingConfiguration={
        "Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]})
    client.put_record_batch(DeliveryStreamName="doomed", Records=[{"Data": b"r%d" % i} for i in range(300)])
    wait_until(lambda: daemon.readiness()["streams"]["doomed"]["consecutive_failures"] > 0, timeout=20)
    client.delete_delivery_stream(DeliveryStreamName="doomed")
    wait_until(lambda: retained.listing(tmp_path / "state" / "deleted"), timeout=20)
    [kept] = retained.listing(tmp_path / "state" / "deleted")
    assert kept.processes and kept.records == 300
    create(client, "rescue", "ok")
    result = replay_cli(tmp_path, "doomed", "--to", "rescue", "--endpoint-url", daemon.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(delivered_records(tmp_path / "out")) >= 300, timeout=30)
    assert sorted(b"".join(read_local(tmp_path / "out").values()).split(b"\n")[:-1]) == sorted(
        b"r%d" % i for i in range(300))
    daemon.terminate()
