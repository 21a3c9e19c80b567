"""The ASGI application: ``POST /`` dispatched on ``X-Amz-Target``, plus health and metrics.

Transport only; operations live in ``operations.py``. Checks happen in AWS's
order (as kinesalite reproduces it): body size, content type, target, JSON,
then the operation's own validation. Every response carries an
``x-amzn-RequestId``. A ``FirehoseError`` becomes the awsJson1_1 error envelope
with its status; anything else is logged with its traceback and answered as
``InternalFailure`` (500), and the daemon keeps serving.

It is a plain ASGI callable rather than a framework app: there is one route
that matters, and reading the body ourselves lets an oversized request be
refused before it is buffered.

Collaborators come from the daemon: the operations' services and a readiness
probe. The API never imports the pipeline or a destination.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from firehose.api import shapes
from firehose.api.http_receiver import MAX_BODY_BYTES as RECEIVER_MAX_BODY_BYTES
from firehose.api.http_receiver import PATH_PREFIX as RECEIVER_PREFIX
from firehose.api.http_receiver import HttpEndpointReceiver
from firehose.api.operations import OPERATIONS, Services
from firehose.asgi import BodyTooLarge, Receive, Send, read_body, send_response
from firehose.awsjson import CONTENT_TYPE, JSON_CONTENT_TYPES, error_body, request_id, split_target
from firehose.errors import (
    FirehoseError,
    InternalFailure,
    SerializationException,
    UnknownOperationException,
)

log = logging.getLogger("firehose.api")

TARGET_PREFIX = "Firehose_20150804"

Scope = dict[str, Any]
#: Returns (ready, details) for /readyz.
ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]


#: How much of an oversized body is read (and thrown away) before answering 413.
_DRAIN_LIMIT = 64 * 1024 * 1024


class FirehoseApp:
    def __init__(self, services: Services, readiness: ReadinessProbe, *,
                 max_body_bytes: int = shapes.MAX_BODY_BYTES) -> None:
        self.services = services
        self.readiness = readiness
        self.max_body_bytes = max_body_bytes
        self.receiver = HttpEndpointReceiver(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if path == "/" and method == "POST":
            await self._api(scope, receive, send)
        elif (path.startswith(RECEIVER_PREFIX) and method == "POST"
              and self.services.settings.http_endpoint_receiver.enabled):
            await self._receive_delivery(path[len(RECEIVER_PREFIX):], scope, receive, send)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            await send_response(send, 200, b'{"status":"ok"}', b"application/json")
        elif path == "/readyz" and method in ("GET", "HEAD"):
            ready, details = self.readiness()
            body = orjson.dumps({"status": "ready" if ready else "not ready", **details})
            await send_response(send, 200 if ready else 503, body, b"application/json")
        elif path == "/metrics" and method == "GET":
            body = generate_latest(self.services.metrics.registry)
            await send_response(send, 200, body, CONTENT_TYPE_LATEST.encode())
        else:
            await send_response(send, 404, error_body("UnknownOperationException", f"No route for {method} {path}."),
                        CONTENT_TYPE.encode(), request_id())

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id()
        started = time.perf_counter()
        content_type = target = ""
        length = -1
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            elif key == b"x-amz-target":
                target = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else -1
        operation = split_target(target, TARGET_PREFIX)
        status, body = 200, b""
        try:
            if length > self.max_body_bytes:
                raise BodyTooLarge()
            raw = await self._read_body(receive)
            if content_type not in JSON_CONTENT_TYPES:
                status = 404
                raise UnknownOperationException(
                    f"Unsupported Content-Type {content_type or '(none)'!r}; send application/x-amz-json-1.1.")
            handler = OPERATIONS.get(operation or "")
            if handler is None:
                what = f"operation {target!r}" if target else "no X-Amz-Target header"
                raise UnknownOperationException(f"Unknown {what}; expected {TARGET_PREFIX}.<Operation>.")
            request = _parse_json(raw)
            result = await handler(self.services, request)
            body = orjson.dumps(result)
        except BodyTooLarge:
            await self._discard_body(receive)
            status = 413
            body = error_body("SerializationException",
                              f"Request body exceeds {self.max_body_bytes} bytes; PutRecordBatch accepts at most "
                              f"{shapes.MAX_BATCH_BYTES} bytes of record data per call.")
        except FirehoseError as exc:
            status = status if status != 200 else exc.status
            body = error_body(exc.aws_type, exc.message)
        except Exception:
            log.exception("Unexpected error handling a request.", extra={"operation": operation, "request_id": rid})
            status = 500
            err = InternalFailure("An internal error occurred; the request can be retried.")
            body = error_body(err.aws_type, err.message)
        self._count(operation, status, started)
        await send_response(send, status, body, CONTENT_TYPE.encode(), rid)

    async def _receive_delivery(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP endpoint delivery from another Firehose (see ``http_receiver``)."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        try:
            if length.isdigit() and int(length) > RECEIVER_MAX_BODY_BYTES:
                raise BodyTooLarge()
            raw = await self._read_body(receive, RECEIVER_MAX_BODY_BYTES)
            status, body = await self.receiver.handle(name, headers, raw)
        except BodyTooLarge:
            await self._discard_body(receive)
            status, body = 413, orjson.dumps({
                "requestId": headers.get(b"x-amz-firehose-request-id", b"").decode("latin-1"),
                "timestamp": int(time.time() * 1000),
                "errorMessage": f"The body exceeds {RECEIVER_MAX_BODY_BYTES} bytes."})
        except Exception:
            log.exception("Unexpected error receiving an HTTP endpoint delivery.", extra={"stream": name})
            status, body = 500, orjson.dumps({
                "requestId": headers.get(b"x-amz-firehose-request-id", b"").decode("latin-1"),
                "timestamp": int(time.time() * 1000),
                "errorMessage": "An internal error occurred; the request can be retried."})
        self._count("HttpEndpointDelivery", status, started)
        await send_response(send, status, body, b"application/json")

    async def _read_body(self, receive: Receive, limit: int | None = None) -> bytes:
        return await read_body(receive, limit or self.max_body_bytes)

    async def _discard_body(self, receive: Receive) -> None:
        """Read the rest of a refused body so the client sees the answer, not a reset."""
        drained = 0
        while drained < _DRAIN_LIMIT:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

    def _count(self, operation: str | None, status: int, started: float) -> None:
        m = self.services.metrics
        op = operation if operation in OPERATIONS or operation == "HttpEndpointDelivery" else "unknown"
        m.requests.labels(op, str(status)).inc()
        if status == 200 and op in ("PutRecord", "PutRecordBatch"):
            m.put_latency.labels(op).observe(time.perf_counter() - started)


def _parse_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise SerializationException("The request body is empty; send a JSON object ({} for no parameters).")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SerializationException(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SerializationException("The request body must be a JSON object.")
    return data
