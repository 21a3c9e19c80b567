"""Receive Firehose HTTP endpoint deliveries: ``POST /http-endpoint/<DeliveryStreamName>``.

This makes the daemon a valid target for another Firehose's (or another
firehose daemon's) HTTP endpoint destination, so an edge daemon can forward to
a central one with the same protocol AWS uses (spec: destinations.md §4.4, the
receiver side Vector's ``aws_kinesis_firehose`` source implements).

The contract a sender relies on:

* ``Content-Encoding: gzip`` is honoured only when the header says so, and
  inflates to at most 64 MiB and the front door's ratio cap.
* Who may deliver: a request signed with SigV4 (service ``firehose``) is
  verified and authorized as ``firehose:PutRecordBatch`` on the stream, in
  the signer's account, like an API call. Otherwise
  ``X-Amz-Firehose-Access-Key`` is checked against
  ``http_endpoint_receiver.access_keys``; with no keys configured, unsigned
  deliveries are accepted only while authentication is off. Unsigned
  deliveries go to the account config-declared streams belong to.
* Memory is bounded: the body is read under the listener's shared budget,
  and one that holds more JSON structure than 10,000 records can (a body of
  empty objects would grow twentyfold when parsed) is refused before parsing.
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
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
import pybase64

from firehose.api import operations, shapes
from firehose.api.operations import Services
from firehose.asgi import Receive, Scope, Send, send_response
from firehose.clock import now_ms
from firehose.definitions import delivery_stream_arn
from firehose.errors import (
    AccessDeniedException,
    ExpiredTokenException,
    FirehoseError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ResourceNotFoundException,
    UnrecognizedClientException,
)
from firehose.frontdoor import body as bodies
from firehose.frontdoor.door import FrontDoor
from firehose.frontdoor.sigv4 import wants_payload_hash

log = logging.getLogger("firehose.api")

PATH_PREFIX = "/http-endpoint/"
#: Firehose sends at most 64 MiB (before compression) and 10,000 records per request.
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_RECORDS = 10_000
#: Request ids remembered per stream for idempotent retries.
REMEMBERED_REQUESTS = 4096
#: What handling a body that passed the structure check can grow it to, per byte: the joined body,
#: its strings as parsed (four bytes a character once one is beyond the BMP), the decoded records.
_GROWTH = 6
#: Bodies at least this large are parsed on a worker thread.
_PARSE_OFF_LOOP = 1024 * 1024


class ReceiverError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpEndpointReceiver:
    def __init__(self, services: Callable[[str], Services], door: FrontDoor) -> None:
        self.services = services
        self.door = door
        self.settings = door.settings
        self._seen: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._pending: dict[tuple[str, str, str], asyncio.Future[None]] = {}

    async def __call__(self, name: str, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one delivery request; returns the status sent (0 when the client went away)."""
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-amz-firehose-request-id", b"").decode("latin-1")
        declared = headers.get(b"content-length", b"")
        length = int(declared) if declared.isdigit() and b"transfer-encoding" not in headers else -1
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        ratio = self.settings.limits.max_decompression_ratio
        held = self.door.budget.request()
        close = False
        try:
            if length > MAX_BODY_BYTES:
                raise bodies.BodyTooLarge(MAX_BODY_BYTES)
            signed = b"authorization" in headers or b"X-Amz-Algorithm" in scope.get("query_string", b"")
            digest = bodies.sha256() if signed and wants_payload_hash(scope["headers"]) else None
            raw = await bodies.read(receive, MAX_BODY_BYTES, held, digest, length=length)
            account = self._authenticate(name, scope, headers, signed, digest)
            if encoding not in ("", "identity", "gzip"):
                raise ReceiverError(415, f"Unsupported Content-Encoding {encoding!r}; send gzip or none.")
            raw = await bodies.inflate_charged(raw, encoding, held, max_size=MAX_BODY_BYTES, max_ratio=ratio)
            await held.parsing(len(raw) * _GROWTH)
            request = await _parse(raw)
            del raw
            held.done_reading()
            request_id = str(request["requestId"])  # _parse checked it is a non-empty string
            records = _records(request)
            svc = self.services(account)
            state = operations._writable(svc, name)
            await self._accept_once(svc, state, request_id or "", records)
            status, answer = 200, _answer(request_id, None)
        except bodies.Disconnected:
            return 0
        except bodies.BodyTooLarge as exc:
            status, answer = 413, _answer(request_id, str(exc))
            close = not await bodies.discard(receive, length) and scope.get("http_version", "1.1").startswith("1")
        except ReceiverError as exc:
            status, answer = exc.status, _answer(request_id, exc.message)
        except FirehoseError as exc:
            status, answer = _status_of(exc), _answer(request_id, f"{exc.aws_type}: {exc.message}")
        except Exception:
            log.exception("Unexpected error receiving an HTTP endpoint delivery.", extra={"stream": name})
            status, answer = 500, _answer(request_id, "An internal error occurred; the request can be retried.")
        finally:
            held.release()
        await send_response(send, status, answer, b"application/json", close=close)
        return status

    def _authenticate(self, name: str, scope: Scope, headers: dict[bytes, bytes], signed: bool,
                      digest: Any | None) -> str:
        """The account the delivery is for; raises when the sender may not deliver to ``name``."""
        if signed:
            caller, principal = self.door.authenticate(scope, digest)
            if principal is not None:
                arn = delivery_stream_arn(caller.region, caller.account_id, name)
                self.door.authorize(principal, caller, "PutRecordBatch", arn)
                return caller.account_id
            if not self.door.principals.required:
                return caller.account_id
        keys = self.settings.http_endpoint_receiver.access_keys
        if keys:
            given = headers.get(b"x-amz-firehose-access-key", b"")
            if not any(hmac.compare_digest(given, key.encode()) for key in keys):
                raise ReceiverError(401, "The X-Amz-Firehose-Access-Key header is missing or not a configured key.")
        elif self.door.principals.required:
            raise ReceiverError(401, "Authentication is on: sign the request with SigV4 or send a configured "
                                     "X-Amz-Firehose-Access-Key (http_endpoint_receiver.access_keys).")
        return self.settings.account_id

    async def _accept_once(self, svc: Services, state: Any, request_id: str, records: list[bytes]) -> None:
        seen = self._seen.setdefault((svc.account_id, state.name), OrderedDict())
        if request_id and request_id in seen:
            svc.metrics.receiver_duplicates.labels(state.name).inc()
            return
        key = (svc.account_id, state.name, request_id)
        pending = self._pending.get(key) if request_id else None
        if pending is not None:  # the same request is being spooled right now: answer with its outcome
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if request_id:
            self._pending[key] = future
        try:
            await _spool(svc, state, records)
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
    arrival_ms = now_ms()
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


_FORBIDDEN = (AccessDeniedException, MissingAuthenticationTokenException, IncompleteSignatureException,
              InvalidSignatureException, UnrecognizedClientException, ExpiredTokenException)


def _status_of(exc: FirehoseError) -> int:
    """The HTTP status a sender sees: 403 for authentication and authorization, 404 for no such stream."""
    if isinstance(exc, _FORBIDDEN):
        return 403
    if isinstance(exc, ResourceNotFoundException):
        return 404
    return exc.status


#: A request of 10,000 records has about that many objects and commas; this many more is not one.
_MAX_STRUCTURE = 3 * MAX_RECORDS + 64


async def _parse(raw: bytes) -> dict[str, Any]:
    if len(raw) >= _PARSE_OFF_LOOP:
        return await asyncio.to_thread(_parse_now, raw)
    return _parse_now(raw)


def _parse_now(raw: bytes) -> dict[str, Any]:
    if raw.count(b"{") + raw.count(b"[") + raw.count(b",") > _MAX_STRUCTURE:
        raise ReceiverError(413, f"The body holds more JSON structure than {MAX_RECORDS} records can.")
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReceiverError(400, f"The body is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ReceiverError(400, "The body must be a JSON object with requestId and records.")
    if not isinstance(request.get("requestId"), str) or not request["requestId"]:
        raise ReceiverError(400, "requestId is required and must be a string.")
    return request


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
    body: dict[str, Any] = {"requestId": request_id, "timestamp": now_ms()}
    if error is not None:
        body["errorMessage"] = error[:8192]
    return orjson.dumps(body)
