"""Rewriting a table's small files (``firehose iceberg compact``).

Every batch is one commit and at least one data file per partition it touches, so a stream with a
short buffer interval leaves many small files (spec: iceberg.md §9.5); pyiceberg 0.12 has no
compaction of its own. ``compact`` reads the table's current snapshot and replaces all of its data
in one overwrite transaction: the rows stay the same, the files become one per partition (or a few,
at pyiceberg's target file size). A delivery that commits in between makes the compaction fail rather
than lose that delivery's rows: the commit carries the snapshot it read as a requirement, and when
pyiceberg retries it on the new snapshot it finds the delivery's files under the overwrite's filter
and gives up (``ValidationException``). ``compact`` then raises ``CompactionConflict``: run it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMPACTION_PROPERTY = "firehose.compaction"


class CompactionConflict(Exception):
    """The table changed while it was being compacted; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Compacted:
    rows: int
    files_before: int
    files_after: int


def data_files(table: Any) -> int:
    return int(table.inspect.files().num_rows)


def compact(table: Any, *, min_files: int = 2) -> Compacted:
    """Rewrite ``table``'s data files when it has at least ``min_files`` of them (blocking)."""
    before = data_files(table)
    snapshot = table.current_snapshot()
    if snapshot is None or before < min_files:
        return Compacted(0, before, before)
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    data = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
    try:
        with table.transaction() as tx:
            tx.overwrite(data, snapshot_properties={COMPACTION_PROPERTY: "true"})
    except (CommitFailedException, ValidationException) as exc:
        raise CompactionConflict(f"another writer (a delivery?) committed to the table while it was being "
                                 f"compacted; nothing was changed, run it again ({exc})") from exc
    table.refresh()
    return Compacted(data.num_rows, before, data_files(table))
