"""Firehose data transformation that turns Apache/nginx access log lines into JSON lines.

Access logs arrive as text in the Common Log Format or the Combined Log
Format (nginx's default "combined", Apache's "combined"); as JSON, each line
can be queried by field (Athena, OpenSearch) instead of by regular expression.
Each line becomes one JSON object, newline-terminated, with these keys:

    host, ident, user   "-" becomes null: the server had no value.
    time                ISO 8601 with the logged offset ("2000-10-10T13:55:36-07:00").
    request             the request line as logged; null when it is "-".
    method, path, protocol
                        from a request line "METHOD TARGET HTTP/x.y" (or HTTP/0.9's
                        "METHOD TARGET", protocol null). A request line that is not
                        one of these ("-", "" from a connection closed before its
                        request, the bytes of a TLS handshake sent to a plain HTTP
                        port) leaves all three null and the line is still converted:
                        such requests are what a security review looks for, so
                        they are kept rather than failed.
    status              integer.
    bytes               integer; "-" (Apache's %b for an empty body) becomes 0, which
                        is what it means.
    referer, user_agent "-" becomes null; null too in Common Log Format, so every
                        line has the same keys.

Quoted fields are kept as logged: the escapes servers write for quotes and
non-printable bytes (Apache's \\" and \\xhh, nginx's \\x22) are not decoded.

A record may hold several lines; each is converted and blank lines are
skipped (a record with only blank lines is Dropped). If any line does not
parse, the whole record is ProcessingFailed with its original data, so no
line is lost silently. Reads no environment variables.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_LINE = re.compile(
    r"(\S+) (\S+) (\S+) \[([^\]]+)\] " + _QUOTED + r" (\d{3}) (\d+|-)(?: " + _QUOTED + " " + _QUOTED + ")?"
)
_TIME = re.compile(r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_REQUEST = re.compile(r"([A-Za-z][A-Za-z-]*) (\S+)(?: (HTTP/\d+(?:\.\d+)?))?")
# Month names are matched here rather than with strptime's %b, which follows the process locale.
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
)}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"records": [_transform(record) for record in event["records"]]}


def _transform(record: dict[str, Any]) -> dict[str, Any]:
    try:
        text = base64.b64decode(record["data"], validate=True).decode()
        lines = [_convert(line) for line in text.split("\n") if line.strip()]
    except ValueError:
        return {"recordId": record["recordId"], "result": "ProcessingFailed", "data": record["data"]}
    if not lines:
        return {"recordId": record["recordId"], "result": "Dropped", "data": ""}
    output = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
    data = base64.b64encode(output.encode()).decode()
    return {"recordId": record["recordId"], "result": "Ok", "data": data}


def _convert(line: str) -> dict[str, Any]:
    """Converts one access log line; raises ValueError when it is in neither log format."""
    match = _LINE.fullmatch(line.rstrip("\r"))
    if not match:
        raise ValueError(f"not a Common or Combined Log Format line: {line!r}")
    host, ident, user, time, request, status, size, referer, user_agent = match.groups()
    method, path, protocol = _request_parts(request)
    return {
        "host": host,
        "ident": _nullable(ident),
        "user": _nullable(user),
        "time": _iso_time(time),
        "request": _nullable(request),
        "method": method,
        "path": path,
        "protocol": protocol,
        "status": int(status),
        "bytes": 0 if size == "-" else int(size),
        "referer": _nullable(referer),
        "user_agent": _nullable(user_agent),
    }


def _request_parts(request: str) -> tuple[str | None, str | None, str | None]:
    match = _REQUEST.fullmatch(request)
    return (match[1], match[2], match[3]) if match else (None, None, None)


def _iso_time(value: str) -> str:
    """"10/Oct/2000:13:55:36 -0700" -> "2000-10-10T13:55:36-07:00"; ValueError for anything else."""
    match = _TIME.fullmatch(value)
    if not match or match[2] not in _MONTHS:
        raise ValueError(f"not an access log time: {value!r}")
    day, month, year, hour, minute, second, sign, offset_hours, offset_minutes = match.groups()
    offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes)) * (-1 if sign == "-" else 1)
    moment = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
                      tzinfo=timezone(offset))
    return moment.isoformat()


def _nullable(value: str | None) -> str | None:
    return None if value in (None, "-") else value


handler = lambda_handler
