"""The front door both APIs share: ``POST /`` from the first header to the operation's answer.

An ``Api`` states what differs between the Firehose API and the Kinesis API
(target prefix, signing name, operations, body limit, whether CBOR is spoken,
how per-account services are found); ``FrontDoor`` does the rest, the same way
for both, in AWS's order (security.md §1, kinesis-fidelity.md §5.1):

    size (Content-Length, then while streaming) → body read under the shared budget
    → content type → X-Amz-Target → inflate (gzip/deflate, capped) → parse (JSON/CBOR, depth-capped)
    → authenticate (SigV4) → authorize (IAM policies) → validate (the AWS model) → operation

Every answer carries ``x-amzn-RequestId`` and ``x-amz-id-2``. A ``FirehoseError``
becomes the error envelope in the request's wire form with its status;
anything else is logged with its traceback and answered ``InternalFailure``
(500) without a traceback, and the process keeps serving.

Operations on the hot path (PutRecordBatch, PutRecords) validate themselves:
their fast path proves a request valid at a fraction of a general walk's cost
and calls the same validator when it finds a problem, so the answers are the
validator's either way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from firehose.asgi import Receive, Scope, Send, Streamed, send_response, send_streamed
from firehose.errors import (
    AccessDeniedException,
    FirehoseError,
    UnknownOperationException,
)
from firehose.frontdoor import body, cors, wire
from firehose.frontdoor.policy import Decision, Policy, denied_message, evaluate
from firehose.frontdoor.principals import Principal, Principals
from firehose.frontdoor.shapes import ServiceShapes
from firehose.frontdoor.sigv4 import Verifier, scope_of, wants_payload_hash
from firehose.settings import Settings

log = logging.getLogger("firehose.api")

Body = dict[str, Any]

#: Decisions remembered per front door (for principals whose policies allow caching).
_DECISION_CACHE = 4096
#: Bodies at least this large are decoded on a worker thread, after their objects and arrays are counted (the
#: ingest hot path's 500 × 1 KiB stays inline: a body under this cannot hold enough to stall the loop for long).
_DECODE_OFF_LOOP = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as established by the front door; operations act in ``account_id``."""

    account_id: str
    region: str
    #: The principal's ARN; empty when authentication is off.
    principal_arn: str = ""
    access_key_id: str = ""
    source_ip: str = ""
    secure: bool = False


Handler = Callable[..., Awaitable[Body | wire.JsonAnswer | Streamed]]
#: Given to self-validating operations: checks the whole request against the model (``skip``: member paths
#: the operation checks itself), raising the validator's error.
Check = Callable[..., None]
#: The ARN a request acts on, for authorization ("*" for account-wide actions).
ResourceOf = Callable[[Body, Caller], str]


def anywhere(_body: Body, _caller: Caller) -> str:
    return "*"


@dataclass(frozen=True, slots=True)
class Operation:
    """An operation: ``handler(services, body)``, or ``handler(services, body, check)`` when it is
    self-validating, and the resource it acts on. A handler answers a dict, or a ``Streamed`` answer
    (an event stream), which is sent as it is produced once every check above has passed."""

    handler: Handler
    resource: ResourceOf = anywhere
    #: The operation runs the validator itself (``check``), after a fast path (the ingest hot path).
    self_validating: bool = False
    #: Whether a resource-based policy can grant the operation (Put/Get/DeleteResourcePolicy: no, only
    #: the owner's account may manage a resource's policy).
    grantable: bool = True


@dataclass(frozen=True)
class Api:
    """What one service's front door needs to know."""

    #: ``Firehose_20150804`` / ``Kinesis_20131202``.
    target_prefix: str
    #: SigV4 scope service and IAM action prefix: ``firehose`` / ``kinesis``.
    signing_name: str
    operations: Mapping[str, Operation]
    shapes: ServiceShapes
    max_body_bytes: int
    #: The per-account services an operation takes (catalog, shard store ...).
    services: Callable[[Caller], Any]
    #: Whether ``application/x-amz-cbor-1.1`` is spoken (Kinesis) besides JSON.
    cbor: bool = False
    #: Called after every API request: (operation or None, HTTP status, perf_counter at start, answer or None,
    #: the error's ``__type`` or None).
    observe: Callable[[str | None, int, float, Body | wire.JsonAnswer | None, str | None], None] = field(
        default=lambda *_: None)
    #: Added to the 413 answer's message (what the API's own limits are).
    too_large_hint: str = ""
    #: The resource-based policies attached to the resource an ARN names (() when none, or no such resource).
    resource_policies: Callable[[str], Sequence[Policy]] = field(default=lambda _arn: ())
    #: The per-account services of another account that owns a resource a request names by ARN, or None when
    #: that account holds nothing here. Unset: every request acts in its caller's account.
    owner_services: Callable[[str], Any] | None = None


class FrontDoor:
    def __init__(self, api: Api, settings: Settings, principals: Principals, budget: body.MemoryBudget) -> None:
        self.api = api
        self.settings = settings
        self.principals = principals
        self.budget = budget
        self.region = settings.region
        limits = settings.limits
        self.max_depth = limits.max_json_depth
        self.max_containers = limits.max_json_containers
        self.max_inflated = min(limits.max_decompressed_bytes, api.max_body_bytes)
        self.max_ratio = limits.max_decompression_ratio
        self.verifier = Verifier(principals.credential, service=api.signing_name, region_ok=self._region_ok,
                                 clock_skew_seconds=settings.auth.clock_skew_seconds)
        self._decisions: dict[tuple[str, str, str, str, bool], Decision] = {}

    def _region_ok(self, region: str) -> bool:
        return region == self.region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = wire.request_id()
        started = time.perf_counter()
        api = self.api
        ctype = target = encoding = ""
        length, chunked, origin = -1, False, False
        for key, value in scope["headers"]:
            if key == b"content-type":
                ctype = value.decode("latin-1").split(";", 1)[0].strip().lower()
            elif key == b"x-amz-target":
                target = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
            elif key == b"transfer-encoding":
                chunked = True
            elif key == b"origin":
                origin = True
        if chunked:  # the length of a chunked body is what arrives, whatever Content-Length says
            length = -1
        use_cbor = api.cbor and ctype == wire.CBOR
        name = wire.split_target(target, api.target_prefix)
        status, result, close, failure = 200, None, False, None
        streamed: Streamed | None = None
        held = self.budget.request()
        try:
            if length > api.max_body_bytes:
                raise body.BodyTooLarge(api.max_body_bytes)
            digest = body.sha256() if self.principals.required and wants_payload_hash(scope["headers"]) else None
            raw = await body.read(receive, api.max_body_bytes, held, digest, length=length)
            if not raw and api.cbor:
                await self._refuse_empty(send, name, ctype, rid, started, origin)
                return
            if not use_cbor and ctype not in wire.JSON_TYPES:
                # AWS answers a content type it does not speak in XML, as kinesalite recorded it: 403
                # AccessDenied when the target does not even split into service.operation, else an
                # empty 404 UnknownOperationException.
                service, dot, op = target.partition(".")
                refusal, status = ("UnknownOperationException", 404) if service and dot and op else \
                    ("AccessDeniedException", 403)
                out = wire.xml_error(refusal, None if status == 404 else wire.NO_OPERATION)
                api.observe(name, status, started, None, refusal)
                await send_response(send, status, out, None, rid,  # AWS's XML refusals have no content type
                                    extra=cors.ANSWER_HEADERS if origin else None)
                return
            operation = api.operations.get(name or "")
            if operation is None:
                what = f"operation {target!r}" if target else "no X-Amz-Target header"
                raise UnknownOperationException(f"Unknown {what}; expected {api.target_prefix}.<Operation>.")
            assert name is not None
            request = await self._parse(raw, encoding, use_cbor, held,
                                        None if operation.self_validating else self.max_depth)
            del raw
            caller, principal = self.authenticate(scope, digest)
            resource = operation.resource(request, caller)
            if principal is not None:
                self.authorize(principal, caller, name, resource, grantable=operation.grantable)
            validator = api.shapes.validator(name)
            if operation.self_validating:
                def check(skip: frozenset[str] = frozenset()) -> None:
                    validator.validate(request, skip=skip, cbor=use_cbor)

                result = await operation.handler(self._services(caller, resource), request, check)
            else:
                validator.validate(request, cbor=use_cbor)
                result = await operation.handler(self._services(caller, resource), request)
            if isinstance(result, Streamed):  # an event stream (SubscribeToShard): sent as it is produced
                streamed, result, out = result, {}, b""
            elif not result and name in api.shapes.without_output:
                out = b""  # as AWS answers an operation without output: 200, an empty body
            else:
                out = wire.encode(result, cbor=use_cbor)
        except body.Disconnected:
            return
        except body.BodyTooLarge as exc:
            status, failure = 413, "SerializationException"
            close = not await body.discard(receive, length) and scope.get("http_version", "1.1").startswith("1")
            out = wire.error("SerializationException", f"{exc} {api.too_large_hint}".strip(), cbor=use_cbor)
        except FirehoseError as exc:
            status, failure = status if status != 200 else exc.status, exc.aws_type
            out = wire.error(exc.aws_type, exc.message, cbor=use_cbor, members=getattr(exc, "members", None))
        except Exception:
            log.exception("Unexpected error handling a request.", extra={"operation": name, "request_id": rid})
            status, failure = 500, "InternalFailure"
            out = wire.error("InternalFailure", "An internal error occurred; the request can be retried.",
                             cbor=use_cbor)
        finally:
            held.release()
        api.observe(name, status, started, result, failure)
        if streamed is not None:
            await send_streamed(send, receive, streamed, rid)
            return
        await send_response(send, status, out, wire.CBOR_BYTES if use_cbor else wire.JSON_BYTES, rid, close=close,
                            extra=cors.ANSWER_HEADERS if origin else None)

    async def _refuse_empty(self, send: Send, name: str | None, ctype: str, rid: str, started: float,
                            origin: bool) -> None:
        """An empty body, as the Kinesis front door answers it before it looks at the content type
        (kinesalite's recordings, security.md §7.1): 400 SerializationException for a known operation,
        else UnknownOperationException, without a message, in JSON only when the request said JSON 1.1
        and in CBOR otherwise (even with no content type at all)."""
        refusal = "SerializationException" if name in self.api.operations else "UnknownOperationException"
        as_json = ctype == wire.JSON
        out = wire.error(refusal, wire.BARE, cbor=not as_json)
        self.api.observe(name, 400, started, None, refusal)
        await send_response(send, 400, out, wire.JSON_BYTES if as_json else wire.CBOR_BYTES, rid,
                            extra=cors.ANSWER_HEADERS if origin else None)

    async def _parse(self, raw: bytes, encoding: str, use_cbor: bool, held: body.Held,
                     max_depth: int | None) -> Body:
        """Inflate and decode a complete body, charging the parsing pool first for what it can grow to;
        a large body is decoded on a worker thread so that the event loop keeps answering others."""
        raw = await body.inflate_charged(raw, encoding, held, max_size=self.max_inflated, max_ratio=self.max_ratio)
        await held.parsing(len(raw) * (body.CBOR_GROWTH if use_cbor else body.JSON_GROWTH))
        if len(raw) >= _DECODE_OFF_LOOP:
            request = await asyncio.to_thread(wire.decode, raw, cbor=use_cbor, max_depth=max_depth,
                                              max_containers=self.max_containers)
        else:
            request = wire.decode(raw, cbor=use_cbor, max_depth=max_depth)
        held.done_reading()
        return request

    # -- authentication and authorization ---------------------------------------------------

    def authenticate(self, scope: Scope, digest: Any | None) -> tuple[Caller, Principal | None]:
        """Who is calling: verified by SigV4 when authentication is on (the principal is then returned),
        else as the request claims. ``digest`` is the body's SHA-256 (None when not needed)."""
        headers = scope["headers"]
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        source_ip = client[0] if client else ""
        secure = scope.get("scheme") == "https"
        if not self.principals.required:
            claimed = scope_of(headers, query)
            key, region = claimed if claimed else ("", self.region)
            return Caller(self.principals.account_of(key), region or self.region, "", key, source_ip, secure), None
        raw_path = scope.get("raw_path") or scope["path"].encode()
        signed = self.verifier.verify(method=scope["method"], path=raw_path.decode("latin-1"), query=query,
                                      headers=headers, payload_sha256=digest.hexdigest() if digest else None)
        principal = self.principals.get(signed.access_key_id)
        assert principal is not None  # the verifier only accepts known keys
        caller = Caller(principal.account_id, signed.region, principal.arn, principal.access_key_id, source_ip,
                        secure)
        return caller, principal

    def _services(self, caller: Caller, resource: str) -> Any:
        """The services a request acts on: its caller's account's, or those of the account that owns the
        resource it names by ARN (a cross-account call, authorized by that resource's policy)."""
        if self.api.owner_services is not None:
            owner = _account_of(resource)
            if owner and owner != caller.account_id and _ACCOUNT.fullmatch(owner):
                services = self.api.owner_services(owner)
                if services is not None:
                    return services
        return self.api.services(caller)

    def authorize(self, principal: Principal, caller: Caller, operation: str, resource: str, *,
                  grantable: bool = True) -> None:
        """AccessDeniedException unless the principal's policies, with the resource's own policies (when
        ``grantable``), allow ``operation`` on ``resource``.

        Decisions are cached only while the resource has no policy of its own: a resource policy can
        change between calls and may test any condition key."""
        action = f"{self.api.signing_name}:{operation}"
        attached = self.api.resource_policies(resource) if grantable else ()
        cacheable = principal.cacheable and not attached
        key = (principal.access_key_id, action, resource, caller.source_ip, caller.secure)
        decision = self._decisions.get(key) if cacheable else None
        if decision is None:
            decision = evaluate(action, resource, identity=principal.policies, context=_context(principal, caller),
                                resource_policies=attached, principal_arn=principal.arn,
                                principal_account=principal.account_id,
                                resource_account=_account_of(resource) or principal.account_id)
            if cacheable:
                if len(self._decisions) >= _DECISION_CACHE:
                    self._decisions.clear()
                self._decisions[key] = decision
        if not decision.allowed:
            raise AccessDeniedException(denied_message(decision, principal.arn, action, resource))


_ACCOUNT = re.compile(r"\d{12}")


def _account_of(arn: str) -> str:
    parts = arn.split(":", 5)
    return parts[4] if len(parts) == 6 else ""


def _context(principal: Principal, caller: Caller) -> dict[str, Any]:
    now = time.time()
    return {
        "aws:SourceIp": caller.source_ip,
        "aws:SecureTransport": caller.secure,
        "aws:CurrentTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:EpochTime": int(now),
        "aws:PrincipalArn": principal.arn,
        "aws:PrincipalAccount": principal.account_id,
        "aws:username": principal.name,
        "aws:userid": principal.access_key_id,
        "aws:RequestedRegion": caller.region,
    }


async def refuse_method(scope: Scope, send: Send) -> None:
    """A method other than POST on the API's path, answered as AWS answers it: 403, in XML."""
    await send_response(send, 403, wire.xml_error("AccessDeniedException", wire.NO_OPERATION), None,
                        wire.request_id(), extra=cors.ANSWER_HEADERS if cors.has_origin(scope) else None)
