"""transforms/cloudwatch_logs.py unpacks real gzip subscription envelopes into lines, one record at a time.

The envelopes are shaped like the examples in the CloudWatch Logs subscription documentation and are
really gzip-compressed, so the decoding path is the one Lambda runs.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from tests.support.transforms import load

cloudwatch_logs = load("cloudwatch_logs")

ROOT_LOGIN = '{"eventVersion":"1.03","eventName":"ConsoleLogin","userIdentity":{"type":"Root"}}'
STACK_TRACE = "Traceback (most recent call last):\n  File \"app.py\", line 1\nZeroDivisionError"
DATA_MESSAGE = {
    "messageType": "DATA_MESSAGE",
    "owner": "111111111111",
    "logGroup": "CloudTrail/logs",
    "logStream": "111111111111_CloudTrail/logs_us-east-1",
    "subscriptionFilters": ["Destination"],
    "logEvents": [
        {"id": "31953106606966983378809025079804211143289615424298221568", "timestamp": 1432826855000,
         "message": ROOT_LOGIN},
        {"id": "31953106606966983378809025079804211143289615424298221569", "timestamp": 1432826855001,
         "message": STACK_TRACE},
    ],
}
CONTROL_MESSAGE = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [{"id": "", "timestamp": 1432826855000,
                   "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}],
}


@pytest.fixture(autouse=True)
def default_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CWL_OUTPUT", raising=False)


def gzipped(envelope: Any) -> str:
    return base64.b64encode(gzip.compress(json.dumps(envelope).encode())).decode()


def event(*datas: str) -> dict[str, Any]:
    return {
        "invocationId": "inv-cwl",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:111111111111:deliverystream/cwl",
        "region": "us-east-1",
        "records": [{"recordId": f"id-{i}", "approximateArrivalTimestamp": 1432826856000, "data": data}
                    for i, data in enumerate(datas)],
    }


def decoded(record: dict[str, Any]) -> str:
    return base64.b64decode(record["data"]).decode()


def test_data_message_becomes_one_line_per_log_event() -> None:
    [record] = cloudwatch_logs.lambda_handler(event(gzipped(DATA_MESSAGE)), None)["records"]
    assert record["recordId"] == "id-0"
    assert record["result"] == "Ok"
    assert decoded(record) == ROOT_LOGIN + "\n" + STACK_TRACE + "\n"
    assert "metadata" not in record


def test_json_output_keeps_the_source_of_each_event_and_one_event_per_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CWL_OUTPUT", "json")
    [record] = cloudwatch_logs.lambda_handler(event(gzipped(DATA_MESSAGE)), None)["records"]
    assert record["result"] == "Ok"
    text = decoded(record)
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    source = {"owner": "111111111111", "logGroup": "CloudTrail/logs",
              "logStream": "111111111111_CloudTrail/logs_us-east-1"}
    assert lines == [
        {**source, "id": "31953106606966983378809025079804211143289615424298221568",
         "timestamp": 1432826855000, "message": ROOT_LOGIN},
        {**source, "id": "31953106606966983378809025079804211143289615424298221569",
         "timestamp": 1432826855001, "message": STACK_TRACE},
    ]


def test_output_mode_is_read_at_each_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    first = cloudwatch_logs.lambda_handler(event(gzipped(DATA_MESSAGE)), None)["records"][0]
    monkeypatch.setenv("CWL_OUTPUT", "json")
    second = cloudwatch_logs.lambda_handler(event(gzipped(DATA_MESSAGE)), None)["records"][0]
    assert decoded(first).startswith(ROOT_LOGIN)
    assert json.loads(decoded(second).splitlines()[0])["message"] == ROOT_LOGIN


def test_control_message_and_empty_data_message_are_dropped() -> None:
    empty = {**DATA_MESSAGE, "logEvents": []}
    records = cloudwatch_logs.lambda_handler(event(gzipped(CONTROL_MESSAGE), gzipped(empty)), None)["records"]
    assert [(r["recordId"], r["result"], r["data"]) for r in records] == [
        ("id-0", "Dropped", ""), ("id-1", "Dropped", "")]


def test_each_bad_record_fails_alone_with_its_original_data() -> None:
    compressed = gzip.compress(json.dumps(DATA_MESSAGE).encode())
    event_without_message = {"id": "1", "timestamp": 1432826855000}
    bad = [
        base64.b64encode(json.dumps(DATA_MESSAGE).encode()).decode(),  # JSON, but not gzipped
        base64.b64encode(compressed[: len(compressed) // 2]).decode(),  # truncated gzip
        base64.b64encode(gzip.compress(b"not json")).decode(),
        gzipped(["an", "array"]),
        gzipped({**DATA_MESSAGE, "messageType": "UNKNOWN_MESSAGE"}),
        gzipped({key: value for key, value in DATA_MESSAGE.items() if key != "logGroup"}),
        gzipped({**DATA_MESSAGE, "logEvents": "not a list"}),
        gzipped({**DATA_MESSAGE, "logEvents": [event_without_message]}),
        gzipped({**DATA_MESSAGE, "logEvents": [{**event_without_message, "message": 42}]}),
        "not base64!",
    ]
    good = gzipped(DATA_MESSAGE)
    records = cloudwatch_logs.lambda_handler(event(good, *bad, good), None)["records"]
    assert [r["recordId"] for r in records] == [f"id-{i}" for i in range(len(bad) + 2)]
    assert [r["result"] for r in records] == ["Ok"] + ["ProcessingFailed"] * len(bad) + ["Ok"]
    assert [r["data"] for r in records[1:-1]] == bad
    assert decoded(records[0]) == decoded(records[-1]) == ROOT_LOGIN + "\n" + STACK_TRACE + "\n"


def test_unknown_output_mode_fails_the_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CWL_OUTPUT", "JSON ")
    with pytest.raises(ValueError, match="CWL_OUTPUT"):
        cloudwatch_logs.lambda_handler(event(gzipped(DATA_MESSAGE)), None)
