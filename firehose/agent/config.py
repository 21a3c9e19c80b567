"""Agent configuration: the Amazon Kinesis Agent's ``agent.json`` keys, or the same settings in YAML.

An ``agent.json`` written for the Kinesis Agent loads unchanged: every key it
documents is accepted, the ones this agent acts on are validated with the
Kinesis Agent's ranges, and the few that only tune the Java runtime (thread
pools, CloudWatch emission) are accepted and reported as ignored. A misspelt
key is an error, because a silently ignored ``filePatern`` would ship nothing.

The YAML form takes the same keys, or their snake_case spelling, and lets the
dotted global keys be nested (``firehose: {endpoint: ...}`` is
``firehose.endpoint``). Errors name the file, the flow and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from firehose.errors import ConfigError

#: Largest record each service takes (Firehose 1,000 KiB; Kinesis 1 MiB less room for the partition key).
FIREHOSE_MAX_RECORD = 1_000 * 1024
KINESIS_MAX_RECORD = 1024 * 1024 - 256
FIREHOSE_MAX_BATCH_BYTES = 4 * 1024 * 1024
KINESIS_MAX_BATCH_BYTES = 5 * 1024 * 1024

#: Kinesis Agent keys that tune its Java runtime or CloudWatch; accepted so agent.json loads unchanged.
IGNORED_GLOBAL_KEYS = frozenset({
    "cloudwatch.emitMetrics", "cloudwatch.endpoint", "cloudwatch.namespace", "cloudwatch.region",
    "maxSendingThreads", "maxSendingThreadsPerCore", "sendingThreadsKeepAliveMillis", "sendingThreadsMaxQueueSize",
    "maxConnections", "connectionTTLMillis", "useTcpKeepAlive", "useHttpGzip", "log.emitMetrics",
    "userDefinedCredentialsProvider.classname", "userDefinedCredentialsProvider.location",
})
IGNORED_FLOW_KEYS = frozenset({
    "waitOnFullPublishQueueMillis", "waitOnEmptyPublishQueueMillis", "waitOnFullRetryQueueMillis",
})
#: Dotted global keys the YAML form may write nested.
NESTED_GROUPS = ("firehose", "kinesis", "sts", "cloudwatch", "log", "metrics", "userDefinedCredentialsProvider")


class _Model(BaseModel):
    """camelCase (agent.json) or snake_case (YAML) names, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ProcessingOption(_Model):
    """One entry of ``dataProcessingOptions``; which parameters apply depends on ``optionName``."""

    option_name: Literal["SINGLELINE", "CSVTOJSON", "LOGTOJSON", "ADDMETADATA", "ADDBRACKETS"]
    custom_field_names: list[str] | None = None
    delimiter: str = ","
    log_format: Literal["COMMONAPACHELOG", "COMBINEDAPACHELOG", "APACHEERRORLOG", "SYSLOG", "RFC3339SYSLOG",
                        "RFC5424SYSLOG"] | None = None
    match_pattern: str | None = None
    json_format: Literal["COMPACT", "PRETTYPRINT"] = "COMPACT"
    metadata: Any = None
    timestamp: bool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("optionName", data.get("option_name"))
            if name in ("ADDEC2METADATA", "USINGPLUGGIN", "ADDEPHEMERALMETADATA"):
                raise ValueError(f"optionName {name} is not supported by this agent (it needs the EC2 instance "
                                 "metadata service or a Java plugin); remove it or use ADDMETADATA")
        return data

    @model_validator(mode="after")
    def _check_parameters(self) -> ProcessingOption:
        if self.option_name == "CSVTOJSON" and not self.custom_field_names:
            raise ValueError("CSVTOJSON needs customFieldNames")
        if self.option_name == "CSVTOJSON" and len(self.delimiter) != 1:
            raise ValueError(f"CSVTOJSON delimiter must be one character, got {self.delimiter!r}")
        if self.option_name == "LOGTOJSON":
            if self.log_format is None:
                raise ValueError("LOGTOJSON needs logFormat")
            if self.match_pattern is not None:
                if not self.custom_field_names:
                    raise ValueError("LOGTOJSON matchPattern needs customFieldNames")
                try:
                    groups = re.compile(self.match_pattern).groups
                except re.error as exc:
                    raise ValueError(f"matchPattern is not a valid regular expression: {exc}") from exc
                if groups != len(self.custom_field_names):
                    raise ValueError(f"matchPattern has {groups} groups but customFieldNames names "
                                     f"{len(self.custom_field_names)} fields")
        return self


class Flow(_Model):
    """One ``flows`` entry: a file pattern and where its lines go."""

    file_pattern: str
    delivery_stream: str | None = None
    kinesis_stream: str | None = None
    partition_key_option: Literal["RANDOM", "DETERMINISTIC"] = "RANDOM"
    initial_position: Literal["END_OF_FILE", "START_OF_FILE"] = "END_OF_FILE"
    max_buffer_age_millis: int = Field(60_000, ge=1_000, le=900_000)
    max_buffer_size_records: int = Field(500, ge=1, le=500)
    max_buffer_size_bytes: int | None = Field(None, ge=1, le=KINESIS_MAX_BATCH_BYTES)
    min_time_between_file_polls_millis: int = Field(100, ge=1, le=60_000)
    max_time_between_file_tracker_refresh_millis: int = Field(10_000, ge=1, le=600_000)
    multi_line_start_pattern: str | None = None
    skip_header_lines: int = Field(0, ge=0)
    truncated_record_terminator: str = "\n"
    file_footer_pattern: str | None = None
    aggregated_record_size_bytes: int = Field(0, ge=0, le=FIREHOSE_MAX_RECORD)
    retry_initial_backoff_millis: int = Field(100, ge=1)
    retry_max_backoff_millis: int = Field(10_000, ge=1)
    publish_queue_capacity: int = Field(100, ge=1)
    data_processing_options: list[ProcessingOption] = []
    # Beyond agent.json: how long a file that left the pattern (renamed, deleted) is still read once idle.
    rotate_wait_millis: int = Field(5_000, ge=0)

    @field_validator("multi_line_start_pattern", "file_footer_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _destination(self) -> Flow:
        if (self.delivery_stream is None) == (self.kinesis_stream is None):
            raise ValueError("a flow needs exactly one of deliveryStream or kinesisStream")
        if self.delivery_stream is not None and (self.max_buffer_size_bytes or 0) > FIREHOSE_MAX_BATCH_BYTES:
            raise ValueError(f"maxBufferSizeBytes is at most {FIREHOSE_MAX_BATCH_BYTES} for a delivery stream")
        if self.kinesis_stream is not None and self.aggregated_record_size_bytes:
            raise ValueError("aggregatedRecordSizeBytes applies to delivery streams only")
        if self.retry_max_backoff_millis < self.retry_initial_backoff_millis:
            raise ValueError("retryMaxBackoffMillis is below retryInitialBackoffMillis")
        if len(self.truncated_record_terminator.encode()) > 1024:
            raise ValueError("truncatedRecordTerminator is longer than 1 KiB")
        return self

    @property
    def is_kinesis(self) -> bool:
        return self.kinesis_stream is not None

    @property
    def stream(self) -> str:
        return self.kinesis_stream or self.delivery_stream or ""

    @property
    def label(self) -> str:
        """How logs name the flow: its stream and its files (two flows to one stream differ)."""
        return f"{self.stream} <- {self.file_pattern}"

    @property
    def flow_id(self) -> str:
        """Stable across restarts: the checkpoints of a flow are found by it."""
        kind = "kds" if self.is_kinesis else "fh"
        return f"{kind}:{self.stream}:{self.file_pattern}"

    @property
    def batch_bytes(self) -> int:
        ceiling = KINESIS_MAX_BATCH_BYTES if self.is_kinesis else FIREHOSE_MAX_BATCH_BYTES
        return min(self.max_buffer_size_bytes or ceiling, ceiling)

    @property
    def max_record_bytes(self) -> int:
        return KINESIS_MAX_RECORD if self.is_kinesis else FIREHOSE_MAX_RECORD


class AgentConfig(_Model):
    """The whole file: global keys and the flows."""

    checkpoint_file: str | None = None
    checkpoint_time_to_live_days: int = Field(7, ge=1)
    firehose_endpoint: str | None = Field(None, alias="firehose.endpoint")
    firehose_region: str | None = Field(None, alias="firehose.region")
    kinesis_endpoint: str | None = Field(None, alias="kinesis.endpoint")
    kinesis_region: str | None = Field(None, alias="kinesis.region")
    sts_endpoint: str | None = Field(None, alias="sts.endpoint")
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    assume_role_arn: str | None = Field(None, alias="assumeRoleARN")
    assume_role_external_id: str | None = None
    connection_timeout_millis: int = Field(10_000, ge=1)
    socket_timeout_millis: int = Field(50_000, ge=1)
    shutdown_timeout_millis: int = Field(10_000, ge=0)
    log_level: str | None = Field(None, alias="log.level")
    status_reporting_period_seconds: float = Field(30, gt=0, alias="log.statusReportingPeriodSeconds")
    # Beyond agent.json: Prometheus metrics, and consent to keep checkpoints on a tmpfs.
    metrics_port: int | None = Field(None, ge=0, le=65535, alias="metrics.port")
    metrics_host: str = Field("127.0.0.1", alias="metrics.host")
    allow_volatile_checkpoints: bool = False
    flows: list[Flow] = Field(min_length=1)

    @field_validator("firehose_endpoint", "kinesis_endpoint", "sts_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        """The Kinesis Agent takes bare host names too; boto3 needs a URL, and https is what AWS speaks."""
        if value and "://" not in value:
            return f"https://{value}"
        return value

    @model_validator(mode="after")
    def _credentials_pair(self) -> AgentConfig:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("awsAccessKeyId and awsSecretAccessKey go together")
        return self


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """``firehose: {endpoint: X}`` → ``firehose.endpoint: X`` (YAML form), and snake_case groups."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in NESTED_GROUPS and isinstance(value, dict):
            for inner, v in value.items():
                out[f"{key}.{to_camel(inner)}"] = v
        else:
            out[key] = value
    return out


def _strip_ignored(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    ignored: list[str] = []
    out = {}
    for key, value in data.items():
        if key in IGNORED_GLOBAL_KEYS or to_camel(key) in IGNORED_GLOBAL_KEYS:
            ignored.append(key)
        else:
            out[key] = value
    flows = out.get("flows")
    if isinstance(flows, list):
        kept = []
        for i, flow in enumerate(flows):
            if isinstance(flow, dict):
                ignored.extend(f"flows[{i}].{k}" for k in flow if to_camel(k) in IGNORED_FLOW_KEYS)
                flow = {k: v for k, v in flow.items() if to_camel(k) not in IGNORED_FLOW_KEYS}
            kept.append(flow)
        out["flows"] = kept
    return out, ignored


def _where(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """``flows[1] (clicks <- /var/log/*.log): maxBufferAgeMillis`` for a pydantic error location."""
    parts = [str(x) for x in loc]
    if len(loc) >= 2 and loc[0] == "flows" and isinstance(loc[1], int):
        flow = (data.get("flows") or [])[loc[1]]
        label = ""
        if isinstance(flow, dict):
            dest = flow.get("deliveryStream") or flow.get("delivery_stream") or flow.get("kinesisStream") or \
                flow.get("kinesis_stream")
            pattern = flow.get("filePattern") or flow.get("file_pattern")
            label = f" ({dest or '?'} <- {pattern or '?'})"
        rest = ".".join(str(x) for x in loc[2:])
        return f"flows[{loc[1]}]{label}" + (f": {rest}" if rest else "")
    return ".".join(parts) or "top level"


def parse_config(data: Any, source: str = "<config>") -> tuple[AgentConfig, list[str]]:
    """Validate a decoded config; returns it with the keys that were accepted but ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object / YAML mapping")
    data, ignored = _strip_ignored(_flatten(data))
    try:
        return AgentConfig.model_validate(data), ignored
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the Kinesis Agent's agent.json keys)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(f"{source}: {_where(data, tuple(err['loc']))}: {msg}") from exc


def load_agent_config(path: Path) -> tuple[AgentConfig, list[str]]:
    """Read ``agent.json`` (JSON) or the YAML form, chosen by content: JSON is tried first."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as json_exc:
        if path.suffix == ".json":
            raise ConfigError(f"{path}: not valid JSON: {json_exc}") from json_exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, str(path))
