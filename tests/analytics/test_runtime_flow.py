"""The runtime of SQL applications against the real in-process Kinesis sidecar and real delivery streams of the
daemon (to a local directory), with stand-ins for the engine and the record mapping (a JSON mapper, and an
engine that copies the rows of its input streams into ``DESTINATION_SQL_STREAM``)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pyarrow as pa

from firehose.analytics.checkpoints import PendingOutput
from firehose.analytics.sqltypes import (
    APPROXIMATE_ARRIVAL_TIME,
    ERROR_STREAM_SCHEMA,
    ROWTIME,
    Column,
    StreamSchema,
    parse_sql_type,
)
from tests.support.aws import CREDS, ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import delivered_records
from tests.support.kinesis_source import kinesis_settings
from tests.support.ports import free_port
from tests.support.streams import read_shard
from tests.support.waiting import wait_until

# -- stand-ins for the engine and the record mapping ---------------------------------------


@dataclass
class Mapped:
    rows: pa.Table
    errors: pa.Table


def schema_of(schema: dict[str, Any], name: str) -> StreamSchema:
    return StreamSchema(name, tuple(Column(c["Name"], parse_sql_type(c["SqlType"])) for c in schema["RecordColumns"]))


def map_records(records: Sequence[bytes], schema: dict[str, Any], *, rowtimes: Sequence[int],
                arrivals: Sequence[int]) -> Mapped:
    stream = schema_of(schema, "in")
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for data, rowtime, arrival in zip(records, rowtimes, arrivals, strict=True):
        try:
            doc = json.loads(data)
            row = {c["Name"]: doc[c["Mapping"][2:]] for c in schema["RecordColumns"]}
        except (ValueError, KeyError) as exc:
            bad.append({ROWTIME: rowtime, "ERROR_TIME": rowtime, "ERROR_LEVEL": "Error", "ERROR_NAME": "Parse_error",
                        "MESSAGE": str(exc), "DATA_ROWTIME": rowtime, "DATA_ROW": bytes(data).hex(),
                        "PUMP_NAME": None})
            continue
        good.append({ROWTIME: rowtime, APPROXIMATE_ARRIVAL_TIME: arrival, **row})
    return Mapped(pa.Table.from_pylist(good, schema=stream.arrow_schema(rowtime=True, arrival=True)),
                  pa.Table.from_pylist(bad, schema=ERROR_STREAM_SCHEMA.arrow_schema()))


def serialize_rows(rows: pa.Table, record_format: str) -> list[bytes]:
    out = []
    for row in rows.to_pylist():
        row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        out.append(json.dumps(row).encode() + b"\n")
    return out


def discover_schema(records: Sequence[bytes]) -> dict[str, Any]:
    docs = [json.loads(r) for r in records]
    return {"InputSchema": {"RecordColumns": [{"Name": k.upper(), "SqlType": "VARCHAR(16)", "Mapping": f"$.{k}"}
                                              for k in docs[0]]},
            "ParsedInputRecords": [[str(v) for v in d.values()] for d in docs]}


def load_reference(data: bytes, schema: dict[str, Any]) -> pa.Table:
    names = [c["Name"] for c in schema["RecordColumns"]]
    rows = [dict(zip(names, line.split(","), strict=True)) for line in data.decode().splitlines() if line]
    return pa.Table.from_pylist(rows)


ROWS = SimpleNamespace(map_records=map_records, schema_of=schema_of, serialize_rows=serialize_rows,
                       discover_schema=discover_schema, load_reference=load_reference)


class CopyEngine:
    """Every row pushed comes out of ``DESTINATION_SQL_STREAM`` at the next advance (without the arrival time);
    ``snapshot`` carries how many rows went through, so a restore is visible."""

    def __init__(self, code: str, inputs: Sequence[StreamSchema], references: Sequence[StreamSchema]) -> None:
        self.pending: list[pa.Table] = []
        self.count = 0
        self.references: dict[str, pa.Table] = {}

    def set_reference(self, table: str, rows: pa.Table) -> None:
        self.references[table] = rows

    def push(self, stream: str, rows: pa.Table) -> None:
        self.pending.append(rows.drop_columns([APPROXIMATE_ARRIVAL_TIME]))

    def advance(self, now_ms: int) -> dict[str, pa.Table]:
        if not self.pending:
            return {}
        out = pa.concat_tables(self.pending)
        self.pending = []
        self.count += out.num_rows
        return {"DESTINATION_SQL_STREAM": out}

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, data: bytes) -> None:
        self.count = int(data)

    def state_bytes(self) -> int:
        return 0


class WindowEngine(CopyEngine):
    """Holds every row pushed (a window that stays open) until ``closed`` is set; ``state_bytes`` is what it
    holds. Counts its ``advance`` calls and the rows pushed, for the test to wait on."""

    def __init__(self, code: str, inputs: Sequence[StreamSchema], references: Sequence[StreamSchema]) -> None:
        super().__init__(code, inputs, references)
        self.closed = False
        self.pushed = 0
        self.advances = 0

    def push(self, stream: str, rows: pa.Table) -> None:
        self.pushed += rows.num_rows
        super().push(stream, rows)

    def advance(self, now_ms: int) -> dict[str, pa.Table]:
        self.advances += 1
        return super().advance(now_ms) if self.closed else {}

    def state_bytes(self) -> int:
        return sum(t.nbytes for t in self.pending)


# -- the tests ---------------------------------------------------------------------------

ACCOUNT = "123456789012"
KINESIS = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{{}}"
FIREHOSE = f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{{}}"
COLUMNS = [{"Name": "TICKER", "SqlType": "VARCHAR(8)", "Mapping": "$.ticker"},
           {"Name": "N", "SqlType": "INTEGER", "Mapping": "$.n"}]


def stream(name: str) -> dict[str, Any]:
    return local_stream(name, Prefix=f"{name}/", ErrorOutputPrefix=f"errors-{name}/")


def detail(name: str, source: dict[str, Any], outputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    inp = {"InputId": "1.1", "NamePrefix": "SOURCE_SQL_STREAM", **source,
           "InputSchema": {"RecordFormat": {"RecordFormatType": "JSON"}, "RecordEncoding": "UTF-8",
                           "RecordColumns": COLUMNS},
           "InputParallelism": {"Count": 2}, **extra}
    arn = f"arn:aws:kinesisanalytics:us-east-1:{ACCOUNT}:application/{name}"
    return {"ApplicationName": name, "ApplicationARN": arn,
            "ApplicationCode": "-- copied by the stand-in engine", "InputDescriptions": [inp],
            "OutputDescriptions": [{"OutputId": f"{i + 2}.1", "DestinationSchema": {"RecordFormatType": "JSON"}, **o}
                                   for i, o in enumerate(outputs)]}


def to_firehose(name: str, stream_name: str = "DESTINATION_SQL_STREAM") -> dict[str, Any]:
    return {"Name": stream_name, "KinesisFirehoseOutputDescription": {"ResourceARN": FIREHOSE.format(name),
                                                                       "RoleARN": ROLE}}


def from_kinesis(name: str) -> dict[str, Any]:
    return {"KinesisStreamsInputDescription": {"ResourceARN": KINESIS.format(name), "RoleARN": ROLE}}


class Env:
    def __init__(self, start_daemon: Any, tmp_path: Path, **settings: Any) -> None:
        self.port = free_port()
        self.tmp = tmp_path
        self.settings = settings
        self.start_daemon = start_daemon
        self.d: RunningDaemon = self._start()
        self.kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{self.port}", **CREDS)

    def _start(self) -> RunningDaemon:
        d = self.start_daemon([stream("out"), stream("errs"), stream("in")], state_dir=self.tmp / "state",
                              kinesis=kinesis_settings(self.port, ("ticks", 2), ("alerts", 1)), **self.settings)
        rt = d.daemon.sql_runtime
        assert rt is not None
        rt.engine_factory = CopyEngine
        rt._rows = ROWS
        rt.tick_seconds = 0.05
        rt.poll_seconds = 0.05
        return d

    @property
    def runtime(self) -> Any:
        return self.d.daemon.sql_runtime

    def restart_daemon(self) -> None:
        self.d.stop()
        self.d = self._start()

    def start(self, app: dict[str, Any], position: str) -> None:
        self.d.call(lambda: self.runtime.start(ACCOUNT, app, {"1.1": position}))

    def run(self, coro: Any) -> Any:
        assert self.d.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.d.loop).result(30)

    def stop(self, name: str) -> None:
        self.run(self.runtime.stop(ACCOUNT, name))

    def put(self, stream_name: str, docs: list[dict[str, Any]]) -> None:
        resp = self.kinesis.put_records(StreamName=stream_name, Records=[
            {"Data": json.dumps(doc).encode(), "PartitionKey": f"k{i}"} for i, doc in enumerate(docs)])
        assert resp["FailedRecordCount"] == 0

    def delivered(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in delivered_records(self.tmp / "out", f"{prefix}/")]


def docs(start: int, n: int) -> list[dict[str, Any]]:
    return [{"ticker": f"T{i % 3}", "n": i} for i in range(start, start + n)]


def numbers(rows: list[dict[str, Any]]) -> Counter[int]:
    return Counter(r["N"] for r in rows)


def test_kinesis_to_delivery_stream_with_restart_at_last_stopped_point(start_daemon: Any, tmp_path: Path) -> None:
    env = Env(start_daemon, tmp_path)
    env.put("ticks", docs(0, 50))
    app = detail("copy", from_kinesis("ticks"), [to_firehose("out")])
    env.start(app, "TRIM_HORIZON")
    wait_until(lambda: len(env.delivered("out")) >= 50, timeout=20)
    rows = env.delivered("out")
    assert numbers(rows) == Counter(range(50))
    # ROWTIME stamped by the runtime, never decreasing in the order rows were emitted
    assert all(r["ROWTIME"] for r in rows)
    env.stop("copy")
    env.put("ticks", docs(50, 40))  # while stopped
    env.start(app, "LAST_STOPPED_POINT")
    env.put("ticks", docs(90, 10))
    wait_until(lambda: len(env.delivered("out")) >= 100, timeout=20)
    wait_until(lambda: env.d.idle("out"), timeout=20)
    assert numbers(env.delivered("out")) == Counter(range(100))  # nothing lost, nothing twice
    # the engine's state came back from the checkpoint
    assert env.runtime.running[(ACCOUNT, "copy")].engine.count >= 50
    env.stop("copy")
    # NOW ignores the checkpoint: what was put while stopped is not read
    env.put("ticks", docs(100, 5))
    env.start(app, "NOW")
    env.put("ticks", docs(200, 5))  # at once: NOW is the request's time, not when the reader opens
    wait_until(lambda: len(env.delivered("out")) >= 105, timeout=20)
    wait_until(lambda: env.d.idle("out"), timeout=20)
    assert numbers(env.delivered("out")) == Counter([*range(100), *range(200, 205)])


def test_crash_after_the_output_write_does_not_double_rows(start_daemon: Any, tmp_path: Path) -> None:
    env = Env(start_daemon, tmp_path)
    app = detail("crashy", from_kinesis("ticks"), [to_firehose("out")])
    env.put("ticks", docs(0, 30))
    env.start(app, "TRIM_HORIZON")
    wait_until(lambda: len(env.delivered("out")) >= 30, timeout=20)
    running = env.runtime.running.pop((ACCOUNT, "crashy"))
    assert running._task is not None
    env.d.call(running._task.cancel)  # dies without its clean-stop checkpoint: the last tick is still pending
    wait_until(lambda: running._task.done(), timeout=10)
    checkpoint = env.runtime.checkpoints.load(ACCOUNT, "crashy")
    assert checkpoint.pending, "the last tick's outputs are pending in the checkpoint"
    # ... and one more tick whose outputs never reached the stream (a crash before the append)
    lost = [b'{"N": 1000}\n', b'{"N": 1001}\n']
    sink_since = env.d.call(lambda: env.d.daemon.spool.open_stream(
        env.d.daemon.catalog.find("out").spool_key).log.committed_next_seq)
    checkpoint.tick += 1
    checkpoint.pending = [PendingOutput("2.1", lost, sink_since)]
    env.runtime.checkpoints.save(ACCOUNT, "crashy", checkpoint)
    env.restart_daemon()
    env.start(app, "LAST_STOPPED_POINT")
    env.put("ticks", docs(30, 10))
    wait_until(lambda: len(env.delivered("out")) >= 42, timeout=20)
    wait_until(lambda: env.d.idle("out"), timeout=20)
    assert numbers(env.delivered("out")) == Counter([*range(40), 1000, 1001])


def test_firehose_input_and_error_stream(start_daemon: Any, tmp_path: Path) -> None:
    env = Env(start_daemon, tmp_path)
    app = detail("fromfh", {"KinesisFirehoseInputDescription": {"ResourceARN": FIREHOSE.format("in"),
                                                                 "RoleARN": ROLE}},
                 [to_firehose("out"), to_firehose("errs", "error_stream")])
    env.start(app, "NOW")
    fh = env.d.client()
    wait_until(lambda: (ACCOUNT, "fromfh") in env.runtime.running and env.runtime.running[
        (ACCOUNT, "fromfh")].reader is not None, timeout=10)
    good = [json.dumps(d).encode() for d in docs(0, 20)]
    fh.put_record_batch(DeliveryStreamName="in", Records=[{"Data": r} for r in [*good, b"not json"]])
    wait_until(lambda: len(env.delivered("out")) >= 20 and env.delivered("errs"), timeout=20)
    assert numbers(env.delivered("out")) == Counter(range(20))
    errors = env.delivered("errs")
    assert [bytes.fromhex(e["DATA_ROW"]) for e in errors] == [b"not json"]


def test_kinesis_output(start_daemon: Any, tmp_path: Path) -> None:
    env = Env(start_daemon, tmp_path)
    app = detail("tok", from_kinesis("ticks"), [{"Name": "DESTINATION_SQL_STREAM", "KinesisStreamsOutputDescription": {
        "ResourceARN": KINESIS.format("alerts"), "RoleARN": ROLE}}])
    env.put("ticks", docs(0, 25))
    env.start(app, "TRIM_HORIZON")
    shard = env.kinesis.list_shards(StreamName="alerts")["Shards"][0]["ShardId"]

    def got() -> list[dict[str, Any]]:
        return [json.loads(r["Data"]) for r in read_shard(env.kinesis, "alerts", shard)]

    wait_until(lambda: len(got()) >= 25, timeout=20)
    assert numbers(got()) == Counter(range(25))


PREPROCESSOR = '''
import base64, json

def lambda_handler(event, context):
    out = []
    for r in event["records"]:
        doc = json.loads(base64.b64decode(r["data"]))
        meta = r["kinesisStreamRecordMetadata"]
        assert meta["shardId"] and meta["sequenceNumber"] and event["applicationArn"]
        if doc["n"] % 10 == 1:
            out.append({"recordId": r["recordId"], "result": "Dropped"})
        elif doc["n"] % 10 == 2:
            out.append({"recordId": r["recordId"], "result": "ProcessingFailed"})
        else:
            doc["n"] += 1000
            data = base64.b64encode(json.dumps(doc).encode()).decode()
            out.append({"recordId": r["recordId"], "result": "Ok", "data": data})
    return {"records": out}
'''

DELIVERY = '''
import base64, json, os

def lambda_handler(event, context):
    out = []
    with open(os.environ.get("OUTPUT_FILE", "{path}"), "a") as f:
        for r in event["records"]:
            assert "retryHint" in r["lambdaDeliveryRecordMetadata"]
            doc = json.loads(base64.b64decode(r["data"]))
            # the first attempt at every odd row fails: it must come again
            if doc["N"] % 2 and r["lambdaDeliveryRecordMetadata"]["retryHint"] == 0:
                out.append({{"recordId": r["recordId"], "result": "DeliveryFailed"}})
                continue
            f.write(json.dumps(doc) + "\\n")
            out.append({{"recordId": r["recordId"], "result": "Ok"}})
    return {{"records": out}}
'''


def test_preprocessor_and_lambda_output(start_daemon: Any, tmp_path: Path) -> None:
    transforms = tmp_path / "transforms"
    transforms.mkdir()
    (transforms / "pre.py").write_text(PREPROCESSOR)
    sink_file = tmp_path / "lambda-out.jsonl"
    (transforms / "deliver.py").write_text(DELIVERY.format(path=sink_file))
    env = Env(start_daemon, tmp_path, transforms_dir=str(transforms))
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{{}}"
    app = detail("pre", from_kinesis("ticks"),
                 [{"Name": "DESTINATION_SQL_STREAM", "LambdaOutputDescription": {"ResourceARN": fn.format("deliver"),
                                                                                 "RoleARN": ROLE}},
                  to_firehose("errs", "error_stream")],
                 InputProcessingConfigurationDescription={"InputLambdaProcessorDescription": {
                     "ResourceARN": fn.format("pre"), "RoleARN": ROLE}})
    env.put("ticks", docs(0, 30))
    env.start(app, "TRIM_HORIZON")

    def delivered() -> list[dict[str, Any]]:
        return [json.loads(line) for line in sink_file.read_text().splitlines()] if sink_file.exists() else []

    wanted = Counter(i + 1000 for i in range(30) if i % 10 not in (1, 2))
    wait_until(lambda: len(delivered()) >= sum(wanted.values()) and len(env.delivered("errs")) >= 3, timeout=60)
    assert numbers(delivered()) == wanted
    failed = [json.loads(bytes.fromhex(e["DATA_ROW"])) for e in env.delivered("errs")]
    assert sorted(d["n"] for d in failed) == [2, 12, 22]


def test_discover_input_schema(start_daemon: Any, tmp_path: Path) -> None:
    from firehose.analytics.sampling import UnableToDetectSchemaException

    env = Env(start_daemon, tmp_path)
    (tmp_path / "out" / "samples.json").write_text('{"ticker": "A", "n": 1}\n\n{"ticker": "B", "n": 2}\n')
    got = env.run(env.runtime.discover(ACCOUNT, {"S3Configuration": {
        "RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local", "FileKey": "samples.json"}}))
    assert [c["Mapping"] for c in got["InputSchema"]["RecordColumns"]] == ["$.ticker", "$.n"]
    assert got["RawInputRecords"] == ['{"ticker": "A", "n": 1}', '{"ticker": "B", "n": 2}']
    env.put("ticks", docs(0, 7))
    got = env.run(env.runtime.discover(ACCOUNT, {"ResourceARN": KINESIS.format("ticks"), "RoleARN": ROLE,
                                                 "InputStartingPositionConfiguration": {
                                                     "InputStartingPosition": "TRIM_HORIZON"}}))
    assert sorted(json.loads(r)["n"] for r in got["RawInputRecords"]) == list(range(7))
    try:
        env.run(env.runtime.discover(ACCOUNT, {"ResourceARN": KINESIS.format("alerts"), "RoleARN": ROLE,
                                               "InputStartingPositionConfiguration": {
                                                   "InputStartingPosition": "TRIM_HORIZON"}}))
    except UnableToDetectSchemaException as exc:
        assert exc.raw_input_records == []
    else:
        raise AssertionError("an empty stream has no schema to detect")


def test_an_application_whose_windows_hold_too_much_takes_no_input_until_they_close(
        start_daemon: Any, tmp_path: Path) -> None:
    """``analytics.max_state_bytes``: while the engine holds that much, ticks take no input (the records wait in
    the source, memory stays bounded); once the windows close, the rest is read, and nothing is lost."""
    env = Env(start_daemon, tmp_path, analytics={"max_state_bytes": 1024})
    env.runtime.engine_factory = WindowEngine
    app = detail("windows", from_kinesis("ticks"), [to_firehose("out")])
    env.put("ticks", docs(0, 100))
    env.start(app, "TRIM_HORIZON")
    running = env.runtime.running[(ACCOUNT, "windows")]
    wait_until(lambda: running.holding, timeout=20)
    engine = running.engine
    assert engine.state_bytes() >= 1024 and engine.pushed == 100
    env.put("ticks", docs(100, 50))
    wait_until(lambda: running._queue.qsize() > 0, timeout=20)  # the reader fetched them
    seen = engine.advances
    wait_until(lambda: engine.advances >= seen + 5, timeout=20)
    assert engine.pushed == 100 and running._queue.qsize() > 0  # five ticks, none took the new records
    assert env.delivered("out") == []
    engine.closed = True  # the windows close: their rows go out, and input is taken again
    wait_until(lambda: len(env.delivered("out")) >= 150, timeout=20)
    wait_until(lambda: env.d.idle("out"), timeout=20)
    assert numbers(env.delivered("out")) == Counter(range(150))
    assert not running.holding and engine.pushed == 150
