"""Batches and sending: PutRecordBatch (Firehose) or PutRecords (Kinesis) through boto3.

A batch is cut at ``maxBufferSizeRecords`` records, ``maxBufferSizeBytes``
bytes, or ``maxBufferAgeMillis`` after its first record, whichever comes
first. It carries, for every file it read from, the offset a checkpoint may
move to once it is acknowledged.

``deliver`` keeps a batch until every record is acknowledged: after a partial
failure only the failed records are sent again; throttling
(``ServiceUnavailableException``, ``ProvisionedThroughputExceededException``),
server errors and network errors back off exponentially with full jitter
(``firehose.retry``, from ``retryInitialBackoffMillis`` up to
``retryMaxBackoffMillis``), for as long as it takes. The only records ever
given up are those the service refuses as invalid (they could never be
accepted); they are logged and counted.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from firehose.agent.checkpoints import Position
from firehose.agent.config import AgentConfig, Flow
from firehose.retry import Backoff

log = logging.getLogger("firehose.agent")

#: Per-record error codes that retrying cannot fix.
PERMANENT_CODES = frozenset({"InvalidArgumentException", "ValidationException", "SerializationException"})


@dataclass
class Batch:
    """Records to send and the checkpoint positions they complete."""

    records: list[bytes] = field(default_factory=list)
    size: int = 0
    positions: dict[int, Position] = field(default_factory=dict)
    created: float = 0.0
    lines: int = 0


class Batcher:
    """Accumulates records into batches within the flow's limits."""

    def __init__(self, flow: Flow, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_records = flow.max_buffer_size_records
        self.max_bytes = flow.batch_bytes
        self.max_age = flow.max_buffer_age_millis / 1000
        self.aggregate = flow.aggregated_record_size_bytes
        # Kinesis counts the partition key against the request size: leave room for it per record.
        self.overhead = 64 if flow.is_kinesis else 0
        self.clock = clock
        self.current = Batch(created=clock())

    def add(self, key: int, records: list[bytes], ends: list[int], position: Callable[[int], Position],
            safe: int) -> list[Batch]:
        """Add one chunk's records; returns the batches it filled."""
        full: list[Batch] = []
        b = self.current
        last_end = None
        max_records, max_bytes, overhead, aggregate = self.max_records, self.max_bytes, self.overhead, self.aggregate
        for record, end in zip(records, ends, strict=True):
            n = len(record) + overhead
            if (aggregate and b.records and len(b.records[-1]) + len(record) <= aggregate
                    and b.size + len(record) <= max_bytes):
                b.records[-1] += record
                b.size += len(record)
                b.lines += 1
                last_end = end
                continue
            if b.records and (len(b.records) >= max_records or b.size + n > max_bytes):
                if last_end is not None:
                    b.positions[key] = position(last_end)
                full.append(b)
                b = self.current = Batch(created=self.clock())
            if not b.records:
                b.created = self.clock()
            b.records.append(record)
            b.size += n
            b.lines += 1
            last_end = end
        b.positions[key] = position(safe)
        return full

    def due(self) -> bool:
        b = self.current
        return bool(b.records) and self.clock() - b.created >= self.max_age

    def has_positions_only(self) -> bool:
        return not self.current.records and bool(self.current.positions)

    def take(self) -> Batch:
        b = self.current
        self.current = Batch(created=self.clock())
        return b


def random_partition_key(_: bytes) -> str:
    """The Kinesis Agent's RANDOM: a random double in [0, 1e6) as text."""
    return repr(random.uniform(0, 1_000_000))


def deterministic_partition_key(data: bytes) -> str:
    """The Kinesis Agent's DETERMINISTIC: hex MD5 of the record, so equal records share a shard."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Client:
    """One destination: Firehose delivery stream or Kinesis data stream, via a boto3 client."""

    def __init__(self, flow: Flow, boto_client: Any) -> None:
        self.flow = flow
        self.client = boto_client
        self.stream = flow.stream
        self.key_of = deterministic_partition_key if flow.partition_key_option == "DETERMINISTIC" \
            else random_partition_key

    def put(self, records: list[bytes]) -> list[str | None]:
        """Send records once; per record, None when accepted or its ErrorCode."""
        if self.flow.is_kinesis:
            resp = self.client.put_records(
                StreamName=self.stream, Records=[{"Data": r, "PartitionKey": self.key_of(r)} for r in records])
            results = resp["Records"]
        else:
            resp = self.client.put_record_batch(DeliveryStreamName=self.stream, Records=[{"Data": r} for r in records])
            results = resp["RequestResponses"]
        if not resp.get("FailedPutCount"):
            return [None] * len(records)
        return [r.get("ErrorCode") for r in results]


def _describe(exc: Exception) -> tuple[str, bool]:
    """An error's name and whether backing off and retrying is the answer (it nearly always is)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        return code, True  # throttling and 5xx, but also a missing stream: waiting keeps the lines on disk
    if isinstance(exc, BotoCoreError | OSError):
        return type(exc).__name__, True
    return type(exc).__name__, False


@dataclass
class SendStats:
    records_sent: int = 0
    bytes_sent: int = 0
    records_failed_permanently: int = 0
    throttled: int = 0
    retries: int = 0
    errors: int = 0
    calls: int = 0
    last_error: str = ""


def deliver(client: Client, batch: Batch, flow: Flow, stats: SendStats, stop: threading.Event,
            give_up_at: Callable[[], float | None]) -> bool:
    """Send until every record is acknowledged (or refused as invalid); False if stopping cut it short.

    ``give_up_at`` returns a monotonic deadline once a shutdown has started, so a
    dead endpoint cannot hold a stop forever; the batch is then not checkpointed
    and is read again on the next start.
    """
    pending = batch.records
    backoff = Backoff(flow.retry_initial_backoff_millis / 1000, flow.retry_max_backoff_millis / 1000)
    # The backoff's step: one more for every call that failed, held where it is while records get through.
    step = 0
    while pending:
        try:
            stats.calls += 1
            codes = client.put(pending)
        except Exception as exc:
            name, retriable = _describe(exc)
            if not retriable:
                raise
            stats.errors += 1
            stats.last_error = f"{name}: {exc}"
            if name in ("ServiceUnavailableException", "ProvisionedThroughputExceededException",
                        "ThrottlingException", "LimitExceededException"):
                stats.throttled += 1
            step += 1
            delay = backoff.delay(step)
            log.warning("flow %s: sending %d records failed (%s); retrying in %.2fs", flow.stream, len(pending),
                        stats.last_error[:300], delay)
            if not _sleep(delay, stop, give_up_at):
                return False
            stats.retries += 1
            continue
        failed = []
        for record, code in zip(pending, codes, strict=True):
            if code is None:
                stats.records_sent += 1
                stats.bytes_sent += len(record)
            elif code in PERMANENT_CODES:
                stats.records_failed_permanently += 1
                log.error("flow %s: the service refused a record of %d bytes as invalid (%s); it is skipped",
                          flow.stream, len(record), code)
            else:
                failed.append(record)
                if code in ("ServiceUnavailableException", "ProvisionedThroughputExceededException"):
                    stats.throttled += 1
        if not failed:
            return True
        step = max(step, 1) if len(failed) < len(pending) else step + 1  # progress: the delay does not grow
        pending = failed
        delay = backoff.delay(step)
        log.info("flow %s: %d records not accepted (throttled or failed); retrying them in %.2fs", flow.stream,
                 len(pending), delay)
        if not _sleep(delay, stop, give_up_at):
            return False
        stats.retries += 1
    return True


def _sleep(delay: float, stop: threading.Event, give_up_at: Callable[[], float | None]) -> bool:
    """Wait ``delay``; False once a shutdown deadline has passed."""
    end = time.monotonic() + delay
    while True:
        deadline = give_up_at()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        remaining = end - now
        if remaining <= 0:
            return True
        stop.wait(min(remaining, 0.1 if deadline is None else max(0.01, min(0.1, deadline - now))))


def make_boto_client(config: AgentConfig, flow: Flow) -> Any:
    """A boto3 client with SigV4, the configured endpoint and region, credentials from the usual chain.

    Explicit ``awsAccessKeyId``/``awsSecretAccessKey`` win over the chain; with
    ``assumeRoleARN`` those (or the chain's) are used to assume the role, and the
    temporary credentials refresh before they expire. botocore's own retries are
    off: ``deliver`` retries with the flow's backoff and never gives up.
    """
    import boto3
    from botocore.config import Config as BotoConfig

    service = "kinesis" if flow.is_kinesis else "firehose"
    endpoint = config.kinesis_endpoint if flow.is_kinesis else config.firehose_endpoint
    region = (config.kinesis_region if flow.is_kinesis else config.firehose_region) or None
    session = boto3.Session(aws_access_key_id=config.aws_access_key_id,
                            aws_secret_access_key=config.aws_secret_access_key,
                            aws_session_token=config.aws_session_token, region_name=region)
    if session.region_name is None:
        session = boto3.Session(aws_access_key_id=config.aws_access_key_id,
                                aws_secret_access_key=config.aws_secret_access_key,
                                aws_session_token=config.aws_session_token, region_name="us-east-1")
    if config.assume_role_arn:
        _assume_role(session, config)
    boto_config = BotoConfig(
        retries={"total_max_attempts": 1}, connect_timeout=config.connection_timeout_millis / 1000,
        read_timeout=config.socket_timeout_millis / 1000, parameter_validation=False, max_pool_connections=2,
        user_agent_extra="firehose-agent")
    return session.client(service, endpoint_url=endpoint, config=boto_config)


def _assume_role(session: Any, config: AgentConfig) -> None:
    """Swap the session's credentials for the role's, refreshed by botocore before they expire."""
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

    core = session._session
    extra: dict[str, Any] = {"RoleSessionName": "AWSKinesisAgent"}
    if config.assume_role_external_id:
        extra["ExternalId"] = config.assume_role_external_id

    def sts_client(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", config.sts_endpoint)
        return core.create_client(*args, **kwargs)

    fetcher = AssumeRoleCredentialFetcher(client_creator=sts_client, source_credentials=core.get_credentials(),
                                          role_arn=config.assume_role_arn, extra_args=extra)
    core._credentials = DeferredRefreshableCredentials(method="assume-role", refresh_using=fetcher.fetch_credentials)
