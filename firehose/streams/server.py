"""Running the Kinesis sidecar: on its own (``firehose streams serve``) or inside the daemon.

The server is Hypercorn rather than the daemon's uvicorn because Kinesis
clients need HTTP/2: the JavaScript SDK v3 talks to Kinesis over HTTP/2 (h2c
with prior knowledge on a plain-HTTP endpoint), and Hypercorn serves HTTP/1.1
and HTTP/2 on one port. Kinesis calls carry up to 500 records each, so the
per-request cost of the server matters little.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firehose import listeners
from firehose.accounts import ACCOUNT_ID, PerAccount, account_directory, stored_accounts
from firehose.errors import ConfigError
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.reset import Service
from firehose.keyring import Keyring
from firehose.settings import ACCOUNT_MEMBER, Settings, check_listener, check_reset_endpoint
from firehose.storage.committer import GroupCommitter
from firehose.streams import operations, subscriptions
from firehose.streams.app import KinesisApp
from firehose.streams.errors import FirehoseError
from firehose.streams.overview import overview
from firehose.streams.store import ShardStore, StoreOptions

log = logging.getLogger("firehose.streams")


def state_dir(settings: Settings) -> Path:
    return settings.kinesis.state_dir or settings.state_dir / "kinesis"


def store_options(settings: Settings, account: str | None = None) -> StoreOptions:
    k = settings.kinesis
    return StoreOptions(account_id=account or settings.account_id, region=settings.region, shard_limit=k.shard_limit,
                        create_delay_s=k.create_delay_seconds, delete_delay_s=k.delete_delay_seconds,
                        update_delay_s=k.update_delay_seconds, enforce_limits=k.enforce_limits,
                        segment_bytes=k.segment_bytes, on_demand_stream_limit=k.on_demand_stream_limit,
                        on_demand_scaling=k.on_demand_scaling,
                        on_demand_scaling_interval_s=k.on_demand_scaling_interval_seconds,
                        consumer_delay_s=k.consumer_delay_seconds, subscription_s=k.subscription_seconds)


async def declare_streams(stores: PerAccount[ShardStore], settings: Settings, source: str) -> None:
    """Create the config's streams that do not exist yet (existing ones are left as they are), each in
    its account (its ``AccountId``, else the account config-declared streams belong to).

    Declarations go through CreateStream's own validation, as a request would."""
    for i, item in enumerate(settings.kinesis.streams):
        name = item.get("StreamName")
        where = f"stream {name!r}" if isinstance(name, str) else f"kinesis.streams[{i}]"
        account = item.get(ACCOUNT_MEMBER, settings.account_id)
        if not isinstance(account, str) or not ACCOUNT_ID.fullmatch(account):
            raise ConfigError(f"{source}: kinesis {where}: AccountId must be a 12-digit account id")
        store = stores.get(account)
        if isinstance(name, str) and name in store.streams:
            continue
        body = {k: v for k, v in item.items() if k != ACCOUNT_MEMBER}
        try:
            operations.SHAPES.validator("CreateStream").validate(body)
            await operations.create_stream(store, body)
        except FirehoseError as exc:
            raise ConfigError(f"{source}: kinesis {where}: {exc.message}") from exc


class Sidecar:
    """The store plus its HTTP server, started and stopped on the running event loop."""

    def __init__(self, settings: Settings, *, host: str, port: int, directory: Path,
                 committer: GroupCommitter | None = None, source: str = "<defaults>",
                 keyring: Callable[[], Keyring] | None = None) -> None:
        """``keyring`` loads the daemon's keyring (for encryption at rest; by default, from ``settings.encryption``)."""
        check_listener(host, settings.auth, "The Kinesis API")
        check_reset_endpoint(host, settings.testing, "The Kinesis API")
        self.settings = settings
        self._keyring: Keyring | None = None
        self.keyring = keyring or self._load_keyring
        self.host, self.port = host, port
        self.directory = directory
        self._own_committer = committer is None
        self.committer = committer or GroupCommitter("shard-commit")
        self._started = False
        #: Each account's streams (see ``firehose.accounts``); the home account's store opens at once.
        self.stores: PerAccount[ShardStore] = PerAccount(settings.account_id, self._make_store,
                                                         named=settings.named_accounts)
        for account in stored_accounts(directory):
            self.stores.get(account)
        self.principals = Principals(settings.auth, settings.account_id)
        self.app = KinesisApp(self.stores.for_caller, settings, self.principals, existing=self.stores.existing)
        self.app.reset.action = self.reset
        self.source = source
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def store(self) -> ShardStore:
        """The home account's shard store."""
        return self.stores.get(self.settings.account_id)

    def _load_keyring(self) -> Keyring:
        """The keyring of ``settings.encryption``, loaded once, when a stream first needs it (ValueError: why not)."""
        if self._keyring is None:
            enc = self.settings.encryption
            self._keyring = Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix)
        return self._keyring

    def _make_store(self, account: str) -> ShardStore:
        directory = account_directory(self.directory, account, self.settings.account_id)
        store = ShardStore(directory, store_options(self.settings, account), self.committer, self.keyring)
        if self._started:
            store.start()
        return store

    async def reset(self, service: Service = "all") -> None:
        """``testing.reset_endpoint``: drop every stream of every account (nothing for ``firehose``)."""
        if service == "firehose":
            return
        dropped = sum(store.drop_all() for store in self.stores.values())
        log.info("Reset: dropped every Kinesis stream (testing.reset_endpoint).", extra={"streams": dropped})

    def overview(self) -> dict[str, Any]:
        """The streams, their shards, lag and throughput, for the daemon's console (``streams.overview``)."""
        return overview(self.stores, self.settings.account_id, self.app.metrics)

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{'https' if self.settings.tls.enabled else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        await declare_streams(self.stores, self.settings, self.source)
        for store in self.stores.values():
            store.start()
        self._started = True
        tls = listeners.server_tls(self.settings.tls, listeners.H2_ALPN)
        listener = listeners.Listener.bind(self.host, self.port, self.settings.limits, name="Kinesis API",
                                           tls=tls)  # AddressInUse names the port
        self.port = listener.port  # the port it got, when any was asked for (0)
        self._task = asyncio.get_running_loop().create_task(
            listeners.serve_hypercorn(self.app, listener, shutdown_trigger=self._stop.wait))
        await self._wait_listening()
        log.info("Kinesis API listening.", extra={"host": self.host, "port": self.port,
                                                  "streams": sum(len(s.streams) for s in self.stores.values())})

    async def apply(self, settings: Settings) -> None:
        """A reloaded config: the streams it declares that do not exist yet are created, and its
        principals, policies and bearer tokens replace the running ones (the auth mode stays as
        started). Raises ConfigError, with nothing changed, when a declaration or policy is invalid."""
        principals = Principals(settings.auth.model_copy(update={"mode": self.settings.auth.mode}),
                                self.settings.account_id)
        await declare_streams(self.stores, settings, self.source)
        self.principals.replace(principals)

    async def _wait_listening(self) -> None:
        """The socket is bound and listening before the server task starts (so no other process on the
        port can pass for this one): let the task begin accepting, and raise if it failed at once."""
        await asyncio.sleep(0)
        if self._task is not None and self._task.done():
            await self._task

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    def shutdown(self) -> None:
        """Begin stopping: event streams (SubscribeToShard) end now, not at the graceful timeout."""
        for store in self.stores.values():
            subscriptions.end_all(store)
        self._stop.set()

    async def stop(self) -> None:
        self.shutdown()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        for store in self.stores.values():
            await store.close()
        if self._own_committer:
            self.committer.stop()


async def run(settings: Settings, *, host: str, port: int, directory: Path, source: str,
              reread: Callable[[], Settings] | None = None) -> None:
    """``firehose streams serve``: until SIGTERM or SIGINT. SIGHUP reloads the TLS certificate and,
    given ``reread`` (the config loaded again as at start), applies the config (``Sidecar.apply``)."""
    sidecar = Sidecar(settings, host=host, port=port, directory=directory, source=source)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        if reread is None:
            return
        try:
            await sidecar.apply(reread())
        except ConfigError as exc:
            log.error("Reload refused: the config is invalid; running on as before.",
                      extra={"config": source, "error": str(exc)})
            return
        log.info("Reloaded the config.", extra={"config": source})

    def on_hup() -> None:
        listeners.reload_tls()  # a renewed certificate; logs it
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, sidecar.shutdown)
    try:
        await sidecar.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        await sidecar.wait()
    finally:
        await sidecar.stop()
        log.info("Stopped.")
