"""The reading side of a Kafka source (DeliveryStreamType ``MSKAsSource``), run in a process of its own.

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
revoked (at a rebalance) or the source stops. The guarantee is at least once:
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

The Kafka client is confluent-kafka (librdkafka); its callbacks (assignment,
revocation) run inside ``consume``, on the reader's main thread. The reader
runs in a process of its own (``firehose.sources.kafka`` starts it; entries
travel over ``kafka_link``), so its per-message work never holds the daemon's
interpreter lock. One entry at a time is being written (entries land in the
order read, the newest holding every partition's position): while the daemon
writes and fsyncs it, the reader goes on reading into the next one
(``KafkaBatch``, up to ``MAX_ENTRY_RECORDS`` records or ``MAX_ENTRY_BYTES``),
sent as soon as the previous one is durable; so an entry's size follows the
spool's write latency rather than a fixed count. Before a rebalance's
callback, a pause or a stop, what is read is written first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firehose import failures
from firehose.clock import now_ms
from firehose.partitions import DEFAULT_PARTITION, error_partition
from firehose.retry import Backoff
from firehose.settings import KafkaClusterSettings, read_secret
from firehose.sources.kafka_batch import KafkaBatch
from firehose.sources.kafka_link import DONE, ENTRY, STATE, STATUS, STOP, ForwardingHandler, Link, LinkClosed
from firehose.telemetry import tune_gc

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


class EntryRefused(RuntimeError):
    """The daemon could not make an entry durable (not a full spool, which it retries)."""


def settle_seconds(cluster: KafkaClusterSettings) -> float:
    """How long a rebalance or a stop waits for the entry being written (a full spool): half the group's
    session, so the member is not thrown out meanwhile. Both ends give an entry up after it."""
    return cluster.session_timeout_ms / 2000


@dataclass(frozen=True)
class ReaderParams:
    """What a reader process is started with (pickled to it)."""

    name: str
    account_id: str
    topic: str
    cluster: KafkaClusterSettings
    #: Where partitions without a checkpoint or commit start (ms since the epoch; 0: the earliest).
    read_from_ms: int
    #: The spool's checkpoints when the reader starts: the last offset spooled per partition.
    checkpoints: dict[int, int]
    lambda_step: bool
    log_level: int = logging.INFO


class ReaderEnd:
    """The reader's end of the link: entries out (one unanswered at a time), the daemon's answers and
    status in (on a thread of its own), the reader's state out."""

    def __init__(self, link: Link, *, lambda_step: bool) -> None:
        self.link = link
        #: The stream's spooled, undelivered bytes and whether it has a Lambda step, as last told.
        self.backlog = 0
        self.lambda_step = lambda_step
        self.stopping = threading.Event()
        #: The entry sent last and not answered: its number and its future. An entry given up at a rebalance
        #: may still be answered after the next one is sent; the number keeps that answer from settling it.
        self._inflight: tuple[int, concurrent.futures.Future[None]] | None = None
        self._sent = 0
        self._lock = threading.Lock()
        self._closed = False
        #: Entries to send: sending waits for the daemon to take the bytes, which the reading need not.
        self._outbox: queue.SimpleQueue[tuple[int, list[bytes]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._receive, name="kafka-link-in", daemon=True).start()
        threading.Thread(target=self._send, name="kafka-link-out", daemon=True).start()

    def append(self, payload: list[bytes]) -> concurrent.futures.Future[None]:
        """Send an entry (on the sending thread); the future is done when the daemon has made it durable
        (or failed it)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                future.cancel()
                return future
            self._sent += 1
            self._inflight = (self._sent, future)
            self._outbox.put((self._sent, payload))
        return future

    def _send(self) -> None:
        while (item := self._outbox.get()) is not None:
            number, payload = item
            try:
                self.link.send(ENTRY, {"entry": number, "parts": [len(p) for p in payload]}, payload)
            except OSError:
                self._close()
                return

    def report(self, state: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.link.send(STATE, state)

    def _receive(self) -> None:
        try:
            while True:
                kind, meta, _data = self.link.receive()
                if kind in (DONE, STATUS):
                    self.backlog = int(meta["backlog"])
                    self.lambda_step = bool(meta["lambda"])
                if kind == DONE:
                    with self._lock:
                        inflight = self._inflight
                        if inflight is None or inflight[0] != meta["entry"]:
                            continue  # the answer to an entry given up: the reading has moved on
                        future, self._inflight = inflight[1], None
                    if not future.done():
                        if meta["ok"]:
                            future.set_result(None)
                        else:
                            future.set_exception(RuntimeError(str(meta.get("error"))))
                elif kind == STOP:
                    self.stopping.set()
        except (LinkClosed, OSError):
            self._close()

    @property
    def daemon_gone(self) -> bool:
        """The daemon closed the link (it died, or stopped this reader by hanging up)."""
        return self._closed

    def _close(self) -> None:
        """The daemon is gone: stop, and nothing unanswered is counted written."""
        with self._lock:
            self._closed = True
            inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight[1].cancel()
        self._outbox.put(None)
        self.stopping.set()


class KafkaReader:
    """Reads one topic for one delivery stream, entries sent to the daemon (see the module's docstring)."""

    def __init__(self, params: ReaderParams, end: ReaderEnd) -> None:
        self.name = params.name
        self.topic = params.topic
        self.group = group_id(params.account_id, params.name)
        self._cluster = params.cluster
        self._end = end
        self.read_from_ms = params.read_from_ms
        #: Last offset spooled, per partition (the spool's checkpoint).
        self._checkpoints: dict[int, int] = dict(params.checkpoints)
        #: Offset committed (next to read), per partition, as this reader last committed or read it.
        self._committed: dict[int, int] = {}
        self._assigned: set[int] = set()
        #: Partitions started from ReadFromTimestamp: records older than it are skipped until the first
        #: one at or after it. Kafka's offsets-for-times already starts there; this also holds for brokers
        #: whose answer is earlier (the Tansu build the tests use answers the first offset).
        self._not_before: dict[int, int] = {}
        self._paused = False
        self._stopping = end.stopping
        self._inflight: concurrent.futures.Future[None] | None = None
        #: What the batch being written makes durable: (checkpoints after it, records, bytes, oversize records).
        self._inflight_result: tuple[dict[int, int], int, int, int] | None = None
        #: Last offset read per partition: the checkpoints plus the batch being written.
        self._positions: dict[int, int] = dict(self._checkpoints)
        #: Records read while the previous entry is written (on top of ``_positions``).
        self._pending: KafkaBatch | None = None
        self._last_commit = 0.0
        self._last_error: str | None = None
        #: Spooled since the last report: records, bytes, oversize records.
        self._spooled = [0, 0, 0]

    def _report(self) -> None:
        """Tell the daemon what ``/readyz`` shows and what was spooled since the last report."""
        records, size, oversize = self._spooled
        self._spooled = [0, 0, 0]
        self._end.report({"assigned": sorted(self._assigned), "paused": self._paused, "last_error": self._last_error,
                          "records": records, "bytes": size, "oversize": oversize})

    # -- the consumer ------------------------------------------------------------------

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        config = consumer_config(self._cluster, group=self.group, client_id=f"firehose-{self.name}",
                                 earliest=self.read_from_ms <= 0)
        config["error_cb"] = self._client_error
        return Consumer(config)

    def run(self) -> None:
        """Read until told to stop (or the daemon is gone); a failing consumer is started again."""
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
        self._flush(settle_seconds(self._cluster))
        with contextlib.suppress(Exception):
            self._commit(consumer, self._assigned, asynchronous=False)
        with contextlib.suppress(Exception):
            consumer.close()
        self._assigned.clear()
        self._report()

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
        self._report()
        log.info("Kafka partitions assigned.", extra={"stream": self.name, "topic": self.topic,
                                                      "partitions": sorted(numbers), "starts": starts})

    def _revoked_cb(self, consumer: Any, partitions: list[Any]) -> None:
        numbers = {tp.partition for tp in partitions}
        # What is read is spooled first (the batch being written, the one gathered), then committed;
        # nothing more of these partitions is spooled here.
        self._flush(settle_seconds(self._cluster))
        with contextlib.suppress(Exception):
            self._commit(consumer, numbers, asynchronous=False)
        self._assigned -= numbers
        for p in numbers:
            self._not_before.pop(p, None)
        self._report()
        log.info("Kafka partitions revoked.", extra={"stream": self.name, "topic": self.topic,
                                                     "partitions": sorted(numbers)})

    def _lost_cb(self, _consumer: Any, partitions: list[Any]) -> None:
        numbers = {tp.partition for tp in partitions}
        self._flush(settle_seconds(self._cluster))
        self._assigned -= numbers  # another member may own them already: commit nothing
        for p in numbers:
            self._committed.pop(p, None)
            self._not_before.pop(p, None)
        self._report()
        log.warning("Kafka partitions lost (the group session expired); their records read since the last "
                    "commit will be read again by their new owner.",
                    extra={"stream": self.name, "topic": self.topic, "partitions": sorted(numbers)})


    # -- commits ---------------------------------------------------------------------

    def _commit(self, consumer: Any, partitions: set[int], *, asynchronous: bool) -> None:
        """Commit, for ``partitions``, the offset after the last record spooled (where it moved). Nothing
        once the daemon is gone: as when a daemon reading in-process is killed, what it spooled since the
        last commit is read again by whoever reads the partition next (itself, from its spool's
        checkpoint, skips it)."""
        from confluent_kafka import TopicPartition

        if self._end.daemon_gone:
            return
        self._last_commit = time.monotonic()
        due = {p: self._checkpoints[p] + 1 for p in partitions
               if p in self._checkpoints and self._checkpoints[p] + 1 > self._committed.get(p, -1)}
        if not due:
            return
        consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(due.items())],
                        asynchronous=asynchronous)
        self._committed.update(due)

    # -- backpressure ----------------------------------------------------------------

    def _backlog(self) -> int:
        """The stream's spooled, undelivered bytes, with the batch being written."""
        writing = self._inflight_result[2] if self._inflight_result is not None else 0
        gathered = self._pending.size if self._pending is not None else 0
        return self._end.backlog + writing + gathered

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
        self._paused = over
        self._report()

    # -- spooling ----------------------------------------------------------------------

    def _gather(self, messages: list[Any]) -> None:
        """Take one consume call's messages into the entry gathered while the previous one is written."""
        batch = self._pending
        if batch is None:
            keep = self._end.lambda_step
            batch = KafkaBatch(topic=self.topic, keep=keep, limit=record_limit(keep))
        batch.add(messages, positions=self._positions, assigned=self._assigned, not_before=self._not_before,
                  received=now_ms(), on_error=self._message_error)
        self._pending = batch if batch.moved else None

    def _submit(self) -> None:
        """Hand the gathered entry to the event loop to be written (none is being written)."""
        batch, self._pending = self._pending, None
        if batch is None or not batch.moved:
            return
        assert self._inflight is None
        after = {**self._positions, **batch.moved}
        for p, offset, value, _arrival in batch.oversize:
            log.warning("A Kafka record is over the size limit; it goes to the error output.",
                        extra={"stream": self.name, "topic": self.topic, "partition": p, "offset": offset,
                               "bytes": len(value), "limit_bytes": batch.limit})
        payload = batch.payload(after, functools.partial(self._oversize_document, batch),
                                error_partition(OVERSIZE_ERROR_TYPE), DEFAULT_PARTITION)
        self._inflight = self._end.append(payload)
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
        all, this daemon may spool them twice.)

        A batch the daemon failed otherwise (its spool failed) raises ``EntryRefused``: the consumer has
        read past it, so it is started again, from the checkpoints."""
        future, result = self._inflight, self._inflight_result
        if future is None or result is None:
            return
        try:
            future.result(timeout)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError, RuntimeError) as exc:
            if timeout is not None:
                future.cancel()
            self._positions = dict(self._checkpoints)
            self._pending = None
            if timeout is None and isinstance(exc, RuntimeError) and not self._stopping.is_set():
                raise EntryRefused(str(exc)) from None
            return
        finally:
            self._inflight = self._inflight_result = None
        after, records, size, oversize = result
        self._checkpoints = after
        self._spooled = [self._spooled[0] + records, self._spooled[1] + size, self._spooled[2] + oversize]
        self._report()

    # -- errors ----------------------------------------------------------------------

    def _client_error(self, error: Any) -> None:
        """librdkafka's errors (brokers down, authentication): shown in /readyz; it retries by itself."""
        self._last_error = f"KafkaError: {error}"
        self._report()
        log.warning("Kafka client error.", extra={"stream": self.name, "error": str(error)})

    def _message_error(self, error: Any) -> None:
        self._last_error = f"KafkaError: {error}"
        self._report()
        log.warning("Kafka fetch error.", extra={"stream": self.name, "topic": self.topic, "error": str(error)})

    def _note_error(self, message: str, exc: BaseException, failures: int) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._report()
        if failures <= 3 or failures % 10 == 0:
            log.warning(message, extra={"stream": self.name, "topic": self.topic, "error": self._last_error,
                                        "attempt": failures})


def main(conn: Any, params: ReaderParams) -> None:
    """The reader process: read ``params``' topic, entries over ``conn`` (one end of the link's socket
    pair), until the daemon says stop or is gone."""
    tune_gc()  # every message read makes a few objects: with CPython's default thresholds the collector
    # took a third of the reader's time
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    link = Link(sock)
    root = logging.getLogger()
    root.handlers[:] = [ForwardingHandler(link)]
    root.setLevel(params.log_level)
    end = ReaderEnd(link, lambda_step=params.lambda_step)
    try:
        KafkaReader(params, end).run()
    finally:
        link.close()
