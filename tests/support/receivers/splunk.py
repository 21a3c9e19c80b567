"""A stand-in Splunk HTTP Event Collector (HEC) with indexer acknowledgement, on a loopback port.

No Splunk can run here, so this implements the HEC protocol as docs.splunk.com documents it
(Splunk Enterprise, *Getting Data In*):

* "HTTP Event Collector REST API endpoints": ``services/collector/raw`` (the body is indexed as
  it is), ``services/collector/event`` (alias ``services/collector``; JSON event objects back to
  back), ``services/collector/ack`` and ``services/collector/health`` (each also under ``/1.0``).
* "Format events for HTTP Event Collector": every event object needs an ``event`` member that is
  present and not null (code 12) and not blank (code 13); a body that is not JSON objects is
  "Invalid data format" (code 6). Errors name the offending object in ``invalid-event-number``.
* "Set up and use HTTP Event Collector": ``Authorization: Splunk <token>``; tokens can be
  disabled; query-string tokens are refused while ``allowQueryStringAuth`` is off (its default).
* "About HTTP Event Collector Indexer Acknowledgment": acknowledgement is per token. "About
  channels and sending data": a channel is a GUID from the ``X-Splunk-Request-Channel`` header
  or the ``channel`` query parameter, required while the token has acknowledgement on (code 10;
  not a GUID: code 11); a successful send answers ``{"text": "Success", "code": 0, "ackId": n}``.
  "Query for indexing status": ``{"acks": [n, ...]}`` → ``{"acks": {"n": true|false}}``, code 14
  when the token has acknowledgement off. "Indexer acknowledgment behavior details": ackIds count
  up from 0 per channel, and an ackId reported true is forgotten (it reads false afterwards).
* "Troubleshoot HTTP Event Collector", possible error codes: every status, code and text below.
* inputs.conf ``[http] max_content_length``: a larger body is refused with HTTP 413.

Where the docs are silent it does as Vector's HEC source does: a channel is created on first use,
on the ack endpoint too (an unknown channel reports every ackId false). Its own choices: HTTP 405
for a method other than POST on the data and ack endpoints, and the 413 answer's wording.

Test switches: ``ack_delay`` (seconds until a new ackId turns true; None: never),
``busy_requests`` (the next N data requests get 503 "Server is busy", code 9),
``invalid_format_requests`` (the next N data requests get code 6), ``healthy``, and per token
``Token.enabled`` / ``Token.ack``. ``indexed`` records every request the HEC took, whether or not
its ack is ever reported: that is the data Splunk would hold.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "8c3e9a4e-5a53-4d54-9f0e-4a8fb1c1f001"

_JSON_SPACE = re.compile(r"[ \t\n\r]*")

_ROUTES = {
    "/services/collector/raw": "raw",
    "/services/collector/raw/1.0": "raw",
    "/services/collector": "event",
    "/services/collector/event": "event",
    "/services/collector/event/1.0": "event",
    "/services/collector/ack": "ack",
    "/services/collector/health": "health",
    "/services/collector/health/1.0": "health",
}


@dataclass
class Token:
    """A HEC token's settings (inputs.conf ``[http://<name>]``: ``disabled``, ``useACK``)."""

    enabled: bool = True
    ack: bool = True


@dataclass(frozen=True)
class Indexed:
    """One request the HEC took: raw ``body`` as indexed, or the parsed ``events``."""

    token: str
    channel: str | None
    endpoint: str
    body: bytes
    events: tuple[Any, ...]
    ack_id: int | None


@dataclass(frozen=True)
class Seen:
    """One request as it arrived (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class _Channel:
    next_ack_id: int = 0
    #: ackId → monotonic time at which it reads true.
    pending: dict[int, float] = field(default_factory=dict)


class _Reply(Exception):
    """An HEC answer raised from deep in a check: HTTP status and JSON body."""

    def __init__(self, status: int, text: str, code: int | None, **extra: Any) -> None:
        super().__init__(text)
        self.status = status
        self.body = {"text": text, **({"code": code} if code is not None else {}), **extra}


class SplunkReceiver:
    """The HEC on ``url`` once started; a context manager that stops it on exit."""

    def __init__(self, tokens: dict[str, Token] | None = None, *,
                 max_content_length: int = 1_000_000, port: int = 0) -> None:
        self.port = port
        self.tokens = tokens if tokens is not None else {TOKEN: Token()}
        self.max_content_length = max_content_length
        self.ack_delay: float | None = 0.0
        self.busy_requests = 0
        self.invalid_format_requests = 0
        self.healthy = True
        self.indexed: list[Indexed] = []
        self.seen: list[Seen] = []
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> SplunkReceiver:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.receiver = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="splunk-hec", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> SplunkReceiver:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the receiver first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- assertions -----------------------------------------------------------

    def indexed_by(self, token: str | None = None, channel: str | None = None) -> list[Indexed]:
        """What was indexed, optionally only with ``token`` and/or on ``channel``."""
        with self._lock:
            return [i for i in self.indexed
                    if (token is None or i.token == token) and (channel is None or i.channel == channel)]

    def pending_acks(self, channel: str) -> set[int]:
        """ackIds issued on ``channel`` and not yet reported true."""
        with self._lock:
            state = self._channels.get(channel)
            return set(state.pending) if state else set()

    # -- the protocol ---------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON body)."""
        with self._lock:
            self.seen.append(Seen(method, path, query, headers, body))
            route = _ROUTES.get(path.rstrip("/") or "/")
            try:
                if route is None:
                    raise _Reply(404, "The requested URL was not found on this server.", 404)
                if route == "health":
                    return self._health()
                if method != "POST":
                    raise _Reply(405, "Method Not Allowed", None)
                if route == "ack":
                    return self._ack(query, headers, body)
                return self._data(route, query, headers, body)
            except _Reply as reply:
                return reply.status, reply.body

    def _health(self) -> tuple[int, dict[str, Any]]:
        if self.healthy:
            return 200, {"text": "HEC is healthy", "code": 17}
        raise _Reply(503, "HEC is unhealthy, queues are full", 18)

    def _data(self, endpoint: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> tuple[int, dict[str, Any]]:
        if len(body) > self.max_content_length:
            limit = self.max_content_length
            raise _Reply(413, f"Content-Length of {len(body)} too large (maximum is {limit})", None)
        token, settings = self._authenticate(query, headers)
        if self.busy_requests:
            self.busy_requests -= 1
            raise _Reply(503, "Server is busy", 9)
        channel = self._channel(query, headers, required=settings.ack)
        if not body:
            raise _Reply(400, "No data", 5)
        if self.invalid_format_requests:
            self.invalid_format_requests -= 1
            raise _Reply(400, "Invalid data format", 6, **{"invalid-event-number": 0})
        events = _parse_events(body) if endpoint == "event" else ()
        ack_id = self._issue_ack(channel) if settings.ack and channel is not None else None
        self.indexed.append(Indexed(token, channel, endpoint, body, events, ack_id))
        return 200, {"text": "Success", "code": 0, **({"ackId": ack_id} if ack_id is not None else {})}

    def _ack(self, query: dict[str, str], headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        _, settings = self._authenticate(query, headers)
        if not settings.ack:
            raise _Reply(400, "ACK is disabled", 14)
        channel = self._channel(query, headers, required=True)
        assert channel is not None
        try:
            ids = json.loads(body)["acks"]
        except (ValueError, TypeError, KeyError):
            raise _Reply(400, "Invalid data format", 6) from None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _Reply(400, "Invalid data format", 6)
        state = self._channels.setdefault(channel, _Channel())
        now = time.monotonic()
        acks = {}
        for ack_id in ids:
            ready = state.pending.get(ack_id)
            acks[str(ack_id)] = ready is not None and ready <= now
            if acks[str(ack_id)]:
                del state.pending[ack_id]
        return 200, {"acks": acks}

    def _authenticate(self, query: dict[str, str], headers: dict[str, str]) -> tuple[str, Token]:
        header = headers.get("authorization")
        if header is None:
            if "token" in query:
                raise _Reply(400, "Query string authorization is not enabled", 16)
            raise _Reply(401, "Token is required", 2)
        scheme, _, value = header.partition(" ")
        if scheme != "Splunk" or not value.strip():
            raise _Reply(401, "Invalid authorization", 3)
        token = value.strip()
        settings = self.tokens.get(token)
        if settings is None:
            raise _Reply(403, "Invalid token", 4)
        if not settings.enabled:
            raise _Reply(403, "Token disabled", 1)
        return token, settings

    @staticmethod
    def _channel(query: dict[str, str], headers: dict[str, str], *, required: bool) -> str | None:
        value = headers.get("x-splunk-request-channel") or query.get("channel")
        if not value:
            if required:
                raise _Reply(400, "Data channel is missing", 10)
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise _Reply(400, "Invalid data channel", 11) from None

    def _issue_ack(self, channel: str) -> int:
        state = self._channels.setdefault(channel, _Channel())
        ack_id = state.next_ack_id
        state.next_ack_id += 1
        delay = self.ack_delay
        state.pending[ack_id] = float("inf") if delay is None else time.monotonic() + delay
        return ack_id


def _parse_events(body: bytes) -> tuple[Any, ...]:
    """The event objects of an event-endpoint body, or the HEC's error for the first bad one."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise _Reply(400, "Invalid data format", 6, **{"invalid-event-number": 0}) from None
    decoder = json.JSONDecoder()
    events: list[Any] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        number = {"invalid-event-number": len(events)}
        try:
            event, pos = decoder.raw_decode(text, pos)
        except ValueError:
            raise _Reply(400, "Invalid data format", 6, **number) from None
        if not isinstance(event, dict):
            raise _Reply(400, "Invalid data format", 6, **number)
        if event.get("event") is None:
            raise _Reply(400, "Event field is required", 12, **number)
        if event["event"] == "":
            raise _Reply(400, "Event field cannot be blank", 13, **number)
        events.append(event)
        pos = _skip_space(text, pos)
    return tuple(events)


def _skip_space(text: str, pos: int) -> int:
    """The position after the JSON whitespace at ``pos``."""
    match = _JSON_SPACE.match(text, pos)
    return match.end() if match else pos


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as a HEC serves it; the protocol lives in ``SplunkReceiver``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver: SplunkReceiver = self.server.receiver  # type: ignore[attr-defined]
        status, payload = receiver.handle(self.command, url.path, dict(parse_qsl(url.query)), headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on ``seen`` instead of reading an access log."""
