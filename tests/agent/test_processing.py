"""Each dataProcessingOptions converter on sample logs, and the chain end to end through the daemon."""

from __future__ import annotations

import json
from pathlib import Path

from firehose.agent.config import ProcessingOption
from firehose.agent.processing import Pipeline
from tests.support.agent import agent_json, flow
from tests.support.config import local_stream
from tests.support.delivered import wait_for_lines


def convert(options: list[dict], *records: bytes) -> list[bytes]:
    return Pipeline([ProcessingOption.model_validate(o) for o in options]).apply(list(records))


def as_json(records: list[bytes]) -> list[dict]:
    assert all(r.endswith(b"\n") for r in records)
    return [json.loads(r) for r in records]


def test_singleline() -> None:
    assert convert([{"optionName": "SINGLELINE"}], b"2024 Error\n   at a.b(c)\n   at d.e(f)\n") == [
        b"2024 Errorat a.b(c)at d.e(f)\n"]


def test_csv_to_json_with_quotes_and_missing_fields() -> None:
    out = convert([{"optionName": "CSVTOJSON", "customFieldNames": ["id", "name", "city"]}],
                  b'1,"Doe, Jane",Paris\n', b"2,Bob\n")
    assert as_json(out) == [{"id": "1", "name": "Doe, Jane", "city": "Paris"},
                            {"id": "2", "name": "Bob", "city": None}]
    tabbed = convert([{"optionName": "CSVTOJSON", "customFieldNames": ["a", "b"], "delimiter": "\t"}], b"x\ty\n")
    assert as_json(tabbed) == [{"a": "x", "b": "y"}]


def test_apache_common_and_combined() -> None:
    common = b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326\n'
    assert as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG"}], common)) == [{
        "host": "127.0.0.1", "ident": None, "authuser": "frank", "datetime": "10/Oct/2000:13:55:36 -0700",
        "request": "GET /apache_pb.gif HTTP/1.0", "response": "200", "bytes": "2326"}]
    combined = common.rstrip(b"\n") + b' "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
    doc = as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "COMBINEDAPACHELOG"}], combined))[0]
    assert doc["referrer"] == "http://www.example.com/start.html"
    assert doc["agent"] == "Mozilla/4.08 [en] (Win98; I ;Nav)"
    assert doc["bytes"] == "2326"


def test_apache_error_log() -> None:
    line = (b"[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] "
            b"[client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico\n")
    assert as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "APACHEERRORLOG"}], line)) == [{
        "timestamp": "Fri Sep 09 10:42:29.902022 2011", "module": "core", "severity": "error",
        "processid": "35708", "threadid": "4328636416", "client": "72.15.99.187",
        "message": "File does not exist: /usr/local/apache2/htdocs/favicon.ico"}]


def test_syslog_rfc3164_rfc3339_and_rfc5424() -> None:
    bsd = b"Mar 12 12:00:08 server2 rcd[308]: Loaded 12 packages in 'ximian-red-carpet|351' (0.01878 seconds)\n"
    assert as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "SYSLOG"}], bsd)) == [{
        "timestamp": "Mar 12 12:00:08", "hostname": "server2", "program": "rcd", "processid": "308",
        "message": "Loaded 12 packages in 'ximian-red-carpet|351' (0.01878 seconds)"}]
    rfc3339 = b"2024-03-12T12:00:08.123+01:00 web-1 nginx: worker exited\n"
    assert as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "RFC3339SYSLOG"}], rfc3339)) == [{
        "timestamp": "2024-03-12T12:00:08.123+01:00", "hostname": "web-1", "program": "nginx", "processid": None,
        "message": "worker exited"}]
    rfc5424 = b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] hi\n'
    doc = as_json(convert([{"optionName": "LOGTOJSON", "logFormat": "RFC5424SYSLOG"}], rfc5424))[0]
    assert doc == {"priority": "165", "version": "1", "timestamp": "2003-10-11T22:14:15.003Z",
                   "hostname": "mymachine.example.com", "appname": "evntslog", "procid": None, "msgid": "ID47",
                   "structureddata": '[exampleSDID@32473 iut="3"]', "message": "hi"}


def test_custom_field_names_and_pattern() -> None:
    line = b'10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 404 -\n'
    renamed = convert([{"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG", "customFieldNames": [
        "ip", "i", "u", "ts", "req", "status", "size"]}], line)
    assert as_json(renamed)[0] == {"ip": "10.0.0.1", "i": None, "u": None, "ts": "10/Oct/2000:13:55:36 -0700",
                                   "req": "GET / HTTP/1.1", "status": "404", "size": None}
    custom = convert([{"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG",
                       "matchPattern": r"^(\S+) .* (\d{3}) \S+$", "customFieldNames": ["ip", "status"]}], line)
    assert as_json(custom) == [{"ip": "10.0.0.1", "status": "404"}]


def test_a_line_that_does_not_parse_is_sent_unchanged_and_counted() -> None:
    pipeline = Pipeline([ProcessingOption.model_validate({"optionName": "LOGTOJSON", "logFormat": "SYSLOG"})])
    assert pipeline.apply([b"not syslog at all\n"]) == [b"not syslog at all\n"]
    assert pipeline.failures == 1


def test_add_metadata_and_brackets() -> None:
    doc = as_json(convert([{"optionName": "ADDMETADATA", "metadata": {"env": "prod"}, "timestamp": "true"}],
                          b"hello\n"))[0]
    assert doc["metadata"] == {"env": "prod"} and doc["data"] == "hello"
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == 24
    assert convert([{"optionName": "ADDBRACKETS"}], b"x\n") == [b"[x]\n"]
    pretty = convert([{"optionName": "CSVTOJSON", "customFieldNames": ["a"], "jsonFormat": "PRETTYPRINT"}], b"1\n")
    assert pretty == [b'{\n  "a": "1"\n}\n']


def test_processing_end_to_end_through_the_daemon(start_daemon, run_agent, tmp_path: Path) -> None:
    """Header lines skipped, multi-line records joined and parsed, CSV rows, an oversized record truncated."""
    daemon = start_daemon([local_stream("apps", interval=0, Prefix="apps/"),
                           local_stream("csv", interval=0, Prefix="csv/"),
                           local_stream("big", interval=0, Prefix="big/")])
    app = tmp_path / "app.log"
    app.write_bytes(b"# generated by app v1\n"
                    b"Mar 12 12:00:08 web rcd[308]: first\n  continued\n"
                    b"Mar 12 12:00:09 web rcd[309]: second\n"
                    b"Mar 12 12:00:11 web rcd[311]: last\n")
    table = tmp_path / "table.csv"
    table.write_bytes(b"id,name\n1,ann\n2,bob\n")
    big = tmp_path / "big.log"
    big.write_bytes(b"small\n" + b"z" * 2_000_000 + b"\nafter\n")
    run_agent(agent_json(daemon.endpoint, [
        flow(app, "apps", skipHeaderLines=1, multiLineStartPattern=r"^\w{3} \d", truncatedRecordTerminator="<cut>\n",
             dataProcessingOptions=[{"optionName": "SINGLELINE"},
                                    {"optionName": "LOGTOJSON", "logFormat": "SYSLOG"}]),
        flow(table, "csv", skipHeaderLines=1,
             dataProcessingOptions=[{"optionName": "CSVTOJSON", "customFieldNames": ["id", "name"]}]),
        flow(big, "big", truncatedRecordTerminator="<cut>\n"),
    ]))
    out = tmp_path / "out"
    docs = [json.loads(x) for x in wait_for_lines(out / "apps", 3)]
    assert docs[0] == {"timestamp": "Mar 12 12:00:08", "hostname": "web", "program": "rcd", "processid": "308",
                       "message": "firstcontinued"}
    assert docs[1]["message"] == "second"
    assert docs[2]["message"] == "last"  # sent once the file had been idle a moment
    assert [json.loads(x) for x in wait_for_lines(out / "csv", 2)] == [{"id": "1", "name": "ann"},
                                                                       {"id": "2", "name": "bob"}]
    small, cut, after = wait_for_lines(out / "big", 3)
    assert (small, after) == (b"small\n", b"after\n")
    assert len(cut) == 1000 * 1024 and cut.endswith(b"zzz<cut>\n")
