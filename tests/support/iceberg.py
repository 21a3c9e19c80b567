"""Reading Iceberg tables back: with pyiceberg (through the daemon's catalog) and with DuckDB's Iceberg
reader, an engine that shares no code with the writer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

from tests.support.aws import ROLE
from tests.support.delivered import read_local

BUCKET_ARN = "arn:aws:s3:::local"


def sqlite_catalog(state_dir: Path) -> Any:
    """The daemon's default catalog (SQLite in the state directory)."""
    from pyiceberg.catalog.sql import SqlCatalog

    home = state_dir.resolve() / "iceberg"
    return SqlCatalog("default", uri=f"sqlite:///{home / 'catalog.db'}", warehouse=(home / "warehouse").as_uri())


def rows(catalog: Any, database: str, table: str, key: str = "id") -> list[dict[str, Any]]:
    """Every row of a table (pyiceberg scan), sorted by ``key``."""
    t = catalog.load_table((database, table))
    return sorted(t.scan().to_arrow().to_pylist(), key=lambda r: r[key])


def duckdb_rows(metadata_location: str, order_by: str = "id") -> list[tuple[Any, ...]]:
    """Every row of the table at ``metadata_location``, read by DuckDB's iceberg_scan."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    con = duckdb.connect()
    for module, name in ((duckdb_extension_avro, "avro"), (duckdb_extension_iceberg, "iceberg")):
        path = Path(os.path.dirname(module.__file__ or "")) / "extensions" / f"v{duckdb.__version__}"
        con.execute(f"LOAD '{path / (name + '.duckdb_extension')}'")
    return con.execute(f"SELECT * FROM iceberg_scan('{metadata_location}') ORDER BY {order_by}").fetchall()


def iceberg_stream(name: str, tables: list[dict[str, Any]], *, interval: int = 0, create: bool = True,
                   evolve: bool = False, processors: list[dict[str, Any]] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """A CreateDeliveryStream body for an Iceberg destination whose errors go to the ``local`` bucket."""
    dest: dict[str, Any] = {
        "RoleARN": ROLE,
        "CatalogConfiguration": {"CatalogARN": "arn:aws:glue:us-east-1:123456789012:catalog"},
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": BUCKET_ARN, "ErrorOutputPrefix": "err/",
                            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": interval}},
        "DestinationTableConfigurationList": tables,
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": interval},
        "TableCreationConfiguration": {"Enabled": create},
        "SchemaEvolutionConfiguration": {"Enabled": evolve},
        **extra,
    }
    if processors:
        dest["ProcessingConfiguration"] = {"Enabled": True, "Processors": processors}
    return {"DeliveryStreamName": name, "IcebergDestinationConfiguration": dest}


def jq_router(query: str) -> dict[str, Any]:
    return {"Type": "MetadataExtraction", "Parameters": [
        {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
        {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}


def put(client: Any, stream: str, records: list[Any]) -> None:
    """PutRecordBatch: each record as JSON (bytes as they are); every record must be accepted."""
    data = [{"Data": r if isinstance(r, bytes) else orjson.dumps(r)} for r in records]
    answer = client.put_record_batch(DeliveryStreamName=stream, Records=data)
    assert answer["FailedPutCount"] == 0


def error_docs(root: Path) -> list[dict[str, Any]]:
    """The error output's documents under ``err/`` of the local bucket at ``root``."""
    return [json.loads(line) for key, body in read_local(root).items() if key.startswith("err/")
            for line in body.splitlines()]
