"""Outages and full disks heal without a person: real daemon processes, a real outage, a real full disk.

* A small spool (8 MiB, default segment size) filled by an outage takes puts again soon after the
  destination is back, also across a restart, and delivers every acknowledged record once.
* A spool larger than its disk stops short of filling it, restarts on it, and delivers first.
* A disk filled by another program: puts are refused, the daemon restarts on it without a false
  "corrupt" or an empty segment per failed write, and delivery resumes when space returns (at once
  when the reserve file lets it record deliveries).
* ``/readyz`` answers 503 with the reason while puts are refused, and 200 once they are taken.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import delivered_lines, list_objects
from tests.support.faultproxy import FaultProxy
from tests.support.filesystems import empty_segments, fill, small_filesystem
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until

RETRY = {"backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5, "shutdown_timeout_seconds": 1}


class Producer:
    """Puts uniquely numbered records, ``per_call`` at a time; remembers the acknowledged ones."""

    def __init__(self, per_call: int = 100, size: int = 1000) -> None:
        self.per_call, self.size = per_call, size
        self.next_id = 0
        self.acked: list[bytes] = []

    def put(self, daemon: DaemonProcess) -> ClientError | None:
        """One call; the error if it was refused (the records then count as not acknowledged)."""
        records = [b"%09d" % (self.next_id + i) + b"." * (self.size - 10) + b"\n" for i in range(self.per_call)]
        self.next_id += self.per_call
        client = firehose_client(daemon.endpoint, retries={"max_attempts": 1})
        try:
            resp = client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": r} for r in records])
        except ClientError as err:
            return err
        assert resp["FailedPutCount"] == 0
        self.acked += records
        return None

    def until_refused(self, daemon: DaemonProcess, limit: int = 2000) -> ClientError:
        for _ in range(limit):
            err = self.put(daemon)
            if err is not None:
                return err
        raise AssertionError("the spool never refused a put")


def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(daemon.endpoint + "/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_refusing(daemon: DaemonProcess, err: ClientError, reason: str) -> None:
    """The put was refused with AWS's 503, and /readyz says so with ``reason`` in its reason."""
    assert err.response["Error"]["Code"] == "ServiceUnavailableException"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    status, body = readyz(daemon)
    assert status == 503 and reason in body["reason"], body


def assert_once(delivered: list[bytes], acked: list[bytes]) -> None:
    counts = Counter(delivered)
    lost = [r[:9] for r in acked if counts[r] == 0]
    duplicated = [r[:9] for r, n in counts.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:3]}"
    assert not duplicated, f"{len(duplicated)} records delivered twice, e.g. {duplicated[:3]}"


def assert_clean_log(daemon: DaemonProcess) -> None:
    text = daemon.log_path.read_text()
    assert "corrupt" not in text and "Traceback" not in text, text[-3000:]


def test_a_small_spool_filled_by_an_outage_takes_puts_again_soon_after_it_ends(
    tmp_path: Path, daemon_process: Callable[..., DaemonProcess]
) -> None:
    s3 = MotoServer()  # down: the outage
    proxy = FaultProxy(s3.port, response_delay=0.3)  # once it is back, each batch takes a while
    config = write_config(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "state"), "log_level": "INFO",
        "s3": {"endpoint_url": proxy.endpoint, "connect_timeout_seconds": 1},
        "spool": {"max_bytes": "8MiB"},  # segment_bytes stays at its 64 MiB default
        "delivery": {**RETRY, "max_inflight_batches": 1},
    }, [local_stream("s", "healing", size_mb=1, interval=0)])
    producer = Producer(per_call=100, size=2500)
    daemon = daemon_process(config).start()
    try:
        assert_refusing(daemon, producer.until_refused(daemon), "spool full")
        backlog = len(producer.acked)
        assert daemon.terminate() == 0
        daemon = daemon_process(config).start(ready=False)  # restarting changes nothing while it is down
        assert_refusing(daemon, producer.put(daemon) or pytest.fail("taken while full"), "spool full")

        s3.start()
        s3.client().create_bucket(Bucket="healing")
        wait_until(lambda: producer.put(daemon) is None, timeout=30, interval=0.1)
        # Taken while most of the backlog still waits: space came back with its oldest records.
        delivered = sum(len(s3.client().get_object(Bucket="healing", Key=k)["Body"].read().splitlines())
                        for k in list_objects(s3.client(), "healing"))
        assert delivered < backlog // 2, f"{delivered} of {backlog} records were delivered first"

        wait_until(lambda: daemon.idle("s"), timeout=90)
        assert readyz(daemon)[0] == 200
        assert producer.put(daemon) is None and producer.put(daemon) is None
        wait_until(lambda: daemon.idle("s"), timeout=30)
        client = s3.client()
        lines = [line for k in list_objects(client, "healing")
                 for line in client.get_object(Bucket="healing", Key=k)["Body"].read().splitlines(keepends=True)]
        assert_once(lines, producer.acked)
        assert_clean_log(daemon)
    finally:
        daemon.stop()
        proxy.close()
        s3.stop()


def blocked_destination(tmp_path: Path) -> Path:
    """A local bucket directory that cannot be written (a file stands where it should be)."""
    out = tmp_path / "out"
    out.write_text("a file where the directory should be")
    return out


def test_a_spool_larger_than_its_disk_stops_short_of_filling_it_and_restarts_on_it(
    tmp_path: Path, daemon_process: Callable[..., DaemonProcess]
) -> None:
    out = blocked_destination(tmp_path)
    with small_filesystem(tmp_path / "state", "32m") as state:
        config = write_config(tmp_path / "c.yaml", {
            "state_dir": str(state), "log_level": "INFO", "buckets": {"local": {"directory": str(out)}},
            "spool": {"max_bytes": "1GiB", "reserve_bytes": "4MiB"}, "delivery": RETRY,
        }, [local_stream("s", size_mb=1, interval=0)])
        producer = Producer()
        daemon = daemon_process(config).start()
        try:
            err = producer.until_refused(daemon)
            assert "disk is nearly full" in err.response["Error"]["Message"]
            assert_refusing(daemon, err, "disk nearly full")
            assert len(producer.acked) > 15_000  # most of the 32 MiB
            assert daemon.terminate() == 0

            daemon = daemon_process(config).start(ready=False)  # on the full disk: no crash loop
            assert_refusing(daemon, producer.put(daemon) or pytest.fail("taken on a full disk"), "disk")
            out.unlink()  # the destination is back: delivery first, then puts again
            wait_until(lambda: daemon.idle("s"), timeout=60)
            wait_until(lambda: readyz(daemon)[0] == 200)
            assert producer.put(daemon) is None
            wait_until(lambda: daemon.idle("s"), timeout=30)
            assert_once(delivered_lines(out), producer.acked)
            assert not empty_segments(state)
            assert_clean_log(daemon)
        finally:
            daemon.stop()


@pytest.mark.parametrize("reserve", ["4MiB", "0"])
def test_a_disk_filled_by_another_program_heals_when_space_returns(
    tmp_path: Path, daemon_process: Callable[..., DaemonProcess], reserve: str
) -> None:
    out = blocked_destination(tmp_path)
    with small_filesystem(tmp_path / "state", "32m") as state:
        config = write_config(tmp_path / "c.yaml", {
            "state_dir": str(state), "log_level": "INFO", "buckets": {"local": {"directory": str(out)}},
            "spool": {"max_bytes": "1GiB", "reserve_bytes": reserve}, "delivery": RETRY,
        }, [local_stream("s", size_mb=1, interval=0)])
        producer = Producer()
        daemon = daemon_process(config).start()
        try:
            for _ in range(40):
                assert producer.put(daemon) is None
            filler = fill(state)
            for _ in range(30):  # every one refused, each a write that found no space or never tried
                err = producer.put(daemon)
                assert err is not None
            assert_refusing(daemon, err, "disk")
            # A failed write leaves no empty segment behind (one may be kept, empty, to write to next).
            assert all(n <= 1 for n in empty_segments(state).values()), empty_segments(state)
            assert daemon.terminate() == 0

            daemon = daemon_process(config).start(ready=False)  # on the full disk: no crash loop
            out.unlink()  # the destination is back
            if reserve != "0":  # the reserve file makes room to record deliveries: no person needed
                wait_until(lambda: daemon.idle("s"), timeout=60)
            filler.unlink()  # space returns
            wait_until(lambda: daemon.idle("s"), timeout=60)
            wait_until(lambda: readyz(daemon)[0] == 200)
            assert producer.put(daemon) is None
            wait_until(lambda: daemon.idle("s"), timeout=30)
            assert_once(delivered_lines(out), producer.acked)
            assert_clean_log(daemon)
            if reserve != "0":
                wait_until(lambda: (state / "spool" / ".reserve").exists())  # made again, for next time
        finally:
            daemon.stop()
