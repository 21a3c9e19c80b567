"""Records ⇄ rows of SQL applications: JSON and CSV mapping, coercion, error rows, serialisation, discovery,
reference data. Expected values are written out by hand."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import orjson
import pytest

from firehose.analytics import rows
from firehose.analytics.sqltypes import parse_sql_type


def json_schema(columns: list[tuple[str, str, str]], row_path: str = "$") -> dict[str, Any]:
    return {"RecordFormat": {"RecordFormatType": "JSON",
                             "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": row_path}}},
            "RecordEncoding": "UTF-8",
            "RecordColumns": [{"Name": n, "SqlType": t, "Mapping": m} for n, t, m in columns]}


def csv_schema(columns: list[tuple[str, str]], row: str = "\n", column: str = ",") -> dict[str, Any]:
    return {"RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {"CSVMappingParameters": {
        "RecordRowDelimiter": row, "RecordColumnDelimiter": column}}},
        "RecordEncoding": "UTF-8", "RecordColumns": [{"Name": n, "SqlType": t} for n, t in columns]}


def mapped(records: list[bytes], schema: dict[str, Any]) -> rows.Mapped:
    return rows.map_records(records, schema, rowtimes=[1000 * (i + 1) for i in range(len(records))],
                            arrivals=[7] * len(records))


@pytest.mark.parametrize(("sql", "value", "expected"), [
    ("INTEGER", 5, 5), ("INTEGER", 5.0, 5), ("INTEGER", "12", 12), ("INTEGER", True, 1), ("INTEGER", False, 0),
    ("INTEGER", None, None), ("TINYINT", 127, 127), ("BIGINT", 2**40, 2**40),
    ("DOUBLE", 1, 1.0), ("DOUBLE", "2.5", 2.5), ("REAL", True, 1.0),
    ("VARCHAR(4)", "AMZNX", "AMZN"), ("VARCHAR(8)", 12, "12"), ("VARCHAR(8)", True, "true"),
    ("VARCHAR(5)", False, "false"), ("VARCHAR(16)", {"a": 1}, '{"a":1}'), ("CHAR(2)", "xyz", "xy"),
    ("BOOLEAN", True, True), ("BOOLEAN", "false", False), ("BOOLEAN", 0, False),
    ("DECIMAL(5,2)", 3.14159, decimal.Decimal("3.14")), ("DECIMAL(5,2)", "10", decimal.Decimal("10.00")),
    ("TIMESTAMP", "2018-06-13T14:11:05.766191", dt.datetime(2018, 6, 13, 14, 11, 5, 766000)),
    ("TIMESTAMP", "2018-06-13 14:11:05", dt.datetime(2018, 6, 13, 14, 11, 5)),
    ("TIMESTAMP", "2018-06-13T14:11:05+02:00", dt.datetime(2018, 6, 13, 12, 11, 5)),
    ("TIMESTAMP", 1000, dt.datetime(1970, 1, 1, 0, 0, 1)),
    ("DATE", "2018-06-13", dt.date(2018, 6, 13)), ("TIME", "14:11:05", dt.time(14, 11, 5)),
    ("VARBINARY(3)", "abcd", b"abc"),
])
def test_values_are_coerced_as_kinesis_data_analytics_does(sql: str, value: Any, expected: Any) -> None:
    assert rows.coerce(value, parse_sql_type(sql)) == expected


@pytest.mark.parametrize(("sql", "value"), [
    ("INTEGER", 1.5), ("INTEGER", "x"), ("TINYINT", 128), ("INTEGER", 2**31), ("DOUBLE", "abc"),
    ("DOUBLE", [1]), ("TIMESTAMP", True), ("TIMESTAMP", "yesterday"), ("DECIMAL(3,0)", 12345),
    ("BOOLEAN", "maybe"), ("TIME", 5),
])
def test_values_that_do_not_fit_are_refused(sql: str, value: Any) -> None:
    with pytest.raises(ValueError):
        rows.coerce(value, parse_sql_type(sql))


def test_json_records_map_through_paths_and_bad_rows_become_error_rows_alone() -> None:
    schema = json_schema([("TICKER", "VARCHAR(4)", "$.TICKER"), ("PRICE", "DOUBLE", "$.PRICE"),
                          ("CITY", "VARCHAR(16)", "$.where.city"), ("FIRST", "INTEGER", "$.tags[0]"),
                          ("ODD", "VARCHAR(8)", "$['odd name']")])
    good = {"TICKER": "AMZNX", "PRICE": 12, "where": {"city": "Oslo"}, "tags": [3, 4], "odd name": "x"}
    out = mapped([orjson.dumps(good), b'{"TICKER": "MSFT", "PRICE": "n/a"}', b"not json", b'{"TICKER": "T"}'],
                 schema)
    assert out.rows.column_names == ["ROWTIME", "APPROXIMATE_ARRIVAL_TIME", "TICKER", "PRICE", "CITY", "FIRST", "ODD"]
    assert out.rows.drop_columns(["ROWTIME", "APPROXIMATE_ARRIVAL_TIME"]).to_pylist() == [
        {"TICKER": "AMZN", "PRICE": 12.0, "CITY": "Oslo", "FIRST": 3, "ODD": "x"},
        {"TICKER": "T", "PRICE": None, "CITY": None, "FIRST": None, "ODD": None}]
    assert [r.timestamp() for r in out.rows.column("ROWTIME").to_pylist()] == [1.0, 4.0]
    errors = out.errors.to_pylist()
    assert [e["ERROR_NAME"] for e in errors] == ["Type_conversion_error", "Record_parse_error"]
    assert "Column PRICE (DOUBLE)" in errors[0]["MESSAGE"] and "'n/a'" in errors[0]["MESSAGE"]
    assert bytes.fromhex(errors[1]["DATA_ROW"]) == b"not json"
    assert errors[0]["DATA_ROWTIME"] == dt.datetime(1970, 1, 1, 0, 0, 2)


def test_the_fast_path_and_the_exact_path_read_the_same_rows() -> None:
    schema = json_schema([("K", "VARCHAR(3)", "$.k"), ("V", "BIGINT", "$.v"), ("T", "TIMESTAMP", "$.t")])
    docs = [{"k": f"key{i % 7}", "v": i, "t": f"2024-01-01T00:00:{i % 60:02d}"} for i in range(5000)]
    clean = mapped([orjson.dumps(d) for d in docs], schema)
    assert clean.errors.num_rows == 0
    dirty = mapped([orjson.dumps(d) for d in docs] + [b'{"k": "x", "v": 1.5}'], schema)  # the exact path
    assert dirty.errors.num_rows == 1
    assert dirty.rows.slice(0, 5000).equals(clean.rows)
    assert clean.rows.column("K").to_pylist()[:2] == ["key", "key"]  # truncated to VARCHAR(3) on both paths


def test_a_row_path_yields_several_rows_per_record_and_records_may_hold_several_documents() -> None:
    schema = json_schema([("ID", "INTEGER", "$.id")], row_path="$.events[0:]")
    out = mapped([b'{"events": [{"id": 1}, {"id": 2}]}', b'{"events": [{"id": 3}]}\n{"events": [{"id": 4}]}'],
                 schema)
    assert out.rows.column("ID").to_pylist() == [1, 2, 3, 4]
    assert [r.timestamp() for r in out.rows.column("ROWTIME").to_pylist()] == [1.0, 1.0, 2.0, 2.0]


def test_csv_records_map_columns_in_order_with_quotes_and_short_rows() -> None:
    schema = csv_schema([("A", "VARCHAR(8)"), ("B", "INTEGER"), ("C", "DOUBLE")])
    out = mapped([b'x,1,2.5\n"y,z",2,\nshort', b"bad,notanumber,1"], schema)
    assert out.rows.drop_columns(["ROWTIME", "APPROXIMATE_ARRIVAL_TIME"]).to_pylist() == [
        {"A": "x", "B": 1, "C": 2.5}, {"A": "y,z", "B": 2, "C": None}, {"A": "short", "B": None, "C": None}]
    assert out.errors.num_rows == 1 and "Column B (INTEGER)" in out.errors.column("MESSAGE")[0].as_py()
    pipes = mapped([b"1|2;3|4"], csv_schema([("P", "INTEGER"), ("Q", "INTEGER")], row=";", column="|"))
    assert pipes.rows.drop_columns(["ROWTIME", "APPROXIMATE_ARRIVAL_TIME"]).to_pylist() == [
        {"P": 1, "Q": 2}, {"P": 3, "Q": 4}]


def test_rows_serialise_as_json_objects_or_csv_lines_with_kda_timestamps() -> None:
    schema = json_schema([("TICKER", "VARCHAR(4)", "$.t"), ("AVG_PRICE", "DECIMAL(6,2)", "$.p")])
    table = mapped([b'{"t": "AMZN", "p": 10.5}', b'{"t": "a,b", "p": null}'], schema).rows
    as_json = rows.serialize_rows(table, "JSON")
    assert [json.loads(r) for r in as_json] == [
        {"ROWTIME": "1970-01-01 00:00:01.000", "APPROXIMATE_ARRIVAL_TIME": "1970-01-01 00:00:00.007",
         "TICKER": "AMZN", "AVG_PRICE": 10.5},
        {"ROWTIME": "1970-01-01 00:00:02.000", "APPROXIMATE_ARRIVAL_TIME": "1970-01-01 00:00:00.007",
         "TICKER": "a,b", "AVG_PRICE": None}]
    assert all(r.endswith(b"\n") and r.count(b"\n") == 1 for r in as_json)
    assert rows.serialize_rows(table, "CSV") == [b"1970-01-01 00:00:01.000,1970-01-01 00:00:00.007,AMZN,10.5\n",
                                                 b'1970-01-01 00:00:02.000,1970-01-01 00:00:00.007,"a,b",\n']
    assert rows.serialize_rows(table.slice(0, 0), "JSON") == []


def test_discovery_infers_the_demo_stock_streams_schema() -> None:
    samples = [orjson.dumps({"TICKER_SYMBOL": t, "SECTOR": s, "CHANGE": c, "PRICE": p})
               for t, s, c, p in [("AMZN", "TECHNOLOGY", -0.5, 84.51), ("WMT", "RETAIL", 0.25, 92.1),
                                  ("XOM", "ENERGY", 1.0, 120.2)]]
    answer = rows.discover_schema(samples)
    assert answer["InputSchema"]["RecordFormat"] == {
        "RecordFormatType": "JSON", "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}}
    assert answer["InputSchema"]["RecordColumns"] == [
        {"Name": "TICKER_SYMBOL", "SqlType": "VARCHAR(4)", "Mapping": "$.TICKER_SYMBOL"},
        {"Name": "SECTOR", "SqlType": "VARCHAR(16)", "Mapping": "$.SECTOR"},
        {"Name": "CHANGE", "SqlType": "REAL", "Mapping": "$.CHANGE"},
        {"Name": "PRICE", "SqlType": "REAL", "Mapping": "$.PRICE"}]
    assert answer["ParsedInputRecords"][0] == ["AMZN", "TECHNOLOGY", "-0.5", "84.51"]
    # The discovered schema reads the samples it came from without an error.
    assert mapped(samples, answer["InputSchema"]).errors.num_rows == 0


def test_discovery_of_nested_json_timestamps_and_csv() -> None:
    answer = rows.discover_schema([b'{"EVENT_TIME": "2018-06-13T14:11:05.766191", "n": 3, "geo": {"lat": 1.5}}',
                                   b'{"EVENT_TIME": "2018-06-13T14:11:06.000000", "n": 4, "ok": true}'])
    columns = {c["Name"]: (c["SqlType"], c["Mapping"]) for c in answer["InputSchema"]["RecordColumns"]}
    assert columns == {"EVENT_TIME": ("TIMESTAMP", "$.EVENT_TIME"), "n": ("INTEGER", "$.n"),
                       "geo_lat": ("REAL", "$.geo.lat"), "ok": ("BOOLEAN", "$.ok")}
    csv_answer = rows.discover_schema([b"a|1|2.5", b"bb|2|3.5"])
    assert csv_answer["InputSchema"]["RecordFormat"]["MappingParameters"]["CSVMappingParameters"] == {
        "RecordRowDelimiter": "\n", "RecordColumnDelimiter": "|"}
    assert [c["SqlType"] for c in csv_answer["InputSchema"]["RecordColumns"]] == ["VARCHAR(2)", "INTEGER", "REAL"]
    assert csv_answer["ParsedInputRecords"] == [["a", "1", "2.5"], ["bb", "2", "3.5"]]
    with pytest.raises(ValueError):
        rows.discover_schema([b"\xff\xfe", b"   "])


def test_reference_objects_load_as_tables_and_skip_rows_that_do_not_fit() -> None:
    schema = csv_schema([("Ticker", "VARCHAR(4)"), ("Company", "VARCHAR(32)")])
    table = rows.load_reference(b"AMZN,Amazon\nWMT,Walmart\n", schema)
    assert table.to_pylist() == [{"Ticker": "AMZN", "Company": "Amazon"}, {"Ticker": "WMT", "Company": "Walmart"}]
    typed = rows.load_reference(b'{"k": 1, "v": "a"}\n{"k": "x", "v": "b"}\n',
                                json_schema([("K", "INTEGER", "$.k"), ("V", "VARCHAR(1)", "$.v")]))
    assert typed.to_pylist() == [{"K": 1, "V": "a"}] and typed.schema.metadata == {b"skipped_rows": b"1"}


def test_schema_of_names_the_column_it_cannot_read() -> None:
    with pytest.raises(ValueError, match=r"RecordColumns\[1\] \('B'\)"):
        rows.schema_of({"RecordColumns": [{"Name": "A", "SqlType": "INTEGER"}, {"Name": "B", "SqlType": "BLOB(3)"}]},
                       "s")
