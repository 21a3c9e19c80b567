"""The operator's endpoints on an API listener: ``/healthz``, ``/readyz``, ``/metrics`` (and the same figures as
JSON at ``/metrics.json``), and who may read them.

With authentication off every caller sees everything, as before. With
``auth.mode: sigv4`` a load balancer still gets ``/healthz`` and a minimal
``/readyz`` (the status and, when not ready, the reason; no destination URLs,
stream names or error texts), while the detailed ``/readyz``, ``/metrics`` and
``/metrics.json`` need an operator: a request signed by any configured principal, or
``Authorization: Bearer <token>`` with one of ``auth.bearer_tokens`` (for
scrapers that cannot sign). A separate listener (``metrics.listen``) serves
them all without authentication, for a private network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from firehose.asgi import Receive, Scope, Send, send_response
from firehose.errors import FirehoseError
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.sigv4 import Verifier
from firehose.tap import Taps
from firehose.telemetry import MetricsHistory

#: Returns (ready, details) for /readyz; details may name streams, destinations and errors.
ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]

_JSON = b"application/json"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: The figures of /metrics as JSON for the console, with the last 15 minutes of samples (``?history=0``: not).
METRICS_JSON = "/metrics.json"
#: A stream's delivered records as they go (``?stream=NAME&errors=1&sample=0.1``), JSON lines, for ``firehose tap``.
TAP = "/tap"
ROUTES = frozenset({"/healthz", "/readyz", "/metrics", METRICS_JSON, TAP})


class OperatorRoutes:
    """``GET``/``HEAD`` of the three operator paths for one listener."""

    def __init__(self, readiness: ReadinessProbe, registry: CollectorRegistry, principals: Principals,
                 verifier: Verifier | None, *, open_to_all: bool = False, history: MetricsHistory | None = None,
                 taps: Taps | None = None) -> None:
        self.readiness = readiness
        self.registry = registry
        self.history = history or MetricsHistory(registry)
        self.principals = principals
        self.verifier = verifier
        self.open_to_all = open_to_all or not principals.required
        self.taps = taps

    def handles(self, path: str, method: str) -> bool:
        """Whether this is an operator request (``/tap`` only where there are delivery streams to tap)."""
        return path in ROUTES and method in ("GET", "HEAD") and (path != TAP or self.taps is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
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
        except OSError:
            pass  # the client went away mid-write
        finally:
            gone.cancel()
            await lines.aclose()

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
        if self.routes.handles(scope["path"], scope["method"]):
            await self.routes(scope, receive, send)
        else:
            await send_response(send, 404, b'{"message":"Not found: /healthz, /readyz, /metrics and /metrics.json '
                                b'are served here."}', _JSON)
