"""Firehose data transformation that turns syslog lines into JSON lines.

Syslog arrives as text in one of two formats, told apart line by line: RFC
5424 ("<165>1 2003-10-11T22:14:15.003Z host app procid msgid [sd] msg", the
"1" after the PRI is its version) and the older BSD format of RFC 3164
("<34>Oct 11 22:14:15 mymachine su[123]: msg"). As JSON, each line can be
queried by field. Each line becomes one JSON object, newline-terminated, with
the same keys whichever the format:

    facility, facility_name   from the PRI (facility = PRI / 8), e.g. 4, "auth".
    severity, severity_name   from the PRI (severity = PRI % 8), e.g. 2, "crit".
    timestamp      ISO 8601. RFC 5424's is written as sent (it already is
                   RFC 3339). RFC 3164's has no year and no zone. It gets the
                   latest year that puts it at most a day after the record's
                   approximateArrivalTimestamp (a day covers the sender's zone,
                   up to 14 hours ahead of UTC, and a fast clock): "Dec 31"
                   arriving on 1 January is last year's, "Jan  1" arriving on
                   31 December next year's. It has no offset, being the
                   sender's local time. A 29 February when neither candidate
                   year is a leap year does not parse.
    hostname, app_name, procid, msgid
                   RFC 3164 has no msgid; its app_name and procid come from a
                   "tag[pid]: " prefix of the message, null when there is none.
    structured_data  RFC 5424 SD-ELEMENTs as {SD-ID: {PARAM-NAME: value}},
                   with the escapes \\", \\\\ and \\] decoded (a PARAM-NAME
                   repeated in one element keeps its last value); null for
                   RFC 3164 and for NILVALUE.
    message        the rest of the line (an RFC 5424 leading BOM removed); null
                   when there is none.

RFC 5424's NILVALUE "-" becomes null. A line without a PRI is accepted when
the rest is an RFC 3164 line (as in a file written by a local syslog daemon):
it gets the PRI 13 (user.notice) that RFC 3164 section 4.3.3 has a relay
assign. A line in neither format, including an RFC 3164 line whose timestamp
is not "Mmm dd hh:mm:ss", is not guessed at: it does not parse.

A record may hold several lines; each is converted and blank lines are
skipped (a record with only blank lines is Dropped). If any line does not
parse, the whole record is ProcessingFailed with its original data. A message
with embedded newlines therefore fails unless the sender escapes them (as
rsyslog does by default, writing #012). Reads no environment variables.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) (.*)", re.DOTALL)
_RFC5424_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_SD_NAME = r'[^ =\]"]{1,32}'
_SD_ELEMENT = re.compile(rf'\[({_SD_NAME})((?: {_SD_NAME}="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(rf'({_SD_NAME})="((?:[^"\\]|\\.)*)"')
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
_RFC3164 = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\S+)(?: (.*))?", re.DOTALL)
_TAG = re.compile(r"([^\s\[\]:]{1,48})(?:\[([^\s\]]{1,128})\])?: (.*)", re.DOTALL)
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
)}
# Names as in Python's logging.handlers.SysLogHandler, which follows the BSD <syslog.h>.
_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
               "ftp", "ntp", "security", "console", "solaris-cron", *(f"local{n}" for n in range(8)))
_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_USER_NOTICE = 13
# RFC 3164 times are the sender's local time, up to 14 hours ahead of UTC, and its clock may run fast.
_AHEAD_OF_ARRIVAL = timedelta(days=1)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"records": [_transform(record) for record in event["records"]]}


def _transform(record: dict[str, Any]) -> dict[str, Any]:
    arrival = datetime.fromtimestamp(record["approximateArrivalTimestamp"] / 1000, UTC)
    try:
        text = base64.b64decode(record["data"], validate=True).decode()
        lines = [_convert(line.rstrip("\r"), arrival) for line in text.split("\n") if line.strip()]
    except ValueError:
        return {"recordId": record["recordId"], "result": "ProcessingFailed", "data": record["data"]}
    if not lines:
        return {"recordId": record["recordId"], "result": "Dropped", "data": ""}
    output = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
    data = base64.b64encode(output.encode()).decode()
    return {"recordId": record["recordId"], "result": "Ok", "data": data}


def _convert(line: str, arrival: datetime) -> dict[str, Any]:
    """Converts one syslog line, in whichever format it is; raises ValueError when it is in neither."""
    pri_match = _PRI.match(line)
    if not pri_match:
        return _rfc3164(_USER_NOTICE, line, arrival)
    pri, rest = int(pri_match[1]), line[pri_match.end():]
    if pri >= len(_FACILITIES) * 8:
        raise ValueError(f"PRI {pri} is out of range")
    if rest.startswith("1 "):
        return _rfc5424(pri, rest)
    return _rfc3164(pri, rest, arrival)


def _rfc5424(pri: int, rest: str) -> dict[str, Any]:
    match = _RFC5424.fullmatch(rest)
    if not match:
        raise ValueError(f"not an RFC 5424 header: {rest!r}")
    timestamp, hostname, app_name, procid, msgid, tail = match.groups()
    structured_data, message = _structured_data(tail)
    if message is not None:
        message = message.removeprefix("\ufeff")
    return _fields(pri, _rfc5424_time(timestamp), hostname, app_name, procid, msgid, structured_data, message)


def _rfc5424_time(value: str) -> str | None:
    if value == "-":
        return None
    if not _RFC5424_TIME.fullmatch(value):
        raise ValueError(f"not an RFC 5424 timestamp: {value!r}")
    datetime.fromisoformat(value)  # rejects dates and times that do not exist, such as month 13
    return value


def _structured_data(tail: str) -> tuple[dict[str, dict[str, str]] | None, str | None]:
    """Splits STRUCTURED-DATA [SP MSG] into the SD-ELEMENTs and the message."""
    if tail == "-":
        return None, None
    if tail.startswith("- "):
        return None, tail[2:]
    elements: dict[str, dict[str, str]] = {}
    position = 0
    while element := _SD_ELEMENT.match(tail, position):
        if element[1] in elements:
            raise ValueError(f"SD-ID {element[1]!r} appears twice")  # RFC 5424 section 6.3.2
        elements[element[1]] = _sd_params(element[2])
        position = element.end()
    if not elements or (position < len(tail) and tail[position] != " "):
        raise ValueError(f"not RFC 5424 STRUCTURED-DATA: {tail!r}")
    return elements, tail[position + 1:] if position < len(tail) else None


def _sd_params(params: str) -> dict[str, str]:
    """' iut="3" eventSource="App"' -> {"iut": "3", "eventSource": "App"}, with \\", \\\\ and \\] decoded."""
    return {name: _SD_ESCAPE.sub(r"\1", value) for name, value in _SD_PARAM.findall(params)}


def _rfc3164(pri: int, rest: str, arrival: datetime) -> dict[str, Any]:
    match = _RFC3164.fullmatch(rest)
    if not match or match[1] not in _MONTHS:
        raise ValueError(f"not an RFC 3164 line: {rest!r}")
    month, day, hour, minute, second, hostname, content = match.groups()
    timestamp = _latest_year(arrival, _MONTHS[month], int(day), int(hour), int(minute), int(second))
    tag = _TAG.fullmatch(content or "")
    app_name, procid, message = tag.groups() if tag else (None, None, content)
    return _fields(pri, timestamp.isoformat(), hostname, app_name, procid, None, None, message)


def _latest_year(arrival: datetime, *month_day_time: int) -> datetime:
    """Dates a yearless RFC 3164 timestamp in the latest year that puts it at most a day after arrival."""
    latest = arrival.replace(tzinfo=None) + _AHEAD_OF_ARRIVAL
    for year in (latest.year, latest.year - 1):
        try:
            candidate = datetime(year, *month_day_time)
        except ValueError:  # 29 February outside a leap year, or a day that no month has
            continue
        if candidate <= latest:
            return candidate
    raise ValueError(f"no such date in {latest.year - 1} or {latest.year}: {month_day_time}")


def _fields(pri: int, timestamp: str | None, hostname: str, app_name: str | None, procid: str | None,
            msgid: str | None, structured_data: dict[str, dict[str, str]] | None,
            message: str | None) -> dict[str, Any]:
    facility, severity = divmod(pri, 8)
    return {
        "facility": facility,
        "facility_name": _FACILITIES[facility],
        "severity": severity,
        "severity_name": _SEVERITIES[severity],
        "timestamp": timestamp,
        "hostname": _nullable(hostname),
        "app_name": _nullable(app_name),
        "procid": _nullable(procid),
        "msgid": _nullable(msgid),
        "structured_data": structured_data,
        "message": message,
    }


def _nullable(value: str | None) -> str | None:
    return None if value == "-" else value


handler = lambda_handler
