"""The Lambda processor: Firehose's transformation contract, run in worker processes.

A transform function is a Python file with the AWS Lambda handler signature
(``handler(event, context)``), so a real Firehose Lambda runs unchanged. The
definition names it by ``LambdaArn``; ``resolve_function`` maps that to a file:
first through the ``functions:`` table in the settings (by full ARN or by
function name), else ``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``
means ``lambda_handler`` (else ``handler``) in ``<transforms_dir>/NAME.py``.

Handlers run in worker processes (``WorkerPool``), never in the daemon's
process: a handler that hangs past its timeout has its process killed and
replaced, one that crashes its process is replaced, and the daemon carries on.
The worker builds the event and checks the response against the contract
(every recordId exactly once, result Ok/Dropped/ProcessingFailed, valid
base64, at most 6 MB), so the daemon's process only ships record bytes.
``LambdaProcessor`` retries a failed invocation ``NumberOfRetries`` times
(backing off with full jitter, ``firehose.retry``) and then reports every
record of it as failed, so the caller writes them to the error output (spec:
transforms.md §2-4).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import pybase64

from firehose.retry import Backoff, RetryExpired, retry_until

log = logging.getLogger("firehose.processing")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # synchronous Lambda request and response limit
RESULTS = ("Ok", "Dropped", "ProcessingFailed")
#: How a worker shapes an event's records and checks the answer. ``firehose``: Firehose's transformation
#: contract. ``analytics-input``: a SQL application's preprocessor (``recordId``, ``data`` and the metadata
#: member the caller gives, e.g. ``kinesisStreamRecordMetadata``; the answer as Firehose's). ``analytics-output``:
#: a SQL application's Lambda output (``lambdaDeliveryRecordMetadata``; each answer ``Ok`` or ``DeliveryFailed``).
FIREHOSE = "firehose"
ANALYTICS_INPUT = "analytics-input"
ANALYTICS_OUTPUT = "analytics-output"
_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([A-Za-z0-9_-]+)(?::[A-Za-z0-9$_-]+)?$")


# -- which file a LambdaArn means ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionRef:
    arn: str
    name: str
    path: Path
    handler: str
    timeout_s: float = 60.0
    memory_mb: int = 128


def resolve_function(arn: str, *, functions: Mapping[str, Any], transforms_dir: Path) -> FunctionRef:
    """The handler a LambdaArn names; ValueError says where it was looked for."""
    m = _ARN.match(arn)
    name = m.group(3) if m else arn
    configured = functions.get(arn) or functions.get(name)
    if configured is not None:
        path = Path(configured.path)
        if not path.is_file():
            raise ValueError(f"Lambda function {arn}: {path} does not exist")
        return FunctionRef(arn, name, path, configured.handler, configured.timeout_seconds, configured.memory_mb)
    if m is None:
        raise ValueError(f"Lambda function {arn} is neither in the functions table nor an "
                         "arn:aws:lambda:REGION:ACCOUNT:function:NAME ARN")
    path = Path(transforms_dir) / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"Lambda function {arn}: no {path} (and no entry in the functions table)")
    text = path.read_text(errors="replace")
    handler = "lambda_handler" if re.search(r"^def lambda_handler\(|^lambda_handler\s*=", text, re.M) else "handler"
    return FunctionRef(arn, name, path, handler)


# -- the worker process -------------------------------------------------------------


class _Context:
    """What Lambda code actually uses of the context object."""

    def __init__(self, fn: dict[str, Any], deadline: float) -> None:
        self.function_name = fn["name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = fn["arn"]
        self.memory_limit_in_mb = fn["memory_mb"]
        self.aws_request_id = fn["request_id"]
        self.log_group_name = f"/aws/lambda/{fn['name']}"
        self.log_stream_name = "firehose-worker"
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _load(path: str, handler: str, cache: dict[tuple[str, float], Any]) -> Any:
    mtime = os.stat(path).st_mtime
    module = cache.get((path, mtime))
    if module is None:
        spec = importlib.util.spec_from_file_location(f"firehose_transform_{abs(hash(path))}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(Path(path).parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(Path(path).parent))
        cache[(path, mtime)] = module
    fn = getattr(module, handler, None)
    if not callable(fn):
        raise AttributeError(f"{path} has no function {handler!r}")
    return fn


def _serve(conn: Connection, nice: int) -> None:
    """Worker main loop: one invocation at a time, until the pipe closes.

    The worker builds the event itself (base64 included) and checks the
    response against the contract, so the daemon's process only moves bytes.
    It runs at a lower CPU priority than ingest: records wait safely in the
    spool, while PutRecordBatch callers wait on the daemon.
    """
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    cache: dict[tuple[str, float], Any] = {}
    while True:
        try:
            fn, head, ids, datas, arrivals, kinesis = conn.recv()
        except (EOFError, OSError):
            return
        try:
            handler = _load(fn["path"], fn["handler"], cache)
            event = dict(head)
            encode = pybase64.b64encode
            contract = fn.get("contract", FIREHOSE)
            # Records read from MSK carry their bytes as kafkaRecordValue and their place as
            # mskRecordMetadata, and the function answers with kafkaRecordValue (MSKFirehoseEvent).
            msk = "sourceMSKArn" in head
            value, meta_key = ("kafkaRecordValue", "mskRecordMetadata") if msk else ("data", "kinesisRecordMetadata")
            if contract == FIREHOSE:
                event["records"] = [
                    {"recordId": rid, "approximateArrivalTimestamp": arrival, value: encode(data).decode()}
                    for rid, data, arrival in zip(ids, datas, arrivals, strict=True)]
            else:  # the SQL applications' contracts: each record's metadata members are given whole
                event["records"] = [{"recordId": rid, "data": encode(data).decode()} for rid, data in zip(ids, datas,
                                                                                                         strict=True)]
            if kinesis is not None:
                for item, meta in zip(event["records"], kinesis, strict=True):
                    if meta is not None:
                        if contract == FIREHOSE:
                            item[meta_key] = meta
                        else:
                            item.update(meta)
            result = handler(event, _Context(fn, time.monotonic() + fn["timeout_s"]))
            checked = check_delivery_response(result, ids) if contract == ANALYTICS_OUTPUT \
                else check_response(result, ids, value=value)
        except InvocationError as exc:
            conn.send(("error", exc.code, exc.message))
        except BaseException as exc:  # the function's failure is reported, never fatal here
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            conn.send(("error", "Lambda.FunctionError", f"The function raised: {detail}"))
        else:
            conn.send(("ok", checked))


# -- the pool -----------------------------------------------------------------------


class InvocationError(Exception):
    """One invocation failed; ``code`` is the errorCode written to the error output."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Worker:
    process: Any
    conn: Connection


class WorkerPool:
    """Worker processes for transform functions; a hung or crashed worker is replaced."""

    def __init__(self, size: int, *, nice: int = 10) -> None:
        self.size = size
        self.nice = nice
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.replaced = 0

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve, args=(child, self.nice), name="firehose-transform", daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        with self._lock:
            self._all.append(worker)
        return worker

    async def _queue(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            workers = await asyncio.to_thread(lambda: [self._spawn() for _ in range(self.size)])
            for w in workers:
                self._idle.put_nowait(w)
        return self._idle

    async def invoke(self, fn: FunctionRef, head: dict[str, Any], records: Sequence[TransformInput], *,
                     contract: str = FIREHOSE) -> Checked:
        """Run one invocation; returns the checked results or raises InvocationError.

        Records travel as columns (ids, data, arrival times): pickling three lists costs
        a third of pickling one tuple per record. ``contract``: ``FIREHOSE``, ``ANALYTICS_INPUT`` or
        ``ANALYTICS_OUTPUT`` (the event's and the answer's shape).
        """
        idle = await self._queue()
        worker = await idle.get()
        keep = True
        try:
            header = {"path": str(fn.path), "handler": fn.handler, "timeout_s": fn.timeout_s, "name": fn.name,
                      "arn": fn.arn, "memory_mb": fn.memory_mb, "request_id": str(uuid.uuid4()), "contract": contract}
            try:
                kinesis = [r.kinesis for r in records] if any(r.kinesis for r in records) else None
                worker.conn.send((header, head, [r.record_id for r in records], [r.data for r in records],
                                  [r.arrival_ms for r in records], kinesis))
                ready = await asyncio.to_thread(worker.conn.poll, fn.timeout_s)
                if not ready:
                    keep = False
                    raise InvocationError(
                        "Lambda.FunctionTimeout", f"Task timed out after {fn.timeout_s:.2f} seconds")
                reply = worker.conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                keep = False
                code = worker.process.exitcode
                raise InvocationError("Lambda.FunctionError",
                                      f"The function's process exited (code {code}): {exc or 'connection closed'}") \
                    from None
            if reply[0] != "ok":
                raise InvocationError(reply[1], reply[2])
            return reply[1]  # type: ignore[no-any-return]
        finally:
            if keep:
                idle.put_nowait(worker)
            else:
                await asyncio.to_thread(self._retire, worker)
                idle.put_nowait(await asyncio.to_thread(self._spawn))

    def _retire(self, worker: _Worker) -> None:
        self.replaced += 1
        with contextlib.suppress(Exception):
            worker.conn.close()
        worker.process.kill()
        worker.process.join(5)
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def close(self) -> None:
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            with contextlib.suppress(Exception):
                w.conn.close()
            w.process.kill()
            w.process.join(5)


# -- the processor ------------------------------------------------------------------


def msk_record_metadata(topic: str, meta: Sequence[Any], arrival_ms: int) -> dict[str, Any]:
    """The Lambda event's mskRecordMetadata for a record read from a Kafka topic.

    AWS's members (MSKFirehoseEvent): ``offset`` and ``partitionId`` as strings and
    ``approximateArrivalTimestamp`` (the Kafka record's timestamp, ms). Ours besides, so a function
    can see all of the Kafka record: ``topic``; ``key`` (base64) when the record has one;
    ``headers`` (``[{"key": name, "value": base64}]``) when it has any.
    """
    partition, offset, key, headers = meta
    out: dict[str, Any] = {"offset": str(offset), "partitionId": str(partition),
                           "approximateArrivalTimestamp": arrival_ms, "topic": topic}
    if key is not None:
        out["key"] = key
    if headers:
        out["headers"] = [{"key": name, "value": v} for name, v in headers]
    return out


class TransformInput(NamedTuple):
    record_id: str
    data: bytes
    arrival_ms: int
    kinesis: dict[str, Any] | None = None


@dataclass(frozen=True)
class TransformResults:
    """The outcome of a batch, as columns (one entry per input record, in input order).

    ``result[i]`` is Ok (with ``data[i]`` and ``metadata[i]``), Dropped, or ProcessingFailed
    (with ``code[i]`` and ``message[i]``). Columns rather than an object per record: a
    batch holds thousands of records, and building a tuple each costs more than the rest.
    """

    result: list[str]
    data: list[bytes]
    metadata: list[dict[str, Any] | None]
    code: list[str]
    message: list[str]
    attempts: int = 1

    @classmethod
    def ok(cls, datas: list[bytes]) -> TransformResults:
        n = len(datas)
        return cls(["Ok"] * n, datas, [None] * n, [""] * n, [""] * n)

    @classmethod
    def failed(cls, n: int, code: str, message: str, attempts: int) -> TransformResults:
        return cls(["ProcessingFailed"] * n, [b""] * n, [None] * n, [code] * n, [message] * n, attempts)

    def __add__(self, other: TransformResults) -> TransformResults:
        return TransformResults(self.result + other.result, self.data + other.data, self.metadata + other.metadata,
                                self.code + other.code, self.message + other.message,
                                max(self.attempts, other.attempts))


@dataclass
class LambdaProcessor:
    function: FunctionRef
    pool: WorkerPool
    retries: int = 3
    stream_arn: str = ""
    region: str = "us-east-1"
    source_arn: str | None = None
    #: The source is an MSK cluster (``source_arn`` is its ARN): the event takes the MSK form.
    source_is_msk: bool = False
    #: The backoff between retries: up to ``backoff_s``, twice that, ... at most ``max_backoff_s``.
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    #: Told of each invocation: its duration in seconds and whether it succeeded (ExecuteProcessing).
    on_invocation: Callable[[float, bool], None] | None = None
    invocations: int = field(default=0, init=False)

    async def run(self, records: Sequence[TransformInput]) -> TransformResults:
        """Results in input order. Never raises for the function's failures."""
        if not records:
            return TransformResults.ok([])
        if _request_size(records) > MAX_PAYLOAD_BYTES and len(records) > 1:
            half = len(records) // 2
            first, second = await asyncio.gather(self.run(records[:half]), self.run(records[half:]))
            return first + second
        head: dict[str, Any] = {"invocationId": str(uuid.uuid4()), "deliveryStreamArn": self.stream_arn,
                                "region": self.region}
        if self.source_arn:
            head["sourceMSKArn" if self.source_is_msk else "sourceKinesisStreamArn"] = self.source_arn
        attempt = 0

        async def invoke() -> TransformResults:
            nonlocal attempt
            attempt += 1
            self.invocations += 1
            started = time.perf_counter()
            ok = False
            try:
                checked = await self.pool.invoke(self.function, head, records)
                ok = True
            finally:
                if self.on_invocation is not None:
                    self.on_invocation(time.perf_counter() - started, ok)
            return TransformResults(*checked, attempts=attempt)

        def failed(exc: Exception, number: int) -> None:
            code = exc.code if isinstance(exc, InvocationError) else type(exc).__name__
            log.warning("Transform invocation failed.", extra={
                "function": self.function.arn, "attempt": number, "code": code, "error": str(exc)})

        try:
            return await retry_until(invoke, backoff=Backoff(self.backoff_s, self.max_backoff_s),
                                     max_attempts=self.retries + 1, retry_on=(InvocationError,), on_failure=failed)
        except RetryExpired as gave_up:
            last = gave_up.last
            assert isinstance(last, InvocationError)  # the only error retried
            return TransformResults.failed(len(records), last.code, last.message, gave_up.attempts)


def _request_size(records: Sequence[TransformInput]) -> int:
    """The event's JSON size, closely enough to respect Lambda's 6 MB request limit."""
    return sum((len(r.data) + 2) // 3 * 4 + len(r.record_id) + 80 for r in records) + 200


#: Per record, as columns: result, data, metadata, errorCode, errorMessage.
Checked = tuple[list[str], list[bytes], list[dict[str, Any] | None], list[str], list[str]]


def check_response(body: Any, record_ids: Sequence[str], *, value: str = "data") -> Checked:
    """Check a handler's response against the contract; InvocationError if it breaks it anywhere.

    ``value``: the member holding each record's base64 bytes (``kafkaRecordValue`` for MSK sources)."""
    items = body.get("records") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvocationError("Lambda.MalformedResponse", "response has no 'records' list")
    wanted = {rid: i for i, rid in enumerate(record_ids)}
    out: list[tuple[str, bytes, dict[str, Any] | None, str, str] | None] = [None] * len(record_ids)
    size = 0
    decode = pybase64.b64decode
    for item in items:
        if type(item) is not dict:
            raise InvocationError("Lambda.MalformedResponse", "a response record is not an object")
        rid = item.get("recordId")
        index = wanted.get(rid) if type(rid) is str else None
        if index is None:
            raise InvocationError("Lambda.UnknownRecordId", f"response has recordId {rid!r} that was not sent")
        if out[index] is not None:
            raise InvocationError("Lambda.DuplicatedRecordId", f"response repeats recordId {rid!r}")
        data = item.get(value)
        if item.get("result") == "Ok" and type(data) is str and "metadata" not in item:
            try:  # the common case, inline
                out[index] = ("Ok", decode(data, validate=True), None, "", "")
            except (binascii.Error, ValueError):
                raise InvocationError("Lambda.InvalidBase64",
                                      f"recordId {rid!r} has {value} that is not valid base64") from None
        else:
            out[index] = _checked(item, rid, value)
        size += len(rid) + (len(data) if type(data) is str else 0) + 60
    if size > MAX_PAYLOAD_BYTES:
        raise InvocationError("Lambda.ResponseTooLarge", f"response is about {size} bytes; the limit is 6 MB")
    missing = [record_ids[i] for i, r in enumerate(out) if r is None]
    if missing:
        raise InvocationError("Lambda.MissingRecordId",
                              f"response leaves out {len(missing)} recordId(s), e.g. {missing[0]!r}")
    if not out:
        return [], [], [], [], []
    results, datas, metadata, codes, messages = zip(*out, strict=True)  # type: ignore[misc]
    return list(results), list(datas), list(metadata), list(codes), list(messages)


def check_delivery_response(body: Any, record_ids: Sequence[str]) -> Checked:
    """A SQL application's Lambda output answer: per record ``Ok``, or ``DeliveryFailed`` (so it is sent again)
    for any other result and for a record the answer leaves out; InvocationError if it has no records list."""
    items = body.get("records") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvocationError("Lambda.MalformedResponse", "response has no 'records' list")
    ok = {item.get("recordId") for item in items if type(item) is dict and item.get("result") == "Ok"}
    n = len(record_ids)
    return (["Ok" if rid in ok else "DeliveryFailed" for rid in record_ids], [b""] * n, [None] * n, [""] * n,
            [""] * n)


def _checked(item: dict[str, Any], rid: str, value: str) -> tuple[str, bytes, dict[str, Any] | None, str, str]:
    result = item.get("result")
    if result not in RESULTS:
        raise InvocationError("Lambda.InvalidResult",
                              f"recordId {rid!r} has result {result!r}; expected Ok, Dropped or ProcessingFailed")
    if result == "Dropped":
        return ("Dropped", b"", None, "", "")
    if result == "ProcessingFailed":
        return ("ProcessingFailed", b"", None, "Lambda.ProcessingFailedStatus",
                "The function marked the record ProcessingFailed.")
    data = item.get(value)
    if not isinstance(data, str):
        raise InvocationError("Lambda.MalformedResponse", f"recordId {rid!r} is Ok but has no base64 {value}")
    try:
        decoded = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvocationError("Lambda.InvalidBase64", f"recordId {rid!r} has {value} that is not valid base64") \
            from None
    metadata = item.get("metadata")
    if metadata is not None:
        keys = metadata.get("partitionKeys") if isinstance(metadata, dict) else "not an object"
        if keys is not None and (not isinstance(keys, dict)
                                 or not all(isinstance(v, str | int | float | bool) for v in keys.values())):
            raise InvocationError("Lambda.MalformedResponse",
                                  f"recordId {rid!r} has metadata.partitionKeys that is not a map of strings")
        otf = metadata.get("otfMetadata") if isinstance(metadata, dict) else None
        if otf is not None and (not isinstance(otf, dict) or not all(isinstance(v, str) for v in otf.values())):
            raise InvocationError("Lambda.MalformedResponse",
                                  f"recordId {rid!r} has metadata.otfMetadata that is not a map of strings")
        kept = ({"partitionKeys": dict(keys)} if keys else {}) | ({"otfMetadata": dict(otf)} if otf else {})
        metadata = kept or None
    return ("Ok", decoded, metadata, "", "")
