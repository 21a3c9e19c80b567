"""Process settings and config-file loading.

A config file has process settings at the top (snake_case) and then
``delivery_streams:``, a list of definitions written exactly like a
CreateDeliveryStream request body (PascalCase, see ``definitions.py``), so the
body of an ``aws firehose create-delivery-stream --cli-input-json`` file can be
pasted in. Settings reject unknown keys: a typo is an error that names the file
and the key, not a silently ignored option. Relative paths are relative to the
working directory the daemon starts in. ``${VAR}`` and ``${VAR:-default}`` in
values are replaced from the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FilePath, ValidationError, model_validator

from firehose.cluster import NODE_ID_PATTERN, default_node_id
from firehose.definitions import DeliveryStreamDefinition, unknown_members, validation_message
from firehose.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def parse_bytes(value: Any) -> int:
    """``1048576``, ``"512MiB"``, ``"1 GB"`` → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"expected a size such as 512MiB or 1GB, got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


ByteSize = Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolSettings(_Settings):
    #: Disk the spool may use. At the limit, puts answer 503 ServiceUnavailableException. At least
    #: 8 MiB: twice the data of the largest PutRecordBatch.
    max_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=8 * 1024**2)] = 1024**3
    #: Size at which a spool segment file is closed and a new one started; capped at an eighth of
    #: ``max_bytes`` (at least 1 MiB), so delivered space is freed early.
    segment_bytes: ByteSize = 64 * 1024**2
    #: Free space kept on the spool's filesystem: puts answer 503 while less would be left, so
    #: deliveries can always be recorded (and free space) on a full disk. 0 turns the check off.
    reserve_bytes: ByteSize = 64 * 1024**2


class S3Settings(_Settings):
    """Defaults for every bucket; unset values come from the standard AWS configuration
    (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE, the credential chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: Objects at least this large go up as multipart uploads.
    multipart_threshold_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=5 * 1024**2)] = 16 * 1024**2
    multipart_chunk_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=5 * 1024**2)] = 8 * 1024**2
    #: Verify TLS certificates (a CA bundle path may be given instead of true).
    verify: bool | str = True
    connect_timeout_seconds: float = 10
    read_timeout_seconds: float = 60
    max_attempts: int = 1


class BucketSettings(_Settings):
    """Per-bucket overrides: a local ``directory`` makes the bucket a folder on this machine."""

    directory: Path | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    #: Envelope-encrypt every object written to this bucket with the keyring's newest key.
    encrypt: bool = False
    #: S3 server-side encryption for objects in this bucket: "AES256" (SSE-S3) or "aws:kms"
    #: (SSE-KMS, with sse_kms_key_id or the bucket's default key). A stream's
    #: EncryptionConfiguration.KMSEncryptionConfig takes precedence.
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None


class CatalogSettings(_Settings):
    """An Iceberg catalog (``catalogs:``, keyed by the CatalogARN a definition names, or ``default``).

    ``sql``: pyiceberg's SQL catalog, on SQLite (``sqlite:////path/catalog.db``) or PostgreSQL
    (``postgresql+psycopg://user:password@host/db``); ``rest``: an Iceberg REST catalog at ``uri``.
    ``warehouse`` is where new tables' files go: ``file:///path`` or ``s3://bucket/path``. Unset,
    the default catalog is SQLite in ``<state_dir>/iceberg/catalog.db`` with its warehouse beside it.
    ``properties`` are passed to pyiceberg as they are (e.g. ``s3.endpoint``, ``token``).
    """

    type: Literal["sql", "rest"] = "sql"
    uri: str | None = None
    warehouse: str | None = None
    properties: dict[str, str] = {}


class FunctionSettings(_Settings):
    """Where a transform function named in a definition (by LambdaArn or name) lives."""

    path: Path
    handler: str = "lambda_handler"
    timeout_seconds: Annotated[float, Field(gt=0, le=900)] = 60.0
    memory_mb: Annotated[int, Field(ge=128)] = 128


class ProcessingSettings(_Settings):
    #: Worker processes that run transform functions; as many again run format conversion and
    #: Redshift row loads (PostgreSQL mode).
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    #: Dynamic partitioning: partitions with buffered data at once, per stream (AWS default 500).
    max_active_partitions: Annotated[int, Field(ge=1, le=5000)] = 500
    #: Raw records a stream reads ahead into its processing (transform) buffer.
    max_buffered_bytes: ByteSize = 256 * 1024**2
    #: CPU priority of transform and conversion workers (nice). Ingest keeps the CPU it needs;
    #: processing catches up while the records wait, durable, in the spool.
    worker_nice: Annotated[int, Field(ge=0, le=19)] = 10


class ColumnSettings(_Settings):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(alias="Name")
    type: str = Field(alias="Type")


class TableSettings(_Settings):
    """A table schema for format conversion, as Glue would hold it (columns with Hive types)."""

    columns: list[ColumnSettings]


class EncryptionSettings(_Settings):
    """The keyring for envelope encryption: key files ``<id>.key`` and/or ``<env_prefix><ID>`` variables."""

    keys_dir: Path | None = None
    env_prefix: str | None = "FIREHOSE_KEK_"


class HttpSettings(_Settings):
    """Outbound HTTP for OpenSearch, Splunk and HTTP endpoint destinations."""

    #: Verify TLS certificates (the default). Turning it off is logged loudly.
    verify: bool = True
    #: A CA bundle (PEM) to verify against instead of the system store (checked at start).
    ca_bundle: FilePath | None = None
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: Firehose gives HTTP endpoints 3 minutes to answer.
    read_timeout_seconds: Annotated[float, Field(gt=0)] = 180.0
    max_connections: Annotated[int, Field(ge=1)] = 64
    #: URL patterns (``*`` and ``?`` wildcards, e.g. ``https://*.example.com/*``) that HTTP-based
    #: destinations (HTTP endpoint, Splunk, OpenSearch) may point at; empty allows any URL.
    #: A definition naming another URL is refused when it is created or updated.
    allowed_endpoints: list[str] = []


class HttpEndpointReceiverSettings(_Settings):
    """``POST /http-endpoint/<stream>``: accept deliveries from another Firehose's HTTP endpoint destination."""

    enabled: bool = True
    #: Accepted X-Amz-Firehose-Access-Key values; empty accepts any sender (like the API itself,
    #: which does not check SigV4 signatures), so set keys whenever the port is reachable by others.
    access_keys: list[str] = []


class DestinationCredentials(_Settings):
    """Credentials for a destination, by its endpoint URL (OpenSearch basic auth, Redshift users)."""

    username: str | None = None
    password: str | None = None


class DeliverySettings(_Settings):
    #: Sealed batches of one stream being delivered at once.
    max_inflight_batches: Annotated[int, Field(ge=1, le=64)] = 4
    #: Exponential backoff between attempts: base × 2^n with full jitter, capped.
    backoff_base_seconds: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: How long SIGTERM waits for buffered data to reach its destination before
    #: leaving the rest in the spool for the next start.
    shutdown_timeout_seconds: Annotated[float, Field(ge=0)] = 20.0


class DeleteSettings(_Settings):
    """What happens to a deleted delivery stream's undelivered records."""

    #: Hours a deleted stream's undelivered spool is kept under ``<state_dir>/deleted/`` for
    #: ``firehose replay`` (AWS drops it with the stream; 0 does so too).
    retain_hours: Annotated[float, Field(ge=0)] = 24.0


class MemorySettings(_Settings):
    """What the process holds in memory of the records it has spooled."""

    #: Records held in memory across every stream: partition and processing buffers and the batches
    #: being delivered. When it is spent, streams leave further records in the spool and read them
    #: when there is room (a batch is then cut at what it holds); a batch whose destination is
    #: failing holds nothing between attempts. What ten streams with every destination down hold in
    #: buffers then stays near this figure (docs/benchmarks.md has the RSS, which is not yet within
    #: 256 MiB); give each stream about its buffer size (SizeInMBs) to keep batches full.
    max_buffered_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=1024**2)] = 32 * 1024**2


class KinesisSettings(_Settings):
    """The Kinesis Data Streams sidecar, and how delivery streams read Kinesis streams."""

    #: Also serve the Kinesis API from the daemon's process, on ``port`` (``firehose streams serve``
    #: runs it on its own, without this).
    enabled: bool = False
    #: Listen address; the daemon's ``host`` when unset.
    host: str | None = None
    port: Annotated[int, Field(ge=0, le=65535)] = 4567
    #: Where shards live; ``<state_dir>/kinesis`` when unset.
    state_dir: Path | None = None
    #: Open shards the account may have (AWS's default quota is 500 in most regions).
    shard_limit: Annotated[int, Field(ge=1)] = 500
    #: Seconds a stream stays CREATING / DELETING / UPDATING (AWS takes seconds; 0 = at once).
    create_delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    delete_delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    update_delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    #: Seconds an enhanced fan-out consumer stays CREATING / DELETING (AWS takes seconds; 0 = at once).
    consumer_delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    #: How long a SubscribeToShard answer lasts before it ends and the client subscribes again (AWS: 5 minutes).
    subscription_seconds: Annotated[float, Field(gt=0, le=300)] = 300.0
    #: Enforce AWS's per-shard limits (1 MiB/s and 1,000 records/s writes; 5 reads/s and 2 MiB/s).
    enforce_limits: bool = False
    #: ON_DEMAND streams the account may have (AWS's default quota: 50).
    on_demand_stream_limit: Annotated[int, Field(ge=0)] = 50
    #: ON_DEMAND streams split a shard whose writes reached a shard's capacity (1 MiB/s or 1,000 records/s)
    #: over the last interval, as AWS grows on-demand streams with their traffic (docs/streams.md).
    on_demand_scaling: bool = True
    on_demand_scaling_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    segment_bytes: Annotated[int, Field(ge=1024 * 1024)] = 16 * 1024 * 1024
    #: Streams created at start when absent: CreateStream request bodies.
    streams: list[dict[str, Any]] = []
    #: Where delivery streams with DeliveryStreamType KinesisStreamAsSource read from. Unset: the
    #: standard AWS configuration (AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL, profiles), and when
    #: that names no endpoint and the sidecar runs in this process, the sidecar.
    source_endpoint_url: str | None = None
    #: Seconds between GetRecords calls on a shard that had nothing new (AWS Firehose polls about once a second).
    source_poll_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    #: A source stops reading while its spooled, undelivered records exceed this, so a stalled
    #: destination leaves the backlog in the Kinesis stream (as AWS does) instead of filling the spool.
    source_max_backlog_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024


def _secret(value: Any) -> Any:
    """``file:/path`` reads the secret from a file (trailing newline dropped); anything else is the secret."""
    if isinstance(value, str) and value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read the secret file {str(path)!r}: {exc.strerror}") from exc
    return value


Secret = Annotated[str, BeforeValidator(_secret), Field(min_length=1)]


def read_secret(reference: str) -> str:
    """A ``SecretReference``'s value now: ``file:/path`` is read again at every call, so a file
    rewritten in place (a rotated secret) counts without a reload. ValueError when it cannot be read."""
    return str(_secret(reference))


def _readable(value: Any) -> Any:
    """A ``file:`` that cannot be read is a mistake in the config, reported when it is loaded."""
    if isinstance(value, str):
        _secret(value)
    return value


#: A secret kept as its reference (inline, ``${VAR}`` already replaced, or ``file:/path``) and read
#: when used (``read_secret``), so it is never held in the settings themselves longer than needed.
SecretReference = Annotated[str, BeforeValidator(_readable), Field(min_length=1)]


class KafkaClusterSettings(_Settings):
    """How to reach a Kafka cluster that MSKAsSource streams read (``kafka_clusters:``, by MSKClusterARN).

    Security settings take librdkafka's names and values (``security_protocol``: PLAINTEXT, SSL,
    SASL_PLAINTEXT, SASL_SSL; ``sasl_mechanism``: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    """

    #: ``host:port,host:port``: the brokers to start from.
    bootstrap_servers: Annotated[str, Field(min_length=1)]
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    #: Inline, ``${VAR}`` or ``file:/path`` (read when the consumer connects).
    sasl_password: SecretReference | None = None
    #: CA bundle that signs the brokers' certificates (SSL, SASL_SSL); unset: the system's.
    ca_file: Path | None = None
    #: Consumer group session: a daemon that stops heartbeating for this long loses its partitions to
    #: the others (librdkafka's default 45 s); heartbeats every ``heartbeat_interval_ms``.
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 45000
    heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 3000
    #: Offsets of spooled records are committed to the group at most this often.
    commit_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    #: A stream stops fetching (pauses its partitions, staying in the group) while its spooled,
    #: undelivered records exceed this, so a stalled destination leaves the backlog in Kafka.
    max_backlog_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=1024 * 1024)] = 256 * 1024 * 1024
    #: How often the topic's partitions are looked up: partitions added to the topic (or a topic created
    #: after its stream) are read from the next look-up on (librdkafka's own default is 5 minutes).
    metadata_refresh_interval_ms: Annotated[int, Field(ge=100)] = 30000

    @model_validator(mode="after")
    def _sasl(self) -> KafkaClusterSettings:
        if self.security_protocol.startswith("SASL_"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                                 "sasl_username and sasl_password")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError("sasl_* settings need security_protocol SASL_PLAINTEXT or SASL_SSL")
        return self


class SecretsManagerSettings(_Settings):
    """Where ``SecretsManagerConfiguration`` secrets are fetched (GetSecretValue). Unset values come
    from the standard AWS configuration (AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL,
    AWS_PROFILE, the credential chain); the region is the secret ARN's unless ``region`` is set."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    #: Verify TLS certificates (a CA bundle path may be given instead of true).
    verify: bool | str = True
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    read_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
AccountId = Annotated[str, Field(pattern=r"^\d{12}$")]


class PrincipalSettings(_Settings):
    """One caller: an access key, its secret, its account and what it may do (IAM policy documents)."""

    #: The access key id clients sign with (``aws_access_key_id``).
    access_key_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w+=,.@-]+$")]
    #: The secret access key: inline, ``${VAR}`` from the environment, or ``file:/path``.
    secret: Secret
    account_id: AccountId
    #: Shown in AccessDenied messages and matched by ``aws:username``; the access key id when unset.
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w+=,.@-]+$")] | None = None
    #: The principal's ARN (e.g. ``arn:aws:sts::111122223333:assumed-role/app/session``);
    #: ``arn:aws:iam::<account_id>:user/<name>`` when unset.
    arn: str | None = None
    #: Temporary credentials: when set, every request must carry one of these as
    #: ``X-Amz-Security-Token`` (as keys from STS do).
    session_tokens: list[Annotated[str, Field(min_length=1)]] = []
    #: IAM identity policy documents (``Version``, ``Statement``); nothing is allowed without one.
    policies: list[dict[str, Any]] = []

    @property
    def principal_arn(self) -> str:
        return self.arn or f"arn:aws:iam::{self.account_id}:user/{self.name or self.access_key_id}"


class AuthSettings(_Settings):
    """Who may call the APIs. ``none`` takes any caller (trusted loopback only); ``sigv4`` verifies
    every request's AWS Signature Version 4 against ``principals`` and authorizes it by their policies."""

    mode: Literal["none", "sigv4"] = "none"
    #: How far a request's X-Amz-Date may be from this machine's clock (AWS allows 5 minutes).
    clock_skew_seconds: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 300.0
    principals: list[PrincipalSettings] = []
    #: Tokens a scraper may send as ``Authorization: Bearer <token>`` to read /metrics and the
    #: detailed /readyz when authentication is on (``${VAR}`` or ``file:/path`` as for secrets).
    bearer_tokens: list[Secret] = []

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        keys = [p.access_key_id for p in self.principals]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"access key id {dupes[0]!r} is given to more than one principal")
        if self.mode == "sigv4" and not self.principals:
            raise ValueError("mode sigv4 needs at least one principal under auth.principals")
        return self


class TlsSettings(_Settings):
    """TLS for the API listeners (the daemon's and the Kinesis sidecar's). Both files, or neither."""

    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    #: Mutual TLS: clients must present a certificate signed by a CA in this PEM file.
    client_ca_file: FilePath | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls needs both cert_file and key_file")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("tls.client_ca_file needs cert_file and key_file")
        return self


class LogSettings(_Settings):
    #: ``text``: one sentence and ``key=value`` fields per line, for people; ``json``: one JSON object
    #: per line (``time``, ``level``, ``logger``, ``message`` and the same fields), for log systems.
    format: Literal["text", "json"] = "text"
    #: Each stream logs at most one line per this many seconds about what it delivered (and one about
    #: records sent to the error output), with counts, instead of one line per object or record.
    summary_seconds: Annotated[float, Field(gt=0)] = 10.0


class MetricsSettings(_Settings):
    #: ``host:port`` of a separate plain-HTTP listener for /metrics, /healthz and /readyz that needs no
    #: authentication (keep it on loopback or a private network); unset: only the API listeners serve them.
    listen: str | None = None


def _status_url(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")
    return value


class ConsoleSettings(_Settings):
    #: The agents whose flows the console shows: the base URL of each agent's listener (its
    #: ``metrics.port``, e.g. ``http://127.0.0.1:9108``), whose ``/status`` the daemon reads when the
    #: page asks (the page reads only the daemon). Applied on reload.
    agents: list[Annotated[str, BeforeValidator(_status_url)]] = Field(default=[], max_length=64)


class TestingSettings(_Settings):
    """For test suites that use the daemon as their local AWS emulator."""

    #: Serve ``POST /moto-api/reset`` and ``POST /_localstack/state/reset`` (and
    #: ``/_localstack/state/{kinesis,firehose}/reset``) on the API listeners: each drops every stream
    #: at once. Refused unless every API listener is loopback (``check_reset_endpoint``).
    reset_endpoint: bool = False
    #: SQL applications' ROWTIME runs this many times faster than the wall clock, so a test suite can run
    #: applications with minute-long windows unchanged in seconds (``firehose.analytics.runtime``).
    analytics_clock_rate: Annotated[float, Field(ge=1, le=3600)] = 1.0


class AnalyticsSettings(_Settings):
    """How SQL applications run (``firehose.analytics``)."""

    #: Seconds between two runs of an application's pumps (each reads what arrived, emits what is due).
    tick_seconds: Annotated[float, Field(ge=0.01, le=60)] = 1.0
    #: Seconds between two reads of a source that had nothing new.
    poll_seconds: Annotated[float, Field(ge=0.01, le=60)] = 0.2
    #: Rows an application's windows may hold between ticks (open tumbling and stagger windows, sliding
    #: ranges), in bytes of Arrow data. At or over it, the application takes no input until its windows
    #: close and let go of rows: the backlog waits in the source, as with a slow application.
    max_state_bytes: ByteSize = 256 * 1024**2


class LeaseSettings(_Settings):
    """How daemons of a fleet share the shards of a Kinesis stream they read (``firehose.sources.leases``).

    Each KinesisStreamAsSource delivery stream has its own lease table in DynamoDB, with the Kinesis
    Client Library's schema, named ``<table_prefix><account id>-<delivery stream name>``.
    """

    #: DynamoDB's endpoint. Unset: the standard AWS configuration (``AWS_ENDPOINT_URL_DYNAMODB``,
    #: ``AWS_ENDPOINT_URL``, profiles), else DynamoDB itself.
    endpoint_url: str | None = None
    #: The table's region. Unset: the Kinesis stream's.
    region: str | None = None
    table_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{0,150}$")] = "firehose-"
    #: A lease not renewed for this long is taken over by another daemon (the KCL's failover time, 10 s).
    #: Renewals happen every third of it; a daemon that cannot renew for this long stops reading the shard.
    lease_duration_seconds: Annotated[float, Field(ge=1, le=600)] = 10.0
    #: Create a missing lease table (on-demand billing, key ``leaseKey``), as the KCL does.
    create_table: bool = True


class ClusterSettings(_Settings):
    """This daemon's place among others (``firehose.cluster``): ``docs/scaling.md``."""

    #: ``single``: one daemon, streams from the config file and the API. ``fleet``: one of several
    #: daemons with the same config file behind a load balancer; API calls that change streams are
    #: refused (change the shared file and reload every node).
    mode: Literal["single", "fleet"] = "single"
    #: Takes part in every object key's unique part, so nodes never collide. Unset: stable per
    #: machine and state directory (``firehose.cluster.default_node_id``).
    node_id: Annotated[str | None, Field(pattern=NODE_ID_PATTERN)] = None
    #: In ``mode: fleet``, Kinesis sources share their streams' shards through leases (``LeaseSettings``);
    #: a single daemon keeps its checkpoints in its spool and needs no lease table.
    leases: LeaseSettings = LeaseSettings()


class LimitsSettings(_Settings):
    """What protects the process from hostile or broken clients (on both API listeners)."""

    #: Connections open at once per listener; more wait in the kernel's backlog. Also kept below
    #: the process's descriptor limit so delivery always has descriptors.
    max_connections: Annotated[int, Field(ge=1)] = 1024
    #: Largest request head (request line and headers); a larger one is answered 431.
    max_header_bytes: Annotated[int, BeforeValidator(parse_bytes), Field(ge=1024)] = 64 * 1024
    #: A request's head must arrive within this many seconds of its first byte (slow clients are dropped).
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: A request's body must arrive within this many seconds of its head.
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: An idle keep-alive connection is closed after this many seconds.
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = 75.0
    #: Memory the requests a listener is handling may take at once. A quarter holds bodies being read
    #: (each its declared length, from its first byte); the rest holds bodies being parsed (each its
    #: size times what parsing can grow it to: 40 for JSON, 160 for CBOR, whose empty containers take
    #: one byte). A request waits, unread (TCP pushes back on its client), until its share is free.
    max_request_memory: Annotated[int, BeforeValidator(parse_bytes), Field(ge=64 * 1024**2)] = 1024**3
    #: gzip/deflate request bodies: the most a body may inflate to (the API's body limit applies too),
    #: and the largest ratio of inflated to sent bytes.
    max_decompressed_bytes: ByteSize = 16 * 1024**2
    max_decompression_ratio: Annotated[int, Field(ge=1)] = 200
    #: Deepest nesting of objects and arrays in a request body.
    max_json_depth: Annotated[int, Field(ge=4, le=1000)] = 64
    #: Most objects and arrays in a JSON request body of 1 MiB or more (counted before it is parsed; a
    #: PutRecordBatch or PutRecords of 500 records has about 500).
    max_json_containers: Annotated[int, Field(ge=1000)] = 1_000_000


class QuotaSettings(_Settings):
    """Per-delivery-stream throughput quotas as AWS applies them to DirectPut streams (PutRecord and
    PutRecordBatch together). Off by default; over a quota a call answers ServiceUnavailableException
    "Slow down." (503). AWS's defaults in us-east-1, us-west-2 and eu-west-1 are shown."""

    enabled: bool = False
    records_per_second: Annotated[int, Field(ge=1)] = 500_000
    requests_per_second: Annotated[int, Field(ge=1)] = 2_000
    mib_per_second: Annotated[float, Field(gt=0)] = 5.0


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether a listen address only accepts connections from this machine."""
    host = host.strip().strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def check_listener(host: str, auth: AuthSettings, what: str) -> None:
    """Refuse to serve an API beyond this machine without authentication (ConfigError says why)."""
    if auth.mode == "none" and not is_loopback(host):
        raise ConfigError(
            f"{what} would listen on {host}, which other machines can reach, with auth.mode none: anyone "
            "could read, write and delete streams. Set auth.mode: sigv4 with auth.principals, or listen on "
            "127.0.0.1.")


def check_reset_endpoint(host: str, testing: TestingSettings, what: str,
                         error: type[Exception] = ConfigError) -> None:
    """Refuse ``testing.reset_endpoint`` on a listener other machines can reach: one unauthenticated
    request there would delete every stream."""
    if testing.reset_endpoint and not is_loopback(host):
        raise error(
            f"testing.reset_endpoint is on and {what} would listen on {host}, which other machines can reach: "
            "anyone there could delete every stream with one request. It is for test suites on this machine; "
            "listen on 127.0.0.1 or turn it off.")


class Settings(_Settings):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4573
    state_dir: Path = Path("./data/state")
    region: str = "us-east-1"
    #: The home account: config-declared streams belong to it unless they name another (``AccountId``),
    #: and its state lives at the top of the state directory. Unset: the first principal's account when
    #: authentication is on, else 123456789012. Set it to pin it while principals change.
    account_id: AccountId = "123456789012"
    #: Emulates Firehose's asynchronous create: seconds a new stream stays CREATING.
    create_delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    max_delivery_streams: Annotated[int, Field(ge=1)] = 5000
    log_level: str = "INFO"
    log: LogSettings = LogSettings()
    spool: SpoolSettings = SpoolSettings()
    s3: S3Settings = S3Settings()
    buckets: dict[str, BucketSettings] = {}
    #: Iceberg catalogs by CatalogARN (``default``: for definitions that name none, or an ARN not listed).
    catalogs: dict[str, CatalogSettings] = {}
    delivery: DeliverySettings = DeliverySettings()
    delete: DeleteSettings = DeleteSettings()
    memory: MemorySettings = MemorySettings()
    #: Where ``arn:aws:lambda:REGION:ACCOUNT:function:NAME`` looks for ``NAME.py``.
    transforms_dir: Path = Path("transforms")
    #: Transform functions by LambdaArn (or function name), for ARNs that do not follow the convention.
    functions: dict[str, FunctionSettings] = {}
    processing: ProcessingSettings = ProcessingSettings()
    #: Format-conversion schemas by "<DatabaseName>.<TableName>" (the Glue table AWS would read).
    schemas: dict[str, TableSettings] = {}
    encryption: EncryptionSettings = EncryptionSettings()
    http: HttpSettings = HttpSettings()
    http_endpoint_receiver: HttpEndpointReceiverSettings = HttpEndpointReceiverSettings()
    #: OpenSearch/Elasticsearch DomainARN → endpoint URL (a definition may name a domain by ARN).
    domains: dict[str, str] = {}
    #: Credentials by endpoint URL (e.g. basic auth for an OpenSearch cluster), so definitions stay as AWS writes them.
    credentials: dict[str, DestinationCredentials] = {}
    #: Secrets by SecretARN, for machines without Secrets Manager: a SecretsManagerConfiguration naming
    #: one of these reads it here instead of calling GetSecretValue. The value is the secret's JSON
    #: (``file:/path`` or ``${VAR}``), or its members as a mapping (each inline, ``${VAR}`` or ``file:``).
    secrets: dict[str, SecretReference | dict[str, SecretReference]] = {}
    secrets_manager: SecretsManagerSettings = SecretsManagerSettings()
    kinesis: KinesisSettings = KinesisSettings()
    #: Kafka clusters by MSKClusterARN: where MSKAsSource delivery streams read (``firehose.sources.kafka``).
    kafka_clusters: dict[str, KafkaClusterSettings] = {}
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    metrics: MetricsSettings = MetricsSettings()
    console: ConsoleSettings = ConsoleSettings()
    limits: LimitsSettings = LimitsSettings()
    quotas: QuotaSettings = QuotaSettings()
    testing: TestingSettings = TestingSettings()
    cluster: ClusterSettings = ClusterSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

    @property
    def node_id(self) -> str:
        """``cluster.node_id``, or the default one of this machine and state directory."""
        return self.cluster.node_id or default_node_id(self.state_dir)

    @model_validator(mode="before")
    @classmethod
    def _home_account(cls, data: Any) -> Any:
        """With authentication on and no ``account_id``, the home account is the first principal's."""
        if not isinstance(data, dict) or data.get("account_id") is not None:
            return data
        auth = data.get("auth")
        if isinstance(auth, dict) and auth.get("mode") == "sigv4":
            principals = auth.get("principals")
            if isinstance(principals, list) and principals and isinstance(principals[0], dict):
                account = principals[0].get("account_id")
                if isinstance(account, str):
                    return {**data, "account_id": account}
        return data

    @property
    def named_accounts(self) -> set[str]:
        """The accounts the configuration names: home, principals', declared Kinesis streams'."""
        named = {self.account_id, *(p.account_id for p in self.auth.principals)}
        named.update(s[ACCOUNT_MEMBER] for s in self.kinesis.streams if isinstance(s.get(ACCOUNT_MEMBER), str))
        return named

    @model_validator(mode="after")
    def _listeners(self) -> Settings:
        if self.metrics.listen is not None:
            split_listen(self.metrics.listen)
        check_reset_endpoint(self.host, self.testing, "The Firehose API", error=ValueError)
        if self.kinesis.enabled:
            check_reset_endpoint(self.kinesis.host or self.host, self.testing, "The Kinesis API", error=ValueError)
        return self


class Config(BaseModel):
    """A loaded config file: settings plus the declared delivery streams, and the account of each."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings
    streams: list[DeliveryStreamDefinition]
    source: str
    #: The account each of ``streams`` belongs to (its ``AccountId``, else ``settings.account_id``).
    accounts: list[str] = []
    #: ``analytics_applications:``: SQL applications, each a CreateApplication body (checked against the
    #: model when the daemon applies them), with an optional ``AccountId`` and ``InputStartingPosition``.
    applications: list[dict[str, Any]] = []

    def by_account(self) -> dict[str, list[DeliveryStreamDefinition]]:
        """The declared streams of each account that declares any."""
        out: dict[str, list[DeliveryStreamDefinition]] = {}
        accounts = self.accounts or [self.settings.account_id] * len(self.streams)
        for account, definition in zip(accounts, self.streams, strict=True):
            out.setdefault(account, []).append(definition)
        return out

    def applications_by_account(self) -> dict[str, list[dict[str, Any]]]:
        """The declared SQL applications of each account that declares any."""
        out: dict[str, list[dict[str, Any]]] = {}
        for item in self.applications:
            out.setdefault(item.get(ACCOUNT_MEMBER, self.settings.account_id), []).append(item)
        return out


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a config file; ConfigError names the file, stream and field."""
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of settings")
        raw = _interpolate(loaded)
    streams_raw = raw.pop("delivery_streams", None) or []
    applications_raw = raw.pop("analytics_applications", None) or []
    merged = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_settings_message(exc)}") from exc
    if not isinstance(streams_raw, list):
        raise ConfigError(f"{source}: delivery_streams must be a list of stream definitions")
    accounts = [declared_account(item, settings, source, i) for i, item in enumerate(streams_raw)]
    streams = [parse_stream(item, source, i) for i, item in enumerate(streams_raw)]
    keys = [(a, s.delivery_stream_name) for a, s in zip(accounts, streams, strict=True)]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"{source}: delivery stream {dupes[0][1]!r} is declared more than once"
                          + (f" in account {dupes[0][0]}" if len(set(accounts)) > 1 else ""))
    applications = _declared_applications(applications_raw, source)
    return Config(settings=settings, streams=streams, source=source, accounts=accounts, applications=applications)


def _declared_applications(items: Any, source: str) -> list[dict[str, Any]]:
    """``analytics_applications:`` as a list of mappings with valid ``AccountId``s and no name declared twice
    in an account (their content is checked by the daemon, against the Kinesis Analytics model)."""
    if not isinstance(items, list):
        raise ConfigError(f"{source}: analytics_applications must be a list of CreateApplication bodies")
    seen = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: analytics_applications[{i}] must be a mapping (a CreateApplication body)")
        account = item.get(ACCOUNT_MEMBER)
        if account is not None and (not isinstance(account, str) or not re.fullmatch(r"\d{12}", account)):
            raise ConfigError(f"{source}: analytics_applications[{i}]: AccountId must be a 12-digit account id")
        key = (account, item.get("ApplicationName"))
        if key in seen:
            raise ConfigError(f"{source}: analytics application {key[1]!r} is declared more than once")
        seen.add(key)
    return items


#: The member a declared stream (delivery stream or Kinesis stream) names its account with; not an AWS member.
ACCOUNT_MEMBER = "AccountId"


def declared_account(item: Any, settings: Settings, source: str, index: int) -> str:
    """The account a declared stream belongs to: its ``AccountId``, else the home account."""
    account = item.get(ACCOUNT_MEMBER) if isinstance(item, dict) else None
    if account is None:
        return settings.account_id
    if not isinstance(account, str) or not re.fullmatch(r"\d{12}", account):
        raise ConfigError(f"{source}: delivery_streams[{index}]: AccountId must be a 12-digit account id")
    return account


def parse_stream(item: Any, source: str, index: int) -> DeliveryStreamDefinition:
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: delivery_streams[{index}] must be a mapping (a CreateDeliveryStream body)")
    name = item.get("DeliveryStreamName")
    where = f"{source}: delivery stream {name!r}" if name else f"{source}: delivery_streams[{index}]"
    item = {k: v for k, v in item.items() if k != ACCOUNT_MEMBER}
    unknown = unknown_members(DeliveryStreamDefinition, item)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]} (check the spelling against CreateDeliveryStream)")
    try:
        return DeliveryStreamDefinition.model_validate(item)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_message(exc, aws_paths=False)}") from exc


def _settings_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting {path!r}")
        else:
            parts.append(f"setting {path!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
