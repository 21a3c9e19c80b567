"""The systemd unit: hardened, and its command lines are ones the CLI accepts."""

from __future__ import annotations

import configparser
import contextlib
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from firehose.cli import _parser
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.repo import REPO
from tests.support.waiting import wait_until

UNIT = REPO / "systemd" / "firehose.service"


def unit(path: Path = UNIT) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_unit_is_sandboxed_with_its_own_state_directory() -> None:
    service = unit()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "firehose"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 30  # room for the 20 s drain


def test_unit_notifies_readiness_and_has_a_watchdog() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 10
    reload = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("ExecReload=")]
    assert [shlex.split(cmd)[1] for cmd in reload] == ["validate", "-HUP"], "reload: check the config, then signal"


def _bytes(value: str) -> int:
    return int(value[:-1]) * {"K": 1024, "M": 1024**2, "G": 1024**3}[value[-1]] if value[-1].isalpha() else int(value)


def test_unit_caps_memory_above_what_the_daemon_may_hold() -> None:
    from firehose.settings import Settings

    service = unit()["Service"]
    high, limit = _bytes(service["MemoryHigh"]), _bytes(service["MemoryMax"])
    budget = Settings().memory.max_buffered_bytes
    # The daemon at rest (about 100 MB), its record budget and two workers per processing.workers.
    assert high < limit and high >= 100 * 1024**2 + budget + 2 * Settings().processing.workers * 130 * 1024**2


def test_unit_command_lines_parse() -> None:
    service = unit()["Service"]
    for key in ("ExecStart", "ExecStartPre"):
        argv = shlex.split(service[key])
        assert argv[0].endswith("/firehose")
        args = _parser().parse_args(argv[1:])
        assert args.command in ("serve", "validate")


AGENT_UNIT = REPO / "systemd" / "firehose-agent.service"


def agent_unit() -> configparser.ConfigParser:
    return unit(AGENT_UNIT)


def test_agent_unit_is_sandboxed_with_a_persistent_state_directory() -> None:
    service = agent_unit()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "firehose-agent"  # /var/lib: checkpoints survive a reboot
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 10  # room for shutdownTimeoutMillis


def test_agent_unit_command_line_parses() -> None:
    argv = shlex.split(agent_unit()["Service"]["ExecStart"])
    assert argv[0].endswith("/firehose")
    args = _parser().parse_args(argv[1:])
    assert args.command == "agent"
    assert args.state_dir == "/var/lib/firehose-agent"


STREAMS_UNIT = REPO / "systemd" / "firehose-streams.service"


def streams_unit() -> configparser.ConfigParser:
    return unit(STREAMS_UNIT)


def test_streams_unit_runs_the_sidecar_with_persistent_shards() -> None:
    service = streams_unit()["Service"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "firehose-streams"
    args = _parser().parse_args(shlex.split(service["ExecStart"])[1:])
    assert (args.command, args.streams_command) == ("streams", "serve")
    assert args.state_dir.startswith("/var/lib/firehose-streams")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("path", [UNIT, AGENT_UNIT, STREAMS_UNIT], ids=lambda p: p.name)
def test_systemd_accepts_the_unit(path: Path, tmp_path: Path) -> None:
    text = path.read_text().replace("/usr/local/bin/firehose", shutil.which("true") or "/bin/true")
    copy = tmp_path / path.name
    copy.write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
    problems = [line for line in out.stderr.splitlines() if path.name in line]
    assert not problems, out.stderr


def test_the_daemon_tells_systemd_it_is_ready_reloading_stopping_and_alive(tmp_path: Path) -> None:
    """``Type=notify`` through a fake ``NOTIFY_SOCKET``: READY=1 with a status line, WATCHDOG=1
    pings from the event loop at half of ``WATCHDOG_USEC``, RELOADING=1 then READY=1 around a SIGHUP,
    STOPPING=1 on SIGTERM."""
    sock_path = tmp_path / "notify.sock"
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.2)

        def drain() -> list[str]:
            with contextlib.suppress(TimeoutError):
                while True:
                    received.extend(sock.recv(4096).decode().splitlines())
            return received

        config = write_config(tmp_path / "firehose.yaml", {"state_dir": str(tmp_path / "state"),
                                                           "buckets": {"local": {"directory": str(tmp_path / "o")}}},
                              [local_stream("s")])
        daemon = DaemonProcess(config, free_port(), tmp_path / "daemon.log",
                               env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
        daemon.start()
        try:
            wait_until(lambda: "READY=1" in drain(), timeout=10)
            assert any(line.startswith("STATUS=Serving 1 delivery streams") for line in received)
            pings = received.count("WATCHDOG=1")
            wait_until(lambda: drain().count("WATCHDOG=1") >= pings + 3, timeout=5)  # every 0.2 s
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "RELOADING=1" in drain(), timeout=10)
            wait_until(lambda: received[received.index("RELOADING=1"):].count("READY=1") >= 1, timeout=10)
            assert any(line.startswith("MONOTONIC_USEC=") for line in received)
            assert daemon.terminate() == 0
            assert "STOPPING=1" in drain()
        finally:
            daemon.stop()
