"""``dataProcessingOptions``: converters applied to each record, in the order they are listed.

They follow the Kinesis Agent: SINGLELINE joins a multi-line record, CSVTOJSON
and LOGTOJSON turn a line into a JSON object (``-`` in a log field becomes
null), ADDMETADATA wraps a record with metadata and a timestamp, ADDBRACKETS
wraps it in ``[`` ``]``. Every output ends with a newline.

A record a converter cannot parse (a log line in another format, say) is sent
unchanged and counted, rather than dropped: the line still reaches the
destination, where it can be found and fixed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from firehose.agent.config import ProcessingOption

Converter = Callable[[bytes], bytes]


class ConversionError(ValueError):
    """The record does not have the shape the converter expects."""


# Field names and patterns after the Kinesis Agent's (ApacheLogParser, SysLogParser); RFC5424SYSLOG is ours.
LOG_FORMATS: dict[str, tuple[str, list[str]]] = {
    "COMMONAPACHELOG": (
        r'^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(.*?)" (\d{3}|-) (\d+|-)\s*$',
        ["host", "ident", "authuser", "datetime", "request", "response", "bytes"]),
    "COMBINEDAPACHELOG": (
        r'^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(.*?)" (\d{3}|-) (\d+|-) "(.*?)" "(.*?)"\s*$',
        ["host", "ident", "authuser", "datetime", "request", "response", "bytes", "referrer", "agent"]),
    "APACHEERRORLOG": (
        r"^\[([^\]]+)\] \[(?:(\S+?):)?(\S+)\] \[pid (\d+)(?::tid (\d+))?\](?: \[client (\S+?)\])? (.*?)\s*$",
        ["timestamp", "module", "severity", "processid", "threadid", "client", "message"]),
    "SYSLOG": (
        r"^(?:<\d{1,3}>)?(\w{3}\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}) (\S+) ([^\s\[:]+)(?:\[(\d+)\])?: ?(.*?)\s*$",
        ["timestamp", "hostname", "program", "processid", "message"]),
    "RFC3339SYSLOG": (
        r"^(?:<\d{1,3}>)?(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+\-]\d{2}:\d{2})) (\S+) "
        r"([^\s\[:]+)(?:\[(\d+)\])?: ?(.*?)\s*$",
        ["timestamp", "hostname", "program", "processid", "message"]),
    "RFC5424SYSLOG": (
        r"^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[.*?\])+) ?(.*?)\s*$",
        ["priority", "version", "timestamp", "hostname", "appname", "procid", "msgid", "structureddata",
         "message"]),
}


def _dumps(obj: Any, pretty: bool) -> bytes:
    text = json.dumps(obj, indent=2 if pretty else None, separators=None if pretty else (",", ":"),
                      ensure_ascii=False)
    return text.encode() + b"\n"


def _text(record: bytes) -> str:
    return record.decode("utf-8", errors="replace").rstrip("\r\n")


def single_line(record: bytes) -> bytes:
    """Join a multi-line record: every line stripped of surrounding blanks, newlines removed."""
    lines = record.decode("utf-8", errors="replace").split("\n")
    return "".join(line.strip() for line in lines).encode() + b"\n"


def csv_to_json(fields: list[str], delimiter: str, pretty: bool) -> Converter:
    def convert(record: bytes) -> bytes:
        row = next(csv.reader([_text(record)], delimiter=delimiter), [])
        return _dumps({name: (row[i] if i < len(row) else None) for i, name in enumerate(fields)}, pretty)

    return convert


def log_to_json(log_format: str, pattern: str | None, fields: list[str] | None, pretty: bool) -> Converter:
    default_pattern, default_fields = LOG_FORMATS[log_format]
    regex = re.compile(pattern or default_pattern)
    names = fields or default_fields
    if regex.groups != len(names):
        raise ValueError(f"{log_format}: {len(names)} customFieldNames for a pattern with {regex.groups} groups")

    def convert(record: bytes) -> bytes:
        m = regex.match(_text(record))
        if m is None:
            raise ConversionError(f"not a {log_format} line")
        return _dumps({name: (None if v in (None, "-") else v) for name, v in zip(names, m.groups(), strict=True)},
                      pretty)

    return convert


def add_metadata(metadata: Any, timestamp: bool, pretty: bool) -> Converter:
    def convert(record: bytes) -> bytes:
        doc: dict[str, Any] = {}
        if timestamp:
            now = dt.datetime.now(dt.UTC)
            doc["ts"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        doc["metadata"] = metadata
        doc["data"] = _text(record)
        return _dumps(doc, pretty)

    return convert


def add_brackets(record: bytes) -> bytes:
    return b"[" + record.rstrip(b"\n") + b"]\n"


def build(option: ProcessingOption) -> Converter:
    pretty = option.json_format == "PRETTYPRINT"
    name = option.option_name
    if name == "SINGLELINE":
        return single_line
    if name == "CSVTOJSON":
        return csv_to_json(option.custom_field_names or [], option.delimiter, pretty)
    if name == "LOGTOJSON":
        return log_to_json(option.log_format or "", option.match_pattern, option.custom_field_names, pretty)
    if name == "ADDMETADATA":
        return add_metadata(option.metadata, option.timestamp, pretty)
    return add_brackets


class Pipeline:
    """The flow's converters in order; counts the records one could not convert."""

    def __init__(self, options: list[ProcessingOption]) -> None:
        self.steps = [build(o) for o in options]
        self.failures = 0

    def __bool__(self) -> bool:
        return bool(self.steps)

    def apply(self, records: list[bytes]) -> list[bytes]:
        out = []
        for record in records:
            for step in self.steps:
                try:
                    record = step(record)
                except (ConversionError, ValueError, csv.Error):
                    self.failures += 1
                    break  # sent as it was
            out.append(record)
        return out
