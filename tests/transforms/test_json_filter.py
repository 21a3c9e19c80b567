"""transforms/json_filter.py drops, cuts down and redacts JSON records and sets their partition keys.

Every setting comes from environment variables read at each invocation, as on Lambda, so each test sets
the ones it needs with monkeypatch and starts from none set.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tests.support.transforms import load

json_filter = load("json_filter")

VARIABLES = ("DROP_WHEN", "KEEP_FIELDS", "REDACT_FIELDS", "REDACT_MODE", "PARTITION_KEYS")
ORDER: dict[str, Any] = {
    "level": "info",
    "source": "checkout",
    "account": {"id": 42, "region": "eu-west-1", "email": "alice@example.com"},
    "http": {"status": 200, "path": "/orders"},
    "card": {"number": "4111111111111111", "expiry": "12/29"},
    "paid": True,
}


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def b64(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return base64.b64encode(text.encode()).decode()


def event(*datas: str) -> dict[str, Any]:
    return {
        "invocationId": "inv-json",
        "deliveryStreamArn": "arn:aws:firehose:eu-west-1:123456789012:deliverystream/orders",
        "region": "eu-west-1",
        "records": [{"recordId": f"id-{i}", "approximateArrivalTimestamp": 1709533514000, "data": data}
                    for i, data in enumerate(datas)],
    }


def run(*documents: Any) -> list[dict[str, Any]]:
    return json_filter.lambda_handler(event(*(b64(document) for document in documents)), None)["records"]


def output(record: dict[str, Any]) -> Any:
    text = base64.b64decode(record["data"]).decode()
    assert text.endswith("\n") and text.count("\n") == 1
    return json.loads(text)


def test_without_settings_a_record_comes_back_as_compact_json_with_no_metadata() -> None:
    [record] = run(json.dumps(ORDER, indent=2) + "\n")
    assert record["result"] == "Ok"
    assert base64.b64decode(record["data"]).decode() == json.dumps(ORDER, separators=(",", ":")) + "\n"
    assert "metadata" not in record


def test_drop_when_any_listed_field_equals_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROP_WHEN", "level=debug, source=healthcheck,http.status=204,paid=false")
    records = run(
        {**ORDER, "level": "debug"},
        {**ORDER, "source": "healthcheck"},
        {**ORDER, "http": {"status": 204}},  # a number matches its text
        {**ORDER, "paid": False},
        ORDER,
        {"message": "no listed field at all"},
        {**ORDER, "level": "DEBUG"},  # equality is exact
    )
    assert [(r["result"], r["data"]) for r in records[:4]] == [("Dropped", "")] * 4
    assert [output(r) for r in records[4:]] == [ORDER, {"message": "no listed field at all"},
                                                 {**ORDER, "level": "DEBUG"}]


def test_keep_fields_outputs_only_those_at_the_same_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_FIELDS", "level,account.id,http,missing.field")
    [record] = run(ORDER)
    assert output(record) == {"level": "info", "account": {"id": 42}, "http": ORDER["http"]}


def test_redact_fields_replaces_values_that_are_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_FIELDS", "account.email,card,level.not_an_object,missing")
    [record] = run(ORDER)
    account = {**ORDER["account"], "email": "REDACTED"}
    assert output(record) == {**ORDER, "account": account, "card": "REDACTED"}


def test_redact_mode_hash_gives_the_sha256_of_the_value_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_FIELDS", "account.email,account.id")
    monkeypatch.setenv("REDACT_MODE", "hash")
    [record] = run(ORDER)
    account = output(record)["account"]
    assert account["email"] == hashlib.sha256(b"alice@example.com").hexdigest()
    assert account["id"] == hashlib.sha256(b"42").hexdigest()


def test_partition_keys_go_to_metadata_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITION_KEYS", "customer=account.id,account.region,paid")
    monkeypatch.setenv("KEEP_FIELDS", "level")
    records = run(ORDER, {**ORDER, "account": {"id": "acme", "region": "us-east-1"}, "paid": False})
    assert [r["metadata"] for r in records] == [
        {"partitionKeys": {"customer": "42", "region": "eu-west-1", "paid": "true"}},
        {"partitionKeys": {"customer": "acme", "region": "us-east-1", "paid": "false"}},
    ]
    assert [output(r) for r in records] == [{"level": "info"}] * 2  # partition keys need not be kept


def test_partition_keys_are_read_after_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITION_KEYS", "customer=account.email")
    monkeypatch.setenv("REDACT_FIELDS", "account.email")
    monkeypatch.setenv("REDACT_MODE", "hash")
    [record] = run(ORDER)
    digest = hashlib.sha256(b"alice@example.com").hexdigest()
    assert record["metadata"] == {"partitionKeys": {"customer": digest}}
    assert output(record)["account"]["email"] == digest


def test_a_record_without_a_usable_partition_key_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITION_KEYS", "account.id")
    datas = [b64(ORDER)] + [b64({**ORDER, "account": account}) for account in (
        {"region": "eu-west-1"}, {"id": None}, {"id": {"nested": 1}}, {"id": [1, 2]}, "not an object")]
    records = json_filter.lambda_handler(event(*datas), None)["records"]
    assert [r["result"] for r in records] == ["Ok"] + ["ProcessingFailed"] * 5
    assert [r["data"] for r in records[1:]] == datas[1:]
    assert all("metadata" not in r for r in records[1:])
    assert records[0]["metadata"] == {"partitionKeys": {"id": "42"}}


def test_a_record_that_is_not_one_json_object_fails_alone() -> None:
    bad = [b64("not json"), b64("[1, 2]"), b64('"a string"'), b64('{"a": 1}\n{"b": 2}\n'),
           b64('{"a": NaN}'), b64('{"a": 1e400}'), base64.b64encode(b'{"a": "\xff"}').decode(), ""]
    records = json_filter.lambda_handler(event(b64(ORDER), *bad, b64({"b": 2})), None)["records"]
    assert [r["recordId"] for r in records] == [f"id-{i}" for i in range(len(bad) + 2)]
    assert [r["result"] for r in records] == ["Ok"] + ["ProcessingFailed"] * len(bad) + ["Ok"]
    assert [r["data"] for r in records[1:-1]] == bad
    assert output(records[-1]) == {"b": 2}


@pytest.mark.parametrize(("variable", "value"), [
    ("DROP_WHEN", "level"),
    ("DROP_WHEN", "=debug"),
    ("KEEP_FIELDS", "account..id"),
    ("REDACT_FIELDS", "account."),
    ("REDACT_MODE", "mask"),
    ("PARTITION_KEYS", "=account.id"),
    ("PARTITION_KEYS", "id=account.id,account.id"),
])
def test_a_malformed_setting_fails_the_invocation(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        run(ORDER)
