"""A delivery stream that reads a Kafka topic (DeliveryStreamType ``MSKAsSource``): the daemon's side.

The topic is read by a process of its own (``kafka_reader``, which says how partitions are shared,
where they are read from and when offsets are committed), started here with the spool's checkpoints
and fed over a socket pair (``kafka_link``). The reader sends each entry it gathers; this side makes
it durable in the stream's spool (retrying while the spool is full) and answers, and about ten times
a second tells the reader the stream's backlog (its pause threshold) and whether the stream has a
Lambda step (whether keys and headers are kept). The reader's reports feed ``/readyz`` and the metrics.

Why a process: taking each message out of confluent-kafka and into an entry is a few hundred
nanoseconds of Python per record; on a thread of the daemon it held the interpreter lock the event
loop, the spool's writer and the deliverers need, and set the source's pace.

A reader that dies (a crash in the client library, the kernel's OOM killer) is started again after a
backoff, from the spool's checkpoints once the entry it sent last is settled: nothing it sent is lost
(only what the daemon answered is counted spooled) and nothing is spooled twice. The reader exits
when the daemon is gone (its end of the link closes), so a ``kill -9`` of the daemon leaves no reader
behind, and whoever reads its partitions next starts from the group's commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firehose.definitions import MSKSourceConfiguration
from firehose.errors import ServiceUnavailableException
from firehose.retry import Backoff, retry_until
from firehose.settings import KafkaClusterSettings
from firehose.sources import kafka_reader
from firehose.sources.kafka_link import DONE, ENTRY, LOG, STATE, STATUS, STOP, Link, LinkClosed, relog, split
from firehose.sources.kinesis import latest_checkpoints
from firehose.spool import Spool, StreamSpool

log = logging.getLogger("firehose.sources")

#: Between a reader's death and its next start, and between failed attempts to append to a full spool.
_BACKOFF = Backoff(base=0.2, cap=10.0)
#: How often the reader is told the stream's backlog and Lambda step.
_STATUS_SECONDS = 0.1
#: Beyond the group's session: how long a stopping reader may take to write, commit and leave the group.
_STOP_GRACE_SECONDS = 10.0


@dataclass
class KafkaSourceState:
    assigned: list[int] = field(default_factory=list)
    paused: bool = False
    last_error: str | None = None
    records: int = 0
    #: Records over the size limit sent to the error output (counted in ``records`` too).
    oversize: int = 0
    #: How many times the reader process died and was started again.
    restarts: int = 0


class KafkaSource:
    """Reads one topic into one delivery stream's spool, through a reader process (see the module)."""

    def __init__(self, *, name: str, account_id: str, source: MSKSourceConfiguration, cluster: KafkaClusterSettings,
                 spool: Spool, stream: StreamSpool, created_ms: int,
                 on_records: Callable[[int, int], None] | None = None,
                 on_backpressure: Callable[[bool], None] | None = None,
                 on_oversize: Callable[[int], None] | None = None,
                 on_restart: Callable[[], None] | None = None,
                 lambda_step: Callable[[], bool] = lambda: True) -> None:
        """``on_records(records, bytes)`` after records are spooled; ``on_backpressure(paused)`` when
        reading pauses or resumes; ``on_oversize(records)`` after records over the size limit went to
        the spool as error documents; ``on_restart()`` when the reader process died and is started again.
        ``created_ms``: when the stream was created (where reading starts
        without ReadFromTimestamp). ``lambda_step()``: whether the stream has a Lambda transform now: then
        records read keep their keys and headers in the spool (the Lambda event shows them; nothing else
        reads them, and they cost a third of the reading's CPU), and the size limit is Lambda's."""
        self.name = name
        self.account_id = account_id
        self.topic = source.topic_name
        self.cluster_arn = source.msk_cluster_arn
        self.group = kafka_reader.group_id(account_id, name)
        self._cluster = cluster
        self._spool = spool
        self._stream = stream
        stream.log.keep_last = True  # its newest entry holds the checkpoints
        ts = source.read_from_timestamp
        self.read_from_ms = int(ts * 1000) if ts is not None else created_ms
        self._on_records = on_records
        self._on_backpressure = on_backpressure
        self._on_oversize = on_oversize
        self._on_restart = on_restart
        self._lambda_step = lambda_step
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self._process: Any = None
        self._exit_code: int | None = None
        self.state = KafkaSourceState()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._supervise, name=f"kafka-source-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """The reader writes what it read, commits what is spooled and leaves the group (its partitions
        go to the other daemons at once); then it exits."""
        self._stopping.set()
        link = self._link
        if link is not None:
            try:
                link.send(STOP, {})
            except OSError:
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        return {
            "kafka_cluster": self.cluster_arn,
            "topic": self.topic,
            "group": self.group,
            "partitions": list(self.state.assigned),
            "paused": self.state.paused,
            "records": self.state.records,
            "oversize_records": self.state.oversize,
            "last_error": self.state.last_error,
            "reader_pid": self._process.pid if self._process is not None else None,
            "reader_restarts": self.state.restarts,
        }

    # -- the reader process -----------------------------------------------------------

    def _supervise(self) -> None:
        """Start the reader, serve its link until it exits; start it again if it died."""
        deaths = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._serve(self._start_reader())
            except (LinkClosed, OSError):  # the reader exited (it was told to stop, or it died)
                self._end_reader(hang_up=False)
            except Exception as exc:  # the process could not start, the spool failed: the reader stops at once
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("The Kafka reader failed.", extra={"stream": self.name, "error": self.state.last_error})
                self._end_reader(hang_up=True)
            if self._stopping.is_set():
                return
            deaths = deaths + 1 if time.monotonic() - started < 60 else 1
            self.state.restarts += 1
            if self._on_restart is not None:
                self._on_restart()
            self.state.assigned = []
            log.warning("The Kafka reader process exited; starting it again.",
                        extra={"stream": self.name, "exit_code": self._exit_code, "attempt": deaths})
            self._stopping.wait(_BACKOFF.delay(deaths))

    def _start_reader(self) -> Link:
        assert self._loop is not None
        checkpoints = asyncio.run_coroutine_threadsafe(self._checkpoints(), self._loop).result(timeout=60)
        params = kafka_reader.ReaderParams(
            name=self.name, account_id=self.account_id, topic=self.topic, cluster=self._cluster,
            read_from_ms=self.read_from_ms, checkpoints=checkpoints, lambda_step=self._lambda_step(),
            log_level=logging.getLogger("firehose").getEffectiveLevel())
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=kafka_reader.main, args=(theirs, params), daemon=True,
                                    name=f"firehose-kafka-{self.name}")
        self._process.start()
        theirs.close()
        self._link = Link(socket.socket(fileno=os.dup(ours.fileno())))
        ours.close()
        if self._stopping.is_set():  # stop() came before the link existed: tell the reader now
            self._link.send(STOP, {})
        return self._link

    async def _checkpoints(self) -> dict[int, int]:
        return {int(p): int(o) for p, o in latest_checkpoints(self._stream).items()}

    def _serve(self, link: Link) -> None:
        """Answer the reader's frames until it closes the link; tell it the stream's status meanwhile."""
        next_status = 0.0
        while True:
            now = time.monotonic()
            if now >= next_status:
                link.send(STATUS, self._status())
                next_status = now + _STATUS_SECONDS
            ready, _, _ = select.select([link.sock], [], [], max(0.0, next_status - time.monotonic()))
            if not ready:
                continue
            kind, meta, data = link.receive()
            if kind == ENTRY:
                link.send(DONE, {"entry": meta["entry"], **self._write(split(data, meta["parts"])), **self._status()})
            elif kind == STATE:
                self._take_state(meta)
            elif kind == LOG:
                relog(meta)

    def _write(self, payload: list[memoryview]) -> dict[str, Any]:
        """Make one entry durable (retrying while the spool is full); what to answer the reader.

        Once the source is stopping, an entry not written within half the group's session (a full
        spool) is given up, as the reader gives it up: its records are neither counted nor committed,
        and whoever reads the partition next reads them again."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._append(payload), self._loop)
        while not self._stopping.is_set() and not future.done():
            concurrent.futures.wait([future], timeout=0.1)
        try:
            future.result(timeout=kafka_reader.settle_seconds(self._cluster))
        except concurrent.futures.TimeoutError:
            future.cancel()
            return {"ok": False, "error": "The source stopped before the spool took the records."}
        except Exception as exc:  # the spool failed for good (closing): the records are read again
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True}

    async def _append(self, payload: list[memoryview]) -> None:
        await retry_until(functools.partial(self._spool.append_sourced, self._stream, payload), backoff=_BACKOFF,
                          retry_on=(ServiceUnavailableException,), on_failure=self._spool_full)

    def _spool_full(self, exc: BaseException, attempt: int) -> None:
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        if attempt <= 3 or attempt % 10 == 0:
            log.warning("The spool is full; holding the records read and retrying.",
                        extra={"stream": self.name, "topic": self.topic, "error": self.state.last_error,
                               "attempt": attempt})

    def _status(self) -> dict[str, Any]:
        backlog = int(self._stream.log.size_bytes + self._stream.processed.size_bytes)
        return {"backlog": backlog, "lambda": bool(self._lambda_step())}

    def _take_state(self, meta: dict[str, Any]) -> None:
        state = self.state
        state.assigned = [int(p) for p in meta["assigned"]]
        state.last_error = meta["last_error"] if meta["last_error"] is not None else state.last_error
        records, size, oversize = int(meta["records"]), int(meta["bytes"]), int(meta["oversize"])
        if records:
            state.records += records
            if self._on_records is not None:
                self._on_records(records, size)
        if oversize:
            state.oversize += oversize
            if self._on_oversize is not None:
                self._on_oversize(oversize)
        paused = bool(meta["paused"])
        if paused != state.paused:
            state.paused = paused
            if self._on_backpressure is not None:
                self._on_backpressure(paused)

    def _end_reader(self, *, hang_up: bool) -> None:
        """Wait for the reader to exit, within limits; ``hang_up``: close the link first, which stops it
        at once (what it sent and was not answered is read again)."""
        process, link = self._process, self._link
        self._process = self._link = None
        if link is not None and hang_up:
            link.close()
            link = None
        if process is not None:
            process.join(self._cluster.session_timeout_ms / 1000 + _STOP_GRACE_SECONDS)
            if process.is_alive():
                log.warning("The Kafka reader did not exit in time; killing it.", extra={"stream": self.name})
                process.kill()
                process.join(5)
            self._exit_code = process.exitcode
        if link is not None:
            link.close()
