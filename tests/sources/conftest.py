"""The Kinesis sidecar fixtures, shared with the streams tests."""

from tests.streams.conftest import start_streams_server

__all__ = ["start_streams_server"]
