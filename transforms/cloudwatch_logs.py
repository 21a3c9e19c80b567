"""Firehose data transformation that unpacks CloudWatch Logs subscription payloads.

A CloudWatch Logs subscription filter delivers each batch of log events as one
Firehose record whose data is a gzip-compressed JSON envelope (messageType,
owner, logGroup, logStream, subscriptionFilters, logEvents). Left as is, the
destination receives opaque gzip blobs; this turns each record into plain
newline-terminated lines, one per log event.

- DATA_MESSAGE: Ok, one line per log event. With no log events there is
  nothing to deliver, so the record is Dropped.
- CONTROL_MESSAGE: Dropped. CloudWatch Logs sends these to check that the
  destination is reachable; they carry no log data.
- Anything else (not gzip, not JSON, another messageType, a missing or
  mistyped field): ProcessingFailed, with the original data.

Each line is the event's message followed by "\\n". A message that itself
contains newlines (a stack trace, say) is written as is; use CWL_OUTPUT=json
to keep exactly one event per line.

A very large envelope stays one record: AWS's own blueprint re-ingests output
over 6 MB (the Lambda response limit) as new records, which this does not, so
keep the processor's buffer size small enough for the decompressed output of
one invocation to fit.

Environment (read at each invocation, as on Lambda):
    CWL_OUTPUT: "message" (the default) writes each event's message as is;
        "json" writes one JSON object per line with owner, logGroup,
        logStream, id, timestamp and message, so the source of each event is
        kept. Any other value raises before a record is touched, so a typo
        fails the invocation instead of silently changing the output format.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import zlib
from collections.abc import Callable
from typing import Any

_ENVELOPE_FIELDS = ("owner", "logGroup", "logStream")
_EVENT_FIELDS = {"id": str, "timestamp": int, "message": str}

# Turns one log event of an envelope into one output line.
_LineFormatter = Callable[[dict[str, Any], dict[str, Any]], str]


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    format_line = _line_formatter(os.environ.get("CWL_OUTPUT") or "message")
    return {"records": [_transform(record, format_line) for record in event["records"]]}


def _line_formatter(mode: str) -> _LineFormatter:
    if mode == "message":
        return lambda envelope, log_event: log_event["message"] + "\n"
    if mode == "json":
        return _json_line
    raise ValueError(f"CWL_OUTPUT must be 'message' or 'json', not {mode!r}")


def _json_line(envelope: dict[str, Any], log_event: dict[str, Any]) -> str:
    fields = {name: envelope[name] for name in _ENVELOPE_FIELDS}
    fields.update((name, log_event[name]) for name in _EVENT_FIELDS)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n"


def _transform(record: dict[str, Any], format_line: _LineFormatter) -> dict[str, Any]:
    try:
        envelope = _envelope(record["data"])
    except ValueError:
        return {"recordId": record["recordId"], "result": "ProcessingFailed", "data": record["data"]}
    if envelope["messageType"] == "CONTROL_MESSAGE" or not envelope["logEvents"]:
        return {"recordId": record["recordId"], "result": "Dropped", "data": ""}
    text = "".join(format_line(envelope, log_event) for log_event in envelope["logEvents"])
    data = base64.b64encode(text.encode()).decode()
    return {"recordId": record["recordId"], "result": "Ok", "data": data}


def _envelope(data: str) -> dict[str, Any]:
    """Decodes a record into a subscription envelope; raises ValueError for anything that is not one."""
    envelope = json.loads(_gunzip(base64.b64decode(data, validate=True)))
    if not isinstance(envelope, dict):
        raise ValueError("envelope is not a JSON object")
    if envelope.get("messageType") == "CONTROL_MESSAGE":
        return envelope
    if envelope.get("messageType") != "DATA_MESSAGE":
        raise ValueError(f"unknown messageType {envelope.get('messageType')!r}")
    _check_data_message(envelope)
    return envelope


def _check_data_message(envelope: dict[str, Any]) -> None:
    """Checks every field the output uses up front, so a bad envelope fails instead of half-converting."""
    if not all(isinstance(envelope.get(name), str) for name in _ENVELOPE_FIELDS):
        raise ValueError("owner, logGroup and logStream must be strings")
    log_events = envelope.get("logEvents")
    if not isinstance(log_events, list):
        raise ValueError("logEvents must be a list")
    for log_event in log_events:
        if not isinstance(log_event, dict) or not all(
            isinstance(log_event.get(name), kind) for name, kind in _EVENT_FIELDS.items()
        ):
            raise ValueError("each log event needs a string id, an integer timestamp and a string message")


def _gunzip(data: bytes) -> bytes:
    """gzip reports bad input as OSError, EOFError or zlib.error; this reports all of them as ValueError."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"not gzip data: {error}") from error


handler = lambda_handler
