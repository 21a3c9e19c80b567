"""Running the agent: per flow one reader thread and one sender thread, joined by a short queue.

The reader reads files, cuts records, converts them and fills batches; the
sender delivers one batch at a time and checkpoints it once it is
acknowledged. The queue between them holds at most ``QUEUE_DEPTH`` batches, so
when the destination is slow or down the reader stops reading and the backlog
stays in the files on disk: memory is bounded by a few batches per flow.

Because one batch at a time is in flight and its checkpoint is durable before
the next one is sent, a ``kill -9`` sends again at most the batch that was in
flight. A normal stop (SIGTERM/SIGINT) finishes the batches already cut (for up
to ``shutdownTimeoutMillis``), checkpoints them, and leaves everything else to
be read on the next start: nothing lost, nothing sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firehose.agent.checkpoints import CheckpointStore
from firehose.agent.config import AgentConfig, Flow
from firehose.agent.metrics import MetricsServer, ProgressReporter, ReadStats
from firehose.agent.processing import Pipeline
from firehose.agent.sender import Batch, Batcher, Client, deliver, make_boto_client
from firehose.agent.tailer import Chunk, Tailer
from firehose.errors import ConfigError

log = logging.getLogger("firehose.agent")

QUEUE_DEPTH = 2
#: How often the file pattern is matched again, at most (maxTimeBetweenFileTrackerRefreshMillis may ask for less).
SCAN_INTERVAL = 1.0
DEFAULT_STATE_DIR = Path("/var/lib/firehose-agent")
CHECKPOINT_NAME = "checkpoints.sqlite"

ClientFactory = Callable[[AgentConfig, Flow], Any]


class FlowRunner:
    """One flow: its files, its batches, its destination, its checkpoints."""

    def __init__(self, config: AgentConfig, flow: Flow, store: CheckpointStore, client_factory: ClientFactory,
                 on_failure: Callable[[BaseException], None]) -> None:
        self.config = config
        self.flow = flow
        self.store = store
        self.on_failure = on_failure
        self.tailer = Tailer(flow, store.load(flow.flow_id))
        self.pipeline = Pipeline(flow.data_processing_options)
        self.batcher = Batcher(flow)
        self.client = Client(flow, client_factory(config, flow))
        self.stats = ReadStats()
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.row_ids: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.stop_reading = threading.Event()
        self.stop_sending = threading.Event()
        self.deadline: float | None = None
        self.failed: BaseException | None = None
        self._commits = 0
        self._reader = threading.Thread(target=self._guard(self._read_loop), name=f"agent-read-{flow.stream}")
        self._sender = threading.Thread(target=self._guard(self._send_loop), name=f"agent-send-{flow.stream}")

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                log.exception("flow %s: stopped by an unexpected error", self.flow.stream)
                self.failed = exc
                self.stop_reading.set()
                self.stop_sending.set()
                self.on_failure(exc)

        return run

    # -- reading ------------------------------------------------------------------

    def start(self) -> None:
        now = time.monotonic()
        self.tailer.scan(now)
        initial = self.tailer.initial_positions()
        if initial:
            # Written before anything is sent: END_OF_FILE is applied once, not again after a crash.
            self._remember_rows()
            self.store.commit(self.flow.flow_id, {c.key: c.at(c.safe) for c in initial}, self.row_ids)
            for c in initial:
                self.acked[c.key] = c.safe
        self._reader.start()
        self._sender.start()

    def _remember_rows(self) -> None:
        for f in self.tailer.files:
            if f.row_id is not None:
                self.row_ids.setdefault(f.key, f.row_id)

    def _read_loop(self) -> None:
        poll = self.flow.min_time_between_file_polls_millis / 1000
        scan_every = min(SCAN_INTERVAL, self.flow.max_time_between_file_tracker_refresh_millis / 1000)
        last_scan = time.monotonic()
        while not self.stop_reading.is_set():
            now = time.monotonic()
            if now - last_scan >= scan_every:
                self.tailer.scan(now)
                self._remember_rows()
                last_scan = now
            chunks = self.tailer.read(now)
            for chunk in chunks:
                self._take(chunk)
            progressed = any(c.records for c in chunks) or any(f.offset < f.size for f in self.tailer.files)
            if self.batcher.due():
                self._put(self.batcher.take())
            if not progressed:
                if self.batcher.has_positions_only():
                    self._put(self.batcher.take())
                self.stop_reading.wait(poll)
        last = self.batcher.take()
        if last.records or last.positions:
            self._put(last)
        self._put(None)

    def _take(self, chunk: Chunk) -> None:
        records = chunk.records
        if records:
            self.stats.lines_read += len(records)
            self.stats.bytes_read += sum(map(len, records))
            if self.pipeline:
                records = self._limit(self.pipeline.apply(records))
            self.stats.records_built += len(records)
        for batch in self.batcher.add(chunk.key, records, chunk.ends, chunk.at, chunk.safe):
            self._put(batch)

    def _limit(self, records: list[bytes]) -> list[bytes]:
        """A converter can make a record longer than the service takes: cut it as the splitter would."""
        limit = self.flow.max_record_bytes
        if max(map(len, records), default=0) <= limit:
            return records
        term = self.flow.truncated_record_terminator.encode()
        return [r if len(r) <= limit else r[: limit - len(term)] + term for r in records]

    def _put(self, batch: Batch | None) -> None:
        """Hand a batch to the sender; blocks while the sender is behind (the files are the buffer)."""
        while True:
            try:
                self.queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                if self.stop_sending.is_set() or not self._sender.is_alive() and self._sender.ident is not None:
                    return

    # -- sending ------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if batch.records and not deliver(self.client, batch, self.flow, self.stats.send, self.stop_sending,
                                             lambda: self.deadline):
                log.warning("flow %s: stopping before %d records were acknowledged; they will be read again on "
                            "the next start", self.flow.stream, len(batch.records))
                self._drain()
                return
            self.store.commit(self.flow.flow_id, batch.positions, self.row_ids)
            for key, position in batch.positions.items():
                self.acked[key] = position.offset
            self._commits += 1
            if self._commits % 1000 == 0:
                self.store.trim(self.flow.flow_id, set(self.row_ids.values()))

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while self.queue.get_nowait() is not None:
                pass

    def bytes_behind(self) -> list[tuple[str, int]]:
        """Per open file: bytes not yet acknowledged (its size less its checkpoint)."""
        return [(f.path, max(0, f.size - self.acked.get(f.key, f.acked))) for f in self.tailer.files]

    # -- stopping -----------------------------------------------------------------

    def stop(self, timeout: float) -> None:
        """Stop reading, deliver what was cut within ``timeout``, then close the files."""
        if self.deadline is None:
            self.deadline = time.monotonic() + timeout
        self.stop_reading.set()
        for thread in (self._reader, self._sender):
            if thread.ident is not None:
                thread.join(timeout + 5)
        self.stop_sending.set()
        for thread in (self._reader, self._sender):
            if thread.ident is not None:
                thread.join(5)
        self.tailer.close()


class Agent:
    """Every flow, the checkpoint store, the progress line and the metrics server."""

    def __init__(self, config: AgentConfig, state_dir: Path = DEFAULT_STATE_DIR,
                 client_factory: ClientFactory = make_boto_client,
                 reread: Callable[[], AgentConfig] | None = None) -> None:
        """``reread`` loads the config again as at start: what a reload (SIGHUP) applies."""
        self.config = config
        _check_flows(config)
        self._client_factory = client_factory
        self._reread = reread
        self._reload = threading.Event()
        path = Path(config.checkpoint_file) if config.checkpoint_file else Path(CHECKPOINT_NAME)
        if not path.is_absolute():
            path = state_dir / path
        self.store = CheckpointStore(path, allow_volatile=config.allow_volatile_checkpoints,
                                     ttl_days=config.checkpoint_time_to_live_days)
        self._stop = threading.Event()
        self.flows = [FlowRunner(config, flow, self.store, client_factory, self._failed) for flow in config.flows]
        self.reporter = ProgressReporter(self.flows, config.status_reporting_period_seconds)
        self.metrics: MetricsServer | None = None
        self._stopped = False

    def _failed(self, exc: BaseException) -> None:
        self._stop.set()

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        """SIGHUP: reload at the main loop's next turn (a signal handler must not stop threads)."""
        self._reload.set()

    def reload(self) -> bool:
        """Apply the config again without a restart: flows added start, flows removed or changed stop
        (sending what they read, within ``shutdownTimeoutMillis``, their checkpoints kept) and changed
        ones start anew from their checkpoints; flows left as they were run on untouched. An invalid
        config is refused whole, with a log line. Settings outside ``flows`` apply at the next start."""
        if self._reread is None:
            return False
        try:
            new = self._reread()
            _check_flows(new)
        except ConfigError as exc:
            log.error("Reload refused: the config is invalid; running on as before.", extra={"error": str(exc)})
            return False
        if new.model_copy(update={"flows": []}) != self.config.model_copy(update={"flows": []}):
            log.warning("Settings outside flows changed; they apply at the next start.")
        wanted = {f.flow_id: f for f in new.flows}
        timeout = self.config.shutdown_timeout_millis / 1000
        leaving = [r for r in self.flows if wanted.get(r.flow.flow_id) != r.flow]
        for runner in leaving:
            runner.deadline = time.monotonic() + timeout
            runner.stop_reading.set()
        for runner in leaving:
            runner.stop(timeout)
            self.flows.remove(runner)  # the list the progress line and the metrics read
        running = {r.flow.flow_id for r in self.flows}
        for flow_id, flow in wanted.items():
            if flow_id not in running:
                runner = FlowRunner(self.config, flow, self.store, self._client_factory, self._failed)
                self.flows.append(runner)
                runner.start()
        log.info("Reloaded the config.", extra={"flows": len(self.flows), "stopped": len(leaving)})
        return True

    def start(self) -> None:
        log.info("checkpoints in %s", self.store.path)
        for flow in self.flows:
            flow.start()
        self.reporter.start()
        if self.config.metrics_port is not None:
            self.metrics = MetricsServer(self.flows, self.config.metrics_host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics.port)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        timeout = self.config.shutdown_timeout_millis / 1000
        deadline = time.monotonic() + timeout
        for flow in self.flows:
            flow.deadline = deadline
            flow.stop_reading.set()
        for flow in self.flows:
            flow.stop(timeout)
        self.reporter.stop()
        self.reporter.report()
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (or a flow fails); 0 after a clean stop."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.request_reload)
        try:
            self.start()
            while not self._stop.wait(0.5):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
            log.info("stopping")
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 1 if any(f.failed for f in self.flows) else 0


def _check_flows(config: AgentConfig) -> None:
    """Each file pattern and destination once (two flows would share checkpoints)."""
    ids = [f.flow_id for f in config.flows]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ConfigError(f"two flows read {sorted(dupes)[0]!r}: each file pattern and destination once")
