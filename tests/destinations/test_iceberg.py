"""The Iceberg destination on its own: one commit per batch, at most once, and what does not fit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.definitions import IcebergDestinationConfiguration
from firehose.destinations.base import DestinationContext
from firehose.destinations.iceberg import IcebergDestination, commits
from firehose.records import DeliveryRecord, RecordBatch
from firehose.settings import Settings
from tests.support.aws import ROLE
from tests.support.iceberg import rows, sqlite_catalog
from tests.support.waiting import wait_until

ROUTE = {"otf:database": "shop", "otf:table": "orders"}


def destination(tmp_path: Path, **extra: Any) -> IcebergDestination:
    config = IcebergDestinationConfiguration.model_validate({
        "RoleARN": ROLE, "CatalogConfiguration": {},
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::b"},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": "shop", "DestinationTableName": "orders",
                                               "UniqueKeys": ["id"]}],
        "TableCreationConfiguration": {"Enabled": True}, **extra})
    ctx = DestinationContext("s", Settings(state_dir=tmp_path / "state"), ThreadPoolExecutor(4))
    return IcebergDestination(config, ctx)


def batch(batch_id: str, records: list[Any], op: str | None = None) -> RecordBatch:
    data = tuple(DeliveryRecord(str(i), r if isinstance(r, bytes) else orjson.dumps(r), 0)
                 for i, r in enumerate(records))
    return RecordBatch("s", batch_id, data, {**ROUTE, "otf:operation": op} if op else None)


def test_a_batch_delivered_again_is_acknowledged_without_a_second_commit(tmp_path: Path) -> None:
    dest = destination(tmp_path)
    first = asyncio.run(dest.deliver(batch("b-1", [{"id": 1}, {"id": 2}, b"[1]"])))
    again = asyncio.run(dest.deliver(batch("b-1", [{"id": 1}, {"id": 2}, b"[1]"])))
    # The record that does not fit is rejected both times (its error output may not have been written).
    assert [(f.index, f.code) for f in first.rejected] == [(2, "Iceberg.InvalidRecord")]
    assert [(f.index, f.code) for f in again.rejected] == [(2, "Iceberg.InvalidRecord")]
    catalog = sqlite_catalog(tmp_path / "state")
    assert [r["id"] for r in rows(catalog, "shop", "orders")] == [1, 2]
    assert len(catalog.load_table(("shop", "orders")).snapshots()) == 1
    asyncio.run(dest.deliver(batch("b-2", [{"id": 3}])))
    assert [r["id"] for r in rows(catalog, "shop", "orders")] == [1, 2, 3]


def test_updates_keep_the_last_row_of_each_key_and_deletes_need_only_the_key(tmp_path: Path) -> None:
    dest = destination(tmp_path)
    asyncio.run(dest.deliver(batch("b-1", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])))
    asyncio.run(dest.deliver(batch("b-2", [{"id": 2, "v": "c"}, {"id": 2, "v": "d"}, {"id": 5, "v": "e"}],
                                   "update")))
    asyncio.run(dest.deliver(batch("b-3", [{"id": 1}], "delete")))
    outcome = asyncio.run(dest.deliver(batch("b-4", [{"v": "no key"}], "delete")))
    assert [f.code for f in outcome.rejected] == ["Iceberg.MissingColumnWithinRecord"]
    catalog = sqlite_catalog(tmp_path / "state")
    assert rows(catalog, "shop", "orders") == [{"id": 2, "v": "d"}, {"id": 5, "v": "e"}]
    table = catalog.load_table(("shop", "orders"))
    assert table.schema().identifier_field_names() == {"id"}


def test_update_without_unique_keys_is_rejected(tmp_path: Path) -> None:
    dest = destination(tmp_path, DestinationTableConfigurationList=[
        {"DestinationDatabaseName": "shop", "DestinationTableName": "orders"}])
    outcome = asyncio.run(dest.deliver(batch("b-1", [{"id": 1}], "update")))
    assert [f.code for f in outcome.rejected] == ["Iceberg.InvalidUniqueKeys"]


def test_compaction_rewrites_small_files_and_keeps_the_rows(tmp_path: Path) -> None:
    dest = destination(tmp_path, DestinationTableConfigurationList=[
        {"DestinationDatabaseName": "shop", "DestinationTableName": "orders",
         "PartitionSpec": {"Identity": [{"SourceName": "region"}]}}])
    for i in range(6):
        asyncio.run(dest.deliver(batch(f"b-{i}", [{"id": i, "region": "eu" if i % 2 else "us"}])))
    config = tmp_path / "firehose.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    out = subprocess.run([sys.executable, "-m", "firehose", "iceberg", "compact", "shop.orders", "--config",
                          str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "shop.orders: 6 data files -> 2 (6 rows)"
    catalog = sqlite_catalog(tmp_path / "state")
    assert [r["id"] for r in rows(catalog, "shop", "orders")] == list(range(6))
    missing = subprocess.run([sys.executable, "-m", "firehose", "iceberg", "compact", "shop.nope", "--config",
                              str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "NoSuchTable" in missing.stderr


def test_inserts_that_wait_for_the_table_together_are_one_commit_naming_each_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = destination(tmp_path)
    asyncio.run(dest.deliver(batch("b-0", [{"id": 0}])))
    real_send, real_write = dest._send, commits.write_data_files
    first_sending = threading.Event()
    calls: list[Any] = []

    def held_write(table: Any, data: Any) -> Any:
        if data.column("id")[0].as_py() != 1:  # b-2 and b-3 queue only once b-1 is being committed alone
            first_sending.wait(10)
        return real_write(table, data)

    def slow_send(fn: Any, database: str, name: str, table: Any, *args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:  # b-1's commit takes long enough for the other two batches to queue
            first_sending.set()
            wait_until(lambda: len(dest._queues[("shop", "orders")]) == 2, timeout=10)
        real_send(fn, database, name, table, *args)

    monkeypatch.setattr(commits, "write_data_files", held_write)
    monkeypatch.setattr(dest, "_send", slow_send)

    async def three() -> None:
        await asyncio.gather(*(dest.deliver(batch(f"b-{i}", [{"id": i}])) for i in (1, 2, 3)))

    asyncio.run(three())
    catalog = sqlite_catalog(tmp_path / "state")
    table = catalog.load_table(("shop", "orders"))
    names = [s.summary.additional_properties["firehose.batch-id"] for s in table.snapshots() if s.summary]
    assert len(names) == 3 and names[0] == "b-0"
    assert sorted(",".join(names[1:]).split(",")) == ["b-1", "b-2", "b-3"] and len(names[2].split(",")) == 2
    again = asyncio.run(dest.deliver(batch(names[2].split(",")[1], [{"id": 9}])))  # delivered again after a crash
    assert again.delivered_all
    assert [r["id"] for r in rows(catalog, "shop", "orders")] == [0, 1, 2, 3]


def test_tables_kept_loaded_between_batches_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing may name any number of tables: only the most recently used stay loaded, and a table
    dropped from the cache is loaded again when a batch needs it."""
    from firehose.destinations.iceberg import destination as module

    monkeypatch.setattr(module, "MAX_CACHED_TABLES", 2)
    dest = destination(tmp_path)

    def to(table: str, batch_id: str, record: dict[str, Any]) -> RecordBatch:
        b = batch(batch_id, [record])
        return RecordBatch(b.stream, b.batch_id, b.records, {"otf:database": "shop", "otf:table": table})

    for i, table in enumerate(["t1", "t2", "t3", "t1"]):
        outcome = asyncio.run(dest.deliver(to(table, f"b-{i}", {"id": i})))
        assert not outcome.rejected
    assert list(dest._tables) == [("shop", "t3"), ("shop", "t1")]
    catalog = sqlite_catalog(tmp_path / "state")
    assert [r["id"] for r in rows(catalog, "shop", "t1")] == [0, 3]


def test_the_committer_never_commits_a_batch_another_process_committed_meanwhile(tmp_path: Path) -> None:
    """The committer's table is stale (another process committed since it was loaded), and what that other
    process committed was this very batch (a committer of a daemon killed a moment before): the commit
    loses the race, the committer reloads, finds the batch, and does not commit it again. pyiceberg's own
    retry (on by default) would have committed it a second time."""
    import pyarrow as pa

    from firehose.destinations.iceberg import committer
    from firehose.destinations.iceberg.catalogs import catalog_settings

    entry = catalog_settings(Settings(state_dir=tmp_path / "state"), None)
    (tmp_path / "state" / "iceberg").mkdir(parents=True)
    catalog = sqlite_catalog(tmp_path / "state")
    catalog.create_namespace("shop")
    table = catalog.create_table(("shop", "orders"), schema=pa.schema([("id", pa.int64())]))
    data = pa.table({"id": [1, 2]})
    committer.append_files(entry, "shop", "orders", 0, [("b-1", commits.write_data_files(table, data))])
    other = catalog.load_table(("shop", "orders"))  # the other process
    commits.commit_files(other, "b-2", commits.write_data_files(other, pa.table({"id": [3]})))
    for batch_id, value in (("b-2", 3), ("b-3", 4)):
        files = commits.write_data_files(table, pa.table({"id": [value]}))
        committer.append_files(entry, "shop", "orders", 0, [(batch_id, files)])
    assert sorted(r["id"] for r in rows(catalog, "shop", "orders")) == [1, 2, 3, 4]
    names = [s.summary.additional_properties["firehose.batch-id"] for s in catalog.load_table(("shop", "orders"))
             .snapshots() if s.summary]
    assert names == ["b-1", "b-2", "b-3"]


def test_the_committer_expires_snapshots_past_the_tables_retention_now_and_then(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each commit adds a snapshot; the committer removes those the table's own retention properties
    (``history.expire.max-snapshot-age-ms``, ``history.expire.min-snapshots-to-keep``) let go, at most
    every ``EXPIRE_EVERY_SECONDS`` per table. The rows stay, and recent batches are still known."""
    import pyarrow as pa

    from firehose.destinations.iceberg import committer
    from firehose.destinations.iceberg.catalogs import catalog_settings

    entry = catalog_settings(Settings(state_dir=tmp_path / "state"), None)
    (tmp_path / "state" / "iceberg").mkdir(parents=True)
    catalog = sqlite_catalog(tmp_path / "state")
    catalog.create_namespace("shop")
    for name in ("kept", "short"):
        catalog.create_table(("shop", name), schema=pa.schema([("id", pa.int64())]))
    with catalog.load_table(("shop", "short")).transaction() as tx:
        tx.set_properties({"history.expire.max-snapshot-age-ms": "1", "history.expire.min-snapshots-to-keep": "2"})
    monkeypatch.setattr(committer, "_expired_at", {})

    def deliver(name: str, n: int) -> None:
        table = catalog.load_table(("shop", name))
        for i in range(n):
            files = commits.write_data_files(table, pa.table({"id": [i]}))
            committer.append_files(entry, "shop", name, 0, [(f"{name}-{i}", files)])

    monkeypatch.setattr(committer, "EXPIRE_EVERY_SECONDS", 0.0)
    deliver("kept", 4)  # the defaults: five days, so nothing is old enough
    deliver("short", 4)
    assert len(catalog.load_table(("shop", "kept")).snapshots()) == 4
    short = catalog.load_table(("shop", "short"))
    assert [s.summary.additional_properties["firehose.batch-id"] for s in short.snapshots()] == ["short-2", "short-3"]
    assert [r["id"] for r in rows(catalog, "shop", "short")] == [0, 1, 2, 3]
    assert commits.committed(short, "short-3")
    monkeypatch.setattr(committer, "EXPIRE_EVERY_SECONDS", 3600.0)
    table = catalog.load_table(("shop", "short"))
    for i in range(4, 7):  # looked at a moment ago: not again for an hour
        files = commits.write_data_files(table, pa.table({"id": [i]}))
        committer.append_files(entry, "shop", "short", 0, [(f"short-{i}", files)])
    assert len(catalog.load_table(("shop", "short")).snapshots()) == 5
    assert [r["id"] for r in rows(catalog, "shop", "short")] == list(range(7))


def test_a_delivery_committed_during_a_compaction_is_kept_and_the_compaction_refused(tmp_path: Path) -> None:
    """A delivery commits between the compaction's scan and its overwrite: the overwrite, retried by pyiceberg
    on the new snapshot, finds the delivery's file under its filter and gives up; no row is lost."""
    import pyarrow as pa

    from firehose.destinations.iceberg.compaction import CompactionConflict, compact

    (tmp_path / "state" / "iceberg").mkdir(parents=True)
    catalog = sqlite_catalog(tmp_path / "state")
    catalog.create_namespace("shop")
    table = catalog.create_table(("shop", "orders"), schema=pa.schema([("id", pa.int64())]))
    for i in range(3):
        table.append(pa.table({"id": [i]}))
    scan = table.scan

    def scan_while_a_delivery_commits(*args: Any, **kwargs: Any) -> Any:
        scanned = scan(*args, **kwargs)
        catalog.load_table(("shop", "orders")).append(pa.table({"id": [100]}))
        return scanned

    table.scan = scan_while_a_delivery_commits
    with pytest.raises(CompactionConflict, match="run it again"):
        compact(table)
    assert [r["id"] for r in rows(catalog, "shop", "orders")] == [0, 1, 2, 100]
