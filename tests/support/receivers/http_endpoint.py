"""A receiver for the Firehose HTTP endpoint delivery protocol (spec: destinations.md §4.1, §4.2, §4.4).

No real Firehose HTTP endpoint receiver is installed here, so the tests deliver to this one: a faithful
implementation of the receiving side of the documented protocol, written from the spec rather than from
the sender, so that a sender mistake shows up as a refused request instead of being mirrored. For every
request it checks, in order:

* the method is ``POST`` (405 otherwise) and there is a ``Content-Length`` (411);
* ``X-Amz-Firehose-Protocol-Version`` is ``1.0`` and ``X-Amz-Firehose-Request-Id`` and
  ``X-Amz-Firehose-Source-Arn`` are present (400);
* ``X-Amz-Firehose-Access-Key`` equals the expected key, when one is set (401);
* ``Content-Type`` is ``application/json`` (415);
* the body is gunzipped only when ``Content-Encoding: gzip`` is present (§4.4), and any other encoding
  is refused (415);
* the body is a JSON object whose ``requestId`` equals the header, whose ``timestamp`` is an integer
  and whose ``records`` is a list of ``{"data": <base64>}`` (400).

A valid request is answered ``200`` with ``{"requestId": ..., "timestamp": <epoch ms>}`` as
``application/json`` with a ``Content-Length``; a refused one with the same body plus ``errorMessage``.
Every request is recorded (``requests``) with its headers, decoded records and request id;
``accepted()`` is what the endpoint took in, with ``X-Amz-Firehose-Request-Id`` as the idempotency key
(§4.4): a request id answered 200 once is not taken in again.

``behaviour`` switches on the failure modes an endpoint can show, applied after validation: a fixed
status (500, 503, 413, 201, ...) for every request, only the first N or every Nth, a wrong ``requestId``, a
malformed (any raw bytes) or oversized body, another content type, a slow answer, or closing the
connection without answering. It runs a thread per connection, over TLS when given an ``ssl.SSLContext``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    """How the receiver answers a valid request; the default is a conforming 200."""

    #: Answer with this status (and an errorMessage) instead of 200 ...
    status: int = 200
    #: ... for only the first N valid requests, then succeed; 0 means every request.
    fail_first: int = 0
    #: ... or, when set, for every Nth valid request only (a destination failing part of the time).
    fail_every: int = 0
    error_message: str = "simulated failure"
    #: Extra response headers (e.g. a redirect's Location).
    headers: dict[str, str] = field(default_factory=dict)
    wrong_request_id: bool = False
    #: Answer with exactly these bytes instead of a protocol document (a malformed body, an HTML page).
    raw_body: bytes | None = None
    content_type: str = "application/json"
    #: Add a ``padding`` member of this many characters (the answer stays a valid protocol document).
    pad_to: int = 0
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Read the request, then close the connection without a response.
    drop_connection: bool = False
    #: Answer 413 to any request whose body (as sent) is larger than this; 0 means no limit.
    max_body_bytes: int = 0


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    #: Header names lower-cased, values decoded as UTF-8; a repeated header keeps its last value.
    headers: dict[str, str]
    #: The body as it came over the wire (still compressed if it was).
    wire_body: bytes
    #: The status answered; 0 if the connection was dropped instead.
    status: int = 0
    #: Why the request was refused, or None if it was valid.
    error: str | None = None
    request_id: str | None = None
    timestamp: int | None = None
    records: list[bytes] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _validate(received: Received, expected_key: str | None) -> None:
    """Check a request against the protocol and fill in its decoded fields; raises ``_Refused``."""
    h = received.headers
    if received.method != "POST":
        raise _Refused(405, f"method {received.method} is not allowed; Firehose sends POST")
    if h.get("x-amz-firehose-protocol-version") != "1.0":
        raise _Refused(400, "X-Amz-Firehose-Protocol-Version must be 1.0")
    for name in ("x-amz-firehose-request-id", "x-amz-firehose-source-arn"):
        if not h.get(name):
            raise _Refused(400, f"missing header {name}")
    if expected_key is not None and h.get("x-amz-firehose-access-key") != expected_key:
        raise _Refused(401, "invalid or missing X-Amz-Firehose-Access-Key")
    if h.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _Refused(415, f"Content-Type {h.get('content-type')!r} is not application/json")
    body = _decoded_body(received.wire_body, h.get("content-encoding"))
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise _Refused(400, f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _Refused(400, "body is not a JSON object")
    if doc.get("requestId") != h["x-amz-firehose-request-id"]:
        raise _Refused(400, "body requestId does not match X-Amz-Firehose-Request-Id")
    if not isinstance(doc.get("timestamp"), int) or isinstance(doc.get("timestamp"), bool):
        raise _Refused(400, "timestamp must be an integer (epoch milliseconds)")
    received.request_id, received.timestamp = doc["requestId"], doc["timestamp"]
    received.records = _decoded_records(doc.get("records"))


def _decoded_body(wire: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return wire
    if encoding.strip().lower() != "gzip":
        raise _Refused(415, f"unsupported Content-Encoding {encoding!r}")
    try:
        return gzip.decompress(wire)
    except (OSError, EOFError) as exc:
        raise _Refused(400, f"Content-Encoding is gzip but the body is not: {exc}") from exc


def _decoded_records(records: Any) -> list[bytes]:
    if not isinstance(records, list):
        raise _Refused(400, "records must be a list")
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("data"), str):
            raise _Refused(400, f"records[{i}] must be an object with a string data")
        try:
            out.append(base64.b64decode(record["data"], validate=True))
        except binascii.Error as exc:
            raise _Refused(400, f"records[{i}].data is not base64: {exc}") from exc
    return out


def _utf8_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header values as UTF-8 text: http.server decodes the wire bytes as latin-1, which a non-ASCII
    access key or common attribute (sent as UTF-8) would not survive."""
    return {k.lower(): v.encode("latin-1").decode("utf-8", "replace") for k, v in items}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        """A reachability probe, outside the protocol: answered 405 and not recorded."""
        self._answer(405, b"", "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on ``requests`` instead."""

    def _handle(self) -> None:
        if self.headers.get("Content-Length") is None:  # Firehose always sends one (§4.1)
            self.close_connection = True
            self._answer(411, b"", "application/json")
            return
        received = Received(self.command, self.path, _utf8_headers(self.headers.items()),
                            self.rfile.read(int(self.headers["Content-Length"])))
        receiver = self.server.receiver
        try:
            _validate(received, receiver.access_key)
        except _Refused as exc:
            received.status, received.error = exc.status, str(exc)
        receiver.record(received)
        if received.error is not None:
            doc = {"requestId": received.headers.get("x-amz-firehose-request-id", ""), "timestamp": _now_ms(),
                   "errorMessage": received.error}
            self._answer(received.status, json.dumps(doc).encode(), "application/json")
            return
        self._misbehave_or_answer(received, receiver.behaviour, receiver.count_valid())

    def _misbehave_or_answer(self, received: Received, b: Behaviour, nth: int) -> None:
        """Answer a valid request according to ``b`` (``nth`` counts valid requests from 1)."""
        if b.delay:
            self.server.receiver.stopping.wait(b.delay)
        if b.drop_connection:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        too_large = 0 < b.max_body_bytes < len(received.wire_body)
        if b.fail_every:
            chosen = nth % b.fail_every == 0
        else:
            chosen = b.fail_first == 0 or nth <= b.fail_first
        failing = too_large or (b.status != 200 and chosen)
        status = 413 if too_large else b.status if failing else 200
        received.status = status
        request_id = "not-the-request-id" if b.wrong_request_id else received.request_id
        doc: dict[str, Any] = {"requestId": request_id, "timestamp": _now_ms()}
        if failing:
            doc["errorMessage"] = b.error_message
        if b.pad_to:
            doc["padding"] = "x" * b.pad_to
        body = json.dumps(doc).encode() if b.raw_body is None else b.raw_body
        self._answer(status, b"" if status in (204, 304) else body, b.content_type, b.headers)

    def _answer(self, status: int, body: bytes, content_type: str,
                headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: HttpEndpointReceiver, tls: ssl.SSLContext | None, port: int = 0) -> None:
        self.receiver = receiver
        self.tls = tls
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake on the connection's own thread, so a client refusing the certificate stalls nothing."""
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (a timeout test) is expected, not worth a traceback."""


class HttpEndpointReceiver:
    """The receiver on a free loopback port; ``with HttpEndpointReceiver() as r:`` starts and stops it."""

    def __init__(self, *, access_key: str | None = None, tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.access_key = access_key
        self.behaviour = Behaviour()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._valid = 0
        self._server = _Server(self, tls, port)
        self.port = int(self._server.server_address[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> HttpEndpointReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[bytes]:
        """The records of the requests answered 200, each request id counted once."""
        seen: set[str | None] = set()
        out: list[bytes] = []
        for req in self.requests:
            if req.status == 200 and req.request_id not in seen:
                seen.add(req.request_id)
                out.extend(req.records)
        return out

    def record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    def count_valid(self) -> int:
        """Count one more valid request and return its number (from 1)."""
        with self._lock:
            self._valid += 1
            return self._valid
