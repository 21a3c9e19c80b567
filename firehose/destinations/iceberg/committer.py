"""Commits to Iceberg tables in a process of their own: the committer.

A pyiceberg commit is mostly Python (manifests, Avro, metadata, pydantic copies) that holds the GIL
for tens of milliseconds a batch; in the daemon's process it would stall the event loop and the
threads reading the next batches into Arrow. So each Iceberg destination has one committer process
(``Committer``), and every commit to its tables goes there; the daemon's process routes, reads the
records into Arrow (``rows.py``), creates and evolves tables, and sends the Arrow tables over.

One process per destination, not the shared worker pool: the committer keeps each table loaded
between commits (a commit updates it in place), which only works while one process makes all of a
table's commits; two processes taking turns would each find the other's commit first and reload.

Exactly once per batch (``commits.py``): before committing, the committer drops the batches its
table already names in a snapshot. Its loaded table is current unless someone else committed
(another daemon, a schema change made by the daemon's process): then the compare-and-swap fails,
the table is reloaded, the check made again and the commit tried once more. A schema the daemon's
process changed is noticed before committing (its schema id is passed along: a newer one reloads the
table).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from firehose.processpool import RenewingProcessPool, exit_with_parent
from firehose.settings import CatalogSettings

if TYPE_CHECKING:  # pyarrow loads in the committer process, and with the first batch in the daemon's
    import pyarrow as pa

log = logging.getLogger("firehose.destinations.iceberg")

#: Tables this committer process has loaded, by (catalog entry as JSON, database, table).
_tables: dict[tuple[str, str, str], Any] = {}
_catalogs: dict[str, Any] = {}
#: At most this many tables stay loaded (least recently used out first).
_MAX_TABLES = 32
#: Seconds between two looks for expired snapshots of one table (``commits.expire_snapshots``), after a commit.
EXPIRE_EVERY_SECONDS = 3600.0
#: When each table was last looked at for expired snapshots (monotonic seconds), by the ``_tables`` key.
_expired_at: dict[tuple[str, str, str], float] = {}


def make_pool() -> RenewingProcessPool:
    """One committer process (spawned, so it shares nothing with the daemon's threads), renewed if it dies."""
    return RenewingProcessPool(functools.partial(
        ProcessPoolExecutor, 1, mp_context=multiprocessing.get_context("spawn"), initializer=_start))


def _start() -> None:
    exit_with_parent()
    warm_up()


def warm_up() -> None:
    """Import what a commit needs, as the process starts."""
    import pyiceberg.catalog.sql  # noqa: F401
    import pyiceberg.io.pyarrow  # noqa: F401
    import pyiceberg.table  # noqa: F401


def load(entry: CatalogSettings, names: list[tuple[str, str]]) -> None:
    """Load the tables ``names`` ahead of their first commits, those that exist and load (best effort)."""
    for database, name in names[:_MAX_TABLES]:
        try:
            _table(entry, (entry.model_dump_json(), database, name), 0, reload=False)
        except Exception:  # noqa: S112 - missing, or the catalog is down: the first commit loads it
            continue


def append_files(entry: CatalogSettings, database: str, name: str, schema_id: int,
                 batches: list[tuple[str, list[Any]]]) -> None:
    """Add the data files of ``batches`` (batch id, files written by ``commits.write_data_files``) to the
    table in one snapshot naming them all (a group commit), except batches the table already names."""
    from firehose.destinations.iceberg import commits

    def apply(table: Any, todo: list[tuple[str, Any]]) -> None:
        commits.commit_files(table, ",".join(batch_id for batch_id, _ in todo),
                             [data_file for _, files in todo for data_file in files])

    _with_table(entry, database, name, schema_id, batches, apply)


def commit(entry: CatalogSettings, database: str, name: str, schema_id: int,
           batch: tuple[str, pa.Table], op: str, keys: list[str]) -> None:
    """An ``update`` or ``delete`` batch (batch id, rows) by ``keys``, in one transaction, unless the table
    already names it. Copy-on-write: the files holding the keys are rewritten here."""
    from firehose.destinations.iceberg import commits

    def apply(table: Any, todo: list[tuple[str, Any]]) -> None:
        batch_id, rows = todo[0]
        last = commits.last_per_key(rows, keys)
        commits.commit(table, batch_id, append=last if op == "update" else None,
                       delete=commits.key_filter(last, keys))

    _with_table(entry, database, name, schema_id, [batch], apply)


def _with_table(entry: CatalogSettings, database: str, name: str, schema_id: int, batches: list[tuple[str, Any]],
                apply: Callable[[Any, list[tuple[str, Any]]], None]) -> None:
    """``apply(table, batches not in it yet)`` on the loaded table; once more on a freshly loaded one when
    the commit lost a race (someone else committed since it was loaded). Raises what pyiceberg raises."""
    from pyiceberg.exceptions import CommitFailedException

    from firehose.destinations.iceberg import commits

    key = (entry.model_dump_json(), database, name)
    for attempt in (1, 2):
        table = _table(entry, key, schema_id, reload=attempt > 1)
        todo = [(batch_id, item) for batch_id, item in batches if not commits.committed(table, batch_id)]
        if not todo:
            return
        try:
            apply(table, todo)
        except CommitFailedException:
            _tables.pop(key, None)
            if attempt == 2:
                raise
        except BaseException:
            _tables.pop(key, None)
            raise
        else:
            _expire_now_and_then(key, table)
            return


def _expire_now_and_then(key: tuple[str, str, str], table: Any) -> None:
    """Expire the table's old snapshots (its retention properties), at most every ``EXPIRE_EVERY_SECONDS``;
    a failure only waits for the next time (the commit it follows is done)."""
    from firehose.destinations.iceberg import commits

    now = time.monotonic()
    if now - _expired_at.get(key, -EXPIRE_EVERY_SECONDS) < EXPIRE_EVERY_SECONDS:
        return
    _expired_at[key] = now
    if len(_expired_at) > 4 * _MAX_TABLES:
        for stale in [k for k in _expired_at if k not in _tables]:
            del _expired_at[stale]
    try:
        expired = commits.expire_snapshots(table, int(time.time() * 1000))
    except Exception:
        log.exception("Expiring old snapshots of an Iceberg table failed; tried again in an hour.",
                      extra={"database": key[1], "table": key[2]})
        _tables.pop(key, None)  # reloaded by the next commit
        return
    if expired:
        log.info("Expired old snapshots of an Iceberg table.",
                 extra={"database": key[1], "table": key[2], "snapshots": expired})


def _table(entry: CatalogSettings, key: tuple[str, str, str], schema_id: int, *, reload: bool) -> Any:
    from firehose.destinations.iceberg.catalogs import open_catalog

    table = None if reload else _tables.pop(key, None)
    if table is None or table.schema().schema_id < schema_id:
        catalog = _catalogs.get(key[0])
        if catalog is None:
            catalog = _catalogs[key[0]] = open_catalog(entry)
        table = catalog.load_table((key[1], key[2]))
    _tables[key] = table  # most recently used last
    while len(_tables) > _MAX_TABLES:
        del _tables[next(iter(_tables))]
    return table
