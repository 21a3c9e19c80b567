"""Firehose's built-in processors, one record at a time (spec: transforms.md §5): Decompression (GZIP),
CloudWatchLogProcessing, RecordDeAggregation (JSON and DELIMITED). A record a processor cannot take
raises ValueError with the reason; the chain sends it to the error output."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from firehose.processing.builtin import (
    MAX_SUB_RECORDS,
    cloudwatch_messages,
    gunzip,
    split_delimited,
    split_json,
)

# -- Decompression ------------------------------------------------------------------------------------------


def test_gunzip_returns_what_was_gzipped() -> None:
    payload = b'{"messageType":"DATA_MESSAGE"}' * 100
    assert gunzip(gzip.compress(payload)) == payload
    assert gunzip(gzip.compress(b"")) == b""


@pytest.mark.parametrize("data", [
    b"plain text, never compressed",
    zlib.compress(b"a zlib stream is not a gzip member"),
    gzip.compress(b"cut short")[:-6],
    b"",
], ids=["plain", "zlib", "truncated", "empty"])
def test_gunzip_refuses_what_is_not_a_whole_gzip_member(data: bytes) -> None:
    with pytest.raises(ValueError, match="not valid gzip"):
        gunzip(data)


# -- CloudWatchLogProcessing --------------------------------------------------------------------------------


def envelope(kind: str = "DATA_MESSAGE", messages: list[str] | None = None) -> bytes:
    """A CloudWatch Logs subscription envelope as the service sends it (before gzip)."""
    return json.dumps({
        "messageType": kind, "owner": "123456789012", "logGroup": "/app", "logStream": "i-0abc",
        "subscriptionFilters": ["to-firehose"],
        "logEvents": [{"id": str(i), "timestamp": 1_700_000_000_000 + i, "message": m}
                      for i, m in enumerate(messages or [])],
    }).encode()


def test_cloudwatch_extraction_keeps_only_the_messages_one_per_line() -> None:
    out = cloudwatch_messages(envelope(messages=["GET /a 200", '{"level":"info"}', "ünïcode"]))
    assert out == b'GET /a 200\n{"level":"info"}\n' + "ünïcode\n".encode()


def test_a_cloudwatch_control_message_produces_nothing() -> None:
    assert cloudwatch_messages(envelope("CONTROL_MESSAGE", ["CWL CONTROL MESSAGE: Checking health"])) is None


@pytest.mark.parametrize(("data", "reason"), [
    (b"not json", "not a CloudWatch Logs envelope"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"messageType": "SOMETHING_ELSE", "logEvents": []}).encode(), "unexpected CloudWatch Logs"),
    (json.dumps({"messageType": "DATA_MESSAGE"}).encode(), "unexpected CloudWatch Logs"),
    (json.dumps({"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1"}]}).encode(), "has no message"),
    (json.dumps({"messageType": "DATA_MESSAGE", "logEvents": ["bare"]}).encode(), "has no message"),
], ids=["not-json", "not-object", "unknown-type", "no-events", "event-without-message", "event-not-object"])
def test_cloudwatch_extraction_refuses_what_is_not_an_envelope(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cloudwatch_messages(data)


# -- RecordDeAggregation: JSON ---------------------------------------------------------------------------


def test_concatenated_json_values_become_one_sub_record_each_as_written() -> None:
    data = b'{"a":1}{"a": 2}\n  {"b":[1, 2]}\r\n\t"text" 42 null'
    assert split_json(data) == [b'{"a":1}', b'{"a": 2}', b'{"b":[1, 2]}', b'"text"', b"42", b"null"]


def test_a_json_array_is_one_value_and_is_not_split() -> None:
    assert split_json(b'[{"a":1},{"a":2}]') == [b'[{"a":1},{"a":2}]']


def test_json_sub_records_keep_their_utf8() -> None:
    assert split_json('{"name":"Zoë"}{"name":"日本"}'.encode()) == ['{"name":"Zoë"}'.encode(),
                                                                   '{"name":"日本"}'.encode()]


def test_at_most_500_json_sub_records_per_record() -> None:
    assert len(split_json(b"{}" * MAX_SUB_RECORDS)) == MAX_SUB_RECORDS == 500
    with pytest.raises(ValueError, match="more than 500 JSON values"):
        split_json(b"{}" * (MAX_SUB_RECORDS + 1))


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"a":1}{"a":', "not a sequence of JSON values"),
    (b'{"a":1} garbage', "not a sequence of JSON values"),
    (b"", "holds no JSON value"),
    (b" \n\t ", "holds no JSON value"),
    (b'{"a":"\xff"}', "not UTF-8"),
], ids=["cut-short", "trailing-garbage", "empty", "whitespace", "not-utf8"])
def test_json_deaggregation_refuses_a_record_it_cannot_split(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        split_json(data)


# -- RecordDeAggregation: DELIMITED ------------------------------------------------------------------------


def test_delimited_records_split_on_the_delimiter_and_blank_parts_vanish() -> None:
    assert split_delimited(b"a|b||c|  |\n|d|", b"|") == [b"a", b"b", b"c", b"d"]


def test_a_multi_byte_delimiter_is_one_delimiter() -> None:
    assert split_delimited(b"one::two:three::", b"::") == [b"one", b"two:three"]


def test_a_record_without_the_delimiter_is_one_sub_record() -> None:
    assert split_delimited(b"just one", b"\n") == [b"just one"]


def test_at_most_500_delimited_sub_records_per_record() -> None:
    assert len(split_delimited(b"x\n" * MAX_SUB_RECORDS, b"\n")) == MAX_SUB_RECORDS
    with pytest.raises(ValueError, match="more than 500 delimited sub-records"):
        split_delimited(b"x\n" * (MAX_SUB_RECORDS + 1), b"\n")


def test_an_empty_delimiter_is_refused() -> None:
    with pytest.raises(ValueError, match="delimiter is empty"):
        split_delimited(b"abc", b"")
