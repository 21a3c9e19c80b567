"""Rotation schemes against the real daemon: every line delivered once, whatever happens to the file names."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from firehose.agent.runner import Agent
from tests.support.agent import agent_json, flow
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import delivered_lines, duplicates, wait_for_lines
from tests.support.waiting import wait_until


def numbered(start: int, count: int, tag: str = "line") -> list[bytes]:
    return [f"{tag} {i:06d} {'x' * 40}\n".encode() for i in range(start, start + count)]


def append(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


def tracked(agent: Agent, path: Path) -> bool:
    return any(f.path == str(path) for f in agent.flows[0].tailer.files)


def setup(start_daemon: Callable[..., RunningDaemon], tmp_path: Path) -> tuple[RunningDaemon, Path, Path]:
    daemon = start_daemon([local_stream("logs", interval=0)])
    logs = tmp_path / "logs"
    logs.mkdir()
    return daemon, logs, tmp_path / "out"


def test_rename_and_create_reads_the_renamed_file_to_its_end(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    append(app, numbered(0, 100))
    agent = run_agent(agent_json(daemon.endpoint, [flow(app)]))  # the rotated name is outside the pattern
    wait_until(lambda: tracked(agent, app))
    rotated = logs / "app.log.1"
    app.rename(rotated)
    append(rotated, numbered(100, 50))  # the application writes on before it reopens its log
    append(app, numbered(150, 100))
    lines = wait_for_lines(out, 250)
    assert sorted(lines) == numbered(0, 250)


def test_copytruncate_sends_each_line_once(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    agent = run_agent(agent_json(daemon.endpoint, [flow(logs / "app.log*")]))
    expected: list[bytes] = []
    n = 0
    for round_ in range(4):
        batch = numbered(n, 300)
        append(app, batch)
        expected += batch
        n += 300
        if round_ % 2:  # sometimes the agent has read everything before the copy, sometimes not
            wait_until(lambda: sum(f.offset for f in agent.flows[0].tailer.files if f.path == str(app)) >= 1)
        shutil.copyfile(app, logs / f"app.log.{round_ + 1}")
        os.truncate(app, 0)
    tail = numbered(n, 100)
    append(app, tail)
    expected += tail
    lines = wait_for_lines(out, len(expected))
    assert sorted(lines) == sorted(expected)


def test_deleted_file_is_read_to_its_end(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    append(app, numbered(0, 10))
    agent = run_agent(agent_json(daemon.endpoint, [flow(app)]))
    wait_until(lambda: tracked(agent, app))
    with open(app, "ab") as f:  # the writer keeps its descriptor after the name is gone
        app.unlink()
        f.write(b"".join(numbered(10, 200)))
    append(app, numbered(210, 20))
    lines = wait_for_lines(out, 230)
    assert sorted(lines) == numbered(0, 230)
    wait_until(lambda: len(agent.flows[0].tailer.files) == 1, timeout=10)  # the deleted one was closed


def test_compressed_rotation_is_not_read_again(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    append(app, numbered(0, 500))
    agent = run_agent(agent_json(daemon.endpoint, [flow(logs / "app.log*")]))
    wait_until(lambda: tracked(agent, app))
    rotated = logs / "app.log.1"
    app.rename(rotated)
    append(app, numbered(500, 100))
    # logrotate's delaycompress/compress: the rotated file becomes app.log.1.gz and is deleted
    with open(rotated, "rb") as src, gzip.open(logs / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    rotated.unlink()
    lines = wait_for_lines(out, 600)
    wait_until(lambda: all(not f.path.endswith(".gz") for f in agent.flows[0].tailer.files))
    assert sorted(lines) == numbered(0, 600)
    assert duplicates(delivered_lines(out)) == 0


def test_symlink_switch(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    pods = tmp_path / "pods"
    pods.mkdir()
    first, second = pods / "0.log", pods / "1.log"
    append(first, numbered(0, 100))
    link = logs / "current.log"
    link.symlink_to(first)
    agent = run_agent(agent_json(daemon.endpoint, [flow(link)]))
    wait_until(lambda: tracked(agent, link))
    append(second, numbered(100, 100))
    tmp_link = logs / "current.log.tmp"
    tmp_link.symlink_to(second)
    tmp_link.replace(link)  # an atomic switch, as kubelet does
    append(first, numbered(200, 10))  # the old container's last words
    append(second, numbered(210, 10))
    lines = wait_for_lines(out, 220)
    assert sorted(lines) == numbered(0, 220)


def test_new_files_are_picked_up_as_they_appear(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    run_agent(agent_json(daemon.endpoint, [flow(logs / "*.log", initialPosition="END_OF_FILE")]))
    expected = []
    for i in range(3):
        lines = numbered(i * 100, 100, tag=f"file{i}")
        append(logs / f"{i}.log", lines)
        expected += lines
    assert sorted(wait_for_lines(out, 300)) == sorted(expected)


def test_end_of_file_skips_what_was_there_once(start_daemon, run_agent, tmp_path: Path) -> None:
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    append(app, numbered(0, 100))
    append(app, [b"half a li"])  # END_OF_FILE starts after the last complete line
    config = agent_json(daemon.endpoint, [flow(app, initialPosition="END_OF_FILE")])
    agent = run_agent(config, tmp_path / "state")
    wait_until(lambda: tracked(agent, app))
    append(app, [b"ne\n", *numbered(100, 10)])
    assert sorted(wait_for_lines(out, 11)) == sorted([b"half a line\n", *numbered(100, 10)])
    agent.stop()
    append(app, numbered(110, 10))  # written while the agent is down: shipped on the next start
    run_agent(config, tmp_path / "state")
    lines = wait_for_lines(out, 21)
    assert sorted(lines) == sorted([b"half a line\n", *numbered(100, 20)])


def test_same_inode_with_new_content_is_a_new_file(start_daemon, run_agent, tmp_path: Path) -> None:
    """Inode reuse: a checkpoint whose fingerprint does not match the file is not this file's."""
    daemon, logs, out = setup(start_daemon, tmp_path)
    app = logs / "app.log"
    append(app, numbered(0, 100, tag="old"))
    config = agent_json(daemon.endpoint, [flow(app)])
    agent = run_agent(config, tmp_path / "state")
    wait_for_lines(out, 100)
    agent.stop()
    inode = app.stat().st_ino
    new = numbered(0, 200, tag="new")  # longer than the old checkpoint, so only the fingerprint tells
    with open(app, "r+b") as f:
        f.write(b"".join(new))
    assert app.stat().st_ino == inode
    run_agent(config, tmp_path / "state")
    lines = wait_for_lines(out, 300)
    assert sorted(lines) == sorted(numbered(0, 100, tag="old") + new)
