"""The systemd unit: hardened, and its command lines are ones the CLI accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from firehose.cli import _parser
from tests.support.repo import REPO

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
