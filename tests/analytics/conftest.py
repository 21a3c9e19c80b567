"""The Kinesis Analytics API tests' daemon: ``start_analytics`` (see ``tests.support.analytics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firehose.settings import load_config
from tests.support.analytics import AnalyticsDaemon, RecordingRuntime
from tests.support.config import write_config
from tests.support.daemon import RunningDaemon
from tests.support.ports import free_port


@pytest.fixture
def start_analytics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AnalyticsDaemon]]:
    """Start a daemon (with a ``RecordingRuntime`` unless ``runtime=None``) from extra settings."""
    running: list[AnalyticsDaemon] = []

    def start(*, runtime: RecordingRuntime | None = None, state_dir: Path | None = None,
              **settings: Any) -> AnalyticsDaemon:
        from firehose.daemon import Daemon

        monkeypatch.setattr(Daemon, "_analytics_runtime", lambda _self: runtime)
        base: dict[str, Any] = {"port": free_port(), "state_dir": str(state_dir or tmp_path / "state"),
                                "log_level": "WARNING", **settings}
        path = write_config(tmp_path / f"firehose-{len(running)}.yaml", base, [])
        d = AnalyticsDaemon(RunningDaemon(load_config(path)), runtime, path, base)
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()
