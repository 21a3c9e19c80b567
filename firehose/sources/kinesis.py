"""A delivery stream that reads a Kinesis stream (DeliveryStreamType ``KinesisStreamAsSource``).

Every shard is read with GetRecords through boto3, so the stream can live in
this daemon's sidecar, in any Kinesis-compatible server, or in AWS itself.
What is read goes into the delivery stream's spool; from there the pipeline
treats it like records put directly.

Checkpoints live in the spool. Each spooled batch carries, in the same entry,
the reader's position in every shard as of that batch, and appends are
serialised, so the newest entry of the raw log (which the spool never
deletes) always holds the latest positions. Records and the checkpoint past
them become durable in one fsync: a restart resumes after the last spooled
record, with no loss and no gap, and nothing is read twice.

Lineage: a shard is read only once its parents are finished (read to the
end of a closed shard), so records of one partition key keep their order
across a reshard. Parents no longer listed (past retention) count as done.

Shared by several daemons (``cluster.mode: fleet``): the shards are split between the daemons through
leases in a DynamoDB table (``leases.py``); a daemon reads only the shards it holds, writes its
checkpoints there as well, and stops reading a shard the moment it learns the lease is gone.

Backpressure: while the stream's spooled, undelivered data exceeds
``kinesis.source_max_backlog_bytes``, or the spool is full, reading pauses
and the backlog stays in the Kinesis stream, as AWS Firehose does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from firehose.clock import now_ms
from firehose.errors import ServiceUnavailableException
from firehose.retry import Backoff, retry_until
from firehose.settings import KinesisSettings
from firehose.sources.kpl import deaggregate
from firehose.sources.leases import LeaseCoordinator, LeaseTable, later_checkpoint
from firehose.sources.lineage import ShardReading, error_code, list_all_shards, read_in_lineage
from firehose.spool import Spool, StreamSpool
from firehose.spool import entry as spool_entry

log = logging.getLogger("firehose.sources")

#: AWS allows 5 GetRecords calls per second per shard.
_MIN_CALL_INTERVAL_S = 0.2
#: Between failed calls (listing shards, GetRecords, a full spool): up to 0.2 s, 0.4 s, ... 10 s.
_BACKOFF = Backoff(base=0.2, cap=10.0)
#: GetRecords answers that mean "too many calls": retried after the backoff, not reported as failures.
_THROTTLED = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException"})


def parse_stream_arn(arn: str) -> tuple[str, str]:
    """(region, stream name) of ``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``."""
    parts = arn.split(":", 5)
    return parts[3], parts[5].split("/", 1)[1]


def make_client(arn: str, settings: KinesisSettings, local_endpoint: str | None,
                local_verify: bool | str = True) -> Any:
    """A Kinesis client for the stream: the configured endpoint, else the AWS configuration, else the sidecar.

    The AWS configuration (``AWS_ENDPOINT_URL_KINESIS``, ``AWS_ENDPOINT_URL``, profiles) wins over
    the in-process sidecar; the sidecar is used when that configuration points at AWS itself.
    Requests are signed with the standard credential chain, as any AWS client's (a sidecar with
    authentication on needs a principal's keys there); without credentials anywhere they go unsigned
    (a sidecar without authentication takes them). ``local_verify`` is how the sidecar's TLS
    certificate is checked when it serves TLS (a CA bundle path, or True for the system store).
    """
    region, _name = parse_stream_arn(arn)
    session = boto3.session.Session(region_name=region)
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
                        max_pool_connections=32)
    if session.get_credentials() is None:
        config = config.merge(BotoConfig(signature_version=UNSIGNED))
    endpoint = settings.source_endpoint_url
    if endpoint is None and local_endpoint is not None:
        default = session.client("kinesis", config=config).meta.endpoint_url
        if default.rstrip("/").endswith(".amazonaws.com"):
            endpoint = local_endpoint
    verify = local_verify if endpoint is not None and endpoint == local_endpoint else None
    return session.client("kinesis", endpoint_url=endpoint, config=config, verify=verify)


class _LeaseLost(Exception):
    """The shard's lease went to another daemon (or expired): its reader stops."""


@dataclass(frozen=True)
class LeaseOptions:
    """How a source shares its shards with other daemons: its lease table, made in a thread (boto3
    clients are slow to make), this daemon's id as lease owner, and the lease settings."""

    table: Callable[[], LeaseTable]
    owner: str
    duration: float
    create_table: bool


def latest_checkpoints(stream: StreamSpool) -> dict[str, str]:
    """The per-shard positions stored with the newest spooled batch (empty before the first)."""
    log_ = stream.log
    last = log_.committed_next_seq - 1
    if last < log_.first_seq:
        return {}
    got = log_.read(last, 1)
    if not got:
        return {}
    decoded = spool_entry.decode(*got[-1])
    return dict(decoded.checkpoints or {})


@dataclass
class ShardProgress:
    millis_behind: int = 0
    records: int = 0


@dataclass
class SourceState:
    shards: dict[str, ShardProgress] = field(default_factory=dict)
    last_error: str | None = None
    paused: bool = False


class KinesisSource(ShardReading):
    def __init__(self, *, name: str, stream_arn: str, spool: Spool, stream: StreamSpool,
                 settings: KinesisSettings, client_factory: Callable[[], Any],
                 on_records: Callable[[int, int], None] | None = None,
                 on_throttled: Callable[[str], None] | None = None,
                 on_behind: Callable[[int], None] | None = None,
                 leases: LeaseOptions | None = None, on_leases: Callable[[int], None] | None = None) -> None:
        """``on_records(records, bytes)`` after records are spooled; ``on_throttled(operation)`` when a
        call is throttled (ThrottledGetRecords, ...); ``on_behind(ms)`` with KinesisMillisBehindLatest,
        the largest over the shards being read, after each GetRecords; ``on_leases(n)`` with the number
        of leases held (with ``leases``), after each round of renewals."""
        super().__init__(client_factory)
        self.name = name
        self.stream_arn = stream_arn
        self.stream_name = parse_stream_arn(stream_arn)[1]
        self._spool = spool
        self._stream = stream
        stream.log.keep_last = True  # its newest entry holds the checkpoints (``latest_checkpoints``)
        self._settings = settings
        self._on_records = on_records
        self._on_throttled = on_throttled
        self._on_behind = on_behind
        self._lease_options = leases
        self._on_leases = on_leases
        self._leases: LeaseCoordinator | None = None
        self._checkpoints: dict[str, str] = {}
        self._finished: set[str] = set()
        #: Failures still in force, by shard (None: listing shards), newest last; /readyz shows the newest.
        self._errors: dict[str | None, str] = {}
        self._append_lock = asyncio.Lock()
        self.state = SourceState()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._checkpoints = latest_checkpoints(self._stream)
        super().start()

    def _main(self) -> Coroutine[Any, Any, None]:
        return self._run() if self._lease_options is None else self._run_leased(self._lease_options)

    async def stop(self) -> None:
        await super().stop()
        if self._leases is not None:  # let go, so other daemons take the shards at once, not after expiry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._leases.release_all(self._checkpoints), timeout=5)

    def describe(self) -> dict[str, Any]:
        return {
            "kinesis_stream": self.stream_arn,
            "shards_reading": sorted(s for s, t in self._readers.items() if not t.done()),
            "shards_finished": sorted(self._finished),
            "millis_behind": max((p.millis_behind for p in self.state.shards.values()), default=0),
            "records_read": sum(p.records for p in self.state.shards.values()),
            "paused": self.state.paused,
            "last_error": self.state.last_error,
            **({"leases": {"owner": self._leases.owner, "held": sorted(self._leases.held),
                           "table": self._leases.table.name}} if self._leases is not None else {}),
        }

    # -- shard discovery -----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            shards = await retry_until(self._list_shards, backoff=_BACKOFF, on_failure=functools.partial(
                self._note_error, "Could not list the Kinesis stream's shards; retrying."))
            self._clear_error(None)
            listed = {s["ShardId"]: s for s in shards}
            for shard_id in list(self._checkpoints):
                if shard_id not in listed:  # expired with the stream's retention
                    self._checkpoints.pop(shard_id, None)
            await read_in_lineage(listed, self._readers, self._finished, self._read_shard)

    async def _run_leased(self, options: LeaseOptions) -> None:
        """Read the shards whose leases this daemon holds: renew them every third of a lease duration,
        list the shards and rebalance every duration (at once after a shard ends, for its children)."""
        table = await asyncio.to_thread(options.table)
        leases = self._leases = LeaseCoordinator(table=table, owner=options.owner, duration=options.duration)
        await retry_until(functools.partial(leases.open, options.create_table), backoff=_BACKOFF,
                          on_failure=functools.partial(self._note_error, "Could not reach the lease table; retrying."))
        self._clear_error(None)
        next_round, failures = 0.0, 0
        while True:
            await leases.renew(self._checkpoints)
            if self._on_leases is not None:
                self._on_leases(len(leases.held))
            if time.monotonic() >= next_round:
                try:
                    listed = {s["ShardId"]: s for s in await self._list_shards()}
                    await leases.sync(listed)
                    await leases.balance()
                    failures = 0
                    self._clear_error(None)
                except Exception as exc:  # DynamoDB or Kinesis unreachable, throttled: the next round retries
                    failures += 1
                    self._note_error("Could not list the shards or balance the leases; retrying.", exc, failures)
                next_round = time.monotonic() + leases.duration
            for shard_id in [k for k in leases.handing_over if k not in self._readers]:  # its reader has stopped
                with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    await leases.hand_over(shard_id, self._checkpoints.get(shard_id))
            for shard_id, lease in leases.readable().items():
                if shard_id in self._finished:  # read to its end; letting go of the lease failed
                    with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                        await leases.finish(shard_id)
                elif shard_id not in self._readers:
                    start = later_checkpoint(self._checkpoints.get(shard_id), lease.checkpoint)
                    if start is not None and start.isdigit():
                        self._checkpoints[shard_id] = start
                    self._readers[shard_id] = asyncio.get_running_loop().create_task(self._read_shard(shard_id))
            running = [t for t in self._readers.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=leases.renew_interval, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(leases.renew_interval)
            for shard_id, task in list(self._readers.items()):
                if not task.done():
                    continue
                del self._readers[shard_id]
                if not task.cancelled() and task.exception() is None and task.result():
                    self._finished.add(shard_id)
                    next_round = 0.0  # its children may be taken now
                    with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                        await leases.finish(shard_id)

    def _holds(self, shard_id: str) -> bool:
        return self._leases is None or self._leases.holds(shard_id)

    async def _list_shards(self) -> list[dict[str, Any]]:
        return await list_all_shards(self._call, self.stream_arn)

    # -- reading a shard -----------------------------------------------------------

    async def _iterator(self, shard_id: str) -> str:
        return await self._shard_iterator(self.stream_arn, shard_id, self._checkpoints.get(shard_id),
                                          {"ShardIteratorType": "TRIM_HORIZON"}, {"stream": self.name})

    async def _read_shard(self, shard_id: str) -> bool:
        """Read one shard until it is closed and read to its end (True), its lease is lost (False), or forever."""
        progress = self.state.shards.setdefault(shard_id, ShardProgress())
        iterator: str | None = None
        started = 0.0

        async def get_records() -> dict[str, Any]:
            nonlocal iterator, started
            while True:
                try:
                    await self._wait_for_room(shard_id)
                    if iterator is None:
                        iterator = await self._iterator(shard_id)
                    started = time.monotonic()
                    return await self._call("get_records", ShardIterator=iterator, Limit=10000)
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) != "ExpiredIteratorException":
                        raise
                    iterator = None  # not a failure: a fresh iterator, at once

        def failed(exc: Exception, failures: int) -> None:
            nonlocal iterator
            if isinstance(exc, _LeaseLost):
                raise exc
            if isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in _THROTTLED:
                if self._on_throttled is not None:
                    self._on_throttled(exc.operation_name)
                return  # the same iterator, after the backoff
            message = "GetRecords failed; retrying." if isinstance(exc, botocore.exceptions.ClientError) \
                else "Could not reach the Kinesis stream; retrying."
            self._note_error(message, exc, failures, shard_id)
            iterator = None

        while True:
            try:
                response = await retry_until(get_records, backoff=_BACKOFF, on_failure=failed)
            except _LeaseLost:
                return False
            self._clear_error(shard_id)
            records = response.get("Records", [])
            progress.millis_behind = int(response.get("MillisBehindLatest", 0))
            if self._on_behind is not None:
                self._on_behind(max(p.millis_behind for p in self.state.shards.values()))
            if not self._holds(shard_id):
                return False  # the records are the new owner's to spool
            if records:
                await self._spool_records(shard_id, records)
                progress.records += len(records)
            iterator = response.get("NextShardIterator")
            if iterator is None:
                log.info("Finished reading a closed shard; its children are next.",
                         extra={"stream": self.name, "shard": shard_id})
                return True
            if not records or progress.millis_behind == 0:
                await asyncio.sleep(self._settings.source_poll_interval_seconds)
            else:
                await asyncio.sleep(max(0.0, _MIN_CALL_INTERVAL_S - (time.monotonic() - started)))

    async def _wait_for_room(self, shard_id: str) -> None:
        limit = self._settings.source_max_backlog_bytes
        if not self._holds(shard_id):
            raise _LeaseLost(shard_id)
        while self._stream.log.size_bytes + self._stream.processed.size_bytes > limit:
            if not self._holds(shard_id):
                raise _LeaseLost(shard_id)
            if not self.state.paused:
                log.warning("Paused reading the Kinesis stream: the delivery backlog is over its limit.",
                            extra={"stream": self.name, "limit_bytes": limit})
            self.state.paused = True
            await asyncio.sleep(self._settings.source_poll_interval_seconds)
        if self.state.paused:
            log.info("Resumed reading the Kinesis stream.", extra={"stream": self.name})
        self.state.paused = False

    async def _spool_records(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        datas: list[bytes] = []
        arrivals: list[int] = []
        meta: list[list[Any]] = []
        for record in records:
            arrival = _millis(record.get("ApproximateArrivalTimestamp"))
            seq = record["SequenceNumber"]
            for user in deaggregate(record["Data"], record["PartitionKey"]):
                datas.append(user.data)
                arrivals.append(arrival)
                meta.append([shard_id, user.partition_key, seq, user.subsequence])
        last = records[-1]["SequenceNumber"]

        async def append() -> None:
            async with self._append_lock:  # released while backing off: other shards may append meanwhile
                checkpoints = {**self._checkpoints, shard_id: last}
                payload = spool_entry.encode_sourced(datas, arrivals, meta, checkpoints)
                await self._spool.append_sourced(self._stream, payload)
                self._checkpoints[shard_id] = last

        await retry_until(append, backoff=_BACKOFF, retry_on=(ServiceUnavailableException,),
                          on_failure=functools.partial(
                              self._note_error, "The spool is full; holding the records read and retrying.",
                              shard_id=shard_id))
        if self._on_records is not None:
            self._on_records(len(datas), sum(map(len, datas)))

    def _note_error(self, message: str, exc: BaseException, failures: int, shard_id: str | None = None) -> None:
        """Log a failure (the first three, then every tenth) and show it in /readyz until it is cleared."""
        self._errors.pop(shard_id, None)
        self._errors[shard_id] = self.state.last_error = f"{type(exc).__name__}: {exc}"
        if failures <= 3 or failures % 10 == 0:
            log.warning(message, extra={"stream": self.name, "kinesis_stream": self.stream_arn, "shard": shard_id,
                                        "error": self.state.last_error, "attempt": failures})


    def _clear_error(self, shard_id: str | None) -> None:
        """What failed at ``shard_id`` (or listing) works again: /readyz shows what still fails, if anything."""
        if self._errors.pop(shard_id, None) is not None:
            self.state.last_error = next(reversed(self._errors.values()), None)


def _millis(value: Any) -> int:
    if value is None:
        return now_ms()
    if isinstance(value, (int, float)):
        return int(value * 1000)
    with contextlib.suppress(AttributeError):
        return int(value.timestamp() * 1000)
    return now_ms()
