"""Where batches go. ``build`` picks the destination for a definition; ``build_store`` the object store.

A bucket listed under ``buckets:`` with a ``directory`` is written to that
directory (the embedded default); any other bucket is S3, through boto3. The
other destinations each have one module; every one of them also has an
``S3Configuration``, which ``build_store`` turns into the object store that
holds its staged objects (Redshift), backups and error output.
"""

from __future__ import annotations

from dataclasses import replace

from firehose.definitions import (
    AmazonOpenSearchServerlessDestinationConfiguration,
    DeliveryStreamDefinition,
    ElasticsearchDestinationConfiguration,
    HttpEndpointDestinationConfiguration,
    RedshiftDestinationConfiguration,
    S3DestinationConfiguration,
    SplunkDestinationConfiguration,
)
from firehose.destinations.base import (
    Destination,
    DestinationContext,
    Failure,
    ObjectDestination,
    Outcome,
    RecordDestination,
)
from firehose.destinations.elasticsearch import ElasticsearchDestination
from firehose.destinations.http_endpoint import HttpEndpointDestination
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import RedshiftDestination
from firehose.destinations.s3 import S3Destination
from firehose.destinations.splunk import SplunkDestination

__all__ = [
    "Destination",
    "DestinationContext",
    "Failure",
    "ObjectDestination",
    "Outcome",
    "RecordDestination",
    "build",
    "build_store",
]


def build_store(config: S3DestinationConfiguration, ctx: DestinationContext) -> ObjectDestination:
    bucket = config.bucket
    local = ctx.settings.buckets.get(bucket)
    if local is not None and local.directory is not None:
        return LocalDirectoryDestination(local.directory, ctx)
    return S3Destination(bucket, ctx, kms_key_arn=config.kms_key_arn)


def build(definition: DeliveryStreamDefinition, ctx: DestinationContext) -> Destination:  # type: ignore[type-arg]
    """The destination a definition delivers to (constructors do no I/O)."""
    if definition.is_s3:
        return build_store(definition.destination, ctx)
    config = definition.record_destination
    if isinstance(config, RedshiftDestinationConfiguration):
        return RedshiftDestination(config, replace(ctx, stage=build_store(config.s3_configuration, ctx)))
    if isinstance(config, ElasticsearchDestinationConfiguration | AmazonOpenSearchServerlessDestinationConfiguration):
        return ElasticsearchDestination(config, ctx)
    if isinstance(config, SplunkDestinationConfiguration):
        return SplunkDestination(config, ctx)
    if isinstance(config, HttpEndpointDestinationConfiguration):
        return HttpEndpointDestination(config, ctx)
    raise ValueError(f"{definition.destination_member} has no destination in this build")
