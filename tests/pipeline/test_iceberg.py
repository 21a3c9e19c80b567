"""The Iceberg destination end to end: streams created with boto3, records put, tables read back with
pyiceberg and DuckDB's Iceberg reader."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson

from tests.support.delivered import read_local
from tests.support.iceberg import duckdb_rows, iceberg_stream, jq_router, rows, sqlite_catalog
from tests.support.waiting import wait_until


def put(client: Any, stream: str, records: list[Any]) -> None:
    data = [{"Data": r if isinstance(r, bytes) else orjson.dumps(r)} for r in records]
    answer = client.put_record_batch(DeliveryStreamName=stream, Records=data)
    assert answer["FailedPutCount"] == 0


def error_docs(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for key, body in read_local(root).items() if key.startswith("err/")
            for line in body.splitlines()]


def test_records_become_rows_of_a_created_partitioned_table(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    orders = {"DestinationDatabaseName": "shop", "DestinationTableName": "orders",
              "PartitionSpec": {"Identity": [{"SourceName": "region"}]}}
    client.create_delivery_stream(**iceberg_stream("ice", [orders]))
    described = client.describe_delivery_stream(DeliveryStreamName="ice")["DeliveryStreamDescription"]
    desc = described["Destinations"][0]["IcebergDestinationDescription"]
    assert desc["DestinationTableConfigurationList"][0]["DestinationTableName"] == "orders"
    assert desc["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::local"
    assert desc["RetryOptions"] == {"DurationInSeconds": 300}

    put(client, "ice", [{"id": 1, "region": "eu", "amount": 1.5, "ts": 1_700_000_000_000_000},
                        {"id": 2, "region": "us", "amount": 2, "ts": 1_700_000_000_000_001},
                        b"not json", {"id": "three", "region": "eu"}])
    wait_until(lambda: d.idle("ice"))
    catalog = sqlite_catalog(tmp_path / "state")
    table = catalog.load_table(("shop", "orders"))
    assert [f.name for f in table.schema().fields] == ["id", "region", "amount", "ts"]
    assert str(table.schema().find_field("ts").field_type) == "long"  # inferred: JSON has no timestamps
    assert [f.name for f in table.spec().fields] == ["region"]
    assert len(table.snapshots()) == 1  # one batch, one commit
    assert rows(catalog, "shop", "orders") == [{"id": 1, "region": "eu", "amount": 1.5, "ts": 1_700_000_000_000_000},
                                               {"id": 2, "region": "us", "amount": 2.0, "ts": 1_700_000_000_000_001}]
    assert duckdb_rows(table.metadata_location) == [(1, "eu", 1.5, 1_700_000_000_000_000),
                                                    (2, "us", 2.0, 1_700_000_000_000_001)]
    files = table.inspect.files().to_pylist()
    assert sorted(f["partition"]["region"] for f in files) == ["eu", "us"]

    docs = error_docs(tmp_path / "out")
    assert sorted(base64.b64decode(doc["rawData"]) for doc in docs) == [b"not json",
                                                                          b'{"id":"three","region":"eu"}']
    assert {doc["errorCode"] for doc in docs} == {"Iceberg.InvalidRecord", "Iceberg.TypeMismatch"}
    assert all(set(doc) >= {"attemptsMade", "arrivalTimestamp", "errorMessage", "attemptEndingTimestamp"}
               for doc in docs)


def test_a_missing_table_without_table_creation_sends_records_to_iceberg_failed(start_daemon: Any,
                                                                                tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "nope"}], create=False,
        S3BackupMode="FailedDataOnly"))
    put(client, "ice", [{"id": 1}])
    wait_until(lambda: d.idle("ice"))
    [doc] = error_docs(tmp_path / "out")
    assert doc["errorCode"] == "Iceberg.NoSuchTable"
    assert any(key.startswith("err/") and "iceberg-failed" not in key for key in read_local(tmp_path / "out"))


def test_schema_evolution_adds_new_fields_as_columns(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "t"}], evolve=True))
    put(client, "ice", [{"id": 1, "a": "x"}])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [{"id": 2, "a": "y", "b": True, "c": {"d": 4}}])
    wait_until(lambda: d.idle("ice"))
    catalog = sqlite_catalog(tmp_path / "state")
    assert rows(catalog, "shop", "t") == [{"id": 1, "a": "x", "b": None, "c": None},
                                          {"id": 2, "a": "y", "b": True, "c": {"d": 4}}]


def test_without_schema_evolution_unknown_fields_are_ignored(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "t"}]))
    put(client, "ice", [{"id": 1, "a": "x"}])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [{"id": 2, "a": "y", "b": True}])
    wait_until(lambda: d.idle("ice"))
    assert rows(sqlite_catalog(tmp_path / "state"), "shop", "t") == [{"id": 1, "a": "x"}, {"id": 2, "a": "y"}]


def test_jq_routes_records_to_two_tables_with_updates_and_deletes(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    tables = [{"DestinationDatabaseName": "shop", "DestinationTableName": t, "UniqueKeys": ["id"]}
              for t in ("orders", "refunds")]
    query = "{destinationDatabaseName: \"shop\", destinationTableName: .kind, operation: (.op // \"insert\")}"
    client.create_delivery_stream(**iceberg_stream("ice", tables, processors=[jq_router(query)]))
    put(client, "ice", [{"kind": "orders", "id": i, "v": i} for i in range(4)]
        + [{"kind": "refunds", "id": 9, "v": 9}])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [{"kind": "orders", "op": "update", "id": 1, "v": 10},
                        {"kind": "orders", "op": "update", "id": 1, "v": 11},
                        {"kind": "orders", "op": "update", "id": 7, "v": 7}])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [{"kind": "orders", "op": "delete", "id": 2}, {"kind": "orders", "op": "upsert", "id": 3}])
    wait_until(lambda: d.idle("ice"))
    catalog = sqlite_catalog(tmp_path / "state")
    assert [(r["id"], r["v"]) for r in rows(catalog, "shop", "orders")] == [(0, 0), (1, 11), (3, 3), (7, 7)]
    assert [(r["id"], r["v"]) for r in rows(catalog, "shop", "refunds")] == [(9, 9)]
    table = catalog.load_table(("shop", "orders"))
    assert [r[1:3] for r in duckdb_rows(table.metadata_location)] == [(0, 0), (1, 11), (3, 3), (7, 7)]
    [doc] = error_docs(tmp_path / "out")
    assert doc["errorCode"] == "Iceberg.RoutingFailed" and "upsert" in doc["errorMessage"]
