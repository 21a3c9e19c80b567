"""The Iceberg destination end to end: streams created with boto3, records put, tables read back with
pyiceberg and DuckDB's Iceberg reader."""

from __future__ import annotations

import base64
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config import write_config
from tests.support.delivered import list_objects, read_local
from tests.support.iceberg import duckdb_rows, error_docs, iceberg_stream, jq_router, put, rows, sqlite_catalog
from tests.support.killcycles import Acknowledged, Ids, Load, Tally, firehose_putter, kill_cycle
from tests.support.transforms import write_function
from tests.support.waiting import wait_until


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


def test_lambda_otf_metadata_routes_records_and_wins_over_jq(start_daemon: Any, tmp_path: Path) -> None:
    fn_dir = tmp_path / "fns"
    write_function(fn_dir, "route", """
        import base64, json

        def lambda_handler(event, context):
            out = []
            for r in event["records"]:
                doc = json.loads(base64.b64decode(r["data"]))
                meta = {"destinationDatabaseName": "iot", "destinationTableName": doc["device"],
                        "operation": doc.get("op", "insert")}
                out.append({"recordId": r["recordId"], "result": "Ok", "data": r["data"],
                            "metadata": {"otfMetadata": meta}})
            return {"records": out}
    """)
    d = start_daemon(transforms_dir=str(fn_dir))
    client = d.client()
    tables = [{"DestinationDatabaseName": "iot", "DestinationTableName": t, "UniqueKeys": ["id"]}
              for t in ("a", "b")]
    lambda_step = {"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:route"},
        {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}
    # jq says every record goes to iot.ignored: the transform's metadata wins.
    jq_step = jq_router('{destinationDatabaseName: "iot", destinationTableName: "ignored"}')
    client.create_delivery_stream(**iceberg_stream("ice", tables, processors=[lambda_step, jq_step]))
    put(client, "ice", [{"device": "a", "id": 1, "t": 20.5}, {"device": "b", "id": 2, "t": 21.0},
                        {"device": "a", "id": 3, "t": 19.0}])
    wait_until(lambda: d.idle("ice"), timeout=30)
    put(client, "ice", [{"device": "a", "id": 1, "op": "delete"}])
    wait_until(lambda: d.idle("ice"), timeout=30)
    catalog = sqlite_catalog(tmp_path / "state")
    assert [(r["id"], r["t"]) for r in rows(catalog, "iot", "a")] == [(3, 19.0)]
    assert [(r["id"], r["t"]) for r in rows(catalog, "iot", "b")] == [(2, 21.0)]
    assert not catalog.table_exists(("iot", "ignored"))


def test_definitions_the_destination_cannot_route_are_refused(start_daemon: Any) -> None:
    d = start_daemon()
    client = d.client()
    tables = [{"DestinationDatabaseName": "shop", "DestinationTableName": t} for t in ("a", "b")]
    with pytest.raises(ClientError) as err:
        client.create_delivery_stream(**iceberg_stream("ice", tables))
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "routing" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        client.create_delivery_stream(**iceberg_stream("ice", tables[:1], processors=[jq_router("{")]))
    assert "jq" in err.value.response["Error"]["Message"]


def test_append_only_is_fixed_at_creation_and_other_members_update(start_daemon: Any) -> None:
    d = start_daemon()
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "a"}], AppendOnly=True))

    def describe() -> dict[str, Any]:
        desc = client.describe_delivery_stream(DeliveryStreamName="ice")["DeliveryStreamDescription"]
        return desc  # type: ignore[no-any-return]

    version = describe()["VersionId"]
    with pytest.raises(ClientError) as err:
        client.update_destination(DeliveryStreamName="ice", CurrentDeliveryStreamVersionId=version,
                                  DestinationId="destinationId-000000000001",
                                  IcebergDestinationUpdate={"AppendOnly": False})
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
    client.update_destination(DeliveryStreamName="ice", CurrentDeliveryStreamVersionId=version,
                              DestinationId="destinationId-000000000001",
                              IcebergDestinationUpdate={"RetryOptions": {"DurationInSeconds": 60},
                                                        "S3BackupMode": "AllData"})
    dest = describe()["Destinations"][0]["IcebergDestinationDescription"]
    assert dest["RetryOptions"] == {"DurationInSeconds": 60}
    assert dest["S3BackupMode"] == "AllData" and dest["AppendOnly"] is True
    assert dest["DestinationTableConfigurationList"] == [{"DestinationDatabaseName": "shop",
                                                          "DestinationTableName": "a"}]


def test_all_data_backs_up_every_record(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon()
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "a"}], S3BackupMode="AllData"))
    put(client, "ice", [{"id": 1}, {"id": 2}])
    wait_until(lambda: d.idle("ice"))
    # The records as they came, back to back, under the S3Configuration's prefix (as for the other
    # record destinations).
    backed_up = [body for key, body in read_local(tmp_path / "out").items() if not key.startswith("err/")]
    assert backed_up == [b'{"id":1}{"id":2}']
    assert [r["id"] for r in rows(sqlite_catalog(tmp_path / "state"), "shop", "a")] == [1, 2]


def test_the_catalog_on_postgresql(start_daemon: Any, tmp_path: Path, postgres_server: Any) -> None:
    db = postgres_server.create_database("iceberg_catalog")
    pg = postgres_server
    uri = f"postgresql+psycopg://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{db}"
    arn = "arn:aws:glue:us-east-1:123456789012:catalog"
    d = start_daemon(catalogs={arn: {"type": "sql", "uri": uri, "warehouse": (tmp_path / "wh").as_uri()}})
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "a", "UniqueKeys": ["id"]}]))
    put(client, "ice", [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}])
    wait_until(lambda: d.idle("ice"))
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("default", uri=uri, warehouse=(tmp_path / "wh").as_uri())
    assert rows(catalog, "shop", "a") == [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]
    with pg.connect(db) as conn:
        assert conn.execute("SELECT table_namespace, table_name FROM iceberg_tables").fetchall() == [("shop", "a")]
    assert not (tmp_path / "state" / "iceberg").exists()  # the default SQLite catalog was not used


def test_kill_9_during_commits_leaves_every_acknowledged_record_in_the_table_once(
        tmp_path: Path, daemon_process: Any) -> None:
    stream = iceberg_stream("crash", [{"DestinationDatabaseName": "shop", "DestinationTableName": "t"}],
                            interval=1)
    stream["IcebergDestinationConfiguration"]["BufferingHints"] = {"SizeInMBs": 1, "IntervalInSeconds": 0}
    config = write_config(tmp_path / "crash.yaml", {
        "state_dir": str(tmp_path / "state"), "log_level": "WARNING", "delivery": {"max_inflight_batches": 2},
        "buckets": {"local": {"directory": str(tmp_path / "out")}}}, [stream])
    rng = random.Random(20261204)
    ids, acked = Ids(), Acknowledged()
    daemon = daemon_process(config)
    put_records = firehose_putter(daemon.endpoint)
    for _ in range(3):
        kill_cycle(daemon, lambda: [Load(put_records, ["crash"], ids, acked, seed=rng.randrange(2**32))], rng,
                   (0.5, 2.0))
    daemon.start()
    wait_until(lambda: daemon.idle("crash"), timeout=60)
    assert daemon.terminate() == 0

    table = sqlite_catalog(tmp_path / "state").load_table(("shop", "t"))
    seen = Counter(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())
    tally = Tally.of(acked.ids["crash"], seen)
    assert tally.acknowledged > 300, "the load was too light to mean anything"
    assert not tally.lost, f"{len(tally.lost)} acknowledged records lost, e.g. {tally.lost[:5]}"
    assert tally.duplicated == 0, f"{tally.duplicated} records committed more than once"
    # Each append names the batches it holds (several when they queued for the table together).
    batch_ids = [i for s in table.snapshots() if s.summary is not None and s.summary.operation.value == "append"
                 for i in s.summary.additional_properties["firehose.batch-id"].split(",")]
    assert len(batch_ids) == len(set(batch_ids)) > 3  # every batch committed, none twice
    assert not error_docs(tmp_path / "out")


def test_a_warehouse_in_s3(start_daemon: Any, tmp_path: Path, moto_server: Any, bucket: str) -> None:
    s3 = {"s3.endpoint": moto_server.endpoint, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
          "s3.region": "us-east-1"}
    home = tmp_path / "catalog"
    home.mkdir()
    entry = {"type": "sql", "uri": f"sqlite:///{home / 'catalog.db'}", "warehouse": f"s3://{bucket}/wh",
             "properties": s3}
    d = start_daemon(catalogs={"default": entry})
    client = d.client()
    client.create_delivery_stream(**iceberg_stream(
        "ice", [{"DestinationDatabaseName": "shop", "DestinationTableName": "a"}]))
    put(client, "ice", [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}])
    wait_until(lambda: d.idle("ice"))
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("default", uri=f"sqlite:///{home / 'catalog.db'}", warehouse=f"s3://{bucket}/wh", **s3)
    assert rows(catalog, "shop", "a") == [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]
    keys = list_objects(moto_server.client(), bucket)
    assert any(k.startswith("wh/shop") and k.endswith(".parquet") for k in keys), keys
    assert any(k.endswith(".metadata.json") for k in keys)


def test_a_tables_own_error_prefix_takes_its_records_that_do_not_fit(start_daemon: Any, tmp_path: Path) -> None:
    """``S3ErrorOutputPrefix`` of a DestinationTableConfigurationList entry overrides the S3Configuration's
    ErrorOutputPrefix for that table's records (spec: iceberg.md); other tables keep the stream's."""
    d = start_daemon()
    client = d.client()
    tables = [{"DestinationDatabaseName": "shop", "DestinationTableName": "orders", "UniqueKeys": ["id"],
               "S3ErrorOutputPrefix": "orders-errors/!{firehose:error-output-type}/"},
              {"DestinationDatabaseName": "shop", "DestinationTableName": "refunds", "UniqueKeys": ["id"]}]
    query = "{destinationDatabaseName: \"shop\", destinationTableName: .kind}"
    client.create_delivery_stream(**iceberg_stream("ice", tables, processors=[jq_router(query)]))
    put(client, "ice", [{"kind": "orders", "id": 1}, {"kind": "refunds", "id": 2}])
    wait_until(lambda: d.idle("ice"))
    put(client, "ice", [{"kind": "orders", "id": "not a number"}, {"kind": "refunds", "id": "nor this"}])
    wait_until(lambda: d.idle("ice"))
    objects = read_local(tmp_path / "out")
    orders = [key for key in objects if key.startswith("orders-errors/iceberg-failed/")]
    refunds = [key for key in objects if key.startswith("err/")]
    assert len(orders) == 1 and len(refunds) == 1, sorted(objects)
    assert b"not a number" in base64.b64decode(orjson.loads(objects[orders[0]].splitlines()[0])["rawData"])
    assert [doc["errorCode"] for doc in error_docs(tmp_path / "out")] == ["Iceberg.TypeMismatch"]
    # DeliveryToIceberg.IncomingRowCount / SuccessfulRowCount / FailedRowCount
    samples = {s.name: s.value for family in text_string_to_metric_families(httpx.get(f"{d.endpoint}/metrics").text)
               for s in family.samples if s.labels.get("delivery_stream") == "ice"}
    assert samples["firehose_delivery_to_iceberg_incoming_rows_total"] == 4
    assert samples["firehose_delivery_to_iceberg_successful_rows_total"] == 2
    assert samples["firehose_delivery_to_iceberg_failed_rows_total"] == 2
