"""The Kinesis API as an ASGI application: ``POST /`` with ``X-Amz-Target: Kinesis_20131202.<Op>``.

Both wire forms AWS SDKs use are accepted and answered in kind: awsJson1_1
(boto3, the CLI, the JavaScript, Go and .NET SDKs) and CBOR (the Java SDK's
default, hence the KPL, KCL and Kinesis Agent). The server under it speaks
HTTP/1.1 and HTTP/2, including h2c with prior knowledge, which is what the
JavaScript SDK v3 uses for Kinesis by default.

Errors use the awsJson envelope (``{"__type", "message"}``) with status 400,
``InternalFailure`` 500; an unexpected exception is logged and answered as
``InternalFailure`` without taking the server down.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from typing import Any

import orjson
import pybase64
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from firehose.asgi import BodyTooLarge, Receive, Send, read_body, send_response
from firehose.awsjson import CONTENT_TYPE as JSON_CONTENT_TYPE
from firehose.awsjson import JSON_CONTENT_TYPES, error_body, request_id, split_target
from firehose.streams import cbor
from firehose.streams.errors import (
    FirehoseError,
    InternalFailure,
    SerializationException,
    UnknownOperationException,
)
from firehose.streams.operations import OPERATIONS
from firehose.streams.store import ShardStore

log = logging.getLogger("firehose.streams")

TARGET_PREFIX = "Kinesis_20131202"
#: Largest request accepted: a 10 MiB-record stream's PutRecords, base64-encoded, plus framing.
MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = dict[str, Any]


class StreamsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kinesis_requests", "Kinesis API requests by operation and HTTP status.",
                                ["operation", "status"], registry=self.registry)
        self.records_put = Counter("kinesis_records_put", "Records stored by PutRecord/PutRecords.",
                                   registry=self.registry)
        self.records_read = Counter("kinesis_records_read", "Records returned by GetRecords.",
                                    registry=self.registry)
        self.latency = Histogram("kinesis_request_seconds", "Kinesis API latency by operation.", ["operation"],
                                 registry=self.registry)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pybase64.b64encode(value).decode()
    raise TypeError(f"cannot serialise {type(value).__name__}")


class KinesisApp:
    def __init__(self, store: ShardStore, metrics: StreamsMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or StreamsMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            await self._api(scope, receive, send)
        elif path in ("/healthz", "/readyz") and method in ("GET", "HEAD"):
            await send_response(send, 200, b'{"status":"ok"}', b"application/json")
        elif path == "/metrics" and method == "GET":
            await send_response(send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode())
        else:
            await send_response(send, 404, error_body("UnknownOperationException", f"No route for {method} {path}."),
                        JSON_CONTENT_TYPE.encode(), request_id())

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id()
        started = time.perf_counter()
        content_type = target = encoding = ""
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            elif key == b"x-amz-target":
                target = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        use_cbor = content_type == cbor.CONTENT_TYPE
        operation = split_target(target, TARGET_PREFIX)
        status = 200
        try:
            raw = await _read_body(receive)
            if not use_cbor and content_type not in JSON_CONTENT_TYPES:
                status = 404
                raise UnknownOperationException(
                    f"Unsupported Content-Type {content_type or '(none)'!r}; send application/x-amz-json-1.1 or "
                    "application/x-amz-cbor-1.1.")
            handler = OPERATIONS.get(operation or "")
            if handler is None:
                what = f"operation {target!r}" if target else "no X-Amz-Target header"
                raise UnknownOperationException(f"Unknown {what}; expected {TARGET_PREFIX}.<Operation>.")
            request = _parse(_decompress(raw, encoding), use_cbor)
            result = await handler(self.store, request)
            body = cbor.encode_response(result) if use_cbor else orjson.dumps(result, default=_json_default)
            self._count_records(operation, result)
        except FirehoseError as exc:
            status = status if status != 200 else exc.status
            body = _error(exc.aws_type, exc.message, use_cbor)
        except Exception:
            log.exception("Unexpected error handling a Kinesis request.",
                          extra={"operation": operation, "request_id": rid})
            status = 500
            body = _error("InternalFailure", "An internal error occurred; the request can be retried.", use_cbor)
        op = operation if operation in OPERATIONS else "unknown"
        self.metrics.requests.labels(op, str(status)).inc()
        self.metrics.latency.labels(op).observe(time.perf_counter() - started)
        ctype = cbor.CONTENT_TYPE if use_cbor else JSON_CONTENT_TYPE
        await send_response(send, status, body, ctype.encode(), rid)

    def _count_records(self, operation: str | None, result: dict[str, Any]) -> None:
        if operation == "PutRecords":
            self.metrics.records_put.inc(len(result["Records"]) - result["FailedRecordCount"])
        elif operation == "PutRecord":
            self.metrics.records_put.inc()
        elif operation == "GetRecords":
            self.metrics.records_read.inc(len(result["Records"]))


def _error(aws_type: str, message: str, use_cbor: bool) -> bytes:
    return cbor.error_body(aws_type, message) if use_cbor else error_body(aws_type, message)


def _decompress(raw: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return raw
    if encoding == "gzip":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise SerializationException(f"The gzip request body is corrupt: {exc}") from exc
    raise SerializationException(f"Unsupported Content-Encoding {encoding!r}; send gzip or none.")


def _parse(raw: bytes, use_cbor: bool) -> dict[str, Any]:
    if not raw:
        raise SerializationException("The request body is empty; send an object ({} for no parameters).")
    try:
        data = cbor.decode_request(raw) if use_cbor else orjson.loads(raw)
    except Exception as exc:  # orjson.JSONDecodeError, cbor2.CBORDecodeError, ValueError
        kind = "CBOR" if use_cbor else "JSON"
        raise SerializationException(f"The request body is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise SerializationException("The request body must be an object.")
    return data


async def _read_body(receive: Receive) -> bytes:
    try:
        return await read_body(receive, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise SerializationException(f"The request body exceeds {MAX_BODY_BYTES} bytes.") from None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["MAX_BODY_BYTES", "TARGET_PREFIX", "InternalFailure", "KinesisApp", "StreamsMetrics"]
