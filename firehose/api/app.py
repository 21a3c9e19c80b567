"""The Firehose listener's ASGI application: the API on ``POST /``, deliveries from other Firehoses, operator paths.

Transport only. ``POST /`` goes through the front door shared with the Kinesis
API (``firehose.frontdoor``: size, encoding, content type, target, parse,
SigV4, IAM policies, the AWS model's validation) to an operation in
``operations.py``; ``POST /http-endpoint/<stream>`` to the HTTP endpoint
receiver; ``/healthz``, ``/readyz``, ``/metrics`` and the console (``/console``, ``GET /`` from a
browser) to the operator routes.

Collaborators come from the daemon: the per-account services the operations
take, a readiness probe and the metrics. The API never imports the pipeline
or a destination.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from firehose.api import shapes
from firehose.api.http_receiver import PATH_PREFIX as RECEIVER_PREFIX
from firehose.api.http_receiver import HttpEndpointReceiver
from firehose.api.operations import OPERATIONS, Services
from firehose.asgi import Receive, Scope, Send, send_response
from firehose.frontdoor import cors, wire
from firehose.frontdoor.body import MemoryBudget
from firehose.frontdoor.door import Api, FrontDoor, refuse_method
from firehose.frontdoor.operator import OperatorRoutes, ReadinessProbe, StreamsProbe, ViewProbe
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.reset import ResetRoutes
from firehose.settings import Settings
from firehose.tap import Taps
from firehose.telemetry import Metrics, MetricsHistory

TARGET_PREFIX = "Firehose_20150804"


class FirehoseApp:
    def __init__(self, services: Callable[[str], Services], readiness: ReadinessProbe, settings: Settings,
                 principals: Principals, metrics: Metrics, *, history: MetricsHistory | None = None,
                 taps: Taps | None = None, streams: StreamsProbe | None = None,
                 views: Mapping[str, ViewProbe] | None = None,
                 max_body_bytes: int = shapes.MAX_BODY_BYTES, apis: Sequence[Api] = ()) -> None:
        """``apis``: other APIs served on this listener's ``POST /``, each through a front door of its own,
        chosen by the ``X-Amz-Target`` prefix (the daemon's Kinesis Analytics API)."""
        self.services = services
        self.settings = settings
        self.metrics = metrics
        self.budget = MemoryBudget(settings.limits.max_request_memory)
        api = Api(
            target_prefix=TARGET_PREFIX, signing_name="firehose", operations=OPERATIONS,
            shapes=shapes.SHAPES,
            max_body_bytes=max_body_bytes, services=lambda caller: services(caller.account_id),
            observe=self._observe,
            too_large_hint=f"PutRecordBatch accepts at most {shapes.MAX_BATCH_BYTES} bytes of record data per call.",
        )
        self.door = FrontDoor(api, settings, principals, self.budget)
        #: Target prefix (``KinesisAnalytics_20150814``) → the front door of that API.
        self.doors = {other.target_prefix: FrontDoor(other, settings, principals, self.budget) for other in apis}
        self.receiver = HttpEndpointReceiver(services, self.door)
        self.operator = OperatorRoutes(readiness, metrics.registry, principals, self.door.verifier, history=history,
                                       taps=taps, streams=streams, views=views)
        #: ``testing.reset_endpoint``'s paths; the daemon sets what a reset does.
        self.reset = ResetRoutes(settings.testing.reset_endpoint, permits=self.operator.permits)
        #: (operation, status) → the request counter and duration histogram children (no .labels() per call).
        self._api: dict[tuple[str, int], tuple[Counter, Histogram | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            await (self._door(scope) if self.doors else self.door)(scope, receive, send)
        elif cors.is_preflight(scope):
            await cors.preflight(scope, send)
        elif (path.startswith(RECEIVER_PREFIX) and method == "POST"
              and self.settings.http_endpoint_receiver.enabled):
            started = time.perf_counter()
            status = await self.receiver(path[len(RECEIVER_PREFIX):], scope, receive, send)
            self._observe("HttpEndpointDelivery", status, started, None, None)
        elif self.operator.handles(scope):
            await self.operator(scope, receive, send)
        elif self.reset.handles(scope):
            await self.reset(scope, receive, send)
        elif path == "/":  # any other method on the API's path
            await refuse_method(scope, send)
        else:
            await send_response(send, 404, wire.error("UnknownOperationException", f"No route for {method} {path}."),
                                wire.JSON_BYTES, wire.request_id())

    def _door(self, scope: Scope) -> FrontDoor:
        """The front door of the API the request's ``X-Amz-Target`` names (the Firehose API's by default)."""
        for key, value in scope["headers"]:
            if key == b"x-amz-target":
                return self.doors.get(value.decode("latin-1").partition(".")[0], self.door)
        return self.door

    def _observe(self, operation: str | None, status: int, started: float, _result: Any, _error: str | None
                 ) -> None:
        op = operation if operation in OPERATIONS or operation == "HttpEndpointDelivery" else "unknown"
        children = self._api.get((op, status))
        if children is None:
            children = self._api[(op, status)] = (
                self.metrics.api_requests.labels(op, "success" if status == 200 else "failure"),
                self.metrics.api_duration.labels(op) if status == 200 else None)
        requests, duration = children
        requests.inc()
        if duration is not None:
            duration.observe(time.perf_counter() - started)
