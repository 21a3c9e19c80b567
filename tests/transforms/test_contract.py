"""Every shipped transform in transforms/ keeps the Firehose data-transformation contract.

Firehose rejects a whole Lambda response that breaks the contract (a recordId missing, repeated or
unknown, a result it does not know, data that is not base64), so each handler runs here against one
mixed event, records of every kind and some of none, with its settings off and with them on.
"""

from __future__ import annotations

import ast
import base64
import binascii
import gzip
import json
import sys
from typing import Any

import pytest

from tests.support.transforms import TRANSFORMS_DIR, load

TRANSFORMS = sorted(path.stem for path in TRANSFORMS_DIR.glob("*.py"))
RESULTS = {"Ok", "Dropped", "ProcessingFailed"}
SETTINGS = {
    "CWL_OUTPUT": "json",
    "DROP_WHEN": "level=debug",
    "KEEP_FIELDS": "level,msg",
    "REDACT_FIELDS": "msg",
    "REDACT_MODE": "hash",
    "PARTITION_KEYS": "level",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cloudwatch(message_type: str) -> str:
    envelope = {"messageType": message_type, "owner": "111111111111", "logGroup": "app", "logStream": "i-1",
                "subscriptionFilters": ["to-firehose"],
                "logEvents": [{"id": "1", "timestamp": 1709533513000, "message": "started"}]}
    return b64(gzip.compress(json.dumps(envelope).encode()))


MIXED_DATA = [
    b64(b"plain text without a newline"),
    b64(b'{"level": "info", "msg": "user signed in", "user": "alice"}\n'),
    b64(b'{"level": "debug", "msg": "cache miss"}'),
    cloudwatch("DATA_MESSAGE"),
    cloudwatch("CONTROL_MESSAGE"),
    b64(b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326\n'),
    b64(b"<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed\n"),
    b64(b'<165>1 2003-10-11T22:14:15.003Z host app - ID47 [x@1 a="b"] event'),
    b64(b"\n"),
    "",
    b64(b"\x1f\x8b\x08\x00 truncated gzip \xff\xfe"),
    b64(b"[1, 2, 3]"),
]


def mixed_event() -> dict[str, Any]:
    return {
        "invocationId": "00540a87-5050-496a-84e4-e7d92bbaf5e2",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/mixed",
        "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/source",
        "region": "us-east-1",
        "records": [
            {
                "recordId": f"49546986683135544286507457936321625675700192471156785154{i:02d}",
                "approximateArrivalTimestamp": 1709533514000 + i,
                "data": data,
                "kinesisRecordMetadata": {
                    "shardId": "shardId-000000000000",
                    "partitionKey": "4d1ad2b9",
                    "approximateArrivalTimestamp": 1709533514000 + i,
                    "sequenceNumber": f"4954698668313554428650745793632162567570019247115678{i:04d}",
                    "subsequenceNumber": 0,
                },
            }
            for i, data in enumerate(MIXED_DATA)
        ],
    }


@pytest.fixture(params=["settings off", "settings on"])
def environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in SETTINGS.items():
        if request.param == "settings on":
            monkeypatch.setenv(variable, value)
        else:
            monkeypatch.delenv(variable, raising=False)


def test_every_shipped_transform_is_checked() -> None:
    assert {"passthrough", "cloudwatch_logs", "access_log", "syslog_json", "json_filter"} <= set(TRANSFORMS)


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize("name", TRANSFORMS)
def test_response_follows_the_contract(name: str) -> None:
    event = mixed_event()
    response = load(name).lambda_handler(event, None)
    assert set(response) == {"records"}
    assert [r["recordId"] for r in response["records"]] == [r["recordId"] for r in event["records"]]
    for record, source in zip(response["records"], event["records"], strict=True):
        assert {"recordId", "result", "data"} <= set(record) <= {"recordId", "result", "data", "metadata"}
        assert record["result"] in RESULTS
        assert isinstance(record["data"], str)
        try:
            base64.b64decode(record["data"], validate=True)
        except binascii.Error:
            pytest.fail(f"{name} returned data that is not base64 for {source['data']!r}")
        if record["result"] == "ProcessingFailed":
            assert record["data"] == source["data"]
        if "metadata" in record:
            assert set(record["metadata"]) == {"partitionKeys"}
            keys = record["metadata"]["partitionKeys"]
            assert keys and all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize("name", TRANSFORMS)
def test_an_empty_batch_gets_an_empty_response(name: str) -> None:
    assert load(name).lambda_handler({**mixed_event(), "records": []}, None) == {"records": []}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_module_runs_unchanged_on_lambda(name: str) -> None:
    """The file is all Lambda gets: a documented handler, importing nothing beyond the standard library."""
    module = load(name)
    assert module.handler is module.lambda_handler
    assert module.__doc__
    tree = ast.parse((TRANSFORMS_DIR / f"{name}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {module_name.split(".")[0] for module_name in imported} <= sys.stdlib_module_names
