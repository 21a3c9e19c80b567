"""One batch, one commit, at most once: the batch key in the snapshot summary.

Every snapshot a batch makes carries ``firehose.batch-id = <batch id>`` in its summary (pyiceberg's
``snapshot_properties``). The batch id is fixed when the batch is sealed and is the same on every
attempt and after a restart, so before committing, ``committed`` looks for it among the table's
snapshots: a batch whose commit landed before a crash (but whose delivery was never recorded) is
acknowledged, not appended again. A transaction is one catalog commit (its snapshots land together
or not at all), so the key is there exactly when the batch's rows are.

Inserts are written in two steps: the rows become Parquet data files where they were read
(``write_data_files``: Arrow's writer, mostly outside the GIL, in the daemon's threads), and the
committer adds the files of every batch of a group in one snapshot (``commit_files``), so only the
metadata work is serial. Files written for a commit that never lands are orphans no snapshot names
(readers never see them; ``firehose iceberg compact`` leaves them, as any Iceberg writer's).

Row-level changes are copy-on-write: pyiceberg 0.12 writes no equality or position delete files, so
an update or delete rewrites the data files holding the keys it touches, and any reader (pyiceberg,
DuckDB, Spark) sees the result without applying deletes. Updates are upserts: delete the key, append
the row (spec: iceberg.md §3, our choice for keys that do not exist yet).
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pyarrow as pa

BATCH_PROPERTY = "firehose.batch-id"
#: pyiceberg's summary holds strings; a group commit names its batches ``id,id,...`` (``committed``).

# pyiceberg warns when a delete matched nothing: a delete of keys not in the table is normal here.
warnings.filterwarnings("ignore", message="Delete operation did not match any records")


def committed(table: Any, batch_id: str) -> bool:
    """Whether a snapshot of ``table`` (its current metadata) carries ``batch_id``, newest first. A
    group commit names all its batches, separated by commas (batch ids are UUIDs: none has one)."""
    for snapshot in reversed(table.snapshots()):
        summary = snapshot.summary
        value = summary.additional_properties.get(BATCH_PROPERTY) if summary is not None else None
        if value is not None and batch_id in value.split(","):
            return True
    return False


#: Iceberg's table properties for snapshot expiry, and their defaults in the Iceberg spec (5 days, 1).
MAX_SNAPSHOT_AGE_PROPERTY = "history.expire.max-snapshot-age-ms"
MIN_SNAPSHOTS_PROPERTY = "history.expire.min-snapshots-to-keep"
DEFAULT_MAX_SNAPSHOT_AGE_MS = 5 * 24 * 3600 * 1000
DEFAULT_MIN_SNAPSHOTS = 1


def expirable(table: Any, now_ms: int) -> list[int]:
    """Snapshots of ``table`` its own retention properties let go: older than ``max-snapshot-age-ms``, not
    among the newest ``min-snapshots-to-keep``, and not the current one or the head of a branch or tag.

    Every commit adds a snapshot and the table's metadata lists them all, so without expiry each commit
    rewrites a larger metadata file, and ``committed`` looks through more of them. Exactly once relies on
    a batch's snapshot outliving any retry of the batch: a daemon down longer than the maximum age may
    land its unconfirmed batches a second time when it comes back."""
    properties = table.metadata.properties
    try:
        max_age = int(properties.get(MAX_SNAPSHOT_AGE_PROPERTY, DEFAULT_MAX_SNAPSHOT_AGE_MS))
        keep = max(1, int(properties.get(MIN_SNAPSHOTS_PROPERTY, DEFAULT_MIN_SNAPSHOTS)))
    except ValueError:
        return []  # a property that is not a number: expire nothing rather than guess
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)[:-keep]
    current = table.current_snapshot()
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    if current is not None:
        protected.add(current.snapshot_id)
    return [s.snapshot_id for s in snapshots if s.timestamp_ms < now_ms - max_age and s.snapshot_id not in protected]


def expire_snapshots(table: Any, now_ms: int) -> int:
    """Remove the snapshots ``expirable`` names from the table's metadata (their data files stay: other
    snapshots may share them); how many. A concurrent commit makes it do nothing this time."""
    from pyiceberg.exceptions import CommitFailedException

    old = expirable(table, now_ms)
    if not old:
        return 0
    try:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    except CommitFailedException:
        return 0
    return len(old)


def last_per_key(rows: pa.Table, keys: list[str]) -> pa.Table:
    """The last row of each key, in arrival order: within one batch only the last state of a key counts."""
    if rows.num_rows < 2:
        return rows
    indexed = rows.select(keys).append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    last = indexed.group_by(keys, use_threads=False).aggregate([("__row", "max")]).column("__row_max")
    return rows.take(sorted(last.to_pylist()))


def key_filter(rows: pa.Table, keys: list[str]) -> Any:
    """A pyiceberg expression matching the rows' keys (In for one key column, Or of Ands for several)."""
    from pyiceberg.expressions import And, EqualTo, In, Or

    if len(keys) == 1:
        values = list(dict.fromkeys(rows.column(keys[0]).to_pylist()))
        return In(keys[0], values) if len(values) > 1 else EqualTo(keys[0], values[0])
    tuples = list(dict.fromkeys(zip(*(rows.column(k).to_pylist() for k in keys), strict=True)))
    terms = [And(*(EqualTo(k, v) for k, v in zip(keys, t, strict=True))) for t in tuples]
    return terms[0] if len(terms) == 1 else Or(*terms)


def _own_retries(table: Any) -> None:
    """Make pyiceberg give up at once when a commit loses a race, in this table object only (never
    written to the catalog: commits send their updates, not these properties).

    pyiceberg (0.12) retries such a commit by itself on the refreshed table (``commit.retry.num-retries``,
    4 by default), which would skip ``committed``'s check of what the winner committed: if the winner's
    commit held this batch (a committer of a daemon killed a moment before), the batch would land twice.
    The committer retries instead, checking first."""
    from pyiceberg.table import TableProperties

    metadata = table.metadata
    if metadata.properties.get(TableProperties.COMMIT_NUM_RETRIES) != "0":
        table.metadata = metadata.model_copy(
            update={"properties": {**metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}})


def write_data_files(table: Any, rows: pa.Table) -> list[Any]:
    """``rows`` (in the table's schema) written as Parquet data files of ``table`` (its location, partition
    spec and write properties), not yet in any snapshot: pyiceberg's own writer, as ``append`` uses it."""
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files

    metadata = table.metadata
    _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=rows.schema,
                                     format_version=metadata.format_version)
    return list(_dataframe_to_data_files(table_metadata=metadata, write_uuid=uuid.uuid4(), df=rows, io=table.io))


def commit_files(table: Any, batch_ids: str, files: list[Any]) -> None:
    """Add data files in one snapshot marked with ``batch_ids``: a fast append, or a merge append when the
    table asks for it (``commit.manifest-merge.enabled``), as pyiceberg's ``append`` chooses."""
    from pyiceberg.table import TableProperties
    from pyiceberg.utils.properties import property_as_bool

    merge = property_as_bool(table.metadata.properties, TableProperties.MANIFEST_MERGE_ENABLED,
                             TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT)
    _own_retries(table)
    with table.transaction() as tx:
        update = tx.update_snapshot(snapshot_properties={BATCH_PROPERTY: batch_ids})
        with update.merge_append() if merge else update.fast_append() as append:
            for data_file in files:
                append.append_data_file(data_file)


def commit(table: Any, batch_id: str, *, append: pa.Table | None, delete: Any | None) -> None:
    """Delete (if any) then append (if any) in one transaction, each snapshot marked with the batch."""
    props = {BATCH_PROPERTY: batch_id}
    _own_retries(table)
    with table.transaction() as tx:
        if delete is not None:
            tx.delete(delete, snapshot_properties=props)
        if append is not None and append.num_rows:
            tx.append(append, snapshot_properties=props)
