"""Delivery streams of type KinesisStreamAsSource reading the daemon's own Kinesis sidecar: their definitions
and the sidecar's settings."""

from __future__ import annotations

from typing import Any

from tests.support.aws import ROLE
from tests.support.config import local_stream

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/{}"


def source_stream(name: str, kinesis_stream: str, **extra: Any) -> dict[str, Any]:
    """A delivery stream reading ``kinesis_stream``, writing under ``{name}/`` (errors under ``errors-{name}/``)."""
    body = local_stream(name, **extra)
    body["DeliveryStreamType"] = "KinesisStreamAsSource"
    body["KinesisStreamSourceConfiguration"] = {"KinesisStreamARN": ARN.format(kinesis_stream), "RoleARN": ROLE}
    body["ExtendedS3DestinationConfiguration"]["Prefix"] = f"{name}/"
    body["ExtendedS3DestinationConfiguration"]["ErrorOutputPrefix"] = f"errors-{name}/"
    return body


def kinesis_settings(port: int, *streams: tuple[str, int], **extra: Any) -> dict[str, Any]:
    """The daemon's ``kinesis`` settings: the sidecar on ``port`` with these (name, shard count) streams,
    polled often."""
    return {"enabled": True, "port": port, "source_poll_interval_seconds": 0.05,
            "streams": [{"StreamName": n, "ShardCount": c} for n, c in streams], **extra}
