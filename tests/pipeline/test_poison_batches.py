"""No batch holds up its stream: what can never succeed goes to the error output, with the reason, a
metric and a WARNING, while what can succeed later (a destination that is down) waits in the spool.

* A batch whose objects cannot be built, or that the processing chain keeps failing on, goes to the
  error output after a few attempts, with its traceback logged once; later batches are delivered.
* An HTTP endpoint that keeps refusing a batch (a 400) gets it for ``RetryOptions.DurationInSeconds``,
  then the records go to ``http-endpoint-failed``; one that is down (503) for less than that gets it
  once it is back, and nothing reaches the error output.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from firehose.encoding.builder import ObjectBuilder
from firehose.errors import SpoolError
from firehose.processing.chain import Processor
from firehose.spool.cursor import BatchCursor
from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import read_local
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}, "log": {"summary_seconds": 0.2}}
ERRORS = "errors/!{firehose:error-output-type}/"


def error_docs(root: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for key, body in read_local(root).items() if key.startswith(f"errors/{kind}/")
            for line in body.splitlines()]


def data_objects(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in read_local(root).items() if not k.startswith("errors/")}


def put(d: RunningDaemon, stream: str, records: list[bytes]) -> None:
    assert d.client().put_record_batch(DeliveryStreamName=stream,
                                       Records=[{"Data": r} for r in records])["FailedPutCount"] == 0


def metric(d: RunningDaemon, line_start: str) -> float:
    for line in httpx.get(f"{d.endpoint}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "Records went to the error output."]


def test_a_batch_that_cannot_be_sealed_is_sealed_again_not_forgotten(
        start_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealing writes to the ledger, which may fail (a full disk): the records taken for the batch go
    back to their buffer and are sealed on a later round, each delivered once. (They used to be in no
    buffer and no batch, so nothing delivered them and the low watermark no longer held them.)"""
    seal = BatchCursor.seal
    calls = 0

    async def failing_once(self: BatchCursor, *args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise SpoolError("No space left on device")
        return await seal(self, *args, **kw)

    monkeypatch.setattr(BatchCursor, "seal", failing_once)
    d = start_daemon([local_stream("s", ErrorOutputPrefix=ERRORS)], **FAST)
    put(d, "s", [b"a\n", b"b\n"])
    wait_until(lambda: calls >= 2 and d.idle("s"), timeout=20)
    put(d, "s", [b"c\n"])
    wait_until(lambda: d.idle("s"), timeout=20)
    assert sorted(data_objects(tmp_path / "out").values()) == [b"a\nb\n", b"c\n"]


def test_a_batch_whose_objects_cannot_be_built_goes_to_processing_failed_after_a_few_attempts(
        start_daemon: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug that raises for one batch, every time: the batch goes to the error output with the reason
    (its traceback logged once, not on every attempt) and the batches after it are delivered."""
    build = ObjectBuilder.build

    async def broken(self: ObjectBuilder, encoding: Any, kind: str, key: str, records: Any, **kw: Any) -> Any:
        if any(b"poison" in bytes(r) for r in records.each()):
            raise KeyError("a bug")
        return await build(self, encoding, kind, key, records, **kw)

    monkeypatch.setattr(ObjectBuilder, "build", broken)
    caplog.set_level(logging.INFO, logger="firehose")
    d = start_daemon([local_stream("s", ErrorOutputPrefix=ERRORS)], **FAST)
    put(d, "s", [b"poison-1\n", b"poison-2\n"])
    wait_until(lambda: d.idle("s"), timeout=20)
    put(d, "s", [b"good\n"])
    wait_until(lambda: d.idle("s"), timeout=20)
    out = tmp_path / "out"
    assert list(data_objects(out).values()) == [b"good\n"]
    docs = error_docs(out, "processing-failed")
    assert [base64.b64decode(doc["rawData"]) for doc in docs] == [b"poison-1\n", b"poison-2\n"]
    assert {doc["errorCode"] for doc in docs} == {"Processing.InternalError"}
    assert docs[0]["errorMessage"] == "The batch could not be built after 3 attempts: KeyError: 'a bug'"
    assert docs[0]["attemptsMade"] == 3
    assert len([r for r in caplog.records if r.exc_info]) == 1, "the traceback is logged once"
    assert metric(d, 'firehose_error_output_records_total{delivery_stream="s",'
                     'error_output_type="processing-failed"}') == 2
    wait_until(lambda: summaries(caplog), timeout=5)
    assert "KeyError: 'a bug'" in summaries(caplog)[0].__dict__["reasons"]["processing-failed"]


def test_a_batch_the_processing_chain_keeps_failing_on_goes_to_processing_failed_and_nothing_is_lost(
        start_daemon: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    process = Processor.process

    async def broken(self: Processor, records: Any) -> Any:
        if any(b"poison" in r.data for r in records):
            raise TypeError("a bug in the chain")
        return await process(self, records)

    monkeypatch.setattr(Processor, "process", broken)
    caplog.set_level(logging.INFO, logger="firehose")
    stream = local_stream("p", ErrorOutputPrefix=ERRORS,
                          ProcessingConfiguration={"Enabled": True,
                                                   "Processors": [{"Type": "AppendDelimiterToRecord"}]})
    d = start_daemon([stream], **FAST)
    put(d, "p", [b"before"])
    wait_until(lambda: d.idle("p"), timeout=20)
    put(d, "p", [b"poison"])
    # Retried and given up on with no other record arriving (a failed batch once waited for the next record
    # to be retried at all), and in its own batch: the records of a batch the chain fails on go whole.
    wait_until(lambda: d.idle("p") and error_docs(tmp_path / "out", "processing-failed"), timeout=30)
    put(d, "p", [b"after"])
    wait_until(lambda: d.idle("p") and len(data_objects(tmp_path / "out")) == 2, timeout=30)
    delivered = b"".join(data_objects(tmp_path / "out").values())
    assert sorted(delivered.splitlines()) == [b"after", b"before"], "the records after the poison are delivered"
    docs = error_docs(tmp_path / "out", "processing-failed")
    assert [base64.b64decode(doc["rawData"]) for doc in docs] == [b"poison"]
    assert docs[0]["errorCode"] == "Processing.InternalError" and "TypeError: a bug in the chain" in \
        docs[0]["errorMessage"]
    assert len([r for r in caplog.records if r.exc_info]) == 1, "the traceback is logged once"
    assert metric(d, 'firehose_processing_failed_records_total{delivery_stream="p",'
                     'error_output_type="processing-failed"}') == 1


def http_stream(name: str, url: str, retry: int) -> dict[str, Any]:
    return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": url, "Name": "sink"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "RetryOptions": {"DurationInSeconds": retry},
        "S3BackupMode": "FailedDataOnly",
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local",
                            "ErrorOutputPrefix": ERRORS}}}


def test_an_endpoint_that_keeps_refusing_a_batch_gets_it_for_the_retry_duration_then_the_error_output_does(
        start_daemon: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firehose")
    with HttpEndpointReceiver() as endpoint:
        endpoint.behaviour = Behaviour(status=400, error_message="field 'user' is required")
        d = start_daemon([http_stream("hooks", endpoint.url, retry=2)], **FAST)
        put(d, "hooks", [b"a\n", b"b\n"])
        wait_until(lambda: d.idle("hooks"), timeout=20)
        docs = error_docs(tmp_path / "out", "http-endpoint-failed")
        assert [base64.b64decode(doc["rawData"]) for doc in docs] == [b"a\n", b"b\n"]
        assert {doc["errorCode"] for doc in docs} == {"HttpEndpoint.DestinationException"}
        assert docs[0]["errorMessage"] == "HTTP 400: field 'user' is required"
        # Retried for the whole duration, then given up. The duration runs from the first attempt's
        # start, a little before the receiver timed its arrival: hence the slack below 2,000 ms.
        sent = [r.timestamp for r in endpoint.requests if r.timestamp is not None]
        assert docs[0]["attemptsMade"] == len(sent) >= 2
        assert 1800 <= max(sent) - min(sent) < 10_000
        assert endpoint.accepted() == []
    assert metric(d, "firehose_error_output_records_total"
                     '{delivery_stream="hooks",error_output_type="http-endpoint-failed"}') == 2
    wait_until(lambda: summaries(caplog), timeout=5)
    line = summaries(caplog)[0]
    assert line.levelno == logging.WARNING and line.__dict__["http-endpoint-failed"] == 2
    assert "HTTP 400: field 'user' is required" in line.__dict__["reasons"]["http-endpoint-failed"]


def test_an_endpoint_that_is_down_for_less_than_the_retry_duration_gets_the_batch_when_it_is_back(
        start_daemon: Any, tmp_path: Path) -> None:
    with HttpEndpointReceiver() as endpoint:
        endpoint.behaviour = Behaviour(status=503, error_message="maintenance")
        d = start_daemon([http_stream("hooks", endpoint.url, retry=60)], **FAST)
        put(d, "hooks", [b"a\n", b"b\n"])
        wait_until(lambda: len(endpoint.requests) >= 5, timeout=20)
        assert not d.idle("hooks"), "the batch waits in the spool"
        assert read_local(tmp_path / "out") == {}
        endpoint.behaviour = Behaviour()
        wait_until(lambda: d.idle("hooks"), timeout=20)
        assert endpoint.accepted() == [b"a\n", b"b\n"]
        assert len({r.request_id for r in endpoint.requests}) == 1
    assert read_local(tmp_path / "out") == {}, "nothing reached the error output"
