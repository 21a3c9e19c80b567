"""A delivery stream that reads a Kafka topic (DeliveryStreamType ``MSKAsSource``).

The topic is read through a Kafka **consumer group**, one per delivery stream:
``firehose.<account id>.<delivery stream name>`` (``group_id``), the same on
every daemon serving the stream and across restarts. Daemons with the same
stream therefore share the topic's partitions, and when one stops (or dies, and
its session times out) the others are given its partitions.

Where a partition is read from, per partition, in this order:

* the **spool's checkpoint**: every spooled entry carries, in the same fsync as
  its records, the last offset spooled of every partition this daemon reads
  (as the Kinesis source's entries carry shard positions), so a restart never
  spools a record twice;
* the **group's committed offset**, when it is past that (another daemon read
  the partition meanwhile): reading resumes at ``max(checkpoint + 1, committed)``;
* else ``ReadFromTimestamp`` (the stream's creation when unset): the first
  offset at or after it (Kafka's offsets-for-times); epoch 0 is the earliest
  record, and a time past the last record is the partition's end.

Offsets are committed to the group only for records already durable in the
spool, at most every ``commit_interval_seconds`` and whenever partitions are
revoked (at a rebalance) or the daemon stops. The guarantee is at least once:
a daemon killed between spooling and committing leaves its last uncommitted
records to be read again by whoever gets the partition next (itself, from its
spool's checkpoint, skips them). A partition taken away is no longer spooled
from the moment it is revoked; a partition lost (session expired) is not
committed at all.

A topic deleted and re-created starts its offsets again from 0, below the
spool's checkpoints: as on AWS, re-create the delivery stream then.

Records over AWS's size limit (``record_limit``: 10 MiB, 6 MiB when a Lambda
transform is configured) are not spooled as records: each is spooled, in its
place in the partition's order, as an error document (``processing-failed``,
errorCode ``Kafka.RecordTooLarge``) that goes to the stream's error output, and
its offset is checkpointed and committed like any other: one such record never
stops its partition.

Backpressure: while the stream's spooled, undelivered data exceeds the
cluster's ``max_backlog_bytes``, the partitions are paused (the consumer keeps
polling, so it stays in the group) and the backlog stays in Kafka.

The Kafka client is confluent-kafka (librdkafka), run in a thread of its own:
its callbacks (assignment, revocation) run inside ``consume`` on that thread.
One entry at a time is being written (entries land in the order read, the
newest holding every partition's position): while it is written and fsynced,
the thread goes on reading into the next one (``KafkaBatch``, up to
``MAX_ENTRY_RECORDS`` records or ``MAX_ENTRY_BYTES``), handed to the event loop
as soon as the previous one is durable; so an entry's size follows the spool's
write latency rather than a fixed count. Building the entry (metadata,
encoding) is done on that thread too, so the event loop only writes. Before a
rebalance's callback, a pause or a stop, what is read is written first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firehose import failures
from firehose.clock import now_ms
from firehose.definitions import MSKSourceConfiguration
from firehose.errors import ServiceUnavailableException
from firehose.partitions import DEFAULT_PARTITION, error_partition
from firehose.retry import Backoff, retry_until
from firehose.settings import KafkaClusterSettings, read_secret
from firehose.sources.kafka_batch import KafkaBatch
from firehose.sources.kinesis import latest_checkpoints
from firehose.spool import Spool, StreamSpool

log = logging.getLogger("firehose.sources")

#: Most records one consume call returns.
BATCH_RECORDS = 10_000
#: Most records, and bytes, one spooled entry (one fsync) gathers while the previous one is written.
MAX_ENTRY_RECORDS = 50_000
MAX_ENTRY_BYTES = 8 * 1024 * 1024
#: How long one consume call waits for records; while an entry is being written, only this long, so
#: that the next is handed over (and the records counted) soon after the fsync.
_POLL_SECONDS = 0.2
_WRITING_POLL_SECONDS = 0.005
#: Between failed attempts to append to a full spool, or to set up the consumer.
_BACKOFF = Backoff(base=0.2, cap=10.0)
#: The largest record Firehose reads from an MSK topic (limits.html: "10 MB max record size", and "6 MB
#: maximum record size if AWS Lambda is enabled", Lambda's payload limit); larger ones go to the error
#: output. Read as MiB, the larger reading of "MB" (our choice).
MAX_RECORD_BYTES = 10 * 1024 * 1024
MAX_RECORD_BYTES_LAMBDA = 6 * 1024 * 1024
#: errorCode of an oversize record's error document. AWS says such records go to the S3 error output
#: and a metric counts them, but documents no code or error output type: ours are these (our choice),
#: under ``processing-failed``.
RECORD_TOO_LARGE = "Kafka.RecordTooLarge"
OVERSIZE_ERROR_TYPE = failures.PROCESSING_FAILED


def record_limit(lambda_step: bool) -> int:
    """The largest record value (bytes) spooled as a record: AWS's limit for the stream's processing."""
    return MAX_RECORD_BYTES_LAMBDA if lambda_step else MAX_RECORD_BYTES


def oversize_document(value: bytes, *, arrival_ms: int, limit: int, lambda_step: bool, topic: str, partition: int,
                      offset: int) -> bytes:
    """The error document of a record over ``limit``: ``rawData`` is its value, the message says where it is."""
    why = " with a Lambda transform configured" if lambda_step else ""
    return failures.document(
        raw=value, arrival_ms=arrival_ms, code=RECORD_TOO_LARGE,
        message=(f"The record is {len(value)} bytes, over the {limit} bytes a record read from an MSK topic may "
                 f"have{why}; it was not delivered (topic {topic}, partition {partition}, offset {offset})."))


def group_id(account_id: str, stream_name: str) -> str:
    """The consumer group of a delivery stream: the same on every daemon serving it, across restarts."""
    return f"firehose.{account_id}.{stream_name}"


def consumer_config(cluster: KafkaClusterSettings, *, group: str, client_id: str,
                    earliest: bool) -> dict[str, Any]:
    """librdkafka settings for a stream's consumer: no automatic commits or offset stores (the source
    commits what is spooled), the cluster's session and security settings."""
    config: dict[str, Any] = {
        "bootstrap.servers": cluster.bootstrap_servers,
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Only a fallback: every assigned partition is given its position explicitly.
        "auto.offset.reset": "earliest" if earliest else "latest",
        "session.timeout.ms": cluster.session_timeout_ms,
        # A change in the topic's partitions (partitions added) rebalances the group at the next look-up:
        # new partitions are read, from where ``start_offsets`` says (they have no checkpoint nor commit).
        "topic.metadata.refresh.interval.ms": cluster.metadata_refresh_interval_ms,
        "heartbeat.interval.ms": cluster.heartbeat_interval_ms,
        "fetch.wait.max.ms": 50,
        "fetch.queue.backoff.ms": 20,
        "security.protocol": cluster.security_protocol.lower(),
        "logger": logging.getLogger("firehose.sources.kafka"),
    }
    if cluster.sasl_mechanism is not None:
        config["sasl.mechanism"] = cluster.sasl_mechanism
        config["sasl.username"] = cluster.sasl_username
        config["sasl.password"] = read_secret(cluster.sasl_password or "")
    if cluster.ca_file is not None:
        config["ssl.ca.location"] = str(cluster.ca_file)
    return config


def start_offsets(partitions: Sequence[int], *, checkpoints: dict[int, int], committed: dict[int, int],
                  read_from_ms: int, by_time: Callable[[list[int], int], dict[int, int]]) -> dict[int, int]:
    """Where each partition is read from: ``max(checkpoint + 1, committed)`` where either is known,
    else the first offset at or after ``read_from_ms`` (``by_time``: Kafka's offsets-for-times, -1
    when none is; then the partition's end), and the beginning for ``read_from_ms`` 0.

    Offsets returned may be librdkafka's logical ones: ``OFFSET_BEGINNING`` (-2), ``OFFSET_END`` (-1).
    """
    out: dict[int, int] = {}
    unknown: list[int] = []
    for p in partitions:
        known = [o for o in (checkpoints.get(p, -2) + 1, committed.get(p, -1)) if o >= 0]
        if known:
            out[p] = max(known)
        else:
            unknown.append(p)
    if unknown:
        if read_from_ms <= 0:
            out.update(dict.fromkeys(unknown, OFFSET_BEGINNING))
        else:
            found = by_time(unknown, read_from_ms)
            out.update({p: found.get(p, -1) if found.get(p, -1) >= 0 else OFFSET_END for p in unknown})
    return out


OFFSET_BEGINNING = -2
OFFSET_END = -1


def offsets_at(consumer: Any, topic: str, partitions: list[int], ms: int) -> dict[int, int]:
    """Kafka's offsets-for-times for ``partitions``; where no record is at or after ``ms``, the partition's
    end as of now (its high watermark) rather than -1: the logical end is only resolved when fetching
    starts, and a record written in between (a partition just added, its producers quicker than this
    group's rebalance) would be skipped. Where the end cannot be looked up either, -1 (the logical end)."""
    from confluent_kafka import TopicPartition

    found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=30)
    out = {tp.partition: tp.offset for tp in found}
    for p in partitions:
        if out.get(p, -1) < 0:
            try:
                out[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            except Exception as exc:  # a broker that does not answer: the logical end, as Kafka's own fallback
                log.warning("Could not look up a Kafka partition's end; reading it from its end when fetching starts.",
                            extra={"topic": topic, "partition": p, "error": str(exc)})
                out[p] = -1
    return out


@dataclass
class KafkaSourceState:
    assigned: list[int] = field(default_factory=list)
    paused: bool = False
    last_error: str | None = None
    records: int = 0
    #: Records over the size limit sent to the error output (counted in ``records`` too).
    oversize: int = 0
    committed: dict[int, int] = field(default_factory=dict)


class KafkaSource:
    """Reads one topic into one delivery stream's spool (see the module's docstring)."""

    def __init__(self, *, name: str, account_id: str, source: MSKSourceConfiguration, cluster: KafkaClusterSettings,
                 spool: Spool, stream: StreamSpool, created_ms: int,
                 on_records: Callable[[int, int], None] | None = None,
                 on_backpressure: Callable[[bool], None] | None = None,
                 on_oversize: Callable[[int], None] | None = None,
                 lambda_step: Callable[[], bool] = lambda: True,
                 consumer_factory: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """``on_records(records, bytes)`` after records are spooled; ``on_backpressure(paused)`` when
        reading pauses or resumes; ``on_oversize(records)`` after records over the size limit went to
        the spool as error documents. ``created_ms``: when the stream was created (where reading starts
        without ReadFromTimestamp). ``lambda_step()``: whether the stream has a Lambda transform now: then
        records read keep their keys and headers in the spool (the Lambda event shows them; nothing else
        reads them, and they cost a third of the reading's CPU), and the size limit is Lambda's."""
        self.name = name
        self.topic = source.topic_name
        self.cluster_arn = source.msk_cluster_arn
        self.group = group_id(account_id, name)
        self._cluster = cluster
        self._spool = spool
        self._stream = stream
        stream.log.keep_last = True  # its newest entry holds the checkpoints
        ts = source.read_from_timestamp
        self.read_from_ms = int(ts * 1000) if ts is not None else created_ms
        self._on_records = on_records
        self._on_backpressure = on_backpressure
        self._on_oversize = on_oversize
        self._lambda_step = lambda_step
        self._consumer_factory = consumer_factory
        #: Last offset spooled, per partition (the spool's checkpoint); only the consumer thread changes it.
        self._checkpoints: dict[int, int] = {}
        #: Offset committed (next to read), per partition, as this daemon last committed or read it.
        self._committed: dict[int, int] = {}
        self._assigned: set[int] = set()
        #: Partitions started from ReadFromTimestamp: records older than it are skipped until the first
        #: one at or after it. Kafka's offsets-for-times already starts there; this also holds for brokers
        #: whose answer is earlier (the Tansu build the tests use answers the first offset).
        self._not_before: dict[int, int] = {}
        self._paused = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: concurrent.futures.Future[None] | None = None
        #: What the batch being written makes durable: (checkpoints after it, records, bytes, oversize records).
        self._inflight_result: tuple[dict[int, int], int, int, int] | None = None
        #: Last offset read per partition: the checkpoints plus the batch being written.
        self._positions: dict[int, int] = {}
        #: Records read while the previous entry is written (on top of ``_positions``).
        self._pending: KafkaBatch | None = None
        self._last_commit = 0.0
        self.state = KafkaSourceState()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._checkpoints = {int(p): int(o) for p, o in latest_checkpoints(self._stream).items()}
        self._positions = dict(self._checkpoints)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"kafka-source-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Commit what is spooled, leave the group (its partitions go to the other daemons at once)."""
        self._stopping.set()  # the batch being written is waited for (within limits), then committed
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        return {
            "kafka_cluster": self.cluster_arn,
            "topic": self.topic,
            "group": self.group,
            "partitions": sorted(self._assigned),
            "paused": self._paused,
            "records": self.state.records,
            "oversize_records": self.state.oversize,
            "last_error": self.state.last_error,
        }

    # -- the consumer thread ---------------------------------------------------------

    def _new_consumer(self) -> Any:
        config = consumer_config(self._cluster, group=self.group, client_id=f"firehose-{self.name}",
                                 earliest=self.read_from_ms <= 0)
        config["error_cb"] = self._client_error
        if self._consumer_factory is not None:
            return self._consumer_factory(config)
        from confluent_kafka import Consumer

        return Consumer(config)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            consumer = None
            try:
                consumer = self._new_consumer()
                consumer.subscribe([self.topic], on_assign=self._assigned_cb, on_revoke=self._revoked_cb,
                                   on_lost=self._lost_cb)
                self._read(consumer)
                return
            except Exception as exc:  # a bad setting, a client failure: retried, and shown in /readyz
                failures += 1
                self._note_error("The Kafka consumer failed; starting it again.", exc, failures)
                if failures == 1:
                    log.debug("The Kafka consumer's failure.", exc_info=exc)
                self._stopping.wait(_BACKOFF.delay(failures))
            finally:
                if consumer is not None:
                    self._close(consumer)

    def _read(self, consumer: Any) -> None:
        while not self._stopping.is_set():
            self._backpressure(consumer)
            busy = self._inflight is not None or self._pending is not None
            messages = consumer.consume(num_messages=BATCH_RECORDS, timeout=_WRITING_POLL_SECONDS if busy
                                        else _POLL_SECONDS)
            if messages:
                self._gather(messages)
            pending = self._pending
            if self._inflight is not None and (self._inflight.done() or (
                    pending is not None and (pending.records >= MAX_ENTRY_RECORDS
                                             or pending.size >= MAX_ENTRY_BYTES))):
                self._settle()
            if self._inflight is None and self._pending is not None:
                self._submit()
            if time.monotonic() - self._last_commit >= self._cluster.commit_interval_seconds:
                self._commit(consumer, self._assigned, asynchronous=True)

    def _close(self, consumer: Any) -> None:
        """Commit what is spooled (synchronously) and leave the group; revocation runs inside close."""
        self._flush(self._settle_seconds())
        with contextlib.suppress(Exception):
            self._commit(consumer, self._assigned, asynchronous=False)
        with contextlib.suppress(Exception):
            consumer.close()
        self._assigned.clear()
        self.state.assigned = []

    # -- rebalances (called inside consume, on the consumer thread) ----------------------

    def _assigned_cb(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        numbers = [tp.partition for tp in partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30) if tp.offset >= 0}
        checkpoints = {p: self._checkpoints[p] for p in numbers if p in self._checkpoints}

        starts = start_offsets(numbers, checkpoints=checkpoints, committed=committed, read_from_ms=self.read_from_ms,
                               by_time=functools.partial(offsets_at, consumer, self.topic))
        if self.read_from_ms > 0:
            for p in numbers:
                if p not in checkpoints and p not in committed:
                    self._not_before[p] = self.read_from_ms
        consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in numbers])
        if self._paused:
            consumer.pause([TopicPartition(self.topic, p) for p in numbers])
        self._committed.update(committed)
        self._assigned = set(numbers)
        self.state.assigned = sorted(self._assigned)
        log.info("Kafka partitions assigned.", extra={"stream": self.name, "topic": self.topic,
                                                      "partitions": sorted(numbers), "starts": starts})

    def _revoked_cb(self, consumer: Any, partitions: list[Any]) -> None:
        numbers = {tp.partition for tp in partitions}
        # What is read is spooled first (the batch being written, the one gathered), then committed;
        # nothing more of these partitions is spooled here.
        self._flush(self._settle_seconds())
        with contextlib.suppress(Exception):
            self._commit(consumer, numbers, asynchronous=False)
        self._assigned -= numbers
        for p in numbers:
            self._not_before.pop(p, None)
        self.state.assigned = sorted(self._assigned)
        log.info("Kafka partitions revoked.", extra={"stream": self.name, "topic": self.topic,
                                                     "partitions": sorted(numbers)})

    def _lost_cb(self, _consumer: Any, partitions: list[Any]) -> None:
        numbers = {tp.partition for tp in partitions}
        self._flush(self._settle_seconds())
        self._assigned -= numbers  # another member may own them already: commit nothing
        for p in numbers:
            self._committed.pop(p, None)
            self._not_before.pop(p, None)
        self.state.assigned = sorted(self._assigned)
        log.warning("Kafka partitions lost (the group session expired); their records read since the last "
                    "commit will be read again by their new owner.",
                    extra={"stream": self.name, "topic": self.topic, "partitions": sorted(numbers)})

    def _settle_seconds(self) -> float:
        """How long a rebalance or a stop waits for the batch being written: within the group's session."""
        return self._cluster.session_timeout_ms / 2000

    # -- commits ---------------------------------------------------------------------

    def _commit(self, consumer: Any, partitions: set[int], *, asynchronous: bool) -> None:
        """Commit, for ``partitions``, the offset after the last record spooled (where it moved)."""
        from confluent_kafka import TopicPartition

        self._last_commit = time.monotonic()
        due = {p: self._checkpoints[p] + 1 for p in partitions
               if p in self._checkpoints and self._checkpoints[p] + 1 > self._committed.get(p, -1)}
        if not due:
            return
        consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(due.items())],
                        asynchronous=asynchronous)
        self._committed.update(due)
        self.state.committed = dict(self._committed)

    # -- backpressure ----------------------------------------------------------------

    def _backlog(self) -> int:
        """The stream's spooled, undelivered bytes, with the batch being written."""
        writing = self._inflight_result[2] if self._inflight_result is not None else 0
        gathered = self._pending.size if self._pending is not None else 0
        return int(self._stream.log.size_bytes + self._stream.processed.size_bytes) + writing + gathered

    def _backpressure(self, consumer: Any) -> None:
        from confluent_kafka import TopicPartition

        over = self._backlog() > self._cluster.max_backlog_bytes
        if over == self._paused:
            return
        partitions = [TopicPartition(self.topic, p) for p in sorted(self._assigned)]
        if over:
            self._flush()  # what is read is written before reading stops
            log.warning("Paused reading the Kafka topic: the delivery backlog is over its limit.",
                        extra={"stream": self.name, "limit_bytes": self._cluster.max_backlog_bytes})
            if partitions:
                consumer.pause(partitions)
        else:
            log.info("Resumed reading the Kafka topic.", extra={"stream": self.name})
            if partitions:
                consumer.resume(partitions)
        self._paused = self.state.paused = over
        if self._on_backpressure is not None:
            self._on_backpressure(over)

    # -- spooling ----------------------------------------------------------------------

    def _gather(self, messages: list[Any]) -> None:
        """Take one consume call's messages into the entry gathered while the previous one is written."""
        batch = self._pending
        if batch is None:
            keep = self._lambda_step()
            batch = KafkaBatch(topic=self.topic, keep=keep, limit=record_limit(keep))
        batch.add(messages, positions=self._positions, assigned=self._assigned, not_before=self._not_before,
                  received=now_ms(), on_error=self._message_error)
        self._pending = batch if batch.moved else None

    def _submit(self) -> None:
        """Hand the gathered entry to the event loop to be written (none is being written)."""
        batch, self._pending = self._pending, None
        if batch is None or not batch.moved:
            return
        assert self._inflight is None and self._loop is not None
        after = {**self._positions, **batch.moved}
        for p, offset, value, _arrival in batch.oversize:
            log.warning("A Kafka record is over the size limit; it goes to the error output.",
                        extra={"stream": self.name, "topic": self.topic, "partition": p, "offset": offset,
                               "bytes": len(value), "limit_bytes": batch.limit})
        payload = batch.payload(after, functools.partial(self._oversize_document, batch),
                                error_partition(OVERSIZE_ERROR_TYPE), DEFAULT_PARTITION)
        self._inflight = asyncio.run_coroutine_threadsafe(self._append(payload), self._loop)
        self._inflight_result = (after, len(batch.datas), batch.size, len(batch.oversize))
        self._positions = after

    def _oversize_document(self, batch: KafkaBatch, value: bytes, arrival: int, partition: int, offset: int) -> bytes:
        return oversize_document(value, arrival_ms=arrival, limit=batch.limit, lambda_step=batch.keep,
                                 topic=self.topic, partition=partition, offset=offset)

    def _flush(self, timeout: float | None = None) -> None:
        """Write what is read: wait for the entry being written, then write the one gathered and wait for
        it (``_settle``: one not written within ``timeout`` is given up with the one gathered)."""
        self._settle(timeout)
        self._submit()
        self._settle(timeout)

    def _settle(self, timeout: float | None = None) -> None:
        """Wait for the batch being written, then count it durable (its positions may be committed).

        Only a rebalance or a stop gives a ``timeout`` (then every partition is being taken away: the
        assignment is eager). A batch not written within it (a full spool) is given up: its positions
        are forgotten, with the records gathered since (``_pending``), so its records are read again by
        whoever reads the partition next, and never committed unwritten. (Should the write land after
        all, this daemon may spool them twice.)"""
        future, result = self._inflight, self._inflight_result
        if future is None or result is None:
            return
        try:
            future.result(timeout)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            if timeout is not None:
                future.cancel()
            self._positions = dict(self._checkpoints)
            self._pending = None
            return
        finally:
            self._inflight = self._inflight_result = None
        after, records, size, oversize = result
        self._checkpoints = after
        self.state.records += records
        if self._on_records is not None:
            self._on_records(records, size)
        if oversize:
            self.state.oversize += oversize
            if self._on_oversize is not None:
                self._on_oversize(oversize)

    async def _append(self, payload: list[bytes]) -> None:
        await retry_until(functools.partial(self._spool.append_sourced, self._stream, payload), backoff=_BACKOFF,
                          retry_on=(ServiceUnavailableException,), on_failure=functools.partial(
                              self._note_error, "The spool is full; holding the records read and retrying."))

    # -- errors ----------------------------------------------------------------------

    def _client_error(self, error: Any) -> None:
        """librdkafka's errors (brokers down, authentication): shown in /readyz; it retries by itself."""
        self.state.last_error = f"KafkaError: {error}"
        log.warning("Kafka client error.", extra={"stream": self.name, "error": str(error)})

    def _message_error(self, error: Any) -> None:
        self.state.last_error = f"KafkaError: {error}"
        log.warning("Kafka fetch error.", extra={"stream": self.name, "topic": self.topic, "error": str(error)})

    def _note_error(self, message: str, exc: BaseException, failures: int) -> None:
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        if failures <= 3 or failures % 10 == 0:
            log.warning(message, extra={"stream": self.name, "topic": self.topic, "error": self.state.last_error,
                                        "attempt": failures})
