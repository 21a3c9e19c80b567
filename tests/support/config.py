"""A daemon's configuration as the tests write it: delivery stream definitions and the YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.aws import ROLE


def local_stream(name: str, bucket: str = "local", *, size_mb: int = 1, interval: int = 0,
                 **extra: Any) -> dict[str, Any]:
    """A CreateDeliveryStream body for an ExtendedS3 destination."""
    dest = {
        "RoleARN": ROLE,
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval},
        **extra,
    }
    return {"DeliveryStreamName": name, "ExtendedS3DestinationConfiguration": dest}


def write_config(path: Path, settings: dict[str, Any], streams: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({**settings, "delivery_streams": streams}, sort_keys=False))
    return path
