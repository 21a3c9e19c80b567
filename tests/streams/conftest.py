"""Fixtures for the Kinesis sidecar's tests: one shared ``firehose streams serve`` per module, and its client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.streams import StreamsServer


@pytest.fixture(scope="module")
def streams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    """One shared server for tests that each use their own stream names."""
    root = tmp_path_factory.mktemp("kinesis")
    server = StreamsServer(root / "state", root / "server.log")
    yield server
    server.stop()


@pytest.fixture
def kinesis(streams_server: StreamsServer) -> Any:
    return streams_server.client()
