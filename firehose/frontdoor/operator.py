"""The operator's endpoints on an API listener: ``/healthz``, ``/readyz``, ``/metrics`` (and the same figures as
JSON at ``/metrics.json``), the live console (``/console``, and ``/`` for a browser), and who may read them.

With authentication off every caller sees everything, as before. With
``auth.mode: sigv4`` a load balancer still gets ``/healthz`` and a minimal
``/readyz`` (the status and, when not ready, the reason; no destination URLs,
stream names or error texts), while the detailed ``/readyz``, ``/metrics`` and
``/metrics.json`` need an operator: a request signed by any configured principal, or
``Authorization: Bearer <token>`` with one of ``auth.bearer_tokens`` (for
scrapers that cannot sign). The console's files hold no data and are served to
anyone; the JSON it reads (``/metrics.json``, the detailed ``/readyz``,
``/console/api/…``) is gated as above, so in ``sigv4`` mode the page asks
for a bearer token. A separate listener (``metrics.listen``) serves
them all without authentication, for a private network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from firehose import console
from firehose.asgi import Receive, Scope, Send, send_response
from firehose.errors import FirehoseError
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.sigv4 import Verifier
from firehose.tap import MAX_FOLLOWERS, Taps, TooManyFollowers
from firehose.telemetry import MetricsHistory

#: Returns (ready, details) for /readyz; details may name streams, destinations and errors.
ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]
#: Returns the console's view of the delivery streams (definitions, recent error records); see ``console``.
StreamsProbe = Callable[[], dict[str, Any]]
#: Returns the JSON of one more console view (``console.KINESIS_JSON``, ``console.AGENTS_JSON``).
ViewProbe = Callable[[], Awaitable[dict[str, Any]]]

_JSON = b"application/json"
#: The console's files: its own script and style only (no inline script, nothing from elsewhere), not framed.
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-cache")]
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: The figures of /metrics as JSON for the console, with the last 15 minutes of samples (``?history=0``: not).
METRICS_JSON = "/metrics.json"
#: A stream's delivered records as they go (``?stream=NAME&errors=1&sample=0.1``), JSON lines, for ``firehose tap``.
TAP = "/tap"
ROUTES = frozenset({"/healthz", "/readyz", "/metrics", METRICS_JSON, TAP, console.STREAMS_JSON})


class OperatorRoutes:
    """``GET``/``HEAD`` of the operator paths and the console for one listener."""

    def __init__(self, readiness: ReadinessProbe, registry: CollectorRegistry, principals: Principals,
                 verifier: Verifier | None, *, open_to_all: bool = False, history: MetricsHistory | None = None,
                 taps: Taps | None = None, streams: StreamsProbe | None = None, console: bool = True,
                 views: Mapping[str, ViewProbe] | None = None) -> None:
        """``console``: serve the console's page and its streams JSON (the Kinesis sidecar does not);
        ``taps``: serve ``/tap`` (where there are delivery streams); ``views``: more of the console's
        JSON by path, gated like the rest."""
        self.readiness = readiness
        self.console = console
        self.streams = streams or (lambda: {"delivery_streams": []})
        self.views = dict(views or {}) if console else {}
        self.registry = registry
        self.history = history or MetricsHistory(registry)
        self.principals = principals
        self.verifier = verifier
        self.open_to_all = open_to_all or not principals.required
        self.taps = taps

    def handles(self, scope: Scope) -> bool:
        """An operator path, a console file, or ``GET /`` from a browser (``Accept`` prefers HTML);
        ``/tap`` only where there are delivery streams to tap."""
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            return False
        if path == TAP:
            return self.taps is not None
        if not self.console:
            return path in ROUTES and path != console.STREAMS_JSON
        if path == "/":
            accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
            return console.wants_html(accept)
        return path in ROUTES or path in self.views or console.is_asset(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        page = console.asset(console.PAGE if path == "/" else path) if self.console else None
        if page is not None:
            body, content_type = page
            await send_response(send, 200, body, content_type, extra=_PAGE_HEADERS)
            return
        if path == "/healthz":
            await send_response(send, 200, b'{"status":"ok"}', _JSON)
            return
        operator = self.open_to_all or self._is_operator(scope)
        if path == "/readyz":
            ready, details = self.readiness()
            shown: dict[str, Any] = {"status": "ready" if ready else "not ready"}
            if operator:
                shown.update(details)
            elif not ready and "reason" in details:
                shown["reason"] = details["reason"]
            await send_response(send, 200 if ready else 503, orjson.dumps(shown), _JSON)
        elif not operator:
            await send_response(send, 401, orjson.dumps({
                "__type": "MissingAuthenticationTokenException",
                "message": "Metrics need a signed request or a bearer token (auth.bearer_tokens)."}), _JSON,
                extra=[(b"www-authenticate", b'Bearer realm="firehose"')])
        elif path == TAP:
            await self._tap(scope, receive, send)
        elif path == console.STREAMS_JSON:
            await send_response(send, 200, orjson.dumps(self.streams()), _JSON)
        elif path in self.views:
            await send_response(send, 200, orjson.dumps(await self.views[path]()), _JSON)
        elif path == METRICS_JSON:
            history = b"history=0" not in scope.get("query_string", b"")
            await send_response(send, 200, orjson.dumps(self.history.document(history=history)), _JSON)
        else:
            await send_response(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())

    async def _tap(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream a delivery stream's records (``firehose tap``) until the client goes away."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        stream = (query.get("stream") or [""])[0]
        try:
            sample = float((query.get("sample") or ["1"])[0])
        except ValueError:
            sample = -1.0
        if self.taps is None or not stream or not 0 < sample <= 1:  # (no taps: handles() said no)
            await send_response(send, 400, orjson.dumps({
                "__type": "InvalidArgumentException",
                "message": "GET /tap?stream=NAME[&errors=1][&sample=RATE], 0 < RATE <= 1."}), _JSON)
            return
        if self.taps.full():
            await send_response(send, 503, orjson.dumps({
                "__type": "ServiceUnavailableException",
                "message": f"{MAX_FOLLOWERS} readers already follow delivery streams; retry later."}), _JSON)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-store")]})
        lines = self.taps.follow(stream, errors=(query.get("errors") or ["0"])[0] in ("1", "true"), sample=sample)

        async def until_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        gone = asyncio.ensure_future(until_gone())
        try:
            while not gone.done():
                nxt = asyncio.ensure_future(anext(lines))
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt  # the generator must not be running when it is closed
                    break
                await send({"type": "http.response.body", "body": nxt.result(), "more_body": True})
        except (OSError, TooManyFollowers, StopAsyncIteration):
            pass  # the client went away mid-write; or another reader took the last place meanwhile
        finally:
            gone.cancel()
            await lines.aclose()
            with contextlib.suppress(Exception):  # end the response; the client may be gone already
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def permits(self, scope: Scope) -> bool:
        """Whether the caller may use the operator's endpoints: anyone without authentication, else a
        signed request of a known principal or one of ``auth.bearer_tokens``."""
        return self.open_to_all or self._is_operator(scope)

    def _is_operator(self, scope: Scope) -> bool:
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if authorization[:7].lower() == b"bearer ":
            return self.principals.bearer_ok(authorization[7:].decode("latin-1").strip())
        if self.verifier is None or not (authorization or b"X-Amz-Algorithm" in scope.get("query_string", b"")):
            return False
        raw_path = scope.get("raw_path") or scope["path"].encode()
        try:
            self.verifier.verify(method=scope["method"], path=raw_path.decode("latin-1"),
                                 query=scope.get("query_string", b"").decode("latin-1"), headers=scope["headers"],
                                 payload_sha256=EMPTY_SHA256)
        except FirehoseError:
            return False
        return True


class OperatorApp:
    """The operator endpoints as an app of their own, for the ``metrics.listen`` listener."""

    def __init__(self, routes: OperatorRoutes) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.routes.handles(scope):
            await self.routes(scope, receive, send)
        else:
            await send_response(send, 404, b'{"message":"Not found: /healthz, /readyz, /metrics, /metrics.json '
                                b'and /console are served here."}', _JSON)
