"""Composition root: builds the catalog, spool, pipelines and API from settings, and runs them.

Start-up order matters for durability: the spool of every known stream is
recovered and its pipeline started (re-delivering sealed batches, then reading
unsealed records) *before* the listener accepts a request. Shutdown is the
reverse: stop accepting, let in-flight requests finish, give pipelines
``delivery.shutdown_timeout_seconds`` to deliver what is buffered, and leave
everything else in the spool for the next start.

SIGTERM and SIGINT trigger that shutdown. uvicorn's own signal handling is
switched off because it re-raises the signal after serving, which would kill
the process before pipelines drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from firehose import console, definitions, destinations, listeners
from firehose.accounts import PerAccount, account_directory, stored_accounts
from firehose.agentstatus import read_agents
from firehose.analytics.app import analytics_api, check_declared
from firehose.analytics.runtime import ApplicationRuntime, scaled_clock
from firehose.analytics.service import Analytics, Runtime
from firehose.api.app import FirehoseApp
from firehose.api.operations import Services
from firehose.catalog import Catalog, Event, StreamState
from firehose.definitions import DeliveryStreamDefinition
from firehose.destinations import Destination, DestinationContext
from firehose.destinations.s3 import shared_client as shared_s3_client
from firehose.encoding import convert
from firehose.encoding.encrypt import Keyring
from firehose.errors import ConfigError, DestinationError
from firehose.frontdoor.operator import OperatorApp, OperatorRoutes
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.quotas import Quotas
from firehose.frontdoor.reset import Service
from firehose.pipeline import Pipeline, StreamConfig
from firehose.pipeline.config import check_definition
from firehose.pipeline.memory import MemoryBudget
from firehose.processing.transform import WorkerPool
from firehose.processpool import RenewingProcessPool, exit_with_parent
from firehose.settings import Config, HttpSettings, Settings, check_listener, check_reset_endpoint, split_listen
from firehose.sources.kafka import KafkaSource
from firehose.sources.kinesis import KinesisSource, LeaseOptions, make_client, parse_stream_arn
from firehose.sources.leases import make_table as make_lease_table
from firehose.spool import PROC, Spool, StreamSpool, retained
from firehose.storage.atomic import make_dirs
from firehose.storage.dirlock import DirectoryLock
from firehose.storage.sealing import MissingKeyError
from firehose.streams.server import Sidecar
from firehose.streams.server import state_dir as kinesis_state_dir
from firehose.systemd import Notifier
from firehose.tap import Taps
from firehose.telemetry import Metrics, MetricsHistory, setup_logging, tune_gc

log = logging.getLogger("firehose.daemon")


#: How long readiness waits for worker processes that streams need (they go on starting after that).
_WARM_UP_SECONDS = 30.0


def _http_client(http: HttpSettings) -> httpx.AsyncClient:
    """One client for every HTTP destination: one connection pool, one TLS policy."""
    verify: bool | ssl.SSLContext = http.verify
    if http.ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(http.ca_bundle))
    if not http.verify:
        log.warning("TLS certificate verification is OFF for HTTP destinations (http.verify: false).")
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(http.read_timeout_seconds, connect=http.connect_timeout_seconds),
        limits=httpx.Limits(max_connections=http.max_connections),
        follow_redirects=False,
    )


#: What worker processes run (format conversion, the destinations' own: Redshift rows). Each worker
#: imports them when it starts, so no batch pays for importing pyarrow, pyorc or psycopg in a
#: cold worker.
_WORKER_MODULES = (convert.__name__, convert.WRITERS_MODULE, *destinations.worker_modules())
#: How long each warm-up task holds its worker, so that every worker (not one fast one) takes a task.
_WARM_HOLD_SECONDS = 1.0
#: How often deleted streams' retained spools are checked for expiry (and once at start).
_EXPIRE_EVERY_SECONDS = 3600.0


def _init_worker(nice: int) -> None:
    """Workers yield the CPU to ingest (see ProcessingSettings.worker_nice), import their code, and exit
    when the daemon is gone."""
    exit_with_parent()
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    for module in _WORKER_MODULES:
        importlib.import_module(module)
    tune_gc()


def _hold_worker(seconds: float) -> None:
    time.sleep(seconds)


#: uvicorn on a hardened listener, without signal capture (the daemon installs its own handlers).
_Server = listeners.UvicornServer

#: Settings a reload applies in place (``Daemon.reload``); a change to any other waits for a restart.
#: ``auth`` holds the principals and policies. ``tls`` is not among them: every reload re-reads the
#: certificate and key from the files the listeners were started with, but new paths need a restart.
_RELOADABLE_SETTINGS = frozenset({"auth", "log_level", "log", "console"})


class Daemon:
    def __init__(self, config: Config, *, reread: Callable[[], Config] | None = None) -> None:
        """``reread`` loads the config again as it was loaded at start (same file, same flags): what
        ``reload`` (SIGHUP) applies. Without it a reload only re-reads the TLS certificates."""
        self.config = config
        self._reread = reread
        #: systemd's notification socket and watchdog (nothing outside systemd).
        self.notifier = Notifier()
        self.settings: Settings = config.settings
        self.metrics = Metrics()
        self.history = MetricsHistory(self.metrics.registry)
        #: Running streams by (account, name).
        self.pipelines: dict[tuple[str, str], Pipeline] = {}
        self.sources: dict[tuple[str, str], KinesisSource | KafkaSource] = {}
        #: The runtime of SQL applications (made by ``start``, once the sidecar's endpoint is known).
        self.sql_runtime: ApplicationRuntime | None = None
        self.sidecar: Sidecar | None = None
        self.broken: dict[tuple[str, str], str] = {}  # streams whose definition cannot run here, and why
        self._stopping = False
        self._started = False
        self._server: _Server | None = None
        self._metrics_server: listeners.RunningServer | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: Deleted streams whose spool is being retired, by (account, name); those dropped by a reset.
        self._retiring: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._wiping: set[tuple[str, str]] = set()
        s = self.settings
        make_dirs(s.state_dir)
        check_listener(s.host, s.auth, "The Firehose API")
        check_reset_endpoint(s.host, s.testing, "The Firehose API")
        if s.kinesis.enabled:
            check_listener(s.kinesis.host or s.host, s.auth, "The Kinesis API")
            check_reset_endpoint(s.kinesis.host or s.host, s.testing, "The Kinesis API")
        self._state_lock = DirectoryLock(s.state_dir, "the state directory")
        self._subscribed = False
        #: Each account's delivery streams (see ``firehose.accounts``).
        self.catalogs: PerAccount[Catalog] = PerAccount(s.account_id, self._make_catalog,
                                                        named=s.named_accounts | set(config.accounts))
        self.spool = Spool(s.state_dir / "spool", max_bytes=s.spool.max_bytes, segment_bytes=s.spool.segment_bytes,
                           reserve_bytes=s.spool.reserve_bytes, keyring=self.keyring)  # encrypted streams' spools
        #: Spooled records held in memory, across every stream (memory.max_buffered_bytes).
        self.memory = MemoryBudget(s.memory.max_buffered_bytes)
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="destination")
        self.http = _http_client(s.http)
        self.workers = WorkerPool(s.processing.workers, nice=s.processing.worker_nice)
        self._convert_pool: RenewingProcessPool | None = None
        self._workers_up: asyncio.Future[Any] | None = None
        #: Destinations' warm-ups still running (``_warm_up``).
        self._warming: set[asyncio.Future[Any]] = set()
        self._keyring: Keyring | None = None
        self.metrics.spool_bytes.set_function(lambda: self.spool.used_bytes)
        self.metrics.spool_limit.set(s.spool.max_bytes)
        self.metrics.spool_commits = lambda: self.spool.committer.commits
        self.metrics.delivery_streams = lambda: len(self.pipelines)
        quotas = s.quotas
        limits = (float(quotas.records_per_second), quotas.mib_per_second * 1024 * 1024,
                  float(quotas.requests_per_second))
        self.metrics.quota_limits = lambda _stream: limits if self.settings.quotas.enabled else None
        self._services: dict[str, Services] = {}
        self.quotas = Quotas(s.quotas)
        self.principals = Principals(s.auth, s.account_id)
        #: Live copies of delivered records for ``firehose tap`` (nothing is copied while no one follows).
        self.taps = Taps()
        #: The console's other JSON: the Kinesis sidecar's streams (when it runs here), the agents' flows.
        self.console_views = {console.KINESIS_JSON: self.kinesis_overview, console.AGENTS_JSON: self.agents_overview}
        #: SQL applications (the Kinesis Analytics API on the main listener), each account's.
        self.analytics = Analytics(s.state_dir, home=s.account_id, region=s.region,
                                   runtime=self._analytics_runtime(),
                                   named=s.named_accounts | set(config.applications_by_account()))
        self.app = FirehoseApp(self.services, self.readiness, s, self.principals, self.metrics,
                               history=self.history, taps=self.taps, streams=self.console_streams,
                               views=self.console_views, apis=[analytics_api(self.analytics.for_caller)])
        self.app.reset.action = self.reset

    def _analytics_runtime(self) -> Runtime | None:
        """What runs SQL applications when it is known at construction (tests hand one in); otherwise the
        runtime ``start`` makes once the sidecar's endpoint is known (``_start_analytics``)."""
        return None

    @property
    def catalog(self) -> Catalog:
        """The home account's catalog."""
        return self.catalogs.get(self.settings.account_id)

    def _make_catalog(self, account: str) -> Catalog:
        s = self.settings
        directory = account_directory(s.state_dir, account, s.account_id)
        catalog = Catalog(directory / "catalog.json", account_id=account, max_streams=s.max_delivery_streams,
                          create_delay_seconds=s.create_delay_seconds, validate=self.validate)
        if self._subscribed:
            catalog.subscribe(self._on_catalog)
        return catalog

    def services(self, account: str) -> Services:
        """What the API's operations use, for one account."""
        svc = self._services.get(account)
        if svc is None:
            svc = self._services[account] = Services(self.catalogs.for_caller(account), self.spool, self._stream_spool,
                                                     self.metrics, self.settings, account, self.quotas,
                                                     keyring=self.keyring)
        return svc

    def pipeline(self, name: str, account: str | None = None) -> Pipeline:
        """A running stream's pipeline (the home account's unless ``account`` is given)."""
        return self.pipelines[(account or self.settings.account_id, name)]

    # -- streams ----------------------------------------------------------------

    def validate(self, definition: DeliveryStreamDefinition) -> None:
        """Everything a definition needs to run here (ValueError with the reason)."""
        check_definition(definition, self.settings)

    def keyring(self) -> Keyring:
        if self._keyring is None:
            enc = self.settings.encryption
            self._keyring = Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix)
        return self._keyring

    def _pool_size(self) -> int:
        return self.settings.processing.workers

    def _convert_executor(self) -> RenewingProcessPool:
        if self._convert_pool is None:
            p = self.settings.processing
            # No more processes than processing.workers, even for loads into a database: a loading
            # worker streams rows while the server parses the previous piece, so it hardly waits,
            # and every process more competes with the server for the same cores (measured: a pool
            # of 3 on 2 cores delivered a tenth less than a pool of 2).
            self._convert_pool = RenewingProcessPool(functools.partial(
                ProcessPoolExecutor, self._pool_size(), mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(p.worker_nice,)))
        return self._convert_pool

    def _stream_spool(self, state: StreamState) -> StreamSpool:
        """The stream's spool; opened the first time, sealing from then on if the stream is encrypted.

        MissingKeyError (a ConfigError: the daemon does not start) when its records need a key the keyring
        does not hold, or it is encrypted and the keyring has no key to seal with."""
        if self.spool.is_open(state.spool_key):
            return self.spool.open_stream(state.spool_key)
        stream = self.spool.open_stream(state.spool_key,
                                        label=f"delivery stream {state.name!r} of account {state.account_id}")
        self._settle_encryption(state, stream)
        return stream

    def _settle_encryption(self, state: StreamState, stream: StreamSpool) -> None:
        """A spool just opened stores plain entries: make it seal if its stream is encrypted (a new data key,
        wrapped by the keyring's newest key), and finish an encryption change a stop left pending."""
        enc = state.encryption
        failure = None
        if enc.target:
            try:
                stream.encryption.begin(self.keyring)
            except MissingKeyError as exc:
                if not enc.pending or enc.sealing:
                    raise  # an encrypted stream never stores records plain
                failure = {"Type": "KMS_KEY_NOT_FOUND", "Details": str(exc)}
        if enc.pending:
            self.catalogs.get(state.account_id).encryption_applied(state, failure)

    async def _apply_encryption(self, state: StreamState) -> None:
        """StartDeliveryStreamEncryption / StopDeliveryStreamEncryption on a running stream: its spool seals
        new entries under a new data key, or stores them plain; then the status says so (``firehose.sse``)."""
        catalog = self.catalogs.get(state.account_id)
        if catalog.find(state.name) is not state:
            return
        stream = self._stream_spool(state)  # opened here (a stream that cannot run): settled as it opens
        enc = state.encryption
        if not enc.pending:
            return
        failure = None
        try:
            if enc.target:
                kek = await asyncio.to_thread(stream.encryption.begin, self.keyring)
                log.info("Encryption of a delivery stream's spool enabled.", extra={"stream": state.name, "key": kek})
            else:
                await asyncio.to_thread(stream.encryption.end)
                log.info("Encryption of a delivery stream's spool disabled.", extra={"stream": state.name})
        except MissingKeyError as exc:
            failure = {"Type": "KMS_KEY_NOT_FOUND", "Details": str(exc)}
        except OSError as exc:
            failure = {"Type": "UNKNOWN_ERROR", "Details": f"The spool's key file could not be written: {exc}"}
        if failure is not None:
            log.error("An encryption change of a delivery stream failed.",
                      extra={"stream": state.name, "error": failure["Details"]})
        catalog.encryption_applied(state, failure)

    def _context(self, state: StreamState) -> DestinationContext:
        return DestinationContext(stream=state.name, settings=self.settings, executor=self.executor,
                                  http=self.http, stream_arn=self.services(state.account_id).arn(state.name),
                                  processes=self._convert_executor)

    def _destination(self, state: StreamState) -> destinations.Built:
        return destinations.build(state.definition, self._context(state))

    def _stream_config(self, state: StreamState) -> StreamConfig | None:
        try:
            config = StreamConfig.build(state.definition, state.version_id, self.settings)
            if config.encrypt:
                self.keyring()
        except ValueError as exc:
            self.broken[state.key] = str(exc)
            log.error("A delivery stream cannot run; its records stay in the spool until its definition is fixed.",
                      extra={"stream": state.name, "error": str(exc)})
            return None
        self.broken.pop(state.key, None)
        return config

    def _start_pipeline(self, state: StreamState) -> None:
        self._stream_spool(state)  # even for a stream that cannot run: an encrypted one seals what it accepts
        config = self._stream_config(state)
        if config is None:
            return
        built = self._destination(state)
        destination = built.destination
        pipeline = Pipeline(
            state, config, self._stream_spool(state), destination, self.settings, self.metrics,
            store=built.store, workers=self.workers, keyring=self._keyring if config.encrypt else None,
            convert_pool=self._convert_executor() if config.conversion else None, taps=self.taps,
            memory=self.memory, backup=built.backup,
        )
        self.pipelines[state.key] = pipeline
        self.metrics.watch(state.name, pipeline.levels)
        # A stream whose delivery runs in worker processes starts delivering once they are up:
        # its first batches would only wait in the pool's queue, and /readyz says 200 as it begins.
        needs_workers = destination.uses_workers or config.conversion is not None
        warm = self._warm_up(destination)
        pipeline.start(deliver_after=asyncio.gather(warm, self._warm_workers()) if needs_workers else warm)
        if state.definition.delivery_stream_type == "KinesisStreamAsSource":
            self._start_source(state)
        elif state.definition.delivery_stream_type == "MSKAsSource":
            self._start_kafka_source(state)
        self._spawn(self._check(state.name, destination))

    def _start_source(self, state: StreamState) -> None:
        if state.key in self.sources:
            return
        source_config = state.definition.kinesis_stream_source_configuration
        assert source_config is not None
        arn = source_config.kinesis_stream_arn
        local = self.sidecar.endpoint if self.sidecar is not None else None
        # The in-process sidecar's certificate, when it serves TLS, is checked like any HTTPS peer's.
        verify: bool | str = str(self.settings.http.ca_bundle) if self.settings.http.ca_bundle else True
        kinesis = self.settings.kinesis

        m = self.metrics
        ingest = m.ingest(state.name)
        read_records, read_bytes = m.kinesis_read_records.labels(state.name), m.kinesis_read_bytes.labels(state.name)
        behind = m.kinesis_behind.labels(state.name)

        def count(records: int, size: int) -> None:
            ingest.records.inc(records)
            ingest.bytes.inc(size)
            read_records.inc(records)
            read_bytes.inc(size)

        def throttled(operation: str) -> None:
            m.source_throttled.labels(state.name, operation).inc()

        leases = None
        if self.settings.cluster.mode == "fleet":  # the daemons share the shards through a lease table
            lease_settings = self.settings.cluster.leases
            leases = LeaseOptions(
                table=functools.partial(make_lease_table, lease_settings, region=parse_stream_arn(arn)[0],
                                        account_id=state.account_id, delivery_stream=state.name),
                owner=self.settings.node_id, duration=lease_settings.lease_duration_seconds,
                create_table=lease_settings.create_table)
        source = KinesisSource(name=state.name, stream_arn=arn, spool=self.spool, stream=self._stream_spool(state),
                               settings=kinesis, client_factory=lambda: make_client(arn, kinesis, local, verify),
                               on_records=count, on_throttled=throttled,
                               on_behind=lambda ms: behind.set(ms / 1000), leases=leases,
                               on_leases=m.kinesis_leases.labels(state.name).set)
        self.sources[state.key] = source
        source.start()
        log.info("Reading a Kinesis stream.", extra={"stream": state.name, "kinesis_stream": arn})

    def _start_analytics(self) -> None:
        """The runtime of SQL applications, with what it reaches of the daemon: delivery streams' spools (an
        application's input and outputs), the transform workers, the S3 clients, the in-process sidecar."""
        if self.sql_runtime is not None:
            return

        def delivery_stream(account: str, name: str, writing: bool) -> StreamSpool:
            catalog = self.catalogs.existing(account)
            state = catalog.find(name) if catalog is not None else None
            if state is None or state.status != "ACTIVE":
                raise LookupError(f"Firehose {name} under account {account} is not ACTIVE.")
            if writing and state.definition.delivery_stream_type != "DirectPut":
                raise LookupError(f"Firehose {name} reads a Kinesis stream; it takes no other records.")
            return self._stream_spool(state)

        def s3_client(bucket: str) -> Any:
            return shared_s3_client(self.settings.s3, self.settings.buckets.get(bucket))

        self.sql_runtime = ApplicationRuntime(
            settings=self.settings, state_dir=self.settings.state_dir, delivery_stream=delivery_stream,
            workers=self.workers, s3_client=s3_client,
            kinesis_endpoint=self.sidecar.endpoint if self.sidecar is not None else None,
            kinesis_verify=str(self.settings.http.ca_bundle) if self.settings.http.ca_bundle else True,
            tick_seconds=self.settings.analytics.tick_seconds, poll_seconds=self.settings.analytics.poll_seconds,
            rowtime_clock=scaled_clock(self.settings.testing.analytics_clock_rate))
        if self.analytics.runtime is None:  # the API's applications run on it
            self.analytics.runtime = self.sql_runtime

    def _start_kafka_source(self, state: StreamState) -> None:
        if state.key in self.sources:
            return
        source_config = state.definition.msk_source_configuration
        assert source_config is not None
        cluster = self.settings.kafka_clusters.get(source_config.msk_cluster_arn)
        if cluster is None:  # created before the cluster left kafka_clusters
            why = f"MSKClusterARN {source_config.msk_cluster_arn} is not in kafka_clusters; the stream reads nothing"
            self.broken[state.key] = why
            log.error("A delivery stream cannot read its Kafka topic.", extra={"stream": state.name, "error": why})
            return
        m = self.metrics
        ingest = m.ingest(state.name)
        read_bytes, backpressured = m.source_read_bytes.labels(state.name), m.source_backpressured.labels(state.name)
        oversize = m.source_oversize_records.labels(state.name)
        restarts = m.source_reader_restarts.labels(state.name)

        def count(records: int, size: int) -> None:
            ingest.records.inc(records)
            ingest.bytes.inc(size)
            read_bytes.inc(size)

        def lambda_step() -> bool:  # the definition as it is now (UpdateDestination may add or drop one)
            processing = state.definition.processing
            return bool(processing and processing.enabled and any(p.type == "Lambda"
                                                                  for p in processing.processors or []))

        source = KafkaSource(name=state.name, account_id=state.account_id, source=source_config, cluster=cluster,
                             spool=self.spool, stream=self._stream_spool(state), created_ms=state.created_ms,
                             on_records=count, on_backpressure=lambda paused: backpressured.set(int(paused)),
                             on_oversize=oversize.inc, on_restart=restarts.inc, lambda_step=lambda_step)
        self.sources[state.key] = source
        source.start()
        log.info("Reading a Kafka topic.", extra={"stream": state.name, "topic": source.topic, "group": source.group})

    async def _stop_source(self, key: tuple[str, str]) -> None:
        source = self.sources.pop(key, None)
        if source is not None:
            await source.stop()

    def _warm_workers(self) -> asyncio.Future[Any]:
        """Start every worker process (each imports its code as it starts), in the background;
        /readyz reports "starting" until they are up (``serve`` waits for them, within limits).
        Returns what is done when they are up (or have had ``_WARM_UP_SECONDS``)."""
        if self._workers_up is None:
            pool = self._convert_executor()
            holds = [asyncio.wrap_future(pool.submit(_hold_worker, _WARM_HOLD_SECONDS))
                     for _ in range(self._pool_size())]
            self._workers_up = asyncio.ensure_future(asyncio.wait(holds, timeout=_WARM_UP_SECONDS))
        return self._workers_up

    def _warm_up(self, destination: Destination) -> asyncio.Future[Any]:  # type: ignore[type-arg]
        """The destination's warm-up (its libraries loaded) in the background, within ``_WARM_UP_SECONDS``;
        until it is done /readyz reports "starting" (when the daemon is starting) and the stream waits."""
        async def warm() -> None:
            try:
                await asyncio.wait_for(destination.warm_up(), _WARM_UP_SECONDS)
            except Exception as exc:  # delivery reports what is wrong, if anything is
                log.warning("Could not warm up a destination.", extra={"destination": destination.describe(),
                                                                       "error": f"{type(exc).__name__}: {exc}"})

        future = asyncio.ensure_future(warm())
        self._warming.add(future)
        future.add_done_callback(self._warming.discard)
        return future

    async def _check(self, name: str, destination: Destination) -> None:  # type: ignore[type-arg]
        try:
            await destination.check()
            log.info("Destination is reachable.", extra={"stream": name, "destination": destination.describe()})
        except DestinationError as exc:
            log.warning("Destination check failed; records are kept in the spool until it works.",
                        extra={"stream": name, "destination": destination.describe(), "error": exc.message})

    def _on_catalog(self, event: Event, state: StreamState) -> None:
        if event == "created":
            self._start_pipeline(state)
        elif event == "updated":
            pipeline = self.pipelines.get(state.key)
            config = self._stream_config(state)
            if pipeline is None or config is None:
                if pipeline is None and config is not None:
                    self._start_pipeline(state)
                return
            if pipeline.can_reconfigure(config):
                built = self._destination(state)
                pipeline.reconfigure(config, built.destination, built.store, built.backup)
                self._spawn(self._check(state.name, built.destination))
            else:
                self._spawn(self._switch(state, pipeline))
        elif event == "encryption":
            self._spawn(self._apply_encryption(state))
        elif event == "deleted":
            pipeline = self.pipelines.pop(state.key, None)
            task = self._retiring[state.key] = self._spawn(self._retire(state, pipeline))
            task.add_done_callback(lambda t: self._retiring.pop(state.key, None) if self._retiring.get(
                state.key) is t else None)

    async def _switch(self, state: StreamState, old: Pipeline) -> None:
        """A change of processing: stop the old pipeline (it seals what it buffered), then start anew."""
        log.info("Processing changed; restarting the stream's pipeline.", extra={"stream": state.name})
        del self.pipelines[state.key]
        await old.stop(self.settings.delivery.shutdown_timeout_seconds)
        current = self.catalogs.get(state.account_id).find(state.name)
        if current is not None and state.key not in self.pipelines:
            self._start_pipeline(current)

    @property
    def deleted_dir(self) -> Path:
        """Where deleted streams' undelivered spools are kept (``firehose replay`` reads them)."""
        return self.settings.state_dir / "deleted"

    async def _retire(self, state: StreamState, pipeline: Pipeline | None) -> None:
        """A deleted stream stops at once, as on AWS, and its spool leaves with it: kept for
        ``delete.retain_hours`` under ``deleted/`` when it holds undelivered records (see
        ``spool.retained``), with a WARNING that says how many."""
        await self._stop_source(state.key)
        self.quotas.forget(state.key)
        processes = self._processes(state, pipeline)
        if pipeline is not None:
            self.metrics.forget(state.name, pipeline.levels)
            await pipeline.discard()
        hours = self.settings.delete.retain_hours
        wiped = state.key in self._wiping  # a reset: nothing is kept
        self._wiping.discard(state.key)
        directory = self.spool.detach_stream(state.spool_key)
        kept, records, size = await retained.retain(
            directory, self.deleted_dir, stream=state.name, account=state.account_id, processes=processes,
            definition=state.definition.dump(), keep=hours > 0 and not wiped, keyring=self.keyring)
        self.spool.admission.freed()
        if kept is not None:
            log.warning("Deleted a delivery stream that held undelivered records; they are kept for "
                        "delete.retain_hours and can be sent to another stream with `firehose replay`.",
                        extra={"stream": state.name, "records": records, "bytes": size,
                               "retained": kept.name, "retain_hours": hours})
        elif records:
            log.warning("Deleted a delivery stream that held undelivered records; they are discarded "
                        f"({'a testing reset' if wiped else 'delete.retain_hours is 0'}).",
                        extra={"stream": state.name, "records": records, "bytes": size})
        log.info("Deleted a delivery stream.", extra={"stream": state.name})

    def _processes(self, state: StreamState, pipeline: Pipeline | None) -> bool:
        """Whether the stream ran its records through the processing chain (its spool then holds
        the chain's output as well as the records as accepted)."""
        if pipeline is not None:
            return pipeline.mode == PROC
        try:
            return StreamConfig.build(state.definition, state.version_id, self.settings).plan.active
        except ValueError:  # a stream that could not run: it never processed anything
            return False

    async def _expire_retained(self) -> None:
        """Deleted streams' spools older than ``delete.retain_hours`` go, at start and then hourly."""
        while True:
            for gone in await asyncio.to_thread(retained.expire, self.deleted_dir, self.settings.delete.retain_hours):
                log.info("Removed a deleted stream's retained spool; it is past delete.retain_hours.",
                         extra={"stream": gone.stream, "retained": gone.name, "records": gone.records})
            await asyncio.sleep(_EXPIRE_EVERY_SECONDS)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def reset(self, service: Service = "all") -> None:
        """``testing.reset_endpoint``: drop every delivery stream of every account (and, when the Kinesis
        sidecar runs here, every Kinesis stream) at once, as a DeleteDeliveryStream of each would, except
        that records still buffered for them are discarded rather than kept under ``delete.retain_hours``:
        a reset is meant to leave nothing behind. Returns once their pipelines have stopped. Streams the
        config declares come back at the next start or reload."""
        if self.sidecar is not None and service != "firehose":
            await self.sidecar.reset("kinesis")
        if service == "kinesis":
            return
        keys = []
        for _account, catalog in self.catalogs:
            for state in catalog.all():
                self._wiping.add(state.key)
                catalog.delete(state.name, force=True)
                keys.append(state.key)
        await asyncio.gather(*(self._retiring[k] for k in keys if k in self._retiring), return_exceptions=True)
        log.info("Reset: dropped every delivery stream (testing.reset_endpoint).", extra={"streams": len(keys)})

    # -- health -------------------------------------------------------------------

    def _shown(self, key: tuple[str, str]) -> str:
        """A stream as /readyz names it: its name, prefixed with its account when not the home account's."""
        account, name = key
        return name if account == self.settings.account_id else f"{account}/{name}"

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        streams = {}
        for key, p in self.pipelines.items():
            streams[self._shown(key)] = {
                "destination": p.delivery.destination,
                "buffered_bytes": p.buffered_bytes,
                "inflight_batches": p.inflight,
                "consecutive_failures": p.delivery.consecutive_failures,
                "last_error": p.delivery.last_error,
                "last_error_record": p.deliverer.error_records.newest(),
                "last_delivery_ms": p.delivery.last_success_ms,
                "idle": p.idle(),
            }
        for key, source in self.sources.items():
            if self._shown(key) in streams:
                streams[self._shown(key)]["source"] = source.describe()
        for key, why in self.broken.items():
            streams[self._shown(key)] = {"error": why, "idle": False}
        spool = {"used_bytes": self.spool.used_bytes, "max_bytes": self.spool.max_bytes}
        refusal = self.spool.refusal()  # puts would be refused: spool or disk full
        ready = self._started and not self._stopping and refusal is None
        reason = "starting" if not self._started else "stopping" if self._stopping else refusal
        details: dict[str, Any] = {"node": self.settings.node_id, "spool": spool, "streams": streams}
        if reason:
            details["reason"] = reason
        return ready, details

    def console_streams(self) -> dict[str, Any]:
        """Every delivery stream as the console lists it (``/console/api/streams``), named as /readyz names it.

        What a stream is (source, destination, buffering, processing steps, version, status): read
        from the catalogs, so a stream whose pipeline cannot run is listed too; and the newest error
        documents its error output received while running (``pipeline.errorrecords``), newest first.
        """
        listed = []
        for _account, catalog in self.catalogs:
            for state in catalog.all():
                d = state.definition
                store = d.object_store
                size, interval = definitions.buffering(d.destination) if d.is_s3 else d.record_destination.buffering()
                processing = d.processing
                steps = [p.type for p in processing.processors or []] if processing and processing.enabled else []
                if d.is_s3 and d.destination.dynamic_partitioning:
                    steps.append("DynamicPartitioning")
                if d.is_s3 and d.destination.format_conversion is not None:
                    steps.append("DataFormatConversion")
                kinesis = d.kinesis_stream_source_configuration
                pipeline = self.pipelines.get(state.key)
                listed.append({
                    "name": self._shown(state.key),
                    "status": state.status,
                    "version": state.version_id,
                    "source": {"type": d.delivery_stream_type,
                               "kinesis_stream": kinesis.kinesis_stream_arn if kinesis else None},
                    "destination": {"type": d.destination_member.removesuffix("DestinationConfiguration"),
                                    "target": pipeline.delivery.destination if pipeline else None,
                                    "bucket": store.bucket_arn},
                    "buffering": {"size_bytes": size, "interval_seconds": interval},
                    "processing": steps,
                    "error_records": pipeline.deliverer.error_records.newest_first() if pipeline else [],
                })
        return {"delivery_streams": listed}

    async def kinesis_overview(self) -> dict[str, Any]:
        """The sidecar's streams, shards, lag and throughput (``/console/api/kinesis``); not enabled
        when the sidecar does not run in this process (the page then hides its section)."""
        return self.sidecar.overview() if self.sidecar is not None else {"enabled": False, "streams": []}

    async def agents_overview(self) -> dict[str, Any]:
        """The flows of the agents ``console.agents`` lists, read from each one's ``/status`` now
        (``/console/api/agents``); the list as last (re)loaded."""
        return await read_agents(self.http, self.config.settings.console.agents)

    # -- run --------------------------------------------------------------------

    async def start(self) -> None:
        """Recover and start every pipeline, then apply the config's declared streams."""
        k = self.settings.kinesis
        if k.enabled and self.sidecar is None:
            self.sidecar = Sidecar(self.settings, host=k.host or self.settings.host, port=k.port,
                                   directory=kinesis_state_dir(self.settings), source=self.config.source,
                                   keyring=self.keyring)  # one keyring for objects and shard logs
            self.sidecar.app.reset.action = self.reset
            await self.sidecar.start()
        self._start_analytics()
        for definition in self.config.streams:
            try:
                self.validate(definition)
            except ValueError as exc:
                raise ConfigError(f"{self.config.source}: delivery stream {definition.delivery_stream_name!r}: "
                                  f"{exc}") from exc
        check_declared(self.config.applications, self.config.source)
        if self.config.applications and self.settings.cluster.mode == "fleet":
            log.warning("SQL applications run on every node of a fleet: each node reads their inputs and "
                        "writes their outputs (docs/scaling.md). Run them in one daemon of their own "
                        "(cluster.mode: single) instead.",
                        extra={"applications": len(self.config.applications), "node": self.settings.node_id})
        declared = self.config.by_account()
        for account in [*stored_accounts(self.settings.state_dir), *declared]:
            self.catalogs.get(account)
        self._subscribed = True
        for _account, catalog in self.catalogs:
            catalog.subscribe(self._on_catalog)
            for state in catalog.all():
                self._start_pipeline(state)
        for account, catalog in self.catalogs:
            catalog.apply_config(declared.get(account, []))
        owned = {s.spool_key for catalog in self.catalogs.values() for s in catalog.all()}
        for key in self.spool.existing_keys():
            if key not in owned and retained.adopt(self.spool.root / key, self.deleted_dir) is None:
                log.warning("A spool directory belongs to no delivery stream; it is left untouched.",
                            extra={"directory": str(self.spool.root / key)})
        self.analytics.start(self.config.applications_by_account())

    async def serve(self) -> None:
        try:
            await self._serve()
        finally:
            # After a failed start nothing else will: let the next daemon have the directories.
            if self.sidecar is not None:
                await self.sidecar.stop()
                self.sidecar = None
            self._state_lock.release()

    async def _serve(self) -> None:
        await self.start()
        tls = listeners.server_tls(self.settings.tls, listeners.HTTP1_ALPN)
        listener = listeners.Listener.bind(self.settings.host, self.settings.port, self.settings.limits,
                                           name="Firehose API", tls=tls)  # AddressInUse names the port
        self._server = server = _Server(self.app, listener)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # SIGHUP (systemctl reload) re-reads the config and the TLS certificates, without a restart.
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            listener.close()
            await serving  # start-up failed: raise it
            return
        try:
            await self._start_metrics_listener()
        except OSError:
            server.should_exit = True
            await serving
            await self.shutdown()
            raise
        if self._workers_up is not None:
            await asyncio.shield(self._workers_up)
        if self._warming:
            await asyncio.wait(list(self._warming))
        self._started = True
        self._spawn(self.history.run())
        self._spawn(self._expire_retained())
        host, port = listener.address
        log.info("Listening.", extra={"host": host, "port": port, "streams": len(self.pipelines)})
        # The spool is replayed and every listener bound: now systemd may start what depends on us.
        self.notifier.ready(self._status())
        self._spawn(self.notifier.keep_alive())
        await serving
        await self.shutdown()

    async def _start_metrics_listener(self) -> None:
        """``metrics.listen``: the operator endpoints, without authentication, on an address of their own."""
        if self.settings.metrics.listen is None:
            return
        host, port = split_listen(self.settings.metrics.listen)
        routes = OperatorRoutes(self.readiness, self.metrics.registry, self.principals, None, open_to_all=True,
                                history=self.history, taps=self.taps, streams=self.console_streams,
                                views=self.console_views)
        self._metrics_server = await listeners.start_uvicorn(OperatorApp(routes), host, port, self.settings.limits,
                                                             name="metrics listener")
        log.info("Metrics listening.", extra={"host": host, "port": self._metrics_server.listener.port})

    def _status(self) -> str:
        """The one line ``systemctl status`` shows."""
        return f"Serving {len(self.pipelines)} delivery streams on port {self.settings.port}."

    def reload(self) -> bool:
        """SIGHUP: ``apply_config``, told to systemd as a reload (RELOADING=1, then READY=1)."""
        self.notifier.reloading()
        try:
            return self.apply_config()
        finally:
            self.notifier.ready(self._status())

    def apply_config(self) -> bool:
        """Apply the config file again (SIGHUP), without a restart; whether it was applied.

        What changes in place: the declared delivery streams (added, changed: a new version, what
        is buffered delivered under the old one first; removed), the principals, their policies and
        the scrapers' bearer tokens, and the TLS certificates (open connections keep theirs). An
        invalid config is refused as a whole, with a log line naming the file and what is wrong,
        and the daemon runs on as it was. Other settings (listeners, spool, buckets, ...) apply at
        the next start; a reload that changes them says which. Acknowledged records are never
        touched: a reload only changes catalogs, as the control-plane API does.
        """
        listeners.reload_tls()
        if self._reread is None or self._stopping:
            return False
        source = self.config.source
        try:
            new = self._reread()
            auth = new.settings.auth
            # The mode and the clock skew stay as started (the listeners were checked against the mode).
            principals = Principals(auth.model_copy(update={"mode": self.settings.auth.mode}),
                                    self.settings.account_id)
            for definition in new.streams:
                try:
                    self.validate(definition)
                except ValueError as exc:
                    raise ConfigError(f"{new.source}: delivery stream {definition.delivery_stream_name!r}: "
                                      f"{exc}") from exc
            check_declared(new.applications, new.source)
        except ConfigError as exc:
            log.error("Reload refused: the config is invalid; running on as before.",
                      extra={"config": source, "error": str(exc)})
            return False
        restart = sorted(k for k in type(self.settings).model_fields if k not in _RELOADABLE_SETTINGS
                         and getattr(new.settings, k) != getattr(self.settings, k))
        restart += [f"auth.{k}" for k in ("mode", "clock_skew_seconds")
                    if getattr(auth, k) != getattr(self.settings.auth, k)]
        if restart:
            log.warning("Settings changed that apply at the next start; the rest of the config is applied.",
                        extra={"config": source, "settings": restart})
        self.principals.replace(principals)
        if (new.settings.log_level, new.settings.log) != (self.settings.log_level, self.settings.log):
            setup_logging(new.settings.log_level, new.settings.log.format)
        declared = new.by_account()
        for account in declared:
            self.catalogs.get(account)
        for account, catalog in self.catalogs:
            catalog.apply_config(declared.get(account, []))
        self.analytics.apply_config(new.applications_by_account())
        self.config = new
        if self.sidecar is not None:  # the in-process Kinesis API: its declared streams and principals
            self._spawn(self._reload_sidecar(new.settings))
        log.info("Reloaded the config.", extra={"config": source, "streams": len(new.streams)})
        return True

    async def _reload_sidecar(self, settings: Settings) -> None:
        assert self.sidecar is not None
        try:
            await self.sidecar.apply(settings)
        except ConfigError as exc:
            log.error("Reload of the Kinesis streams refused; they run on as before.",
                      extra={"config": self.config.source, "error": str(exc)})

    def request_stop(self) -> None:
        if not self._stopping:
            log.info("Stopping: no longer accepting requests; delivering what is buffered.")
            self.notifier.stopping()
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True

    async def shutdown(self) -> None:
        self._stopping = True
        timeout = self.settings.delivery.shutdown_timeout_seconds
        await self.analytics.close()  # before the pipelines: applications' last outputs go to their spools
        if self.sql_runtime is not None:
            await self.sql_runtime.close()
        await asyncio.gather(*(self._stop_source(key) for key in list(self.sources)), return_exceptions=True)
        await asyncio.gather(*(p.stop(timeout) for p in self.pipelines.values()), return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._workers_up is not None:
            self._workers_up.cancel()  # stopped while worker processes were still starting
        self.spool.close()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        if self.sidecar is not None:
            await self.sidecar.stop()
            self.sidecar = None
        self.workers.close()
        await self.http.aclose()
        if self._convert_pool is not None:
            self._convert_pool.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._state_lock.release()
        log.info("Stopped.")
