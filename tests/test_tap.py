"""``firehose tap``: a stream's records as its destination gets them, live, after the transform."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.aws import CREDS
from tests.support.config import local_stream
from tests.support.transforms import verdicts, write_function
from tests.support.waiting import wait_until

LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:upper"


def tap(endpoint: str, *args: str) -> subprocess.Popen[str]:
    env = {"AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"],
           "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-m", "firehose", "tap", *args, "--endpoint-url", endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_tap_shows_transformed_records_and_with_errors_the_failed_ones(start_daemon: Any, tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    write_function(functions, "upper", verdicts("data.upper()"))
    processing = {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": LAMBDA},
        {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]}
    daemon = start_daemon([local_stream("orders", ProcessingConfiguration=processing,
                                        ErrorOutputPrefix="errors/!{firehose:error-output-type}/")],
                          transforms_dir=str(functions))
    client = daemon.client()
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            client.put_record_batch(DeliveryStreamName="orders", Records=[
                {"Data": b"order %d\n" % n}, {"Data": b"fail %d\n" % n}])
            n += 1
            time.sleep(0.05)

    followers = [tap(daemon.endpoint, "orders", "--limit", "3"),
                 tap(daemon.endpoint, "orders", "--errors", "--limit", "20", "--json")]
    worker = threading.Thread(target=load)
    worker.start()
    try:
        outs = [p.communicate(timeout=60) for p in followers]
    finally:
        stop.set()
        worker.join(30)
    plain, errors = outs
    assert [p.returncode for p in followers] == [0, 0], (plain[1], errors[1])
    lines = plain[0].splitlines()
    assert len(lines) == 3 and all(line.startswith("ORDER ") for line in lines), plain[0]
    kinds = {line.split('"kind":"')[1].split('"')[0] for line in errors[0].splitlines()}
    assert kinds == {"delivered", "error"}, errors[0]
    # The followers went away with the commands: nothing is copied for them any more.
    wait_until(lambda: not daemon.daemon.taps.watching("orders"), timeout=20)


def test_tap_refuses_a_sample_rate_out_of_range(start_daemon: Any) -> None:
    daemon = start_daemon([local_stream("orders")])
    out = tap(daemon.endpoint, "orders", "--sample", "0")
    _stdout, stderr = out.communicate(timeout=30)
    assert out.returncode == 2 and "--sample" in stderr


def test_a_follower_that_falls_behind_is_told_how_many_records_it_missed() -> None:
    """Publishing never waits for a reader: what does not fit its queue is dropped and counted."""
    import asyncio
    import json

    from firehose.tap import QUEUE_RECORDS, Taps

    async def scenario() -> list[dict[str, Any]]:
        taps = Taps()
        lines = taps.follow("s")
        first = asyncio.ensure_future(anext(lines))
        await asyncio.sleep(0)  # the follower is registered
        assert taps.watching("s")
        taps.publish("s", "delivered", [b"r%d" % i for i in range(QUEUE_RECORDS + 5)])
        taps.publish("s", "error", [b"not for this follower"])
        got = [json.loads(await first)]
        got.append(json.loads(await anext(lines)))
        await lines.aclose()
        assert not taps.watching("s")
        return got

    dropped, record = asyncio.run(scenario())
    assert dropped == {"stream": "s", "dropped": 5}
    assert record == {"stream": "s", "kind": "delivered", "data": "r0"}


def test_what_taps_hold_is_bounded_in_bytes_and_followers() -> None:
    """A follower holds at most QUEUE_BYTES of lines however large the records; at most MAX_FOLLOWERS follow."""
    import asyncio

    import pytest

    from firehose.tap import MAX_FOLLOWERS, QUEUE_BYTES, Taps, TooManyFollowers

    async def scenario() -> None:
        taps = Taps()
        lines = [taps.follow(f"s{i}") for i in range(MAX_FOLLOWERS)]
        firsts = [asyncio.ensure_future(anext(g)) for g in lines]
        await asyncio.sleep(0)
        assert taps.full()
        with pytest.raises(TooManyFollowers):
            await anext(taps.follow("one-more"))
        big = b"x" * 1_000_000
        taps.publish("s0", "delivered", [big] * 10)
        received = [await firsts[0]]
        while len(received) < 10:
            try:
                received.append(await asyncio.wait_for(anext(lines[0]), 0.1))
            except TimeoutError:
                break
        records = [r for r in received if b'"data"' in r]
        assert sum(map(len, records)) <= QUEUE_BYTES and len(records) < 10
        assert any(b'"dropped"' in r for r in received)
        for f in firsts[1:]:
            f.cancel()
        await asyncio.gather(*firsts[1:], return_exceptions=True)
        for g in lines:
            await g.aclose()
        assert not taps.full()

    asyncio.run(scenario())
