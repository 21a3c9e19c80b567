"""SQL applications end to end, as users run them: boto3's kinesisanalytics client against the daemon (a child
process, for kill -9), a Kinesis stream of the in-process sidecar as input, delivery streams writing to a local
directory as outputs. ROWTIME runs 60 times faster than the wall clock (``testing.analytics_clock_rate``), so
AWS's example applications run unchanged, with their minute-long windows, in seconds.

Answers are computed here from the records put; a window whose rows arrive in several ROWTIME windows gives
several partial rows (as AWS documents), which are combined here before comparing.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.analytics import (
    ACCOUNT,
    REFERENCE_JOIN_SQL,
    ROLE,
    STAGGER_SQL,
    THROTTLED_ALERTS_SQL,
    TOP_K_SQL,
    analytics_client,
)
from tests.support.aws import CREDS
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.delivered import read_local
from tests.support.kinesis_source import kinesis_settings
from tests.support.ports import free_port
from tests.support.waiting import wait_until

KINESIS = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{{}}"
FIREHOSE = f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{{}}"
RATE = 60  # one minute of ROWTIME per second
MINUTE_MS = 60_000

EVENTS_INPUT: dict[str, Any] = {
    "NamePrefix": "SOURCE_SQL_STREAM",
    "KinesisStreamsInput": {"ResourceARN": KINESIS.format("ticks"), "RoleARN": ROLE},
    "InputSchema": {
        "RecordFormat": {"RecordFormatType": "JSON",
                         "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "EVENT_TIME", "SqlType": "TIMESTAMP", "Mapping": "$.EVENT_TIME"},
                          {"Name": "TICKER", "SqlType": "VARCHAR(4)", "Mapping": "$.TICKER"},
                          {"Name": "PRICE", "SqlType": "REAL", "Mapping": "$.PRICE"}]}}

#: AWS's "tumbling window using an event timestamp" example, as its guide gives it (with a count added to
#: one pump, so that a lost or doubled row would show).
EVENT_TIME_CODE = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (EVENT_TIME timestamp, TICKER varchar(4), min_price REAL,
                                                   max_price REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND), TICKER,
           MIN(PRICE) AS MIN_PRICE, MAX(PRICE) AS MAX_PRICE
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND),
             STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND);
CREATE OR REPLACE STREAM "COUNT_STREAM" (EVENT_TIME timestamp, TICKER varchar(4), N INTEGER);
CREATE OR REPLACE PUMP "COUNT_PUMP" AS INSERT INTO "COUNT_STREAM"
    SELECT STREAM STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND), TICKER, COUNT(*)
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND),
             STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND);
"""


def to_firehose(stream: str, name: str, record_format: str = "JSON") -> dict[str, Any]:
    return {"Name": stream, "DestinationSchema": {"RecordFormatType": record_format},
            "KinesisFirehoseOutput": {"ResourceARN": FIREHOSE.format(name), "RoleARN": ROLE}}


class Deployment:
    """A daemon process with the sidecar (stream ``ticks``, 2 shards) and delivery streams to ``out/``."""

    def __init__(self, tmp_path: Path, outputs: tuple[str, ...],
                 streams: tuple[tuple[str, int], ...] = (("ticks", 2),), **settings: Any) -> None:
        self.tmp = tmp_path
        self.kinesis_port = free_port()
        config = write_config(tmp_path / "firehose.yaml", {
            "state_dir": str(tmp_path / "state"), "log_level": "WARNING",
            "buckets": {"local": {"directory": str(tmp_path / "out")}},
            "kinesis": kinesis_settings(self.kinesis_port, *streams),
            "analytics": {"tick_seconds": 0.1, "poll_seconds": 0.05},
            "testing": {"analytics_clock_rate": RATE}, **settings,
        }, [local_stream(name, size_mb=1, interval=1, Prefix=f"{name}/") for name in outputs])
        self.process = DaemonProcess(config, free_port(), tmp_path / "daemon.log")
        self.kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{self.kinesis_port}", **CREDS)

    def start(self) -> DaemonProcess:
        return self.process.start(timeout=30)

    @property
    def analytics(self) -> Any:
        return analytics_client(self.process.endpoint)

    def put(self, docs: list[dict[str, Any]], stream: str = "ticks") -> None:
        for i in range(0, len(docs), 500):
            resp = self.kinesis.put_records(StreamName=stream, Records=[
                {"Data": json.dumps(d).encode(), "PartitionKey": str(d.get("TICKER", d.get("TICKER_SYMBOL")))}
                for d in docs[i:i + 500]])
            assert resp["FailedRecordCount"] == 0

    def rows(self, stream: str) -> list[dict[str, Any]]:
        out = []
        for key, body in read_local(self.tmp / "out").items():
            if key.startswith(f"{stream}/"):
                out.extend(json.loads(line) for line in body.splitlines())
        return out


def events(rng: random.Random, n: int, base_ms: int) -> list[dict[str, Any]]:
    tickers = ["AMZN", "MSFT", "TBV", "INTC"]
    return [{"EVENT_TIME": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base_ms + rng.randrange(0, 180_000))
                                                                            / 1000)),
             "TICKER": rng.choice(tickers), "PRICE": round(rng.uniform(10, 90), 2)} for _ in range(n)]


def minute_of(text: str) -> str:
    return text[:16]  # "2026-12-04 10:11" or "2026-12-04T10:11"


def expected_counts(docs: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for d in docs:
        counts[(minute_of(d["EVENT_TIME"]).replace("T", " "), d["TICKER"])] += 1
    return dict(counts)


def combined_counts(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        counts[(minute_of(r["EVENT_TIME"]), r["TICKER"])] += r["N"]
    return dict(counts)


def start(client: Any, name: str, position: str) -> None:
    client.start_application(ApplicationName=name, InputConfigurations=[
        {"Id": "1.1", "InputStartingPositionConfiguration": {"InputStartingPosition": position}}])


def test_the_event_time_example_through_boto3_survives_kill_9_with_no_row_lost_or_doubled(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, ("out", "counts"))
    daemon = deployment.start()
    try:
        client = deployment.analytics
        client.create_application(ApplicationName="tumbling", Inputs=[EVENTS_INPUT], ApplicationCode=EVENT_TIME_CODE,
                                  Outputs=[to_firehose("DESTINATION_SQL_STREAM", "out"),
                                           to_firehose("COUNT_STREAM", "counts")])
        start(client, "tumbling", "TRIM_HORIZON")
        wait_until(lambda: client.describe_application(ApplicationName="tumbling")["ApplicationDetail"][
            "ApplicationStatus"] == "RUNNING", timeout=10)
        rng = random.Random(17)
        base = 1_700_000_000_000
        sent: list[dict[str, Any]] = []
        for round_ in range(6):
            batch = events(rng, 300, base)
            deployment.put(batch)
            sent.extend(batch)
            time.sleep(0.4)
            if round_ == 2:  # mid-run, windows open and outputs in flight
                daemon.kill()
                daemon = deployment.start()  # the application was RUNNING: it resumes at its last checkpoint
        expected = expected_counts(sent)
        wait_until(lambda: combined_counts(deployment.rows("counts")) == expected, timeout=45, interval=0.25)
        time.sleep(1.5)  # more windows close: nothing more may come
        assert combined_counts(deployment.rows("counts")) == expected
        assert client.describe_application(ApplicationName="tumbling")["ApplicationDetail"][
            "ApplicationStatus"] == "RUNNING"
        # The example's own rows: the min and max price per ticker and event minute, over its partial rows.
        prices: dict[tuple[str, str], list[float]] = defaultdict(list)
        for d in sent:
            prices[(minute_of(d["EVENT_TIME"]).replace("T", " "), d["TICKER"])].append(d["PRICE"])
        got: dict[tuple[str, str], tuple[float, float]] = {}
        for r in deployment.rows("out"):
            key = (minute_of(r["EVENT_TIME"]), r["TICKER"])
            low, high = got.get(key, (r["MIN_PRICE"], r["MAX_PRICE"]))
            got[key] = (min(low, r["MIN_PRICE"]), max(high, r["MAX_PRICE"]))
        assert got.keys() == prices.keys()
        for key, values in prices.items():
            assert got[key] == pytest.approx((min(values), max(values)), rel=1e-6)  # REAL: float32
    finally:
        daemon.stop()


def test_stop_and_start_at_last_stopped_point_resume_where_the_application_stopped(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, ("alerts",))
    daemon = deployment.start()
    try:
        client = deployment.analytics
        code = ('CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker VARCHAR(4), price DOUBLE);\n'
                'CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"\n'
                '  SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 50;')
        client.create_application(ApplicationName="alerts", Inputs=[EVENTS_INPUT], ApplicationCode=code,
                                  Outputs=[to_firehose("DESTINATION_SQL_STREAM", "alerts", "CSV")])
        start(client, "alerts", "TRIM_HORIZON")
        rng = random.Random(4)
        first, second, third = (events(rng, 200, 0) for _ in range(3))
        deployment.put(first)

        def expected(docs: list[dict[str, Any]]) -> list[tuple[str, float]]:
            return sorted((d["TICKER"], d["PRICE"]) for d in docs if d["PRICE"] > 50)

        def got() -> list[tuple[str, float]]:
            lines = b"".join(v for k, v in read_local(tmp_path / "out").items() if k.startswith("alerts/"))
            fields = (line.split(",") for line in lines.decode().splitlines())
            return sorted((f[1], round(float(f[2]), 2)) for f in fields)

        wait_until(lambda: got() == expected(first), timeout=20)
        client.stop_application(ApplicationName="alerts")
        wait_until(lambda: client.describe_application(ApplicationName="alerts")["ApplicationDetail"][
            "ApplicationStatus"] == "READY", timeout=10)
        deployment.put(second)  # while stopped
        start(client, "alerts", "LAST_STOPPED_POINT")
        deployment.put(third)
        wait_until(lambda: got() == expected(first + second + third), timeout=20)
        time.sleep(1.0)
        assert got() == expected(first + second + third)  # every alert once
    finally:
        daemon.stop()


def test_discover_input_schema_reads_a_stream_and_unsupported_sql_is_refused(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, ("out",))
    daemon = deployment.start()
    try:
        deployment.put([{"TICKER": "AMZN", "PRICE": 84.51, "EVENT_TIME": "2018-06-13T14:11:05.766"},
                        {"TICKER": "WMT", "PRICE": 92.25, "EVENT_TIME": "2018-06-13T14:11:06.001"}])
        client = deployment.analytics
        answer = client.discover_input_schema(
            ResourceARN=KINESIS.format("ticks"), RoleARN=ROLE,
            InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})
        columns = {c["Name"]: (c["SqlType"], c["Mapping"]) for c in answer["InputSchema"]["RecordColumns"]}
        assert columns == {"TICKER": ("VARCHAR(4)", "$.TICKER"), "PRICE": ("REAL", "$.PRICE"),
                           "EVENT_TIME": ("TIMESTAMP", "$.EVENT_TIME")}
        assert sorted(r[0] for r in answer["ParsedInputRecords"]) == ["AMZN", "WMT"]
        assert len(answer["RawInputRecords"]) == 2
        with pytest.raises(ClientError) as err:
            client.create_application(ApplicationName="forest", Inputs=[EVENTS_INPUT], ApplicationCode=(
                'CREATE OR REPLACE STREAM "D" (score DOUBLE);\n'
                'CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"\n'
                '  SELECT STREAM RANDOM_CUT_FOREST(PRICE) FROM "SOURCE_SQL_STREAM_001";'))
        assert err.value.response["Error"]["Code"] == "CodeValidationException"
        assert "RANDOM_CUT_FOREST" in err.value.response["Error"]["Message"]
        assert "line 3" in err.value.response["Error"]["Message"]
    finally:
        daemon.stop()


STOCKS_INPUT: dict[str, Any] = {
    "NamePrefix": "SOURCE_SQL_STREAM",
    "KinesisStreamsInput": {"ResourceARN": KINESIS.format("stocks"), "RoleARN": ROLE},
    "InputSchema": {
        "RecordFormat": {"RecordFormatType": "JSON",
                         "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "TICKER_SYMBOL", "SqlType": "VARCHAR(4)", "Mapping": "$.TICKER_SYMBOL"},
                          {"Name": "SECTOR", "SqlType": "VARCHAR(16)", "Mapping": "$.SECTOR"},
                          {"Name": "CHANGE", "SqlType": "REAL", "Mapping": "$.CHANGE"},
                          {"Name": "PRICE", "SqlType": "REAL", "Mapping": "$.PRICE"}]}}

#: AWS's examples (tests/support/analytics.py): throttled alerts (a sliding window over a chain of streams),
#: stagger windows, the most frequent values, and a join with reference data.
EXAMPLES = {
    "throttled": ("stocks", THROTTLED_ALERTS_SQL, "TRIGGER_COUNT_STREAM"),
    "stagger": ("ticks", STAGGER_SQL, "DESTINATION_SQL_STREAM"),
    "topk": ("ticks", TOP_K_SQL, "DESTINATION_SQL_STREAM"),
    "refjoin": ("stocks", REFERENCE_JOIN_SQL, "DESTINATION_SQL_STREAM"),
}
REFERENCE = {
    "TableName": "CompanyName",
    "S3ReferenceDataSource": {"BucketARN": "arn:aws:s3:::local", "FileKey": "refs/TickerReference.csv",
                              "ReferenceRoleARN": ROLE},
    "ReferenceSchema": {
        "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {"CSVMappingParameters": {
            "RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "Ticker", "SqlType": "VARCHAR(4)"}, {"Name": "Company", "SqlType": "VARCHAR(20)"}]}}


def test_awss_example_applications_run_unchanged_through_boto3(tmp_path: Path) -> None:
    """Each batch is one PutRecords call to a one-shard stream, read in one GetRecords: one tick, one ROWTIME.
    Batches are 1.5 s apart: 90 s of ROWTIME, so each minute-long window holds exactly one batch."""
    deployment = Deployment(tmp_path, tuple(EXAMPLES), streams=(("ticks", 1), ("stocks", 1)))
    refs = tmp_path / "out" / "refs"
    refs.mkdir(parents=True)
    (refs / "TickerReference.csv").write_text("AMZN,Amazon\nWMT,Walmart\n")
    daemon = deployment.start()
    try:
        client = deployment.analytics
        for name, (stream, code, output) in EXAMPLES.items():
            inputs = [STOCKS_INPUT if stream == "stocks" else EVENTS_INPUT]
            if name == "refjoin":  # AWS's order: the table first, then the code that joins it
                client.create_application(ApplicationName=name, Inputs=inputs, Outputs=[to_firehose(output, name)])
                client.add_application_reference_data_source(
                    ApplicationName=name, CurrentApplicationVersionId=1, ReferenceDataSource=REFERENCE)
                client.update_application(ApplicationName=name, CurrentApplicationVersionId=2,
                                          ApplicationUpdate={"ApplicationCodeUpdate": code})
            else:
                client.create_application(ApplicationName=name, Inputs=inputs, ApplicationCode=code,
                                          Outputs=[to_firehose(output, name)])
            start(client, name, "TRIM_HORIZON")
        rng = random.Random(23)
        stock_batches, event_batches = [], []
        for batch_no in range(3):
            stocks = [{"TICKER_SYMBOL": rng.choice(["AMZN", "WMT", "XOM"]), "SECTOR": "RETAIL",
                       "CHANGE": rng.choice([0.0, 0.0, 5.0]), "PRICE": 50.0} for _ in range(60)]
            minute = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS + batch_no * MINUTE_MS
            ticks = [{"EVENT_TIME": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
                (minute + rng.randrange(0, MINUTE_MS)) / 1000)), "TICKER": t, "PRICE": 1.0}
                for t in ["A"] * 30 + ["B"] * 20 + ["C"] * (5 + batch_no) + ["D"]]
            deployment.put(stocks, "stocks")
            deployment.put(ticks)
            stock_batches.append(stocks)
            event_batches.append(ticks)
            time.sleep(1.5)

        def settled(name: str, count: int) -> list[dict[str, Any]]:
            wait_until(lambda: len(deployment.rows(name)) >= count, timeout=30, interval=0.25)
            time.sleep(1.0)
            return deployment.rows(name)

        # Throttled alerts: each alert row counts its ticker's alerts in the minute before it: its own batch.
        alerts = [(r["TICKER_SYMBOL"], sum(1 for o in batch if o["TICKER_SYMBOL"] == r["TICKER_SYMBOL"]
                                           and o["CHANGE"] == 5.0))
                  for batch in stock_batches for r in batch if r["CHANGE"] == 5.0]
        got = settled("throttled", len(alerts))
        assert sorted((r["TICKER_SYMBOL"], r["TRIGGER_COUNT"]) for r in got) == sorted(alerts)
        # Stagger: one row per (event minute, ticker) window; counts add up to the records of each.
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for batch in event_batches:
            for r in batch:
                counts[(minute_of(r["EVENT_TIME"]).replace("T", " "), r["TICKER"])] += 1
        got = settled("stagger", len(counts))
        summed: dict[tuple[str, str], int] = defaultdict(int)
        for r in got:
            summed[(minute_of(r["EVENT_TIME"]), r["TICKER_SYMBOL"])] += r["TICKER_COUNT"]
        assert summed == counts
        # Top-K: A and B, with their counts, in each window (one batch each).
        got = settled("topk", 6)
        assert [(r["ITEM"], r["ITEM_COUNT"]) for r in sorted(got, key=lambda r: (r["ROWTIME"], -r["ITEM_COUNT"]))] \
            == [("A", 30.0), ("B", 20.0)] * 3
        # Reference data: every row with its company, or none.
        companies = {"AMZN": "Amazon", "WMT": "Walmart"}
        got = settled("refjoin", 180)
        assert sorted((r["TICKER_SYMBOL"], r["Company"]) for r in got) == sorted(
            (r["TICKER_SYMBOL"], companies.get(r["TICKER_SYMBOL"])) for batch in stock_batches for r in batch)
    finally:
        daemon.stop()


PREPROCESSOR = '''
import base64, json

def lambda_handler(event, context):
    out = []
    for r in event["records"]:
        assert r["kinesisFirehoseRecordMetadata"]["approximateArrivalTimestamp"] and event["applicationArn"]
        doc = json.loads(base64.b64decode(r["data"]))
        if doc.get("drop"):
            out.append({"recordId": r["recordId"], "result": "Dropped"})
        else:
            doc["PRICE"] = doc["PRICE"] * 2
            out.append({"recordId": r["recordId"], "result": "Ok",
                        "data": base64.b64encode(json.dumps(doc).encode()).decode()})
    return {"records": out}
'''
DELIVERY = '''
import base64, json

def lambda_handler(event, context):
    with open({path!r}, "a") as f:
        for r in event["records"]:
            f.write(base64.b64decode(r["data"]).decode())
    return {{"records": [{{"recordId": r["recordId"], "result": "Ok"}} for r in event["records"]]}}
'''


def test_a_delivery_stream_input_with_a_preprocessor_to_kinesis_and_lambda_outputs(tmp_path: Path) -> None:
    """The real engine between every kind of input and output: records put into a delivery stream, a Lambda
    preprocessor, rows out to a Kinesis stream and a Lambda function, a bad record to error_stream."""
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "double.py").write_text(PREPROCESSOR)
    lambda_file = tmp_path / "lambda-rows.jsonl"
    (functions / "collect.py").write_text(DELIVERY.format(path=str(lambda_file)))
    deployment = Deployment(tmp_path, ("in", "errs"), streams=(("alerts", 1),), transforms_dir=str(functions))
    daemon = deployment.start()
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{{}}"
    try:
        client = deployment.analytics
        inp = {**EVENTS_INPUT, "KinesisFirehoseInput": {"ResourceARN": FIREHOSE.format("in"), "RoleARN": ROLE},
               "InputProcessingConfiguration": {"InputLambdaProcessor": {"ResourceARN": fn.format("double"),
                                                                         "RoleARN": ROLE}}}
        del inp["KinesisStreamsInput"]
        code = ('CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker VARCHAR(4), price DOUBLE);\n'
                'CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"\n'
                '  SELECT STREAM TICKER, PRICE FROM "SOURCE_SQL_STREAM_001" WHERE PRICE > 100;')
        client.create_application(ApplicationName="mixed", Inputs=[inp], ApplicationCode=code, Outputs=[
            {"Name": "DESTINATION_SQL_STREAM", "DestinationSchema": {"RecordFormatType": "JSON"},
             "KinesisStreamsOutput": {"ResourceARN": KINESIS.format("alerts"), "RoleARN": ROLE}},
            {"Name": "DESTINATION_SQL_STREAM", "DestinationSchema": {"RecordFormatType": "CSV"},
             "LambdaOutput": {"ResourceARN": fn.format("collect"), "RoleARN": ROLE}},
            to_firehose("error_stream", "errs")])
        start(client, "mixed", "NOW")
        rng = random.Random(31)
        docs = [{"EVENT_TIME": "2024-01-01T00:00:00", "TICKER": rng.choice(["AMZN", "WMT"]),
                 "PRICE": round(rng.uniform(10, 90), 2)} for _ in range(100)]
        records = [json.dumps(d).encode() for d in docs] + [json.dumps({"drop": True, "TICKER": "X", "PRICE": 99}
                                                                       ).encode(), b'{"PRICE": "not a number"}']
        firehose = boto3.client("firehose", endpoint_url=daemon.endpoint, **CREDS)
        assert firehose.put_record_batch(DeliveryStreamName="in", Records=[{"Data": r} for r in records])[
            "FailedPutCount"] == 0
        expected = sorted((d["TICKER"], round(d["PRICE"] * 2, 2)) for d in docs if d["PRICE"] * 2 > 100)

        def from_kinesis() -> list[tuple[str, float]]:
            shard = deployment.kinesis.list_shards(StreamName="alerts")["Shards"][0]["ShardId"]
            iterator = deployment.kinesis.get_shard_iterator(StreamName="alerts", ShardId=shard,
                                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            got = deployment.kinesis.get_records(ShardIterator=iterator)["Records"]
            return sorted((json.loads(r["Data"])["TICKER"], round(json.loads(r["Data"])["PRICE"], 2)) for r in got)

        def from_lambda() -> list[tuple[str, float]]:
            lines = lambda_file.read_text().splitlines() if lambda_file.exists() else []
            return sorted((f[1], round(float(f[2]), 2)) for f in (line.split(",") for line in lines))

        wait_until(lambda: from_kinesis() == expected and from_lambda() == expected, timeout=30, interval=0.25)
        wait_until(lambda: deployment.rows("errs"), timeout=20)
        [error] = deployment.rows("errs")
        assert error["ERROR_NAME"] == "Type_conversion_error" and "PRICE" in error["MESSAGE"]
        # the record as the preprocessor returned it (it doubled the price: a string, twice)
        assert bytes.fromhex(error["DATA_ROW"]) == b'{"PRICE": "not a numbernot a number"}'
    finally:
        daemon.stop()


def test_discover_input_schema_reads_a_csv_object(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, ("out",))
    (tmp_path / "out" / "samples").mkdir(parents=True)
    (tmp_path / "out" / "samples" / "ticks.csv").write_text("AMZN,TECHNOLOGY,-0.5,84.51\nWMT,RETAIL,0.25,92.1\n")
    daemon = deployment.start()
    try:
        answer = deployment.analytics.discover_input_schema(S3Configuration={
            "RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local", "FileKey": "samples/ticks.csv"})
        assert answer["InputSchema"]["RecordFormat"]["RecordFormatType"] == "CSV"
        assert [(c["Name"], c["SqlType"]) for c in answer["InputSchema"]["RecordColumns"]] == [
            ("COL1", "VARCHAR(4)"), ("COL2", "VARCHAR(16)"), ("COL3", "REAL"), ("COL4", "REAL")]
        assert answer["ParsedInputRecords"] == [["AMZN", "TECHNOLOGY", "-0.5", "84.51"],
                                                ["WMT", "RETAIL", "0.25", "92.1"]]
    finally:
        daemon.stop()


def test_reference_data_from_an_s3_object_is_joined_and_reloaded_by_update(tmp_path: Path, moto_server: Any) -> None:
    s3 = moto_server.client()
    s3.create_bucket(Bucket="refs")
    s3.put_object(Bucket="refs", Key="TickerReference.csv", Body=b"AMZN,Amazon\n")
    deployment = Deployment(tmp_path, ("refjoin",), streams=(("stocks", 1),),
                            s3={"endpoint_url": moto_server.endpoint})
    daemon = deployment.start()
    try:
        client = deployment.analytics
        client.create_application(ApplicationName="refjoin", Inputs=[STOCKS_INPUT],
                                  Outputs=[to_firehose("DESTINATION_SQL_STREAM", "refjoin")])
        reference = {**REFERENCE, "S3ReferenceDataSource": {**REFERENCE["S3ReferenceDataSource"],
                                                            "BucketARN": "arn:aws:s3:::refs",
                                                            "FileKey": "TickerReference.csv"}}
        client.add_application_reference_data_source(ApplicationName="refjoin", CurrentApplicationVersionId=1,
                                                      ReferenceDataSource=reference)
        client.update_application(ApplicationName="refjoin", CurrentApplicationVersionId=2,
                                  ApplicationUpdate={"ApplicationCodeUpdate": EXAMPLES["refjoin"][1]})
        start(client, "refjoin", "NOW")
        row = {"TICKER_SYMBOL": "AMZN", "SECTOR": "RETAIL", "CHANGE": 0.0, "PRICE": 1.0}
        deployment.put([row, {**row, "TICKER_SYMBOL": "WMT"}], "stocks")
        wait_until(lambda: len(deployment.rows("refjoin")) == 2, timeout=20)
        assert sorted((r["TICKER_SYMBOL"], r["Company"]) for r in deployment.rows("refjoin")) == [
            ("AMZN", "Amazon"), ("WMT", None)]
        # A reference is reloaded only by UpdateApplication, as AWS does.
        s3.put_object(Bucket="refs", Key="TickerReference.csv", Body=b"AMZN,Amazon\nWMT,Walmart\n")
        detail = client.describe_application(ApplicationName="refjoin")["ApplicationDetail"]
        ref_id = detail["ReferenceDataSourceDescriptions"][0]["ReferenceId"]
        client.update_application(ApplicationName="refjoin", CurrentApplicationVersionId=detail[
            "ApplicationVersionId"], ApplicationUpdate={"ReferenceDataSourceUpdates": [{
                "ReferenceId": ref_id, "S3ReferenceDataSourceUpdate": {"FileKeyUpdate": "TickerReference.csv"}}]})
        time.sleep(0.5)
        deployment.put([{**row, "TICKER_SYMBOL": "WMT"}], "stocks")
        wait_until(lambda: len(deployment.rows("refjoin")) == 3, timeout=20)
        assert ("WMT", "Walmart") in {(r["TICKER_SYMBOL"], r["Company"]) for r in deployment.rows("refjoin")}
    finally:
        daemon.stop()
