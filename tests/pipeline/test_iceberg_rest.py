"""The Iceberg destination through a REST catalog (``catalogs: {type: rest}``): a real Iceberg REST
catalog server on loopback (SeaweedFS's, tests/support/iceberg_rest.py) whose warehouse is an S3 table
bucket on the same server. Streams are created with boto3; tables are read back with pyiceberg through
the same catalog, as another engine would."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from firehose.definitions import IcebergDestinationConfiguration
from firehose.destinations.base import DestinationContext
from firehose.destinations.iceberg import IcebergDestination
from firehose.records import DeliveryRecord, RecordBatch
from firehose.settings import Settings
from tests.support.aws import ROLE
from tests.support.delivered import list_objects
from tests.support.iceberg import error_docs, iceberg_stream, jq_router, put, rows
from tests.support.iceberg_rest import TABLE_BUCKET, WAREHOUSE, RestCatalogServer
from tests.support.waiting import wait_until

#: The CatalogARN the streams name; the daemon's ``catalogs:`` maps it (and nothing else) to the server.
CATALOG_ARN = "arn:aws:glue:us-east-1:123456789012:catalog/rest"


def namespace(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own: the catalog lives for the whole session."""
    return "t_" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]


def rest_stream(name: str, tables: list[dict[str, Any]], warehouse: str | None = None,
                **extra: Any) -> dict[str, Any]:
    catalog = {"CatalogARN": CATALOG_ARN, **({"WarehouseLocation": warehouse} if warehouse else {})}
    return iceberg_stream(name, tables, CatalogConfiguration=catalog, **extra)


def test_a_table_created_through_the_rest_catalog_holds_the_records(
        start_daemon: Any, tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    ns = namespace(request)
    d = start_daemon(catalogs={CATALOG_ARN: rest_catalog.catalog_entry()})
    client = d.client()
    client.create_delivery_stream(**rest_stream(
        "ice", [{"DestinationDatabaseName": ns, "DestinationTableName": "orders", "UniqueKeys": ["id"],
                 "PartitionSpec": {"Identity": [{"SourceName": "region"}]}}],
        warehouse=WAREHOUSE))
    desc = client.describe_delivery_stream(DeliveryStreamName="ice")["DeliveryStreamDescription"]
    assert desc["Destinations"][0]["IcebergDestinationDescription"]["CatalogConfiguration"] == {
        "CatalogARN": CATALOG_ARN, "WarehouseLocation": WAREHOUSE}

    put(client, "ice", [
        {"id": 1, "region": "eu", "amount": 1.5, "paid": True, "tags": ["a", "b"], "dims": {"w": 2}},
        {"id": 2, "region": "us", "amount": 2, "paid": False, "tags": [], "dims": {"w": 3}},
        {"id": "three", "region": "eu"}])
    wait_until(lambda: d.idle("ice"))

    catalog = rest_catalog.catalog()
    table = catalog.load_table((ns, "orders"))
    assert table.format_version == 2
    # WarehouseLocation/database/table: a table bucket lets tables write only there (a location elsewhere
    # in the bucket is accepted at creation, but its writes are denied).
    assert table.location() == f"{WAREHOUSE}/{ns}/orders"
    types = {f.name: f.field_type for f in table.schema().fields}
    assert {name: str(t) for name, t in types.items() if t.is_primitive} == {
        "id": "long", "region": "string", "amount": "double", "paid": "boolean"}
    assert str(types["tags"].element_type) == "string"
    assert [(f.name, str(f.field_type)) for f in types["dims"].fields] == [("w", "long")]
    assert table.schema().identifier_field_names() == {"id"}
    assert [f.name for f in table.spec().fields] == ["region"]
    assert rows(catalog, ns, "orders") == [
        {"id": 1, "region": "eu", "amount": 1.5, "paid": True, "tags": ["a", "b"], "dims": {"w": 2}},
        {"id": 2, "region": "us", "amount": 2.0, "paid": False, "tags": [], "dims": {"w": 3}}]
    assert len(table.snapshots()) == 1  # one batch, one commit
    # The files are in the server's table bucket, one per partition.
    keys = list_objects(rest_catalog.s3(), TABLE_BUCKET)
    data = [k for k in keys if k.startswith(f"{ns}/orders/data/") and k.endswith(".parquet")]
    assert sorted(k.split("/")[3] for k in data) == ["region=eu", "region=us"], keys
    assert [doc["errorCode"] for doc in error_docs(tmp_path / "out")] == ["Iceberg.TypeMismatch"]
    assert not (tmp_path / "state" / "iceberg").exists()  # the default SQLite catalog was not used


def test_an_existing_table_keeps_its_types_and_sees_updates_and_deletes(
        start_daemon: Any, tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        DateType,
        DecimalType,
        IntegerType,
        NestedField,
        StringType,
        TimestamptzType,
    )

    ns = namespace(request)
    catalog = rest_catalog.catalog()
    catalog.create_namespace(ns)
    catalog.create_table((ns, "accounts"), schema=Schema(
        NestedField(1, "id", IntegerType(), required=True), NestedField(2, "day", DateType()),
        NestedField(3, "balance", DecimalType(10, 2)), NestedField(4, "at", TimestamptzType()),
        NestedField(5, "owner", StringType()), identifier_field_ids=[1]))
    d = start_daemon(catalogs={CATALOG_ARN: rest_catalog.catalog_entry()})
    client = d.client()
    client.create_delivery_stream(**rest_stream(
        "ice", [{"DestinationDatabaseName": ns, "DestinationTableName": "accounts", "UniqueKeys": ["id"]}],
        create=False, processors=[jq_router(
            f'{{destinationDatabaseName:"{ns}",destinationTableName:"accounts",operation:.op}}')]))

    def account(i: int, op: str, balance: str) -> dict[str, Any]:
        return {"op": op, "id": i, "day": f"2026-01-0{i}", "balance": balance, "at": 1_767_225_600_000_000 + i,
                "owner": f"o{i}"}

    put(client, "ice", [account(1, "insert", "10.50"), account(2, "insert", "20.00"), account(3, "insert", "3")])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [account(2, "update", "21.25"), {"op": "delete", "id": 3}])
    wait_until(lambda: d.idle("ice"))

    utc = datetime.UTC
    assert rows(catalog, ns, "accounts") == [
        {"id": 1, "day": datetime.date(2026, 1, 1), "balance": decimal.Decimal("10.50"),
         "at": datetime.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=utc), "owner": "o1"},
        {"id": 2, "day": datetime.date(2026, 1, 2), "balance": decimal.Decimal("21.25"),
         "at": datetime.datetime(2026, 1, 1, 0, 0, 0, 2, tzinfo=utc), "owner": "o2"}]
    table = catalog.load_table((ns, "accounts"))
    assert [str(f.field_type) for f in table.schema().fields] == ["int", "date", "decimal(10, 2)",
                                                                   "timestamptz", "string"]
    assert not error_docs(tmp_path / "out")


def test_a_missing_table_without_table_creation_sends_records_to_iceberg_failed(
        start_daemon: Any, tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    ns = namespace(request)
    d = start_daemon(catalogs={CATALOG_ARN: rest_catalog.catalog_entry()})
    client = d.client()
    client.create_delivery_stream(**rest_stream(
        "ice", [{"DestinationDatabaseName": ns, "DestinationTableName": "nope"}], create=False))
    put(client, "ice", [{"id": 1}])
    wait_until(lambda: d.idle("ice"))
    assert [doc["errorCode"] for doc in error_docs(tmp_path / "out")] == ["Iceberg.NoSuchTable"]
    assert (ns,) not in rest_catalog.catalog().list_namespaces()


# -- exactly once, other writers, compaction ---------------------------------------------------------------


def rest_destination(tmp_path: Path, server: RestCatalogServer, ns: str) -> IcebergDestination:
    """A destination as a (re)started daemon builds it: its own catalog client, no table loaded yet."""
    config = IcebergDestinationConfiguration.model_validate({
        "RoleARN": ROLE, "CatalogConfiguration": {"CatalogARN": CATALOG_ARN},
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::b"},
        "DestinationTableConfigurationList": [{"DestinationDatabaseName": ns, "DestinationTableName": "t"}],
        "TableCreationConfiguration": {"Enabled": True}})
    settings = Settings(state_dir=tmp_path / "state", catalogs={CATALOG_ARN: server.catalog_entry()})
    return IcebergDestination(config, DestinationContext("s", settings, ThreadPoolExecutor(2)))


def batch(batch_id: str, ids: list[int]) -> RecordBatch:
    return RecordBatch("s", batch_id, tuple(DeliveryRecord(str(i), orjson.dumps({"id": i}), 0) for i in ids))


def test_a_batch_committed_before_a_restart_is_not_committed_again(
        tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    ns = namespace(request)
    before = rest_destination(tmp_path, rest_catalog, ns)
    asyncio.run(before.deliver(batch("b-1", [1, 2])))
    # The daemon died before the batch was acknowledged: the next one delivers it again.
    after = rest_destination(tmp_path, rest_catalog, ns)
    assert not asyncio.run(after.deliver(batch("b-1", [1, 2]))).rejected
    asyncio.run(after.deliver(batch("b-2", [3])))
    catalog = rest_catalog.catalog()
    assert [r["id"] for r in rows(catalog, ns, "t")] == [1, 2, 3]
    table = catalog.load_table((ns, "t"))
    assert [s.summary["firehose.batch-id"] for s in table.snapshots() if s.summary] == ["b-1", "b-2"]


def test_a_commit_that_another_writer_overtook_is_redone_on_the_new_snapshot(
        tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    import pyarrow as pa

    ns = namespace(request)
    dest = rest_destination(tmp_path, rest_catalog, ns)
    asyncio.run(dest.deliver(batch("b-1", [1])))
    other = rest_catalog.catalog().load_table((ns, "t"))
    other.append(pa.table({"id": pa.array([100], pa.int64())}))
    # The committer's table is a snapshot behind: the server refuses its commit (409, the table's main
    # branch moved); the committer loads the table as it now is, finds b-2 not in it, and commits there,
    # keeping the other row.
    assert not asyncio.run(dest.deliver(batch("b-2", [2]))).rejected
    assert [r["id"] for r in rows(rest_catalog.catalog(), ns, "t")] == [1, 2, 100]
    snapshots = rest_catalog.catalog().load_table((ns, "t")).snapshots()
    assert [s.summary.additional_properties.get("firehose.batch-id") for s in snapshots if s.summary] \
        == ["b-1", None, "b-2"]


def test_compaction_rewrites_a_rest_catalog_table(
        tmp_path: Path, rest_catalog: RestCatalogServer, request: pytest.FixtureRequest) -> None:
    ns = namespace(request)
    dest = rest_destination(tmp_path, rest_catalog, ns)
    for i in range(3):
        asyncio.run(dest.deliver(batch(f"b-{i}", [i])))
    config = tmp_path / "firehose.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                      "catalogs": {CATALOG_ARN: rest_catalog.catalog_entry()}}))
    out = subprocess.run([sys.executable, "-m", "firehose", "iceberg", "compact", f"{ns}.t", "--catalog", CATALOG_ARN,
                          "--config", str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{ns}.t: 3 data files -> 1 (3 rows)"
    catalog = rest_catalog.catalog()
    assert [r["id"] for r in rows(catalog, ns, "t")] == [0, 1, 2]
    assert catalog.load_table((ns, "t")).inspect.files().num_rows == 1
