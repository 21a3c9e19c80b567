"""The Kinesis API as an ASGI application: ``POST /`` with ``X-Amz-Target: Kinesis_20131202.<Op>``.

Both wire forms AWS SDKs use are accepted and answered in kind: awsJson1_1
(boto3, the CLI, the JavaScript, Go and .NET SDKs) and CBOR (the Java SDK's
default, hence the KPL, KCL and Kinesis Agent). The server under it speaks
HTTP/1.1 and HTTP/2, including h2c with prior knowledge, which is what the
JavaScript SDK v3 uses for Kinesis by default.

``POST /`` goes through the front door shared with the Firehose API
(``firehose.frontdoor``: size, encoding, content type, target, parse, SigV4,
IAM policies, the AWS model's validation) to an operation in
``operations.py``, acting on the shard store of the caller's account.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from firehose.asgi import Receive, Scope, Send, send_response
from firehose.frontdoor import cors, wire
from firehose.frontdoor.body import MemoryBudget
from firehose.frontdoor.door import Api, FrontDoor, refuse_method
from firehose.frontdoor.operator import OperatorRoutes
from firehose.frontdoor.policy import Policy
from firehose.frontdoor.principals import Principals
from firehose.frontdoor.reset import ResetRoutes
from firehose.settings import Settings
from firehose.streams import policies
from firehose.streams.metrics import StreamsMetrics
from firehose.streams.operations import OPERATIONS, SHAPES
from firehose.streams.store import ShardStore

TARGET_PREFIX = "Kinesis_20131202"
#: Largest request accepted: a 10 MiB-record stream's PutRecords, base64-encoded, plus framing.
MAX_BODY_BYTES = 16 * 1024 * 1024


def _ready() -> tuple[bool, dict[str, Any]]:
    return True, {}


class KinesisApp:
    def __init__(self, stores: Callable[[str], ShardStore], settings: Settings, principals: Principals,
                 metrics: StreamsMetrics | None = None,
                 existing: Callable[[str], ShardStore | None] | None = None) -> None:
        """``stores``: an account's store, made on first use; ``existing``: an account's store if it has
        one (for streams of another account named by ARN; unset, no call crosses accounts)."""
        self.metrics = metrics or StreamsMetrics()
        self._stores = stores
        self._existing = existing or (lambda _account: None)
        api = Api(
            target_prefix=TARGET_PREFIX, signing_name="kinesis", operations=OPERATIONS,
            shapes=SHAPES,
            max_body_bytes=MAX_BODY_BYTES, services=lambda caller: self._store(caller.account_id), cbor=True,
            observe=self._observe, resource_policies=self._resource_policies, owner_services=self._owner_store,
        )
        self.door = FrontDoor(api, settings, principals, MemoryBudget(settings.limits.max_request_memory))
        self.operator = OperatorRoutes(_ready, self.metrics.registry, principals, self.door.verifier,
                                       console=False)
        #: ``testing.reset_endpoint``'s paths; whoever holds the stores sets what a reset does.
        self.reset = ResetRoutes(settings.testing.reset_endpoint, permits=self.operator.permits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            await self.door(scope, receive, send)
        elif cors.is_preflight(scope):
            await cors.preflight(scope, send)
        elif self.operator.handles(scope):
            await self.operator(scope, receive, send)
        elif self.reset.handles(scope):
            await self.reset(scope, receive, send)
        elif path == "/":  # any other method on the API's path
            await refuse_method(scope, send)
        else:
            await send_response(send, 404, wire.error("UnknownOperationException", f"No route for {method} {path}."),
                                wire.JSON_BYTES, wire.request_id())

    def _observe(self, operation: str | None, status: int, started: float, result: dict[str, Any] | None,
                 error: str | None) -> None:
        """Every call's outcome and latency; what it stored or read is reported by the operations."""
        op = operation if operation in OPERATIONS else "unknown"
        self.metrics.requests.labels(op, str(status)).inc()
        self.metrics.latency.labels(op).observe(time.perf_counter() - started)
        succeeded = result is not None and (op != "PutRecords" or result["FailedRecordCount"] < len(result["Records"]))
        self.metrics.call(op, succeeded)

    def _owner_store(self, account: str) -> ShardStore | None:
        store = self._existing(account)
        if store is not None:
            store.metrics = self.metrics
        return store

    def _resource_policies(self, arn: str) -> tuple[Policy, ...]:
        """The policies attached to the stream (or consumer) an ARN names, in its owner's store."""
        ref = policies.parse_arn(arn)
        return policies.policies(self._existing(ref.account), arn) if ref is not None else ()

    def _store(self, account: str) -> ShardStore:
        """An account's store, reporting what its operations store and read to this app's metrics."""
        store = self._stores(account)
        store.metrics = self.metrics
        return store


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["MAX_BODY_BYTES", "TARGET_PREFIX", "KinesisApp", "StreamsMetrics"]
