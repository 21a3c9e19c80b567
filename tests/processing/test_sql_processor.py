"""The SQL processor (``Type: SQL``, config files only): one SELECT over each buffer, in a sandboxed DuckDB."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from firehose.processing.sql import SqlStep, check_query
from tests.support.config import local_stream
from tests.support.delivered import read_local
from tests.support.waiting import wait_until


def rows(step: SqlStep, *docs: Any) -> list[Any]:
    return [json.loads(r) for r in step.run([json.dumps(d).encode() for d in docs]).records]


def test_filters_projections_and_enrichment() -> None:
    step = SqlStep("SELECT user_id, upper(country) AS country, amount * 100 AS cents FROM records WHERE amount > 0")
    assert sorted(rows(step, {"user_id": 1, "country": "no", "amount": 2.5},
                       {"user_id": 2, "country": "se", "amount": -1},
                       {"user_id": 3, "country": "dk", "amount": 1, "extra": True}), key=lambda r: r["user_id"]) == [
        {"user_id": 1, "country": "NO", "cents": 250.0}, {"user_id": 3, "country": "DK", "cents": 100.0}]
    enrich = SqlStep("SELECT r.id, CASE WHEN r.n > 10 THEN 'big' ELSE 'small' END AS size, c.name "
                     "FROM records r LEFT JOIN (VALUES ('a', 'Alpha'), ('b', 'Beta')) AS c(code, name) "
                     "ON r.code = c.code ORDER BY r.id")
    assert rows(enrich, {"id": 1, "n": 50, "code": "a"}, {"id": 2, "n": 1, "code": "z"}) == [
        {"id": 1, "size": "big", "name": "Alpha"}, {"id": 2, "size": "small", "name": None}]
    counts = SqlStep("SELECT kind, count(*) AS n FROM records GROUP BY kind ORDER BY kind")
    assert rows(counts, {"kind": "x"}, {"kind": "y"}, {"kind": "x"}) == [{"kind": "x", "n": 2}, {"kind": "y", "n": 1}]


def test_records_that_are_not_json_objects_fail_alone_and_a_failing_query_raises() -> None:
    step = SqlStep("SELECT id FROM records")
    out = step.run([b'{"id": 1}', b"not json", b"[1, 2]", b'{"id": 2}'])
    assert sorted(json.loads(r)["id"] for r in out.records) == [1, 2]
    assert [i for i, _ in out.failed] == [1, 2]
    assert "not JSON" in out.failed[0][1] and "not a JSON object" in out.failed[1][1]
    with pytest.raises(ValueError, match="missing"):  # a member no record of the buffer has
        SqlStep("SELECT missing FROM records").run([b'{"id": 1}'])
    mixed = SqlStep("SELECT v FROM records").run([b'{"v": 1}', b'{"v": "two"}'])  # disagreeing types: JSON
    assert sorted(r.decode() for r in mixed.records) == ['{"v":"two"}', '{"v":1}']


@pytest.mark.parametrize(("query", "reason"), [
    ("", "Query is required"),
    ("DELETE FROM records", "must be a SELECT"),
    ("CREATE TABLE x AS SELECT 1", "must be a SELECT"),
    ("COPY records TO 'out.csv'", "must be a SELECT"),
    ("ATTACH 'other.db'", "must be a SELECT"),
    ("SELECT 1; SELECT 2", "one statement"),
])
def test_statements_other_than_one_query_are_refused(query: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_query(query)


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM 'data.parquet'",
])
def test_a_query_cannot_reach_files(query: str) -> None:
    with pytest.raises(ValueError, match="[Pp]ermission|access"):
        SqlStep(query).run([b'{"id": 1}'])


def sql_processor(query: str) -> dict[str, Any]:
    return {"Enabled": True, "Processors": [
        {"Type": "SQL", "Parameters": [{"ParameterName": "Query", "ParameterValue": query},
                                       {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]},
        {"Type": "AppendDelimiterToRecord"}]}


def test_a_config_file_stream_runs_its_query_and_sends_bad_records_to_the_error_output(
        start_daemon: Any, tmp_path: Path) -> None:
    stream = local_stream("orders", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          ProcessingConfiguration=sql_processor(
                              "SELECT id, upper(country) AS country FROM records WHERE amount > 0"))
    daemon = start_daemon([stream])
    records = [json.dumps({"id": i, "country": "no", "amount": i % 3}).encode() for i in range(30)] + [b"oops"]
    resp = daemon.client().put_record_batch(DeliveryStreamName="orders", Records=[{"Data": r} for r in records])
    assert resp["FailedPutCount"] == 0
    wait_until(lambda: daemon.idle("orders"), timeout=30)
    delivered, errors = [], []
    for key, body in read_local(tmp_path / "out").items():
        (errors if key.startswith("errors/") else delivered).extend(body.splitlines())
    assert sorted(json.loads(line)["id"] for line in delivered) == [i for i in range(30) if i % 3]
    assert all(json.loads(line)["country"] == "NO" for line in delivered)
    [doc] = [json.loads(line) for line in errors]
    assert base64.b64decode(doc["rawData"]) == b"oops" and doc["errorCode"] == "SQL.RecordNotJSON"


def test_the_api_refuses_the_sql_processor_as_aws_does(start_daemon: Any) -> None:
    daemon = start_daemon([])
    with pytest.raises(ClientError) as err:
        daemon.client().create_delivery_stream(**local_stream(
            "s", ProcessingConfiguration=sql_processor("SELECT * FROM records")))
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
