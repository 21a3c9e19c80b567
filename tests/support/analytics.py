"""Kinesis Analytics (SQL) applications in tests: application bodies, a recording runtime, a daemon that has it."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from firehose.analytics.errors import UnableToDetectSchemaException
from firehose.settings import load_config
from tests.support.aws import CREDS
from tests.support.config import write_config
from tests.support.daemon import RunningDaemon

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/kda"
KINESIS = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/ticks"
FIREHOSE = f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/stats"

INPUT: dict[str, Any] = {
    "NamePrefix": "SOURCE_SQL_STREAM",
    "KinesisStreamsInput": {"ResourceARN": KINESIS, "RoleARN": ROLE},
    "InputSchema": {
        "RecordFormat": {"RecordFormatType": "JSON",
                         "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "TICKER", "SqlType": "VARCHAR(4)", "Mapping": "$.TICKER"},
                          {"Name": "PRICE", "SqlType": "DOUBLE", "Mapping": "$.PRICE"}]}}
OUTPUT: dict[str, Any] = {"Name": "DESTINATION_SQL_STREAM", "DestinationSchema": {"RecordFormatType": "JSON"},
                          "KinesisFirehoseOutput": {"ResourceARN": FIREHOSE, "RoleARN": ROLE}}
REFERENCE: dict[str, Any] = {
    "TableName": "COMPANIES",
    "S3ReferenceDataSource": {"BucketARN": "arn:aws:s3:::refs", "FileKey": "companies.csv", "ReferenceRoleARN": ROLE},
    "ReferenceSchema": {
        "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {
            "CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}}},
        "RecordEncoding": "UTF-8",
        "RecordColumns": [{"Name": "TICKER", "SqlType": "VARCHAR(4)"}, {"Name": "COMPANY", "SqlType": "VARCHAR(64)"}]}}
CODE = ('CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (TICKER VARCHAR(4), AVG_PRICE DOUBLE); '
        'CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM" SELECT STREAM TICKER, AVG(PRICE) '
        'FROM "SOURCE_SQL_STREAM_001" '
        'GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL \'60\' SECOND);')


def app_body(name: str = "ticker-stats", **extra: Any) -> dict[str, Any]:
    """A CreateApplication body: one Kinesis input, one delivery stream output, the SQL of analytics.md §3."""
    return {"ApplicationName": name, "Inputs": [copy.deepcopy(INPUT)], "Outputs": [copy.deepcopy(OUTPUT)],
            "ApplicationCode": CODE, **extra}


def analytics_client(endpoint: str, **config: Any) -> Any:
    return boto3.client("kinesisanalytics", endpoint_url=endpoint,
                        config=BotoConfig(retries={"max_attempts": 1}, **config), **CREDS)


def error(exc: Any) -> tuple[str, str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


class RecordingRuntime:
    """A Runtime that only records what it is asked (the lifecycle's tests need no engine)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        #: Set: ``start`` raises it.
        self.start_error: Exception | None = None
        #: Set: ``stop`` waits for it (a stop that takes time).
        self.stop_gate: asyncio.Event | None = None

    def start(self, account: str, detail: dict[str, Any], positions: dict[str, str]) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.calls.append(("start", account, detail["ApplicationName"], dict(positions),
                           detail["ApplicationVersionId"], detail["ApplicationStatus"]))

    async def stop(self, account: str, name: str) -> None:
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        self.calls.append(("stop", account, name))

    def update(self, account: str, detail: dict[str, Any]) -> None:
        self.calls.append(("update", account, detail["ApplicationName"], detail["ApplicationVersionId"]))

    async def discover(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("discover", account))
        if (body.get("S3Configuration") or {}).get("FileKey") == "noise.bin":
            raise UnableToDetectSchemaException("Unable to determine the schema of the records.",
                                                raw=["bm9pc2U="], processed=[])
        return {"InputSchema": copy.deepcopy(INPUT["InputSchema"]), "ParsedInputRecords": [["AMZN", "12.5"]],
                "RawInputRecords": ['{"TICKER": "AMZN", "PRICE": 12.5}'], "ProcessedInputRecords": []}

    def forget(self, account: str, name: str) -> None:
        self.calls.append(("forget", account, name))

    def named(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


class AnalyticsDaemon:
    """An in-process daemon, its analytics client, its runtime (or none), and its config file (for reloads)."""

    def __init__(self, daemon: RunningDaemon, runtime: RecordingRuntime | None, path: Path,
                 settings: dict[str, Any]) -> None:
        self.daemon = daemon
        self.runtime = runtime
        self.path = path
        self.settings = settings
        self.endpoint = daemon.endpoint

    def client(self, **config: Any) -> Any:
        return analytics_client(self.endpoint, **config)

    def reload(self, applications: list[dict[str, Any]]) -> bool:
        """Write the config file again with these ``analytics_applications`` and apply it as SIGHUP does;
        whether it was applied."""
        write_config(self.path, {**self.settings, "analytics_applications": applications}, [])
        self.daemon.daemon._reread = lambda: load_config(self.path)
        return bool(self.daemon.call(self.daemon.daemon.apply_config))

    def stop(self) -> None:
        self.daemon.stop()


#: AWS's example applications, as its guide gives them (shared by the engine's tests and the end-to-end ones).
THROTTLED_ALERTS_SQL = """
CREATE OR REPLACE STREAM "CHANGE_STREAM" (ticker_symbol VARCHAR(4), sector VARCHAR(12), change DOUBLE,
                                          price DOUBLE);
CREATE OR REPLACE PUMP "change_pump" AS INSERT INTO "CHANGE_STREAM"
    SELECT STREAM ticker_symbol, sector, change, price FROM "SOURCE_SQL_STREAM_001"
    WHERE (ABS(Change / (Price - Change)) * 100) > 1;
CREATE OR REPLACE STREAM TRIGGER_COUNT_STREAM (ticker_symbol VARCHAR(4), change REAL, trigger_count INTEGER);
CREATE OR REPLACE PUMP trigger_count_pump AS INSERT INTO TRIGGER_COUNT_STREAM
    SELECT STREAM ticker_symbol, change, trigger_count FROM (
        SELECT STREAM ticker_symbol, change, COUNT(*) OVER W1 as trigger_count
        FROM "CHANGE_STREAM"
        WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '1' MINUTE PRECEDING))
    WHERE trigger_count >= 1;"""
STAGGER_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (event_time TIMESTAMP, ticker_symbol VARCHAR(4),
                                                   ticker_count INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM FLOOR(EVENT_TIME TO MINUTE), TICKER, COUNT(*) AS ticker_count
    FROM "SOURCE_SQL_STREAM_001"
    WINDOWED BY STAGGER (PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER RANGE INTERVAL '1' MINUTE);"""
TOP_K_SQL = """
CREATE OR REPLACE STREAM DESTINATION_SQL_STREAM (ITEM VARCHAR(1024), ITEM_COUNT DOUBLE);
CREATE OR REPLACE PUMP STREAM_PUMP AS INSERT INTO DESTINATION_SQL_STREAM
    SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM SOURCE_SQL_STREAM_001),
                                                    'TICKER', 2, 60));"""
REFERENCE_JOIN_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), "Company" varchar(20),
                                                   sector VARCHAR(12), change DOUBLE, price DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ticker_symbol, "c"."Company", sector, change, price
    FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" as "c"
    ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";"""
