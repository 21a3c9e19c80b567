"""The Redshift destination: stage the batch, write its manifest, load it (see the package docstring).

The load runs Redshift's COPY (``copy``) or, for a ``jdbc:postgresql://`` URL, the PostgreSQL
load (``postgres_load``), each attempt exactly once per batch key (``loaded_batches``) on a
connection from ``session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import psycopg

from firehose.definitions import RedshiftDestinationConfiguration
from firehose.destinations.base import DELIVERED, DestinationContext, ObjectDestination, Outcome
from firehose.destinations.redshift import loaded_batches, postgres_load, session
from firehose.destinations.redshift.copy import copy_statement
from firehose.destinations.redshift.copy_command import check_compression, load_format
from firehose.destinations.redshift.postgres_load import Column, RowLoad
from firehose.destinations.secrets import REDSHIFT_MEMBERS, SecretValue, cached_secret
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import ObjectBatch

log = logging.getLogger("firehose.destinations.redshift")
T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10
_JDBC_URL = re.compile(r"jdbc:(redshift|postgresql)://([^/:]+)(?::(\d{1,5}))?/([^/?;]+)")
_DEFAULT_PORTS = {"redshift": 5439, "postgresql": 5432}


# -- the cluster -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where ``ClusterJDBCURL`` points; ``dialect`` decides how batches are loaded."""

    dialect: Literal["redshift", "postgresql"]
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        kind = "Redshift cluster" if self.dialect == "redshift" else "PostgreSQL server"
        return f"{kind} {self.host}:{self.port}/{self.database}"


def parse_jdbc_url(url: str) -> ClusterAddress:
    """``jdbc:(redshift|postgresql)://host[:port]/db``; the port defaults to the dialect's own."""
    m = _JDBC_URL.fullmatch(url)
    if not m:
        raise ValueError(f"ClusterJDBCURL {url!r} is not jdbc:redshift://host:port/database "
                         "or jdbc:postgresql://host:port/database")
    dialect: Literal["redshift", "postgresql"] = "redshift" if m.group(1) == "redshift" else "postgresql"
    port = int(m.group(3)) if m.group(3) else _DEFAULT_PORTS[dialect]
    return ClusterAddress(dialect, m.group(2), port, m.group(4))


# -- manifests ---------------------------------------------------------------------


def manifest_key(prefix: str, batch_key: str) -> str:
    """``<Prefix>manifests/YYYY/MM/dd/HH/<name>`` for the batch at ``<Prefix>YYYY/MM/dd/HH/<name>``."""
    return f"{prefix}manifests/{batch_key.removeprefix(prefix)}"


def error_manifest_key(prefix: str, batch_key: str) -> str:
    """``errors/manifests/YYYY/MM/dd/HH/<name>``: where a batch that was never loaded is listed."""
    return f"errors/manifests/{batch_key.removeprefix(prefix)}"


def manifest(bucket: str, key: str) -> bytes:
    """A Redshift manifest for one object; ``mandatory`` makes COPY fail if the object is missing."""
    return json.dumps({"entries": [{"url": f"s3://{bucket}/{key}", "mandatory": True}]}).encode()


# -- the definition ----------------------------------------------------------------


def validate(config: RedshiftDestinationConfiguration) -> None:
    """Refuse, when a definition is created, what this destination could not load as Redshift would.

    Both modes: GZIP in CopyOptions must match a GZIP ``S3Configuration.CompressionFormat``, since
    COPY reads the staged objects as they are. PostgreSQL mode: every option must translate.
    """
    address = parse_jdbc_url(config.cluster_jdbc_url)
    options = config.copy_command.copy_options
    check_compression(options, config.s3_configuration.compression)
    if address.dialect == "postgresql":
        load_format(options)


# -- the destination ----------------------------------------------------------------


class RedshiftDestination(ObjectDestination):
    name = "redshift"
    #: PostgreSQL mode parses text and JSON batches into rows in worker processes (``load_rows``).
    worker_module = postgres_load.__name__

    def __init__(self, config: RedshiftDestinationConfiguration, ctx: DestinationContext,
                 stage: ObjectDestination) -> None:
        """``stage``: the ``S3Configuration``'s bucket, where batches and manifests are staged."""
        self.config = config
        self.retry_seconds = config.retry_seconds
        self.address = parse_jdbc_url(config.cluster_jdbc_url)
        postgres = self.address.dialect == "postgresql"
        self._format = load_format(config.copy_command.copy_options) if postgres else None
        #: PostgreSQL mode with text or JSON: batches become rows in worker processes.
        self._rows = self._format is not None and self._format.kind != "csv"
        self._ctx = ctx
        self._stage = stage
        self._bucket = config.s3_configuration.bucket
        self._prefix = config.s3_configuration.prefix or ""
        #: COPYs (and CSV loads) of one destination run one at a time, as Firehose's do.
        self._copy_lock = asyncio.Lock()
        self._columns: list[Column] | None = None
        #: With SecretsManagerConfiguration enabled, the login is the secret's username/password,
        #: read (``_logged_in``) before any work that connects.
        self._secret = cached_secret(config.secrets_manager_configuration, REDSHIFT_MEMBERS, ctx)
        self._login: SecretValue | None = None

    @property
    def uses_workers(self) -> bool:
        return self._rows

    def describe(self) -> str:
        return f"{self.address}, table {self.config.copy_command.data_table_name}"

    async def check(self) -> None:
        try:
            await self._logged_in(lambda: self._ctx.run(self._ping))
        except DestinationError as exc:
            raise DestinationUnavailable(exc.message, code=exc.code) from exc

    async def deliver(self, batch: ObjectBatch) -> Outcome:
        await self._stage.deliver(batch)
        key = manifest_key(self._prefix, batch.key)
        await self._stage.deliver(self._manifest(batch, key))
        await self._logged_in(lambda: self._load_batch(batch, key))
        return DELIVERED

    async def _load_batch(self, batch: ObjectBatch, key: str) -> None:
        if self._rows:
            await self._load_rows(batch)
        else:
            async with self._copy_lock:
                await self._ctx.run(self._load, batch, f"s3://{self._bucket}/{key}")

    async def _logged_in(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` with the current login. With a secret: the secret is read first (cached, a
        retriable ``SecretsManager.*`` error when it cannot be), and when the server refuses the
        login it is read again at once and, if it changed, ``work()`` runs once more with it."""
        if self._secret is None:
            return await work()
        login = self._login = await self._secret.value()
        try:
            return await work()
        except DestinationError as exc:
            if exc.code != session.AUTHENTICATION_FAILED or not await self._secret.renew(login):
                raise
        self._login = await self._secret.value()
        return await work()

    async def _load_rows(self, batch: ObjectBatch) -> None:
        """PostgreSQL mode, text or JSON: a worker process parses the batch and streams its rows in.

        Several batches load side by side, each on its worker's connection (exactly-once holds per
        batch key). The columns come from the catalog once and are kept; a failed load forgets
        them, so a table changed meanwhile is read again.
        """
        if self._columns is None:
            async with self._copy_lock:
                if self._columns is None:
                    self._columns = await self._ctx.run(postgres_load.read_columns, self._endpoint(),
                                                        self.config.copy_command)
        assert self._format is not None
        load = RowLoad(self._endpoint(), self.config.copy_command, self._format, self._columns)
        # The worker reads the spooled records itself when the staged object is nothing else;
        # otherwise it is sent the body, joined off the event loop.
        body = batch.extents if batch.extents is not None else await self._ctx.run(batch.body)
        loaded, error, code = await self._ctx.run_process(postgres_load.load_rows, load, batch.key, body)
        if error:
            self._columns = None
            raise DestinationError(error, code=code)
        if not loaded:
            self._already_loaded(batch)

    async def expired(self, batch: ObjectBatch, reason: str) -> None:
        """File the batch's manifest under errors/manifests/, for a manual COPY of what was skipped."""
        key = error_manifest_key(self._prefix, batch.key)
        await self._stage.deliver(self._manifest(batch, key))
        log.error("COPY retries ran out: the batch was not loaded; its manifest is filed for a manual load.",
                  extra={"stream": self._ctx.stream, "destination": self.describe(), "key": batch.key,
                         "manifest": f"s3://{self._bucket}/{key}", "reason": reason})

    def _manifest(self, batch: ObjectBatch, key: str) -> ObjectBatch:
        body = manifest(self._bucket, batch.key)
        return ObjectBatch(batch.stream, key, (body,), len(body), 1, batch.first_arrival_ms,
                           content_type="application/json")

    def _already_loaded(self, batch: ObjectBatch) -> None:
        log.info("Batch was already loaded by an earlier attempt; not loading it again.",
                 extra={"stream": self._ctx.stream, "key": batch.key,
                        "table": self.config.copy_command.data_table_name})

    def _credentials(self) -> tuple[str, str | None]:
        """The secret's username/password when SecretsManagerConfiguration is enabled; else
        Username/Password of the definition, overridden by ``credentials[<ClusterJDBCURL>]``."""
        url = self.config.cluster_jdbc_url
        if self._secret is not None:
            if self._login is None:
                raise DestinationError(f"the {self._secret.describe()} has not been read yet")
            return self._login["username"], self._login["password"]
        override = self._ctx.settings.credentials.get(url)
        user = override.username if override and override.username else self.config.username
        password = override.password if override and override.password else self.config.password
        if not user:
            raise DestinationError(f"no user name for {url}: set Username in the definition or "
                                   f"credentials[{url!r}].username in the settings", retriable=False)
        return user, password

    def _tls(self) -> dict[str, str]:
        """libpq's sslmode/sslrootcert for this cluster (see the package docstring)."""
        http = self._ctx.settings.http
        bundle = str(http.ca_bundle) if http.ca_bundle is not None else None
        if self.address.dialect == "redshift" and http.verify:
            return {"sslmode": "verify-full", "sslrootcert": bundle or "system"}
        if bundle is not None and http.verify:
            return {"sslmode": "verify-full", "sslrootcert": bundle}
        return {"sslmode": "prefer"}

    def _endpoint(self) -> session.Endpoint:
        """How to reach the cluster, with the current credentials (a non-retriable
        ``DestinationError`` when there is no user name)."""
        user, password = self._credentials()
        parameters = {"host": self.address.host, "port": self.address.port, "dbname": self.address.database,
                      "user": user, "password": password, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                      "application_name": "firehose", **self._tls()}
        return session.Endpoint(tuple(parameters.items()), str(self.address))

    def _ping(self) -> None:
        with session.connect(self._endpoint()) as conn:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                message = session.server_message(exc)
                raise DestinationError(f"{self.address} did not answer SELECT 1: {message}") from exc

    def _load(self, batch: ObjectBatch, manifest_url: str) -> None:
        """Redshift's COPY from the manifest, or PostgreSQL's CSV load, exactly once."""
        def load(cur: psycopg.Cursor[Any]) -> None:
            if self._format is None:
                cur.execute(copy_statement(self.config, manifest_url))
            else:
                postgres_load.load_csv(cur, self.config.copy_command, self._format, batch.body())

        table = self.config.copy_command.data_table_name
        loaded = session.run(self._endpoint(), lambda conn: loaded_batches.load_once(conn, batch.key, load),
                             f"COPY into {table} on {self.address} failed")
        if not loaded:
            self._already_loaded(batch)

    async def aclose(self) -> None:
        with contextlib.suppress(DestinationError):
            # Connections kept in this process (loads that ran in threads); worker processes'
            # connections end with them.
            await self._ctx.run(session.close, self._endpoint())
