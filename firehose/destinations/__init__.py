"""Where batches go. ``build`` picks the destination class for a stream's definition.

A bucket listed under ``buckets:`` with a ``directory`` is written to that
directory (the embedded default); any other bucket is S3, through boto3.
"""

from __future__ import annotations

from firehose.definitions import S3DestinationConfiguration
from firehose.destinations.base import Destination, DestinationContext, ObjectDestination, Outcome
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.s3 import S3Destination

__all__ = ["Destination", "DestinationContext", "ObjectDestination", "Outcome", "build"]


def build(config: S3DestinationConfiguration, ctx: DestinationContext) -> ObjectDestination:
    bucket = config.bucket
    local = ctx.settings.buckets.get(bucket)
    if local is not None and local.directory is not None:
        return LocalDirectoryDestination(local.directory, ctx)
    return S3Destination(bucket, ctx, kms_key_arn=config.kms_key_arn)
