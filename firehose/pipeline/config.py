"""What a stream's pipeline acts on, built once per definition version.

``StreamConfig.build`` is also the deep validation of a definition: it
resolves transform functions, compiles jq queries, finds the format-conversion
schema and checks its options, and needs a keyring when the bucket encrypts.
The daemon runs it for every config-file stream at start and for every
CreateDeliveryStream and UpdateDestination, so a definition that cannot run is
refused up front with the reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firehose import definitions, objectkeys
from firehose.definitions import DeliveryStreamDefinition, ExtendedS3DestinationConfiguration
from firehose.encoding import convert, encrypt
from firehose.encoding.builder import Encoding
from firehose.partitions import OTF_DATABASE, OTF_TABLE
from firehose.processing import chain
from firehose.settings import Settings


@dataclass(frozen=True)
class StreamConfig:
    """One definition version, as the pipeline uses it.

    ``records`` tells the delivery shape: False for object destinations (S3, a
    local directory, Redshift, which stages objects), True for record
    destinations (OpenSearch, Splunk, HTTP endpoint). ``keys`` and ``encoding``
    (all the encoding stage needs to turn batches into objects) are those of
    the object store: the S3 destination itself, or the ``S3Configuration``
    where Redshift stages batches and where record destinations write backups
    and error output.
    """

    version: int
    member: str
    records: bool
    object_store: definitions.S3DestinationConfiguration
    keys: objectkeys.KeyTemplate
    size_bytes: int
    interval_s: float
    plan: chain.Plan
    encoding: Encoding
    backup_all: bool = False
    #: ``S3BackupMode: Enabled`` (ExtendedS3, Redshift): the source-record backup, as a stream of its
    #: own that reads the records as accepted and writes them to ``S3BackupConfiguration``.
    backup: StreamConfig | None = None
    #: This daemon's ``cluster`` node id: part of every object key's unique part (``naming.py``), so
    #: the nodes of a fleet writing to one bucket never collide.
    node: str = ""
    #: Iceberg tables' own ``S3ErrorOutputPrefix``, by (database, table); ``None`` stands for the batches no
    #: route names (the stream's single table).
    table_keys: Mapping[tuple[str, str] | None, objectkeys.KeyTemplate] = field(default_factory=dict)

    def error_keys(self, partition_keys: Mapping[str, str] | None) -> objectkeys.KeyTemplate:
        """The key template of a batch's error output: its Iceberg table's, else the stream's."""
        route = (partition_keys[OTF_DATABASE], partition_keys[OTF_TABLE]) \
            if partition_keys and OTF_TABLE in partition_keys else None
        return self.table_keys.get(route, self.keys)

    @classmethod
    def build(cls, definition: DeliveryStreamDefinition, version: int, settings: Settings) -> StreamConfig:
        """ValueError with the reason when the definition cannot run here."""
        store = definition.object_store
        bucket = settings.buckets.get(store.bucket)
        encrypt_store = bool(bucket and bucket.encrypt)
        if definition.is_s3:
            cfg = definition.destination
            size, interval = definitions.buffering(cfg)
            plan = chain.plan(definition, settings)
            encoding = Encoding.of(cfg.compression, _conversion(cfg, settings), encrypt=encrypt_store,
                                   file_extension=cfg.file_extension)
            keys = objectkeys.KeyTemplate.build(cfg.prefix, cfg.error_output_prefix,
                                                custom_time_zone=cfg.custom_time_zone, extension=encoding.extension)
            return cls(version, definition.destination_member, False, cfg, keys, size, interval, plan, encoding,
                       backup=_source_backup(definition, version, settings, cfg.custom_time_zone),
                       node=settings.node_id)
        dest = definition.record_destination
        size, interval = dest.buffering()
        redshift = isinstance(dest, definitions.RedshiftDestinationConfiguration)
        if redshift:
            from firehose.destinations import redshift as redshift_destination

            redshift_destination.validate(dest)
            if encrypt_store:
                raise ValueError("Redshift cannot COPY envelope-encrypted objects: the staging bucket "
                                 f"{store.bucket!r} must not have encrypt: true")
        plan = chain.plan(definition, settings)
        encoding = Encoding.of(store.compression, None, encrypt=encrypt_store)
        keys = objectkeys.KeyTemplate.build(store.prefix, store.error_output_prefix, custom_time_zone=None,
                                            extension=encoding.extension)
        return cls(version, definition.destination_member, not redshift, store, keys, size, interval, plan, encoding,
                   backup_all=dest.backup_all, backup=_source_backup(definition, version, settings, None),
                   node=settings.node_id, table_keys=_table_keys(dest, keys))

    @property
    def conversion(self) -> convert.Conversion | None:
        """The format conversion, if the stream converts (the deliverer names an error key for it at seal)."""
        return self.encoding.conversion

    @property
    def encrypt(self) -> bool:
        """Whether the object store or the source-record backup's bucket encrypts (the daemon then
        loads the keyring)."""
        return self.encoding.encrypt or (self.backup is not None and self.backup.encrypt)


def _table_keys(dest: Any, keys: objectkeys.KeyTemplate) -> dict[tuple[str, str] | None, objectkeys.KeyTemplate]:
    """Error output keys of the Iceberg tables that have an ``S3ErrorOutputPrefix`` (spec: iceberg.md §7)."""
    if not isinstance(dest, definitions.IcebergDestinationConfiguration):
        return {}
    tables = dest.destination_table_configuration_list or []
    out: dict[tuple[str, str] | None, objectkeys.KeyTemplate] = {
        (t.destination_database_name, t.destination_table_name): keys.with_error_prefix(t.s3_error_output_prefix)
        for t in tables if t.s3_error_output_prefix}
    if len(tables) == 1 and tables[0].s3_error_output_prefix:
        out[None] = out[(tables[0].destination_database_name, tables[0].destination_table_name)]
    return out


def _source_backup(definition: DeliveryStreamDefinition, version: int, settings: Settings,
                   custom_time_zone: str | None) -> StreamConfig | None:
    """The source-record backup as a plain S3 stream: no processing, no conversion, the backup
    configuration's own prefixes, buffering hints and compression.

    Its keys are laid out like any S3 object's (``<Prefix or YYYY/MM/dd/HH/><stream>-<version>-…``),
    in the destination's ``CustomTimeZone`` (the stream's one clock for key times; AWS's backup
    configuration has no zone of its own). ``FileExtension`` is the destination's data objects' own:
    backups end with their compression's extension. AWS says the backup's ``ErrorOutputPrefix`` is
    not used for S3 destinations (a backup PUT is retried until it lands); here it names where the
    records of a backup batch that cannot be built at all go, with the reason.
    """
    cfg = definitions.source_backup(definition)
    if cfg is None:
        return None
    bucket = settings.buckets.get(cfg.bucket)
    encoding = Encoding.of(cfg.compression, None, encrypt=bool(bucket and bucket.encrypt))
    keys = objectkeys.KeyTemplate.build(cfg.prefix, cfg.error_output_prefix, custom_time_zone=custom_time_zone,
                                        extension=encoding.extension)
    size, interval = definitions.buffering(cfg)
    return StreamConfig(version, definition.destination_member, False, cfg, keys, size, interval, chain.Plan(),
                        encoding, node=settings.node_id)


def endpoint_url(dest: Any, settings: Settings) -> str | None:
    """The URL an HTTP-based destination (HTTP endpoint, Splunk, OpenSearch) sends to, if it is one."""
    if isinstance(dest, definitions.HttpEndpointDestinationConfiguration):
        return dest.endpoint_configuration.url
    if isinstance(dest, definitions.SplunkDestinationConfiguration):
        return dest.hec_endpoint
    if isinstance(dest, definitions.ElasticsearchDestinationConfiguration):
        return dest.cluster_endpoint or settings.domains.get(dest.domain_arn or "")
    if isinstance(dest, definitions.AmazonOpenSearchServerlessDestinationConfiguration):
        return dest.collection_endpoint
    return None


def _check_endpoint(dest: Any, settings: Settings) -> None:
    """``http.allowed_endpoints``: an HTTP-based destination may only point where the operator allows.

    Without it anyone who may create a stream could make the daemon post to any URL it can reach,
    internal services included."""
    allowed = settings.http.allowed_endpoints
    url = endpoint_url(dest, settings)
    if not allowed or url is None:
        return
    if not any(fnmatch.fnmatchcase(url, pattern) for pattern in allowed):
        raise ValueError(f"the endpoint {url} is not allowed here: http.allowed_endpoints permits only "
                         + ", ".join(allowed))


def _conversion(cfg: ExtendedS3DestinationConfiguration, settings: Settings) -> convert.Conversion | None:
    conv = cfg.format_conversion
    if conv is None:
        return None
    schema_cfg = conv.schema_configuration or definitions.SchemaConfiguration()
    database, table = schema_cfg.database_name, schema_cfg.table_name
    if not database or not table:
        raise ValueError("DataFormatConversionConfiguration.SchemaConfiguration needs DatabaseName and TableName")
    name = f"{database}.{table}"
    declared = settings.schemas.get(name)
    if declared is None:
        raise ValueError(f"DataFormatConversionConfiguration: no schema {name!r} in the daemon's schemas: setting "
                         "(it stands for the Glue table AWS would read)")
    schema = convert.parse_schema([{"Name": c.name, "Type": c.type} for c in declared.columns])
    deserializer, serializer = convert.options_from_aws(conv)
    try:
        convert.check_schema(schema, deserializer, serializer)
    except ValueError as e:
        raise ValueError(f"DataFormatConversionConfiguration: schema {name!r} cannot be converted: {e}") from None
    catalog = schema_cfg.catalog_id or settings.account_id
    region = schema_cfg.region or settings.region
    info = {
        "catalogId": catalog,
        "databaseName": database,
        "tableName": table,
        "region": region,
        "versionId": schema_cfg.version_id or "LATEST",
        "catalogArn": f"arn:aws:glue:{region}:{catalog}:catalog",
    }
    return convert.Conversion(schema, deserializer, serializer, info)


def check_definition(definition: DeliveryStreamDefinition, settings: Settings) -> StreamConfig:
    """Deep validation: everything a definition needs to run here (ValueError with the reason)."""
    config = StreamConfig.build(definition, 1, settings)
    msk = definition.msk_source_configuration
    if msk is not None and msk.msk_cluster_arn not in settings.kafka_clusters:
        raise ValueError(f"MSKClusterARN {msk.msk_cluster_arn} is not a cluster this daemon knows: add it to "
                         "kafka_clusters in the daemon's config (its bootstrap_servers and security settings)")
    if not definition.is_s3:
        _check_endpoint(definition.record_destination, settings)
    if config.encrypt:
        enc = settings.encryption
        bucket = config.object_store.bucket if config.encoding.encrypt or config.backup is None \
            else config.backup.object_store.bucket
        if not encrypt.Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix).ids:
            raise ValueError(f"bucket {bucket!r} encrypts, but the keyring is empty: add a "
                             f"<key id>.key file to encryption.keys_dir or a {enc.env_prefix}<ID> variable")
    return config
