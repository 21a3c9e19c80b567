"""Delivery stream definitions, in the shape of a CreateDeliveryStream request.

Config files and the control-plane API use these same models, so a definition
pasted from ``aws firehose create-delivery-stream --cli-input-json`` is read
exactly as AWS would read it, and both reject the same mistakes with the same
words. Attributes are snake_case; the AWS member names are the aliases, and
dumps use them (``model_dump(by_alias=True)``).

What a definition may ask for is bounded by what the daemon can do: a feature
AWS has but this daemon does not implement yet is refused with a message that
says so, rather than accepted and silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_pascal

from firehose import objectkeys

MiB = 1024 * 1024

STREAM_NAME_PATTERN = r"^[a-zA-Z0-9_.-]+$"
ROLE_ARN_PATTERN = r"^arn:.*:iam::\d{12}:role/[a-zA-Z_0-9+=,.@\-_/]+$"
BUCKET_ARN_PATTERN = r"^arn:.*:s3:::[\w\.\-]{1,255}$"
KMS_KEY_ARN_PATTERN = r"^arn:.*:kms:[a-zA-Z0-9\-]+:\d{12}:(key|alias)/[a-zA-Z_0-9+=,.@\-_/]+$"
KINESIS_ARN_PATTERN = r"^arn:.*:kinesis:[a-zA-Z0-9\-]+:\d{12}:stream/[a-zA-Z0-9_.-]+$"

StreamName = Annotated[str, Field(min_length=1, max_length=64, pattern=STREAM_NAME_PATTERN)]
RoleARN = Annotated[str, Field(min_length=1, max_length=512, pattern=ROLE_ARN_PATTERN)]
BucketARN = Annotated[str, Field(min_length=1, max_length=2048, pattern=BUCKET_ARN_PATTERN)]
PrefixText = Annotated[str, Field(max_length=1024)]


class Shape(BaseModel):
    """Base for AWS shapes: AWS member names as aliases, unknown members ignored.

    Unknown members are ignored (as AWS does for newer SDKs); config files are
    additionally checked for them by ``unknown_members`` to catch typos.
    """

    model_config = ConfigDict(
        alias_generator=to_pascal,
        populate_by_name=True,
        extra="ignore",
        regex_engine="python-re",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# -- shared sub-shapes ----------------------------------------------------------


class BufferingHints(Shape):
    size_in_mbs: Annotated[int, Field(ge=1, le=128)] | None = Field(None, alias="SizeInMBs")
    interval_in_seconds: Annotated[int, Field(ge=0, le=900)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> BufferingHints:
        if (self.size_in_mbs is None) != (self.interval_in_seconds is None):
            raise ValueError("BufferingHints needs both SizeInMBs and IntervalInSeconds when either is given")
        return self


class KMSEncryptionConfig(Shape):
    awskms_key_arn: Annotated[str, Field(min_length=1, max_length=512, pattern=KMS_KEY_ARN_PATTERN)] = Field(
        alias="AWSKMSKeyARN"
    )


class EncryptionConfiguration(Shape):
    no_encryption_config: Literal["NoEncryption"] | None = None
    kms_encryption_config: KMSEncryptionConfig | None = Field(None, alias="KMSEncryptionConfig")

    @model_validator(mode="after")
    def _one_of(self) -> EncryptionConfiguration:
        if self.no_encryption_config and self.kms_encryption_config:
            raise ValueError("EncryptionConfiguration takes NoEncryptionConfig or KMSEncryptionConfig, not both")
        return self


class CloudWatchLoggingOptions(Shape):
    enabled: bool | None = None
    log_group_name: Annotated[str, Field(max_length=512)] | None = None
    log_stream_name: Annotated[str, Field(max_length=512)] | None = None


class ProcessorParameter(Shape):
    parameter_name: Literal[
        "LambdaArn", "NumberOfRetries", "MetadataExtractionQuery", "JsonParsingEngine", "RoleArn",
        "BufferSizeInMBs", "BufferIntervalInSeconds", "SubRecordType", "Delimiter", "CompressionFormat",
        "DataMessageExtraction",
    ]
    parameter_value: Annotated[str, Field(min_length=1, max_length=5120)]


class Processor(Shape):
    type: Literal[
        "RecordDeAggregation", "Decompression", "CloudWatchLogProcessing", "Lambda", "MetadataExtraction",
        "AppendDelimiterToRecord",
    ]
    parameters: list[ProcessorParameter] | None = None


class ProcessingConfiguration(Shape):
    enabled: bool | None = None
    processors: list[Processor] | None = None


class RetryOptions(Shape):
    duration_in_seconds: Annotated[int, Field(ge=0, le=7200)] | None = None


class DynamicPartitioningConfiguration(Shape):
    retry_options: RetryOptions | None = None
    enabled: bool | None = None


_LATER = "is not supported by this daemon yet"
#: AWS's CompressionFormat values, plus ZSTD (beyond AWS).
COMPRESSION_FORMATS = ("UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY", "ZSTD")


class S3DestinationConfiguration(Shape):
    """Also the nested ``S3Configuration``/``S3BackupConfiguration`` of other destinations."""

    role_arn: RoleARN = Field(alias="RoleARN")
    bucket_arn: BucketARN = Field(alias="BucketARN")
    prefix: PrefixText | None = None
    error_output_prefix: PrefixText | None = None
    buffering_hints: BufferingHints | None = None
    compression_format: Literal["UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY", "ZSTD"] | None = None
    encryption_configuration: EncryptionConfiguration | None = None
    cloud_watch_logging_options: CloudWatchLoggingOptions | None = Field(None, alias="CloudWatchLoggingOptions")

    @model_validator(mode="after")
    def _s3_semantics(self) -> S3DestinationConfiguration:
        objectkeys.validate_prefixes(self.prefix, self.error_output_prefix, dynamic_partitioning=self.dynamic_partitioning)
        return self

    @property
    def dynamic_partitioning(self) -> bool:
        return False

    @property
    def bucket(self) -> str:
        return self.bucket_arn.split(":::", 1)[1]

    @property
    def compression(self) -> str:
        return self.compression_format or "UNCOMPRESSED"

    @property
    def kms_key_arn(self) -> str | None:
        enc = self.encryption_configuration
        return enc.kms_encryption_config.awskms_key_arn if enc and enc.kms_encryption_config else None


class ExtendedS3DestinationConfiguration(S3DestinationConfiguration):
    processing_configuration: ProcessingConfiguration | None = None
    s3_backup_mode: Literal["Disabled", "Enabled"] | None = Field(None, alias="S3BackupMode")
    s3_backup_configuration: S3DestinationConfiguration | None = Field(None, alias="S3BackupConfiguration")
    data_format_conversion_configuration: dict[str, Any] | None = None
    dynamic_partitioning_configuration: DynamicPartitioningConfiguration | None = None
    file_extension: Annotated[str, Field(max_length=128, pattern=r"^$|^\.[0-9a-z!\-_.*'()]+$")] | None = None
    custom_time_zone: Annotated[str, Field(max_length=50, pattern=r"^$|^[a-zA-Z/_]+$")] | None = None

    @model_validator(mode="after")
    def _extended_semantics(self) -> ExtendedS3DestinationConfiguration:
        objectkeys.zone(self.custom_time_zone)
        _refuse_unsupported(self)
        return self

    @property
    def dynamic_partitioning(self) -> bool:
        d = self.dynamic_partitioning_configuration
        return bool(d and d.enabled)

    @property
    def format_conversion(self) -> dict[str, Any] | None:
        """The DataFormatConversionConfiguration when it is enabled (Enabled defaults to true)."""
        conv = self.data_format_conversion_configuration
        return conv if conv and conv.get("Enabled", True) else None


def _refuse_unsupported(cfg: ExtendedS3DestinationConfiguration) -> None:
    """AWS's cross-field rules, and features this build cannot honour yet (refused, not ignored)."""
    if cfg.s3_backup_mode == "Enabled":
        raise ValueError(f"S3BackupMode Enabled {_LATER}")
    if cfg.format_conversion:
        if cfg.compression != "UNCOMPRESSED":
            raise ValueError("CompressionFormat must be UNCOMPRESSED with DataFormatConversionConfiguration "
                             "(Parquet and ORC compress inside the file)")
        hints = cfg.buffering_hints
        if hints and hints.size_in_mbs is not None and hints.size_in_mbs < 64:
            raise ValueError("BufferingHints.SizeInMBs must be at least 64 with DataFormatConversionConfiguration")


class DeliveryStreamEncryptionConfigurationInput(Shape):
    key_arn: str | None = Field(None, alias="KeyARN")
    key_type: Literal["AWS_OWNED_CMK", "CUSTOMER_MANAGED_CMK"]


_TAG_CHARS = re.compile(r"^[\w\s_.:/=+\-@%]*$", re.UNICODE)


class Tag(Shape):
    key: Annotated[str, Field(min_length=1, max_length=128)]
    value: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v.startswith("aws:"):
            raise ValueError("tag keys must not start with 'aws:'")
        if not _TAG_CHARS.match(v):
            raise ValueError("tag keys may hold letters, digits, spaces and _ . : / = + - @ %")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None) -> str | None:
        if v is not None and not _TAG_CHARS.match(v):
            raise ValueError("tag values may hold letters, digits, spaces and _ . : / = + - @ %")
        return v


class DirectPutSourceConfiguration(Shape):
    throughput_hint_in_mbs: Annotated[int, Field(ge=1, le=100)] = Field(alias="ThroughputHintInMBs")


class KinesisStreamSourceConfiguration(Shape):
    kinesis_stream_arn: Annotated[str, Field(min_length=1, max_length=512, pattern=KINESIS_ARN_PATTERN)] = Field(
        alias="KinesisStreamARN"
    )
    role_arn: RoleARN = Field(alias="RoleARN")


#: Destination members of CreateDeliveryStream, and the ones this build delivers to.
DESTINATION_FIELDS = {
    "S3DestinationConfiguration": "s3_destination_configuration",
    "ExtendedS3DestinationConfiguration": "extended_s3_destination_configuration",
    "RedshiftDestinationConfiguration": "redshift_destination_configuration",
    "ElasticsearchDestinationConfiguration": "elasticsearch_destination_configuration",
    "AmazonopensearchserviceDestinationConfiguration": "amazonopensearchservice_destination_configuration",
    "SplunkDestinationConfiguration": "splunk_destination_configuration",
    "HttpEndpointDestinationConfiguration": "http_endpoint_destination_configuration",
    "AmazonOpenSearchServerlessDestinationConfiguration": "amazon_open_search_serverless_destination_configuration",
    "SnowflakeDestinationConfiguration": "snowflake_destination_configuration",
    "IcebergDestinationConfiguration": "iceberg_destination_configuration",
}


class DeliveryStreamDefinition(Shape):
    """The CreateDeliveryStream request (minus nothing): what a stream is."""

    delivery_stream_name: StreamName
    delivery_stream_type: Literal["DirectPut", "KinesisStreamAsSource", "MSKAsSource", "DatabaseAsSource"] = (
        "DirectPut"
    )
    direct_put_source_configuration: DirectPutSourceConfiguration | None = None
    kinesis_stream_source_configuration: KinesisStreamSourceConfiguration | None = None
    delivery_stream_encryption_configuration_input: DeliveryStreamEncryptionConfigurationInput | None = None
    s3_destination_configuration: S3DestinationConfiguration | None = Field(None, alias="S3DestinationConfiguration")
    extended_s3_destination_configuration: ExtendedS3DestinationConfiguration | None = Field(
        None, alias="ExtendedS3DestinationConfiguration"
    )
    redshift_destination_configuration: dict[str, Any] | None = None
    elasticsearch_destination_configuration: dict[str, Any] | None = None
    amazonopensearchservice_destination_configuration: dict[str, Any] | None = None
    splunk_destination_configuration: dict[str, Any] | None = None
    http_endpoint_destination_configuration: dict[str, Any] | None = None
    amazon_open_search_serverless_destination_configuration: dict[str, Any] | None = Field(
        None, alias="AmazonOpenSearchServerlessDestinationConfiguration"
    )
    snowflake_destination_configuration: dict[str, Any] | None = None
    iceberg_destination_configuration: dict[str, Any] | None = None
    msk_source_configuration: dict[str, Any] | None = Field(None, alias="MSKSourceConfiguration")
    database_source_configuration: dict[str, Any] | None = None
    tags: Annotated[list[Tag], Field(min_length=1, max_length=50)] | None = None

    @model_validator(mode="after")
    def _semantics(self) -> DeliveryStreamDefinition:
        given = [alias for alias, attr in DESTINATION_FIELDS.items() if getattr(self, attr) is not None]
        if len(given) > 1:
            raise ValueError(f"only one destination configuration is allowed; got {', '.join(given)}")
        if not given:
            raise ValueError("a destination configuration is required (ExtendedS3DestinationConfiguration)")
        if given[0] not in ("S3DestinationConfiguration", "ExtendedS3DestinationConfiguration"):
            raise ValueError(f"{given[0]} is not supported by this daemon yet")
        if self.delivery_stream_type != "DirectPut":
            raise ValueError(f"DeliveryStreamType {self.delivery_stream_type} is not supported by this daemon yet")
        if self.kinesis_stream_source_configuration is not None:
            raise ValueError("KinesisStreamSourceConfiguration requires DeliveryStreamType KinesisStreamAsSource")
        if self.delivery_stream_encryption_configuration_input is not None:
            raise ValueError("server-side encryption (DeliveryStreamEncryptionConfigurationInput) "
                             "is not supported by this daemon yet")
        if self.tags is not None:
            keys = [t.key for t in self.tags]
            if len(set(keys)) != len(keys):
                raise ValueError("tag keys must be unique")
        return self

    @property
    def destination(self) -> ExtendedS3DestinationConfiguration:
        """The S3 destination, with the deprecated S3DestinationConfiguration read as ExtendedS3."""
        if self.extended_s3_destination_configuration is not None:
            return self.extended_s3_destination_configuration
        assert self.s3_destination_configuration is not None
        return ExtendedS3DestinationConfiguration.model_validate(self.s3_destination_configuration.dump())


def buffering(cfg: S3DestinationConfiguration) -> tuple[int, int]:
    """(size in bytes, interval in seconds) with the AWS defaults for S3 (5 MiB, 300 s; 128 MiB with conversion)."""
    hints = cfg.buffering_hints
    converting = isinstance(cfg, ExtendedS3DestinationConfiguration) and cfg.format_conversion
    size = hints.size_in_mbs if hints and hints.size_in_mbs is not None else (128 if converting else 5)
    interval = hints.interval_in_seconds if hints and hints.interval_in_seconds is not None else 300
    return size * MiB, interval


def file_extension(cfg: ExtendedS3DestinationConfiguration) -> str:
    """The object suffix's extension: FileExtension if set, else the output format's default."""
    if cfg.file_extension:
        return cfg.file_extension
    conv = cfg.format_conversion
    if conv:
        serializer = (conv.get("OutputFormatConfiguration") or {}).get("Serializer") or {}
        return ".orc" if "OrcSerDe" in serializer else ".parquet"
    return {"GZIP": ".gz", "ZIP": ".zip", "Snappy": ".snappy", "HADOOP_SNAPPY": ".hsnappy",
            "ZSTD": ".zst"}.get(cfg.compression, "")


def merge_destination_update(
    current: ExtendedS3DestinationConfiguration, update: dict[str, Any]
) -> ExtendedS3DestinationConfiguration:
    """UpdateDestination on the same destination type: given members replace, the rest stay.

    (AWS: "If any of the parameters are not specified in the call, the existing
    values are retained.") ``S3BackupUpdate`` is the update form of
    ``S3BackupConfiguration``.
    """
    merged = current.dump()
    for key, value in update.items():
        if key == "S3BackupUpdate":
            base = merged.get("S3BackupConfiguration", {})
            merged["S3BackupConfiguration"] = {**base, **value}
        elif value is not None:
            merged[key] = value
    return ExtendedS3DestinationConfiguration.model_validate(merged)


def unknown_members(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Member names in ``data`` that ``model`` does not have (typos in config files)."""
    if not isinstance(data, dict):
        return []
    known: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        known[field.alias or name] = field.annotation
    out: list[str] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in known:
            out.append(where)
            continue
        for sub in _models_in(known[key]):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    out.extend(unknown_members(sub, item, f"{where}[{i}]"))
            else:
                out.extend(unknown_members(sub, value, where))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and isinstance(meta, type) and issubclass(meta, BaseModel):
        found.append(meta)
    return found


__all__ = [
    "BufferingHints",
    "DeliveryStreamDefinition",
    "ExtendedS3DestinationConfiguration",
    "S3DestinationConfiguration",
    "Tag",
    "ValidationError",
    "buffering",
    "file_extension",
    "merge_destination_update",
    "unknown_members",
]
