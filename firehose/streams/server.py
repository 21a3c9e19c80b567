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
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from firehose.errors import ConfigError
from firehose.settings import Settings
from firehose.spool.committer import GroupCommitter
from firehose.streams import operations
from firehose.streams.app import KinesisApp
from firehose.streams.errors import FirehoseError
from firehose.streams.store import ShardStore, StoreOptions

log = logging.getLogger("firehose.streams")


def state_dir(settings: Settings) -> Path:
    return settings.kinesis.state_dir or settings.state_dir / "kinesis"


def store_options(settings: Settings) -> StoreOptions:
    k = settings.kinesis
    return StoreOptions(account_id=settings.account_id, region=settings.region, shard_limit=k.shard_limit,
                        create_delay_s=k.create_delay_seconds, delete_delay_s=k.delete_delay_seconds,
                        update_delay_s=k.update_delay_seconds, enforce_limits=k.enforce_limits,
                        segment_bytes=k.segment_bytes)


async def declare_streams(store: ShardStore, settings: Settings, source: str) -> None:
    """Create the config's streams that do not exist yet (existing ones are left as they are)."""
    for i, body in enumerate(settings.kinesis.streams):
        name = body.get("StreamName") if isinstance(body, dict) else None
        if isinstance(name, str) and name in store.streams:
            continue
        try:
            await operations.create_stream(store, dict(body))
        except FirehoseError as exc:
            where = f"stream {name!r}" if name else f"kinesis.streams[{i}]"
            raise ConfigError(f"{source}: kinesis {where}: {exc.message}") from exc


class Sidecar:
    """The store plus its HTTP server, started and stopped on the running event loop."""

    def __init__(self, settings: Settings, *, host: str, port: int, directory: Path,
                 committer: GroupCommitter | None = None, source: str = "<defaults>") -> None:
        self.settings = settings
        self.host, self.port = host, port
        self.store = ShardStore(directory, store_options(settings), committer)
        self.app = KinesisApp(self.store)
        self.source = source
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await declare_streams(self.store, self.settings, self.source)
        self.store.start()
        config = HypercornConfig()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.keep_alive_timeout = 75
        config.graceful_timeout = 5
        self._task = asyncio.get_running_loop().create_task(
            serve(self.app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        await self._wait_listening()
        log.info("Kinesis API listening.", extra={"host": self.host, "port": self.port,
                                                  "streams": len(self.store.streams)})

    async def _wait_listening(self) -> None:
        for _ in range(500):
            if self._task is not None and self._task.done():
                await self._task  # failed to bind: raise it
            try:
                _reader, writer = await asyncio.open_connection(
                    "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host, self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise OSError(f"the Kinesis API did not start listening on {self.host}:{self.port}")

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.store.close()


async def run(settings: Settings, *, host: str, port: int, directory: Path, source: str) -> None:
    """``firehose streams serve``: until SIGTERM or SIGINT."""
    sidecar = Sidecar(settings, host=host, port=port, directory=directory, source=source)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, sidecar._stop.set)
    try:
        await sidecar.start()
        await sidecar.wait()
    finally:
        await sidecar.stop()
        log.info("Stopped.")
