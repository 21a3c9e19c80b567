"""Firehose's built-in processors, as plain functions over one record's bytes.

* ``Decompression`` (GZIP): gunzip the record. CloudWatch Logs subscription
  payloads arrive gzip-compressed.
* ``CloudWatchLogProcessing`` (``DataMessageExtraction=true``): from a CWL
  envelope keep only the log events' messages, one per line; control
  messages produce nothing.
* ``RecordDeAggregation``: split one record into sub-records, either a stream
  of concatenated JSON values (``{"a":1}{"a":2}``, whitespace allowed between;
  a top-level array is one value and is not split) or by a delimiter. At most
  500 sub-records per record, as on AWS.
* ``AppendDelimiterToRecord``: add a delimiter (``\\n`` unless given) after
  each record.

They run in the order AWS runs them: decompression, CloudWatch extraction,
de-aggregation, then the Lambda, then partition-key extraction, and the
delimiter last (spec: transforms.md §5). A function that cannot process a
record raises ``ValueError`` with the reason; the caller routes the record to
the error output.
"""

from __future__ import annotations

import json
import zlib

import orjson

MAX_SUB_RECORDS = 500
_decoder = json.JSONDecoder()
_WS = b" \t\r\n"


def gunzip(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, wbits=31)  # gzip container only
    except zlib.error as exc:
        raise ValueError(f"record is not valid gzip: {exc}") from exc


def cloudwatch_messages(data: bytes) -> bytes | None:
    """The log events' messages, newline-terminated; None for a control message."""
    try:
        envelope = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"record is not a CloudWatch Logs envelope: {exc}") from exc
    if not isinstance(envelope, dict):
        raise ValueError("record is not a CloudWatch Logs envelope: not a JSON object")
    kind = envelope.get("messageType")
    if kind == "CONTROL_MESSAGE":
        return None
    events = envelope.get("logEvents")
    if kind != "DATA_MESSAGE" or not isinstance(events, list):
        raise ValueError(f"unexpected CloudWatch Logs messageType {kind!r}")
    lines = []
    for event in events:
        message = event.get("message") if isinstance(event, dict) else None
        if not isinstance(message, str):
            raise ValueError("a CloudWatch Logs event has no message")
        lines.append(message.encode() + b"\n")
    return b"".join(lines)


def split_json(data: bytes) -> list[bytes]:
    """Concatenated JSON values → one sub-record each (compact text as written)."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"record is not UTF-8 JSON: {exc}") from exc
    out: list[bytes] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        try:
            _value, end = _decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ValueError(f"record is not a sequence of JSON values: {exc.msg} at offset {exc.pos}") from exc
        out.append(text[pos:end].encode())
        if len(out) > MAX_SUB_RECORDS:
            raise ValueError(f"record holds more than {MAX_SUB_RECORDS} JSON values")
        pos = end
    if not out:
        raise ValueError("record holds no JSON value")
    return out


def split_delimited(data: bytes, delimiter: bytes) -> list[bytes]:
    if not delimiter:
        raise ValueError("the delimiter is empty")
    parts = [p for p in data.split(delimiter) if p.strip(_WS)]
    if len(parts) > MAX_SUB_RECORDS:
        raise ValueError(f"record holds more than {MAX_SUB_RECORDS} delimited sub-records")
    return parts
