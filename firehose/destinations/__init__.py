"""Where batches go. ``build`` makes the destination for a definition, with the object store it needs.

A bucket listed under ``buckets:`` with a ``directory`` is written to that
directory (the embedded default); any other bucket is S3, through boto3. The
other destinations each have one module; every one of them also has an
``S3Configuration``, whose bucket is their object store: where Redshift stages
its objects and where the record destinations write backups and error output.
Building returns the destination and that store together (``Built``), so the
store a destination uses and the one the pipeline writes to are one object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firehose.definitions import (
    AmazonOpenSearchServerlessDestinationConfiguration,
    DeliveryStreamDefinition,
    ElasticsearchDestinationConfiguration,
    HttpEndpointDestinationConfiguration,
    IcebergDestinationConfiguration,
    RedshiftDestinationConfiguration,
    S3DestinationConfiguration,
    SplunkDestinationConfiguration,
    source_backup,
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
from firehose.destinations.iceberg import IcebergDestination
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import RedshiftDestination
from firehose.destinations.s3 import S3Destination
from firehose.destinations.splunk import SplunkDestination

__all__ = [
    "Built",
    "Destination",
    "DestinationContext",
    "Failure",
    "ObjectDestination",
    "Outcome",
    "RecordDestination",
    "build",
    "worker_modules",
]


#: Every destination class: what is known of them before any is built (``worker_modules``).
CLASSES: tuple[type[Destination[Any]], ...] = (
    LocalDirectoryDestination, S3Destination, RedshiftDestination, ElasticsearchDestination, SplunkDestination,
    HttpEndpointDestination, IcebergDestination)


def worker_modules() -> tuple[str, ...]:
    """The modules destinations run in worker processes, for every worker to import as it starts
    (whichever stream it will serve)."""
    return tuple(dict.fromkeys(cls.worker_module for cls in CLASSES if cls.worker_module is not None))


@dataclass(frozen=True, slots=True)
class Built:
    """A destination and its object store: None for an S3 or local destination (it is one), else
    the ``S3Configuration``'s bucket, which the destination itself writes to (Redshift stages its
    batches there) and the pipeline writes backups and error output to."""

    destination: Destination[Any]
    store: ObjectDestination | None
    #: The bucket of the source-record backup (``S3BackupMode: Enabled`` on ExtendedS3 and Redshift).
    backup: ObjectDestination | None = None


def build(definition: DeliveryStreamDefinition, ctx: DestinationContext) -> Built:
    """The destination a definition delivers to, with its object store (constructors do no I/O)."""
    backup_config = source_backup(definition)
    backup = _object_store(backup_config, ctx) if backup_config is not None else None
    if definition.is_s3:
        return Built(_object_store(definition.destination, ctx), None, backup)
    config = definition.record_destination
    store = _object_store(config.s3_configuration, ctx)
    destination: Destination[Any]
    if isinstance(config, RedshiftDestinationConfiguration):
        destination = RedshiftDestination(config, ctx, stage=store)
    elif isinstance(config, ElasticsearchDestinationConfiguration | AmazonOpenSearchServerlessDestinationConfiguration):
        destination = ElasticsearchDestination(config, ctx)
    elif isinstance(config, SplunkDestinationConfiguration):
        destination = SplunkDestination(config, ctx)
    elif isinstance(config, HttpEndpointDestinationConfiguration):
        destination = HttpEndpointDestination(config, ctx)
    elif isinstance(config, IcebergDestinationConfiguration):
        destination = IcebergDestination(config, ctx)
    else:
        raise ValueError(f"{definition.destination_member} has no destination in this build")
    return Built(destination, store, backup)


def _object_store(config: S3DestinationConfiguration, ctx: DestinationContext) -> ObjectDestination:
    local = ctx.settings.buckets.get(config.bucket)
    if local is not None and local.directory is not None:
        return LocalDirectoryDestination(local.directory, ctx)
    return S3Destination(config.bucket, ctx, kms_key_arn=config.kms_key_arn)
