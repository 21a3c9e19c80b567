"""Delivery to Apache Iceberg tables through pyiceberg (spec: iceberg.md).

A sealed batch holds the records of one route (``RecordBatch.keys``: database, table, operation, set
by the processing chain from jq or a transform's ``otfMetadata``), or of the stream's single
``DestinationTableConfigurationList`` entry when nothing routed them. One attempt:

1. load the table (create it from the records when ``TableCreationConfiguration`` is on and it is
   missing; with ``SchemaEvolutionConfiguration`` on, add the records' new top-level keys as optional
   columns first);
2. read the records into an Arrow table in the table's schema (``rows.py``); records that do not
   fit are rejected one by one, with the reason, and go to the error output (``iceberg-failed``);
3. unless the table already has a snapshot marked with this batch's id (a commit that landed before
   a crash), commit the rows in one transaction (``commits.py``): ``insert`` appends, ``update``
   deletes the batch's keys and appends the last row of each, ``delete`` deletes the keys. Commits
   run in the destination's committer process (``committer.py``), off the daemon's GIL.

A commit that loses a race (another writer), a catalog or storage error, is retried by the pipeline
with backoff until ``RetryOptions``; then the records go to the error output. Commits to one table
from this process are serialised (a lock per table), so batches in flight together queue instead of
failing each other's compare-and-swap; inserts that queued meanwhile go in together, as one append
whose snapshot names every batch in it (a group commit: fewer, larger commits, and still exactly once
per batch).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from firehose.definitions import IcebergDestinationConfiguration
from firehose.destinations.base import DestinationContext, Failure, Outcome, RecordDestination
from firehose.destinations.iceberg import committer
from firehose.destinations.iceberg.catalogs import catalog_settings, open_catalog
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.partitions import OTF_DATABASE, OTF_OPERATION, OTF_TABLE
from firehose.records import RecordBatch

if TYPE_CHECKING:
    import pyarrow as pa

# pyiceberg and pyarrow load when a daemon has an Iceberg stream (``warm_up``), not with every daemon.

#: Tables a destination keeps loaded between batches (see ``IcebergDestination._tables``).
MAX_CACHED_TABLES = 32
log = logging.getLogger("firehose.destinations.iceberg")

ROUTING_FAILED = "Iceberg.RoutingFailed"
NO_SUCH_TABLE = "Iceberg.NoSuchTable"
INVALID_UNIQUE_KEYS = "Iceberg.InvalidUniqueKeys"
COMMIT_FAILED = "Iceberg.CommitFailed"


def _import_libraries() -> None:
    """pyiceberg, its SQL catalog and Arrow writer, and pyarrow: about a second of imports, which would
    otherwise hold the GIL under the first batches."""
    import pyiceberg.catalog.sql  # noqa: F401
    import pyiceberg.io.pyarrow  # noqa: F401
    import pyiceberg.table  # noqa: F401

    from firehose.destinations.iceberg import rows  # noqa: F401


class _Rejected(Exception):
    """Every record of the batch is rejected for one reason (no retry)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Pending:
    """An insert batch waiting to be appended (its data files written), and how its group commit went."""

    def __init__(self, batch_id: str, files: list[Any]) -> None:
        self.batch_id = batch_id
        self.files = files
        self.done = False
        self.error: BaseException | None = None


class IcebergDestination(RecordDestination):
    name = "iceberg"
    error_output_type = IcebergDestinationConfiguration.error_output_type

    def __init__(self, config: IcebergDestinationConfiguration, ctx: DestinationContext) -> None:
        self.config = config
        self.ctx = ctx
        self.retry_seconds = config.retry_seconds
        self._entry = catalog_settings(ctx.settings, config.catalog_configuration.catalog_arn)
        self._catalog: Any = None
        self._opening = threading.Lock()
        #: Per table: its commits, one at a time (``_locks``); its loading, creation and schema changes, one
        #: at a time (``_table_locks``). Apart, so batches read and write their files while one commits.
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._table_locks: dict[tuple[str, str], threading.Lock] = {}
        #: Inserts waiting for their table's lock (``_group_append``).
        self._queues: dict[tuple[str, str], list[_Pending]] = {}
        self._queueing = threading.Lock()
        #: Tables as last loaded or committed by this destination. A commit updates its table in
        #: place, so the next batch needs no reload; any failure drops it, and the retry reloads it
        #: (another writer's commit shows as a CommitFailedException first). At most
        #: ``MAX_CACHED_TABLES``, least recently used first out: routing by jq or a transform may
        #: name any number of tables, and a loaded table holds its metadata in memory.
        self._tables: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    def describe(self) -> str:
        return f"iceberg {self._entry.type} catalog {self._entry.uri}"

    async def warm_up(self) -> None:
        import asyncio

        await asyncio.gather(self.ctx.run(_import_libraries),
                             asyncio.wrap_future(self._committer().submit(committer.warm_up)))

    async def check(self) -> None:
        """The catalog opens; then the listed tables are loaded here and in the committer, so the first
        batches find them loaded (a table that is missing or fails to load is simply loaded later)."""
        import asyncio

        try:
            await self.ctx.run(self._open)
        except Exception as exc:
            raise DestinationUnavailable(f"the Iceberg catalog cannot be opened: {exc}") from exc
        names = [(t.destination_database_name, t.destination_table_name)
                 for t in self.config.destination_table_configuration_list or []]
        if names:
            await asyncio.gather(self.ctx.run(self._load_listed, names),
                                 asyncio.wrap_future(self._committer().submit(committer.load, self._entry, names)))

    def _load_listed(self, names: list[tuple[str, str]]) -> None:
        for database, name in names[:MAX_CACHED_TABLES]:
            with self._table_locks.setdefault((database, name), threading.Lock()):
                if (database, name) in self._tables:
                    continue
                try:
                    self._tables[(database, name)] = self._open().load_table((database, name))
                except Exception:  # noqa: S112 - missing (created from its first records), or loaded with them
                    continue

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self.ctx.run(functools.partial(pool.shutdown, wait=True, cancel_futures=True))
        catalog, self._catalog = self._catalog, None
        engine = getattr(catalog, "engine", None)
        if engine is not None:
            await self.ctx.run(engine.dispose)

    async def deliver(self, batch: RecordBatch) -> Outcome:
        return await self.ctx.run(self.deliver_now, batch)

    # -- in the thread pool ------------------------------------------------------------------

    def _committer(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                self._pool = committer.make_pool()
            return self._pool

    def _send(self, fn: Any, database: str, name: str, table: Any, *args: Any) -> None:
        """``fn(catalog entry, database, name, schema id, *args)`` in the committer process; waits for it."""
        self._committer().submit(fn, self._entry, database, name, table.schema().schema_id, *args).result()

    def _open(self) -> Any:
        with self._opening:
            if self._catalog is None:
                self._catalog = open_catalog(self._entry)
            return self._catalog

    def route(self, batch: RecordBatch) -> tuple[str, str, str]:
        """(database, table, operation) of a batch: its route, else the single table entry."""
        keys = batch.keys or {}
        if OTF_TABLE in keys:
            return keys[OTF_DATABASE], keys[OTF_TABLE], keys.get(OTF_OPERATION, "insert")
        tables = self.config.destination_table_configuration_list or []
        if len(tables) != 1:
            raise _Rejected(ROUTING_FAILED, "the record names no table (destinationDatabaseName and "
                                            "destinationTableName) and the stream has no single default table")
        return tables[0].destination_database_name, tables[0].destination_table_name, "insert"

    def deliver_now(self, batch: RecordBatch) -> Outcome:
        """One attempt, blocking (the thread pool's side of ``deliver``)."""
        try:
            database, name, op = self.route(batch)
            return self._write(batch, database, name, op)
        except _Rejected as exc:
            return Outcome(rejected=tuple(Failure(i, exc.reason, code=exc.code) for i in range(len(batch.records))))

    def _write(self, batch: RecordBatch, database: str, name: str, op: str) -> Outcome:
        from pyiceberg.exceptions import CommitFailedException

        from firehose.destinations.iceberg import rows

        entry = self.config.table(database, name)
        keys = list(entry.unique_keys or []) if entry else []
        if op != "insert" and not keys:
            raise _Rejected(INVALID_UNIQUE_KEYS, f"operation {op} needs UniqueKeys, and table {database}.{name} "
                                                 "has none in DestinationTableConfigurationList")
        records = batch.payloads()
        lock = self._locks.setdefault((database, name), threading.Lock())
        try:
            with self._table_locks.setdefault((database, name), threading.Lock()):  # creation, schema changes
                table = self._table(database, name, records, keys)
            missing = [k for k in keys if k not in table.schema().column_names]
            if missing:
                raise _Rejected(INVALID_UNIQUE_KEYS, f"the configured unique keys {', '.join(missing)} do not "
                                                     f"match fields of the schema of {database}.{name}")
            schema = table.schema().as_arrow()
            required = keys if op == "delete" else \
                sorted(set(keys) | {f.name for f in table.schema().fields if f.required})
            got = rows.to_rows(records, schema, required=required)
            outcome = Outcome(rejected=tuple(Failure(r.index, r.reason, code=r.code) for r in got.rejected))
            if not got.indexes:
                return outcome
            if op == "insert":
                self._group_append(lock, (database, name), table, batch.batch_id, got.table)
                return outcome
            with lock:  # reading is done outside: only the commit waits for the table's other batches
                self._send(committer.commit, database, name, table, (batch.batch_id, got.table), op, keys)
            return outcome
        except _Rejected:
            raise
        except CommitFailedException as exc:
            self._tables.pop((database, name), None)
            raise DestinationError(f"the commit to {database}.{name} lost a race: {exc}", code=COMMIT_FAILED) \
                from None
        except (OSError, ValueError, RuntimeError) as exc:
            self._tables.pop((database, name), None)
            raise DestinationError(f"{database}.{name}: {type(exc).__name__}: {exc}", code=COMMIT_FAILED) from None
        except BaseException:
            self._tables.pop((database, name), None)
            raise

    def _group_append(self, lock: threading.Lock, key: tuple[str, str], table: Any, batch_id: str,
                      data: pa.Table) -> None:
        """Append ``data`` with the inserts of other batches that wait for the table meanwhile: each writes
        its data files first (in parallel); the first to get the lock commits them all; the others find
        their batch done (or its error)."""
        from firehose.destinations.iceberg import commits

        mine = _Pending(batch_id, commits.write_data_files(table, data))
        with self._queueing:
            self._queues.setdefault(key, []).append(mine)
        with lock:
            if mine.done:
                if mine.error is not None:
                    raise mine.error
                return
            with self._queueing:
                group, self._queues[key] = self._queues[key], []
            try:
                self._send(committer.append_files, key[0], key[1], table, [(p.batch_id, p.files) for p in group])
            except BaseException as exc:
                for p in group:
                    p.done, p.error = True, exc
                raise
            for p in group:
                p.done = True

    def _table(self, database: str, name: str, records: list[bytes | memoryview], keys: list[str]) -> Any:
        """The table, created or evolved for these records as the configuration allows."""
        from pyiceberg.exceptions import NoSuchTableError

        from firehose.destinations.iceberg import rows

        catalog = self._open()
        table = self._tables.get((database, name))
        if table is not None:
            self._tables.move_to_end((database, name))
        else:
            try:
                table = catalog.load_table((database, name))
            except NoSuchTableError:
                if not self.config.table_creation:
                    raise _Rejected(NO_SUCH_TABLE, f"table {database}.{name} does not exist and "
                                                   "TableCreationConfiguration is not enabled") from None
                table = self._create(catalog, database, name, records, keys)
            self._tables[(database, name)] = table
            while len(self._tables) > MAX_CACHED_TABLES:
                self._tables.popitem(last=False)
        if self.config.schema_evolution:
            added = rows.new_fields(records, set(table.schema().column_names))
            if len(added):  # from the table as it is now: the committer has moved it on since it was loaded
                table.refresh()
                added = rows.new_fields(records, set(table.schema().column_names))
            if len(added):
                with table.update_schema() as update:
                    update.union_by_name(added)
                log.info("Added columns to an Iceberg table.", extra={
                    "stream": self.ctx.stream, "table": f"{database}.{name}", "columns": added.names})
        return table

    def _create(self, catalog: Any, database: str, name: str, records: list[bytes | memoryview],
                keys: list[str]) -> Any:
        """A new v2 table whose columns are the records' top-level keys, the UniqueKeys required and its
        identifier fields, identity-partitioned by the entry's PartitionSpec."""
        import pyarrow as pa
        from pyiceberg.exceptions import TableAlreadyExistsError

        from firehose.destinations.iceberg import rows

        inferred = rows.new_fields(records, set())
        missing = [k for k in keys if k not in inferred.names]
        if missing or not len(inferred):
            raise _Rejected(rows.MISSING_COLUMN, f"table {database}.{name} cannot be created from these records: "
                                                 + (f"no values for the unique keys {', '.join(missing)}"
                                                    if missing else "they have no typed values"))
        schema = pa.schema([f.with_nullable(f.name not in keys) for f in inferred])
        entry = self.config.table(database, name)
        spec = [p.source_name for p in (entry.partition_spec.identity or [])] \
            if entry and entry.partition_spec else []
        location = self.config.catalog_configuration.warehouse_location
        with self._opening:  # two tables of one new namespace, created at once, would race for it
            catalog.create_namespace_if_not_exists(database)
        try:
            tx = catalog.create_table_transaction(
                (database, name), schema=schema, properties={"format-version": "2"},
                location=f"{location.rstrip('/')}/{database}/{name}" if location and self._entry.type == "rest"
                else None)
            if keys:
                with tx.update_schema() as update:
                    update.set_identifier_fields(*keys)
            if spec:
                with tx.update_spec() as update_spec:
                    for column in spec:
                        update_spec.add_identity(column)
            tx.commit_transaction()
        except TableAlreadyExistsError:
            pass  # another writer made it first
        log.info("Created an Iceberg table.", extra={"stream": self.ctx.stream, "table": f"{database}.{name}",
                                                     "columns": schema.names})
        return catalog.load_table((database, name))
