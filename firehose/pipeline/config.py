"""What a stream's pipeline acts on, built once per definition version.

``StreamConfig.build`` is also the deep validation of a definition: it
resolves transform functions, compiles jq queries, finds the format-conversion
schema and checks its options, and needs a keyring when the bucket encrypts.
The daemon runs it for every config-file stream at start and for every
CreateDeliveryStream and UpdateDestination, so a definition that cannot run is
refused up front with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firehose import definitions, objectkeys
from firehose.definitions import DeliveryStreamDefinition, ExtendedS3DestinationConfiguration
from firehose.processing import chain, compress, convert, encrypt
from firehose.settings import Settings


@dataclass(frozen=True)
class Conversion:
    schema: convert.Schema
    deserializer: convert.DeserializerOptions
    serializer: convert.SerializerOptions
    table: dict[str, Any]  # dataCatalogTable, as error documents report it


@dataclass(frozen=True)
class StreamConfig:
    version: int
    destination: ExtendedS3DestinationConfiguration
    keys: objectkeys.KeyTemplate
    size_bytes: int
    interval_s: float
    plan: chain.Plan
    codec: compress.Codec
    conversion: Conversion | None
    encrypt: bool

    @classmethod
    def build(cls, definition: DeliveryStreamDefinition, version: int, settings: Settings) -> StreamConfig:
        """ValueError with the reason when the definition cannot run here."""
        if not definition.is_s3:
            raise ValueError(f"{definition.destination_member} is not supported by this daemon yet")
        cfg = definition.destination
        size, interval = definitions.buffering(cfg)
        keys = objectkeys.KeyTemplate.build(cfg.prefix, cfg.error_output_prefix, custom_time_zone=cfg.custom_time_zone,
                                            extension=definitions.file_extension(cfg))
        bucket = settings.buckets.get(cfg.bucket)
        return cls(
            version=version,
            destination=cfg,
            keys=keys,
            size_bytes=size,
            interval_s=interval,
            plan=chain.plan(definition, settings),
            codec=compress.codec(cfg.compression),
            conversion=_conversion(cfg, settings),
            encrypt=bool(bucket and bucket.encrypt),
        )


def _conversion(cfg: ExtendedS3DestinationConfiguration, settings: Settings) -> Conversion | None:
    conv = cfg.format_conversion
    if not conv:
        return None
    schema_cfg = conv.get("SchemaConfiguration") or {}
    database, table = schema_cfg.get("DatabaseName"), schema_cfg.get("TableName")
    if not database or not table:
        raise ValueError("DataFormatConversionConfiguration.SchemaConfiguration needs DatabaseName and TableName")
    name = f"{database}.{table}"
    declared = settings.schemas.get(name)
    if declared is None:
        raise ValueError(f"DataFormatConversionConfiguration: no schema {name!r} in the daemon's schemas: setting "
                         "(it stands for the Glue table AWS would read)")
    schema = convert.parse_schema([{"Name": c.name, "Type": c.type} for c in declared.columns])
    deserializer, serializer = convert.options_from_aws(conv)
    catalog = schema_cfg.get("CatalogId") or settings.account_id
    region = schema_cfg.get("Region") or settings.region
    info = {
        "catalogId": catalog,
        "databaseName": database,
        "tableName": table,
        "region": region,
        "versionId": schema_cfg.get("VersionId") or "LATEST",
        "catalogArn": f"arn:aws:glue:{region}:{catalog}:catalog",
    }
    return Conversion(schema, deserializer, serializer, info)


def check_definition(definition: DeliveryStreamDefinition, settings: Settings) -> StreamConfig:
    """Deep validation: everything a definition needs to run here (ValueError with the reason)."""
    config = StreamConfig.build(definition, 1, settings)
    if config.encrypt:
        enc = settings.encryption
        if not encrypt.Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix).ids:
            raise ValueError(f"bucket {config.destination.bucket!r} encrypts, but the keyring is empty: add a "
                             f"<key id>.key file to encryption.keys_dir or a {enc.env_prefix}<ID> variable")
    return config
