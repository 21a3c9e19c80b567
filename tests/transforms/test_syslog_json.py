"""transforms/syslog_json.py turns RFC 3164 and RFC 5424 lines into JSON lines, telling the formats apart per line.

The sample lines are the examples in RFC 3164 section 5.4 and RFC 5424 section 6.5, so the parser is held
to what the standards themselves show.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest

from tests.support.transforms import load

syslog = load("syslog_json")

NO_5424_FIELDS = {"msgid": None, "structured_data": None}
EVENT_LOG_SD = '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def event(*datas: str, arrival: str = "2024-03-04T06:25:14+00:00") -> dict[str, Any]:
    return {
        "invocationId": "inv-syslog",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/syslog",
        "region": "us-east-1",
        "records": [{"recordId": f"id-{i}", "approximateArrivalTimestamp": ms(arrival), "data": data}
                    for i, data in enumerate(datas)],
    }


def converted(text: str, arrival: str = "2024-03-04T06:25:14+00:00") -> list[dict[str, Any]]:
    """Runs one record holding text and returns its JSON lines, checking it came back Ok."""
    [record] = syslog.lambda_handler(event(b64(text), arrival=arrival), None)["records"]
    assert record["result"] == "Ok"
    output = base64.b64decode(record["data"]).decode()
    assert output.endswith("\n")
    return [json.loads(line) for line in output.splitlines()]


def test_rfc3164_line_with_tag_and_pid() -> None:
    line = "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8"
    assert converted(line) == [{
        "facility": 4, "facility_name": "auth", "severity": 2, "severity_name": "crit",
        "timestamp": "2023-10-11T22:14:15", "hostname": "mymachine", "app_name": "su", "procid": "123",
        **NO_5424_FIELDS, "message": "'su root' failed for lonvick on /dev/pts/8",
    }]


def test_rfc3164_line_without_tag_and_with_space_padded_day() -> None:
    assert converted("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!") == [{
        "facility": 1, "facility_name": "user", "severity": 5, "severity_name": "notice",
        "timestamp": "2024-02-05T17:32:18", "hostname": "10.0.0.99", "app_name": None, "procid": None,
        **NO_5424_FIELDS, "message": "Use the BFG!",
    }]


def test_line_without_pri_is_rfc3164_user_notice() -> None:
    [line] = converted("Mar  4 07:25:13 web-1 sshd[4242]: Accepted publickey for deploy")
    assert (line["facility_name"], line["severity_name"], line["app_name"], line["procid"]) == (
        "user", "notice", "sshd", "4242")
    assert line["timestamp"] == "2024-03-04T07:25:13"


@pytest.mark.parametrize(("sent", "arrival", "timestamp"), [
    ("Dec 31 23:59:59", "2024-01-01T00:00:05+00:00", "2023-12-31T23:59:59"),  # written just before New Year
    ("Jan  1 00:00:01", "2023-12-31T23:59:58+00:00", "2024-01-01T00:00:01"),  # sender's clock runs fast
    ("Jan  1 09:00:00", "2023-12-31T20:00:00+00:00", "2024-01-01T09:00:00"),  # sender in UTC+13
    ("Jun 15 12:00:00", "2024-12-31T23:00:00+00:00", "2024-06-15T12:00:00"),  # late, not half a year early
    ("Mar  5 12:00:00", "2024-03-04T06:25:14+00:00", "2023-03-05T12:00:00"),  # more than a day ahead
    ("Feb 29 08:00:00", "2025-01-10T00:00:00+00:00", "2024-02-29T08:00:00"),  # only a leap year has one
])
def test_rfc3164_year_is_the_latest_not_more_than_a_day_after_arrival(
    sent: str, arrival: str, timestamp: str,
) -> None:
    [line] = converted(f"<38>{sent} host sshd: session opened", arrival=arrival)
    assert line["timestamp"] == timestamp


def test_29_february_without_a_leap_year_in_reach_fails() -> None:
    leap_day = event(b64("<38>Feb 29 08:00:00 host sshd: x"), arrival="2026-03-04T00:00:00+00:00")
    [record] = syslog.lambda_handler(leap_day, None)["records"]
    assert record["result"] == "ProcessingFailed"


def test_rfc5424_examples() -> None:
    lines = converted("\n".join([
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \ufeff'su root' failed for lonvick",
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
        f"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {EVENT_LOG_SD} \ufeffAn "
        "application event log entry...",
        f'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {EVENT_LOG_SD}'
        '[examplePriority@32473 class="high"]',
    ]))
    event_log = {"facility": 20, "facility_name": "local4", "severity": 5, "severity_name": "notice",
                 "timestamp": "2003-10-11T22:14:15.003Z", "hostname": "mymachine.example.com",
                 "app_name": "evntslog", "procid": None, "msgid": "ID47"}
    event_log_sd = {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}}
    assert lines == [
        {"facility": 4, "facility_name": "auth", "severity": 2, "severity_name": "crit",
         "timestamp": "2003-10-11T22:14:15.003Z", "hostname": "mymachine.example.com", "app_name": "su",
         "procid": None, "msgid": "ID47", "structured_data": None, "message": "'su root' failed for lonvick"},
        {"facility": 20, "facility_name": "local4", "severity": 5, "severity_name": "notice",
         "timestamp": "2003-08-24T05:14:15.000003-07:00", "hostname": "192.0.2.1", "app_name": "myproc",
         "procid": "8710", "msgid": None, "structured_data": None,
         "message": "%% It's time to make the do-nuts."},
        {**event_log, "structured_data": event_log_sd, "message": "An application event log entry..."},
        {**event_log, "structured_data": {**event_log_sd, "examplePriority@32473": {"class": "high"}},
         "message": None},
    ]


def test_rfc5424_nilvalues_become_null() -> None:
    [line] = converted("<14>1 - - - - - -")
    assert line == {"facility": 1, "facility_name": "user", "severity": 6, "severity_name": "info",
                    "timestamp": None, "hostname": None, "app_name": None, "procid": None, "msgid": None,
                    "structured_data": None, "message": None}


def test_rfc5424_param_value_escapes_are_decoded() -> None:
    [line] = converted(r'<14>1 2024-03-04T06:25:13Z h app - - [meta@32473 q="say \"hi\"" p="C:\\tmp" '
                       r'b="[1\]" odd="a\b" empty=""] message')
    assert line["structured_data"] == {"meta@32473": {"q": 'say "hi"', "p": "C:\\tmp", "b": "[1]",
                                                      "odd": "a\\b", "empty": ""}}
    assert line["message"] == "message"


@pytest.mark.parametrize(("pri", "facility", "severity"), [
    (0, (0, "kern"), (0, "emerg")),
    (86, (10, "authpriv"), (6, "info")),
    (109, (13, "security"), (5, "notice")),
    (191, (23, "local7"), (7, "debug")),
])
def test_pri_splits_into_named_facility_and_severity(
    pri: int, facility: tuple[int, str], severity: tuple[int, str],
) -> None:
    [line] = converted(f"<{pri}>1 2024-03-04T06:25:13Z host app - - - text")
    assert (line["facility"], line["facility_name"]) == facility
    assert (line["severity"], line["severity_name"]) == severity


def test_several_lines_in_one_record_and_blank_only_record() -> None:
    lines = converted("<34>Oct 11 22:14:15 a su: one\r\n\n<14>1 - b - - - - two\n")
    assert [(line["hostname"], line["message"]) for line in lines] == [("a", "one"), ("b", "two")]
    [record] = syslog.lambda_handler(event(b64("\n\n")), None)["records"]
    assert (record["result"], record["data"]) == ("Dropped", "")


def test_one_bad_line_fails_its_whole_record_and_no_other() -> None:
    good = b64("<34>Oct 11 22:14:15 mymachine su: 'su root' failed")
    bad = [
        b64("<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!"),
        b64("<34>Oct 11 22:14:15 mymachine su: fine\nthis line is not syslog"),
        b64("<192>Oct 11 22:14:15 mymachine su: PRI out of range"),
        b64("<34>Okt 11 22:14:15 mymachine su: no such month"),
        b64("<34>Feb 30 22:14:15 mymachine su: no such day"),
        b64("<34>1 2003-13-11T22:14:15.003Z host app - - - no such month"),
        b64("<34>1 2003-10-11 22:14:15 host app - - - not RFC 3339"),
        b64("<34>1 2003-10-11T22:14:15Z host app - ID47"),  # no STRUCTURED-DATA
        b64('<34>1 2003-10-11T22:14:15Z host app - - [a@1 x="1"][a@1 y="2"] SD-ID twice'),
        b64('<34>1 2003-10-11T22:14:15Z host app - - [a@1 x="1" unterminated'),
        b64('<34>1 2003-10-11T22:14:15Z host app - - [a@1 x="1"]no space before MSG'),
        b64("<34>2 2003-10-11T22:14:15Z host app - - - version 2"),
        base64.b64encode(b"<34>Oct 11 22:14:15 mymachine su: \xff").decode(),  # not UTF-8
    ]
    records = syslog.lambda_handler(event(good, *bad, good), None)["records"]
    assert [r["recordId"] for r in records] == [f"id-{i}" for i in range(len(bad) + 2)]
    assert [r["result"] for r in records] == ["Ok"] + ["ProcessingFailed"] * len(bad) + ["Ok"]
    assert [r["data"] for r in records[1:-1]] == bad
