"""The agent as a real process: restarts, kill -9 and fast rotation while a writer appends numbered lines.

Every written line must be delivered (0 lost). A clean stop (SIGTERM) sends
nothing twice; each ``kill -9`` may send again at most the batch that was in
flight (``maxBufferSizeRecords`` lines).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, agent_json, flow
from tests.support.delivered import delivered_lines
from tests.support.waiting import wait_until

BATCH = 500  # maxBufferSizeRecords: the most one kill -9 may send twice


class RotatingWriter:
    """Appends numbered lines to app.log and rotates it every ``every`` seconds, by rename and by copytruncate."""

    def __init__(self, directory: Path, rate: int = 2000, every: float = 0.1) -> None:
        self.dir = directory
        self.path = directory / "app.log"
        self.rate, self.every = rate, every
        self.written = 0
        self.rotations = {"rename": 0, "copytruncate": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotating-writer")

    def line(self, n: int) -> bytes:
        return f"{n:09d} {'p' * 50}\n".encode()

    def start(self) -> RotatingWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        f = open(self.path, "ab", buffering=0)
        burst = max(1, self.rate // 100)
        next_rotation = time.monotonic() + self.every
        rotation = 0
        try:
            while not self._stop.is_set():
                f.write(b"".join(self.line(self.written + i) for i in range(burst)))
                self.written += burst
                if time.monotonic() >= next_rotation:
                    rotation += 1
                    target = self.dir / f"app.log.{rotation:05d}"
                    if rotation % 2:
                        self.path.rename(target)
                        f.close()
                        f = open(self.path, "ab", buffering=0)
                        self.rotations["rename"] += 1
                    else:
                        shutil.copyfile(self.path, target)
                        os.truncate(self.path, 0)
                        self.rotations["copytruncate"] += 1
                    next_rotation += self.every
                time.sleep(0.01)
        finally:
            f.close()


def run_stress(tmp_path: Path, start_daemon, agent_process, seconds: float, events: list[tuple[float, str]]
               ) -> tuple[Counter[bytes], RotatingWriter, int]:
    daemon = start_daemon([{"DeliveryStreamName": "logs", "ExtendedS3DestinationConfiguration": {
        "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::local",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}}])
    logs = tmp_path / "logs"
    logs.mkdir()
    config = agent_json(daemon.endpoint, [flow(logs / "app.log*")], shutdownTimeoutMillis=10_000)
    agent: AgentProcess = agent_process(config).start()
    writer = RotatingWriter(logs).start()
    began = time.monotonic()
    kills = 0
    try:
        for at, action in events:
            time.sleep(max(0.0, began + at - time.monotonic()))
            if action == "kill":
                agent.kill()
                kills += 1
            else:
                agent.wait_started()
                assert agent.terminate() == 0, agent.log()[-3000:]
            time.sleep(0.3)  # rotations go on while the agent is down
            agent.start()
        time.sleep(max(0.0, began + seconds - time.monotonic()))
    finally:
        writer.stop()
    expected = {writer.line(i) for i in range(writer.written)}
    out = tmp_path / "out"
    try:
        wait_until(lambda: expected <= set(delivered_lines(out)), timeout=30, interval=0.2)
    except AssertionError:
        missing = expected - set(delivered_lines(out))
        raise AssertionError(f"{len(missing)} of {len(expected)} lines not delivered, e.g. "
                             f"{sorted(missing)[:3]}\n{agent.log()[-4000:]}") from None
    agent.wait_started()
    assert agent.terminate() == 0
    got = Counter(delivered_lines(out))
    assert set(got) == expected  # nothing lost, nothing invented
    return got, writer, kills


def extra_copies(got: Counter[bytes]) -> int:
    return sum(n - 1 for n in got.values())


def test_rotation_with_clean_restarts_sends_every_line_once(tmp_path, start_daemon, agent_process) -> None:
    got, writer, _ = run_stress(tmp_path, start_daemon, agent_process, 4.0, [(1.2, "term"), (2.5, "term")])
    assert writer.rotations["rename"] >= 10 and writer.rotations["copytruncate"] >= 10
    assert extra_copies(got) == 0


def test_rotation_with_kill_9_loses_nothing(tmp_path, start_daemon, agent_process) -> None:
    got, writer, kills = run_stress(tmp_path, start_daemon, agent_process, 5.0,
                                    [(1.0, "kill"), (2.2, "term"), (3.4, "kill")])
    assert writer.written > 5000
    assert extra_copies(got) <= kills * BATCH


@pytest.mark.soak
def test_rotation_soak(tmp_path, start_daemon, agent_process) -> None:
    events = [(5.0 + 5 * i, "kill" if i % 2 else "term") for i in range(10)]
    got, writer, kills = run_stress(tmp_path, start_daemon, agent_process, 60.0, events)
    assert extra_copies(got) <= kills * BATCH
