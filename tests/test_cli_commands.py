"""``firehose put``, ``ls`` and ``describe`` run as a person runs them (``python -m firehose ...``) against a
running daemon, and the parts they are built from (record splitting, retrying a partial failure, the
stream summary) on their own."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firehose.commands.connection import Connection
from firehose.commands.put import MAX_RECORD_BYTES, Oversized, Sender, Summary, parse_delimiter, split_records
from firehose.commands.streams import summary, table
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import assert_delivered_once, read_local
from tests.support.waiting import wait_until


def firehose(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``python -m firehose ARGS`` with ``stdin`` as its input (and ``env`` added); its output is not a terminal."""
    done = subprocess.run([sys.executable, "-m", "firehose", *args], input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def delivered(d: RunningDaemon, out: Path, name: str) -> list[bytes]:
    """Once ``name`` is idle, the objects it delivered (everything it accepted is in them by then)."""
    wait_until(lambda: d.idle(name), timeout=30)
    return list(read_local(out).values())


def test_put_delivers_every_line_of_a_100000_line_file(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("lines")])
    lines = [f'{{"n": {i}, "text": "line {i}"}}\n'.encode() for i in range(100_000)]
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"".join(lines))

    done = firehose("put", "lines", str(source), "--endpoint-url", d.endpoint, "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["records"], result["accepted"], result["failed"], result["ok"]) == (100_000, 100_000, 0, True)
    assert result["accepted_bytes"] == source.stat().st_size
    assert done.stderr == ""  # not a terminal: no progress bar
    assert_delivered_once(delivered(d, tmp_path / "out", "lines"), lines)


def test_put_reads_standard_input_and_keeps_a_last_line_without_its_newline(start_daemon: Any,
                                                                            tmp_path: Path) -> None:
    d = start_daemon([local_stream("stdin")])
    data = b"first\nsecond\n\nlast without newline"

    done = firehose("put", "stdin", "-", "--endpoint-url", d.endpoint, stdin=data)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stdin: 4 of 4 records accepted"), done.stdout
    assert b"".join(delivered(d, tmp_path / "out", "stdin")) == data


def test_put_splits_on_a_delimiter_and_keeps_it(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("delimited")])
    data = b'{"a": 1}\n{"b": 2}\x1e{"c":\n 3}\x1e'

    done = firehose("put", "delimited", "--delimiter", "\\x1e", "--endpoint-url", d.endpoint, "--json",
                    stdin=data)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == 2
    assert b"".join(delivered(d, tmp_path / "out", "delimited")) == data


def test_a_record_over_the_limit_fails_and_the_rest_are_delivered(start_daemon: Any, tmp_path: Path) -> None:
    d = start_daemon([local_stream("limits")])
    big = b"x" * MAX_RECORD_BYTES + b"\n"  # with its newline, one byte over 1,000 KiB
    fits = b"y" * (MAX_RECORD_BYTES - 1) + b"\n"  # exactly the limit: accepted
    source = tmp_path / "input"
    source.write_bytes(b"before\n" + big + fits + b"after\n")

    done = firehose("put", "limits", str(source), "--endpoint-url", d.endpoint, "--json")

    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert (result["records"], result["accepted"], result["failed"], result["ok"]) == (4, 3, 1, False)
    assert result["failures"][0]["record"] == 2 and result["failures"][0]["size"] == len(big)
    assert "record 2 (1024001 bytes) failed" in done.stderr
    assert sorted(b"".join(delivered(d, tmp_path / "out", "limits")).splitlines(keepends=True)) == \
        sorted([b"before\n", fits, b"after\n"])


def test_put_to_a_missing_stream_stops_with_status_1(start_daemon: Any) -> None:
    d = start_daemon([])

    done = firehose("put", "nowhere", "--endpoint-url", d.endpoint, stdin=b"a\nb\n")

    assert done.returncode == 1
    assert "ResourceNotFoundException" in done.stdout and "0 of 2 records accepted" in done.stdout


def test_ls_and_describe_show_definitions_and_the_daemons_figures(start_daemon: Any) -> None:
    d = start_daemon([local_stream("alpha", size_mb=5, interval=300), local_stream("beta", "other")])
    d.client().put_record(DeliveryStreamName="alpha", Record={"Data": b"held in the buffer\n"})

    listed = firehose("ls", "--endpoint-url", d.endpoint)
    assert listed.returncode == 0, listed.stderr
    header, alpha, beta = listed.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "STATUS", "DESTINATION", "BUFFERING", "VERSION"]
    assert "BACKLOG" in header and "LAST ERROR" in header
    assert alpha.split()[:7] == ["alpha", "ACTIVE", "ExtendedS3", "s3://local", "5", "MiB", "/"]
    assert "300s" in alpha and "19 B" in alpha  # the buffered record is the backlog
    assert beta.split()[:4] == ["beta", "ACTIVE", "ExtendedS3", "s3://other"]

    as_json = json.loads(firehose("ls", "--endpoint-url", d.endpoint, "--json").stdout)
    assert [s["name"] for s in as_json] == ["alpha", "beta"]
    assert as_json[0]["destination"] == {"type": "ExtendedS3", "target": "s3://local",
                                         "buffering": {"size_mb": 5, "interval_seconds": 300}}
    assert as_json[0]["daemon"]["backlog_bytes"] == 19 and as_json[0]["daemon"]["last_error"] is None

    page = firehose("describe", "alpha", "--endpoint-url", d.endpoint)
    assert page.returncode == 0, page.stderr
    fields = dict(line.split(":", 1) for line in page.stdout.splitlines())
    assert {k: v.strip() for k, v in fields.items() if k in ("Name", "Status", "Destination", "Target",
                                                             "Buffering", "Version", "Backlog")} == {
        "Name": "alpha", "Status": "ACTIVE", "Destination": "ExtendedS3", "Target": "s3://local",
        "Buffering": "5 MiB / 300s", "Version": "1", "Backlog": "19 B"}
    described = json.loads(firehose("describe", "beta", "--endpoint-url", d.endpoint, "--json").stdout)
    assert described["name"] == "beta" and described["arn"].endswith(":deliverystream/beta")
    assert described["daemon"]["backlog_bytes"] == 0


def test_describe_of_a_missing_stream_says_so_with_status_1(start_daemon: Any) -> None:
    d = start_daemon([])

    done = firehose("describe", "ghost", "--endpoint-url", d.endpoint)

    assert done.returncode == 1 and "ResourceNotFoundException" in done.stderr
    assert firehose("ls", "--endpoint-url", d.endpoint).stdout.strip() == "No delivery streams."


def test_with_authentication_on_the_figures_come_from_a_signed_readyz(start_daemon: Any) -> None:
    def principal(name: str, account: str) -> dict[str, Any]:
        return {"access_key_id": f"AKIA{name.upper():0<16}", "secret": f"{name}-secret", "account_id": account,
                "name": name, "policies": [{"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"}]}]}

    home, other = principal("home", "111122223333"), principal("other", "444455556666")
    d = start_daemon([local_stream("mine"), {**local_stream("theirs"), "AccountId": "444455556666"}],
                     auth={"mode": "sigv4", "principals": [home, other]})

    def as_(p: dict[str, Any]) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": p["access_key_id"], "AWS_SECRET_ACCESS_KEY": p["secret"]}

    mine = json.loads(firehose("describe", "mine", "--endpoint-url", d.endpoint, "--json", env=as_(home)).stdout)
    assert mine["daemon"]["idle"] is True
    # Another account's stream: /readyz names it account/name; the command finds it by its ARN's account.
    theirs = json.loads(firehose("describe", "theirs", "--endpoint-url", d.endpoint, "--json", env=as_(other)).stdout)
    assert theirs["arn"].split(":")[4] == "444455556666" and theirs["daemon"]["backlog_bytes"] == 0
    refused = firehose("ls", "--endpoint-url", d.endpoint, env={"AWS_ACCESS_KEY_ID": "AKIANOBODY", **{
        "AWS_SECRET_ACCESS_KEY": "wrong"}})
    assert refused.returncode == 1 and refused.stdout == ""


# -- the parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("read_bytes", [1, 3, 7, 1 << 20])
def test_split_records_whatever_the_reads(read_bytes: int) -> None:
    data = b"a<>bb<><>" + b"z" * 30 + b"<>tail"
    records = list(split_records(io.BytesIO(data), b"<>", limit=10, read_bytes=read_bytes))
    assert records == [b"a<>", b"bb<>", b"<>", Oversized(32), b"tail"]


def test_split_records_drops_an_endless_last_record() -> None:
    assert list(split_records(io.BytesIO(b"ok\n" + b"x" * 50), b"\n", limit=10, read_bytes=4)) == \
        [b"ok\n", Oversized(50)]
    assert list(split_records(io.BytesIO(b""), b"\n")) == []


def test_parse_delimiter() -> None:
    assert parse_delimiter("\\n") == b"\n"
    assert parse_delimiter("\\r\\n") == b"\r\n"
    assert parse_delimiter("\\x1e") == b"\x1e"
    assert parse_delimiter("§\\t") == "§".encode() + b"\t"
    with pytest.raises(ValueError):
        parse_delimiter("")


class _Flaky:
    """A client whose first PutRecordBatch fails every other record with ServiceUnavailableException."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        self.calls.append([r["Data"] for r in Records])
        if len(self.calls) > 1:
            return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"} for _ in Records]}
        responses: list[dict[str, str]] = [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."} if i % 2 else {"RecordId": "x"}
            for i in range(len(Records))]
        responses[0] = {"ErrorCode": "InvalidArgumentException", "ErrorMessage": "bad"}
        return {"FailedPutCount": sum(1 for r in responses if "ErrorCode" in r), "RequestResponses": responses}


def test_a_partial_failure_resends_only_the_failed_records_and_gives_up_on_invalid_ones() -> None:
    client = _Flaky()
    result = Summary("s")
    batch = [(i + 1, f"r{i}\n".encode()) for i in range(6)]

    asyncio.run(Sender(Connection(client, None, "us-east-1"), "s", result, retry_seconds=60).send(batch))

    assert client.calls[1] == [b"r1\n", b"r3\n", b"r5\n"]  # the throttled ones, not the invalid r0
    assert (result.accepted, result.failed, result.resent) == (5, 1, 3)
    assert result.failures[0].record == 1 and result.failures[0].error.startswith("InvalidArgumentException")


def test_a_throttled_call_is_sent_again_whole() -> None:
    from botocore.exceptions import ClientError

    class ThrottledOnce:
        calls = 0

        def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
            self.calls += 1
            if self.calls == 1:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                                   "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutRecordBatch")
            return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"} for _ in Records]}

    result = Summary("s")
    asyncio.run(Sender(Connection(ThrottledOnce(), None, "us-east-1"), "s", result, retry_seconds=60).send(
        [(1, b"a\n"), (2, b"b\n")]))
    assert (result.accepted, result.failed, result.resent, result.ok) == (2, 0, 2, True)


def test_throttled_records_count_as_failed_once_the_retry_time_is_up() -> None:
    class Throttled:
        def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
            return {"FailedPutCount": len(Records),
                    "RequestResponses": [{"ErrorCode": "ServiceUnavailableException"} for _ in Records]}

    result = Summary("s")
    asyncio.run(Sender(Connection(Throttled(), None, "us-east-1"), "s", result, retry_seconds=0).send(
        [(1, b"a\n"), (2, b"b\n")]))
    assert (result.accepted, result.failed, result.ok) == (0, 2, False)


def test_against_aws_the_daemons_columns_are_left_out() -> None:
    description = {"DeliveryStreamName": "s", "DeliveryStreamStatus": "ACTIVE", "VersionId": "3",
                   "Destinations": [{"HttpEndpointDestinationDescription": {
                       "EndpointConfiguration": {"Url": "https://example.com/in"},
                       "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}}}]}
    shown = summary(description, None)
    assert "daemon" not in shown
    assert shown["destination"]["type"] == "HttpEndpoint" and shown["destination"]["target"] == "https://example.com/in"
    assert table([shown]).splitlines()[0].split() == ["NAME", "STATUS", "DESTINATION", "BUFFERING", "VERSION"]
