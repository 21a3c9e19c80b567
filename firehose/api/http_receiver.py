"""Receive Firehose HTTP endpoint deliveries: ``POST /http-endpoint/<DeliveryStreamName>``.

This makes the daemon a valid target for another Firehose's (or another
firehose daemon's) HTTP endpoint destination, so an edge daemon can forward to
a central one with the same protocol AWS uses (spec: destinations.md §4.4, the
receiver side Vector's ``aws_kinesis_firehose`` source implements).

The contract a sender relies on:

* ``Content-Encoding: gzip`` is honoured only when the header says so.
* ``X-Amz-Firehose-Access-Key`` is checked against
  ``http_endpoint_receiver.access_keys`` when that list is not empty.
* The answer echoes ``requestId`` with a ``timestamp``; 200 only once every
  record is durable in the spool, exactly like a PutRecordBatch.
* ``X-Amz-Firehose-Request-Id`` is an idempotency key: a retry of a request
  that was already accepted is answered 200 again without spooling twice.
  The memory of accepted ids is per process (bounded); a retry that arrives
  after a restart is accepted again, so delivery is at least once.
* The protocol is all or nothing: a request with one bad record is refused as
  a whole (the sender retries and then writes the batch to its error output),
  and a body too large is answered 413, which the sender treats as final.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import time
import zlib
from collections import OrderedDict
from typing import Any

import orjson
import pybase64

from firehose.api import operations, shapes
from firehose.api.operations import Services
from firehose.errors import FirehoseError

PATH_PREFIX = "/http-endpoint/"
#: Firehose sends at most 64 MiB (before compression) and 10,000 records per request.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_RECORDS = 10_000
#: Request ids remembered per stream for idempotent retries.
REMEMBERED_REQUESTS = 4096


class ReceiverError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpEndpointReceiver:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._seen: dict[str, OrderedDict[str, None]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def handle(self, name: str, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """(status, response body) for one delivery request."""
        header_id = headers.get(b"x-amz-firehose-request-id", b"").decode("latin-1")
        request_id = header_id
        try:
            self._authorize(headers)
            request = _parse(headers, body)
            request_id = request.get("requestId") if isinstance(request.get("requestId"), str) else header_id
            records = _records(request)
            state = operations._writable(self.services, name)
            await self._accept_once(state, request_id or "", records)
        except ReceiverError as exc:
            return exc.status, _answer(request_id, exc.message)
        except FirehoseError as exc:
            status = 404 if exc.aws_type == "ResourceNotFoundException" else exc.status
            return status, _answer(request_id, f"{exc.aws_type}: {exc.message}")
        return 200, _answer(request_id, None)

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        keys = self.services.settings.http_endpoint_receiver.access_keys
        if not keys:
            return
        given = headers.get(b"x-amz-firehose-access-key", b"")
        if not any(hmac.compare_digest(given, key.encode()) for key in keys):
            raise ReceiverError(401, "The X-Amz-Firehose-Access-Key header is missing or not a configured key.")

    async def _accept_once(self, state: Any, request_id: str, records: list[bytes]) -> None:
        seen = self._seen.setdefault(state.name, OrderedDict())
        if request_id and request_id in seen:
            self.services.metrics.receiver_duplicates.labels(state.name).inc()
            return
        key = (state.name, request_id)
        pending = self._pending.get(key) if request_id else None
        if pending is not None:  # the same request is being spooled right now: answer with its outcome
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if request_id:
            self._pending[key] = future
        try:
            await _spool(self.services, state, records)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a waiter re-raises it, nobody else has to
            raise
        else:
            future.set_result(None)
            if request_id:
                seen[request_id] = None
                while len(seen) > REMEMBERED_REQUESTS:
                    seen.popitem(last=False)
        finally:
            if request_id:
                self._pending.pop(key, None)


async def _spool(svc: Services, state: Any, records: list[bytes]) -> None:
    """Spool in PutRecordBatch-sized entries; they share one group-commit fsync."""
    arrival_ms = int(time.time() * 1000)
    chunks: list[list[bytes]] = []
    chunk: list[bytes] = []
    size = 0
    for record in records:
        if chunk and (len(chunk) == shapes.MAX_BATCH_RECORDS or size + len(record) > shapes.MAX_BATCH_BYTES):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(record)
        size += len(record)
    if chunk:
        chunks.append(chunk)
    await asyncio.gather(*(operations._accept(svc, state, c, arrival_ms, sum(map(len, c))) for c in chunks))


def _parse(headers: dict[bytes, bytes], body: bytes) -> dict[str, Any]:
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    if encoding == b"gzip":
        try:
            body = _gunzip(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReceiverError(400, f"Content-Encoding is gzip but the body does not decompress: {exc}") from exc
    elif encoding not in (b"", b"identity"):
        raise ReceiverError(415, f"Unsupported Content-Encoding {encoding.decode('latin-1')!r}; send gzip or none.")
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReceiverError(400, f"The body is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ReceiverError(400, "The body must be a JSON object with requestId and records.")
    if not isinstance(request.get("requestId"), str) or not request["requestId"]:
        raise ReceiverError(400, "requestId is required and must be a string.")
    return request


def _gunzip(body: bytes) -> bytes:
    out = zlib.decompressobj(wbits=31)
    data = out.decompress(body, MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES or out.unconsumed_tail:
        raise ReceiverError(413, f"The decompressed body exceeds {MAX_BODY_BYTES} bytes.")
    if not out.eof:
        raise EOFError("truncated gzip stream")
    return data


def _records(request: dict[str, Any]) -> list[bytes]:
    records = request.get("records")
    if not isinstance(records, list) or not records:
        raise ReceiverError(400, "records is required and must be a non-empty list.")
    if len(records) > MAX_RECORDS:
        raise ReceiverError(413, f"{len(records)} records; a request carries at most {MAX_RECORDS}.")
    out: list[bytes] = []
    for i, record in enumerate(records):
        data = record.get("data") if isinstance(record, dict) else None
        if not isinstance(data, str):
            raise ReceiverError(400, f"records[{i}].data is required and must be a base64 string.")
        try:
            raw = pybase64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReceiverError(400, f"records[{i}].data is not valid base64.") from exc
        if len(raw) > shapes.MAX_RECORD_BYTES:
            raise ReceiverError(400, f"records[{i}] is {len(raw)} bytes; the limit is {shapes.MAX_RECORD_BYTES}.")
        out.append(raw)
    return out


def _answer(request_id: str, error: str | None) -> bytes:
    body: dict[str, Any] = {"requestId": request_id, "timestamp": int(time.time() * 1000)}
    if error is not None:
        body["errorMessage"] = error[:8192]
    return orjson.dumps(body)
