"""Delivery to an HTTP endpoint with the Firehose HTTP endpoint protocol (spec: destinations.md §4).

One attempt is one ``POST`` of the whole batch to the configured URL, verbatim (path and query kept)::

    {"requestId": "<batch id>", "timestamp": <epoch ms>, "records": [{"data": "<base64>"}, ...]}

with the ``X-Amz-Firehose-*`` headers, gzip-compressed when ``RequestConfiguration.ContentEncoding`` is
GZIP. Invariants:

* The request id is the batch id, fixed when the batch was sealed: every retry of a batch, before or
  after a restart, carries the same ``X-Amz-Firehose-Request-Id``, so an endpoint can deduplicate on it.
* Only ``200`` with a JSON body whose ``requestId`` echoes the request's is success; nothing is ever
  partially delivered, so an outcome lists every record of the batch or none of them.
* ``413`` is permanent; every other answer or failure is retried: other 2xx, 3xx (redirects are
  never followed), 4xx, 5xx, a non-conforming or over-1-MiB response, TLS and connection failures,
  timeouts. A 413 for a request of several records splits it in halves, which are sent in turn
  (endpoints often cap bodies below Firehose's 64 MiB); only a single record the endpoint still
  refuses is rejected, and, as the protocol says, not written to the error output (the pipeline logs
  and counts it).
* A batch over the protocol's limits (10,000 records, 64 MiB of body) goes as several requests.
  Every request but a whole-batch one has an id derived from the batch id and its first and last
  record ids, so it too is the same on every retry.
* TLS verification and timeouts belong to the shared client (``settings.http``); nothing here relaxes
  them. The read timeout is the endpoint's time to answer (Firehose gives it 3 minutes).

Error codes (``errorCode`` of the error record) and when they are used:

* ``HttpEndpoint.RequestEntityTooLarge``: the endpoint answered 413 (rejected, not retried).
* ``HttpEndpoint.DestinationException``: any other status but 200, or a request that failed in a way
  no code below names.
* ``HttpEndpoint.InvalidResponseFromDestination``: a 200 that breaks the response contract (not
  ``application/json``, compressed, not a JSON object, missing or mismatching ``requestId``).
* ``HttpEndpoint.ResponseTooLarge``: a response body over 1 MiB.
* ``HttpEndpoint.RequestTimeout``: the request could not be sent, or no answer came, in time.
* ``HttpEndpoint.DestinationHostUnreachable``: no connection (refused, no route, DNS, connect timeout).
* ``HttpEndpoint.SSLHandshakeFailure``: the TLS handshake failed (e.g. the certificate did not verify).
* ``HttpEndpoint.ConnectionReset``: the connection broke before a complete response arrived.

The last two are not in the spec's list; they are the names AWS uses for those failures.

The error message embeds the endpoint's ``errorMessage`` (whole, up to the protocol's 8192 characters)
or, when the body is not a protocol response, its text cut to 1024 characters. Each failure's
``extra`` is ``{"dataId": <record id>}``: the record's stable identity (see ``records.DeliveryRecord``).
The spec's other per-record field, ``subsequenceNumber``, numbers the user records inside one
KPL-aggregated Kinesis record; records here have no such position, so it is not invented.

Encoding costs about 1 ms per MiB of body and gzip 8-25 ms per MiB (measured: a 64 MiB body takes
65 ms, 0.5-1.9 s gzipped). Bodies over 1 MiB, and every gzip, are therefore built in the
destinations' thread pool; smaller plain bodies are built inline, where a thread hop would cost more.
"""

from __future__ import annotations

import gzip
import ssl
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import pybase64

from firehose.clock import now_ms
from firehose.definitions import HttpEndpointDestinationConfiguration
from firehose.destinations.base import DELIVERED, DestinationContext, Failure, Outcome, RecordDestination
from firehose.destinations.secrets import HTTP_ENDPOINT_MEMBERS, SecretValue, cached_secret
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch

REQUEST_TOO_LARGE = "HttpEndpoint.RequestEntityTooLarge"
DESTINATION_EXCEPTION = "HttpEndpoint.DestinationException"
INVALID_RESPONSE = "HttpEndpoint.InvalidResponseFromDestination"
RESPONSE_TOO_LARGE = "HttpEndpoint.ResponseTooLarge"
REQUEST_TIMEOUT = "HttpEndpoint.RequestTimeout"
HOST_UNREACHABLE = "HttpEndpoint.DestinationHostUnreachable"
SSL_HANDSHAKE_FAILURE = "HttpEndpoint.SSLHandshakeFailure"
CONNECTION_RESET = "HttpEndpoint.ConnectionReset"

#: Answers that mean the endpoint refused the access key: a secret-sourced key is read again at once.
AUTH_FAILURE_STATUSES = (401, 403)

#: The protocol's bound on a response body; a larger one is not read.
MAX_RESPONSE_BYTES = 1024 * 1024
#: The protocol's bound on ``errorMessage``, and the cut for any other response text in a message.
MAX_ERROR_MESSAGE_CHARS = 8192
MAX_RESPONSE_TEXT_CHARS = 1024
_DATA = attrgetter("data")

#: The protocol's limits on one request.
MAX_REQUEST_RECORDS = 10_000
MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Plain bodies up to this many record bytes are encoded on the event loop (about 1 ms).
INLINE_ENCODE_BYTES = 1024 * 1024
GZIP_LEVEL = 6

_TIMEOUT_PHASE = {
    httpx.ReadTimeout: "{} did not answer within the read timeout",
    httpx.WriteTimeout: "sending the request to {} timed out",
    httpx.PoolTimeout: "no connection to {} became free in time",
}


def encode_request(request_id: str, timestamp_ms: int, records: Sequence[DeliveryRecord],
                   compress: bool) -> bytes:
    """The request body: the protocol's JSON document, gzip-compressed when ``compress``.

    Written by joining rather than through a JSON encoder: base64 text never needs escaping, and
    the request id is dumped by orjson, so the result is the same JSON at a third of the cost.
    ``mtime=0`` keeps the gzip header free of the clock, so only ``timestamp`` differs between attempts.
    """
    datas = map(pybase64.b64encode, map(_DATA, records))
    items = (b'[{"data":"', b'"},{"data":"'.join(datas), b'"}]') if records else (b"[]",)
    body = b"".join((b'{"requestId":', orjson.dumps(request_id), b',"timestamp":', str(int(timestamp_ms)).encode(),
                     b',"records":', *items, b"}"))
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0) if compress else body


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def _response_detail(body: bytes) -> str:
    """What the endpoint said: its ``errorMessage`` if the body is a protocol response, else the text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("errorMessage"), str):
        return _clip(parsed["errorMessage"], MAX_ERROR_MESSAGE_CHARS)
    return _clip(body.decode("utf-8", "replace"), MAX_RESPONSE_TEXT_CHARS) or "(empty body)"


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: httpx.Headers
    #: None when the body exceeded ``MAX_RESPONSE_BYTES`` (reading stopped there).
    body: bytes | None


async def _read_capped(resp: httpx.Response) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed ``MAX_RESPONSE_BYTES``."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return None
    buf = bytearray()
    async for chunk in resp.aiter_raw():
        buf += chunk
        if len(buf) > MAX_RESPONSE_BYTES:
            return None
    return bytes(buf)


def _contract_violation(resp: _Response, body: bytes, request_id: str) -> str | None:
    """Why a 200 response does not acknowledge the request (spec §4.2), or None if it does."""
    content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return f"the response's Content-Type is {content_type or 'missing'!r}, not 'application/json'"
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return f"the response is encoded ({encoding}); it must be uncompressed"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = _clip(body.decode("utf-8", "replace"), MAX_RESPONSE_TEXT_CHARS)
        return f"the response body is not JSON: {text}"
    if not isinstance(parsed, dict):
        return "the response body is not a JSON object"
    if parsed.get("requestId") != request_id:
        return f"the response's requestId {parsed.get('requestId')!r} is not the request's {request_id!r}"
    return None


def _judge(resp: _Response, request_id: str) -> tuple[str, str] | None:
    """The (errorCode, errorMessage) of a retriable answer, or None for success. 413 is handled before."""
    if resp.body is None:
        return RESPONSE_TOO_LARGE, f"HTTP {resp.status}: the response body is over {MAX_RESPONSE_BYTES} bytes"
    if resp.status == 200:
        violation = _contract_violation(resp, resp.body, request_id)
        return None if violation is None else (INVALID_RESPONSE, f"HTTP 200 but {violation}")
    if 300 <= resp.status < 400:
        where = resp.headers.get("location", "(none)")
        return DESTINATION_EXCEPTION, (f"HTTP {resp.status} redirect to {where} (redirects are not "
                                       f"followed): {_response_detail(resp.body)}")
    return DESTINATION_EXCEPTION, f"HTTP {resp.status}: {_response_detail(resp.body)}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first (httpx wraps httpcore, which wraps the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transport_failure(exc: Exception, where: str) -> tuple[str, str]:
    """The (errorCode, errorMessage) for a request that got no complete response."""
    chain = list(_causes(exc))
    detail = str(chain[-1]) or str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and any(isinstance(e, ssl.SSLError) for e in chain):
        return SSL_HANDSHAKE_FAILURE, f"TLS handshake with {where} failed: {detail}"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return HOST_UNREACHABLE, f"cannot connect to {where}: {detail}"
    if isinstance(exc, httpx.TimeoutException):
        return REQUEST_TIMEOUT, _TIMEOUT_PHASE.get(type(exc), "the request to {} timed out").format(where)
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return CONNECTION_RESET, f"the connection to {where} broke before a complete response: {detail}"
    return DESTINATION_EXCEPTION, f"the request to {where} failed: {type(exc).__name__}: {detail}"


def _every(batch: RecordBatch, start: int, end: int, code: str, reason: str, *,
           error_output: bool = True) -> list[Failure]:
    """One failure per record of a request: the endpoint accepts or refuses a request as a whole."""
    return [Failure(i, reason, code=code, extra={"dataId": batch.records[i].record_id}, error_output=error_output)
            for i in range(start, end)]


def _encoded_size(record: DeliveryRecord) -> int:
    """Bytes a record takes in the request body: base64 plus ``{"data":""},``."""
    return (len(record.data) + 2) // 3 * 4 + 12


def _requests(records: Sequence[DeliveryRecord]) -> list[tuple[int, int]]:
    """Split a batch into [start, end) ranges that each fit one request's limits."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, 100  # the envelope: requestId, timestamp
    for i, record in enumerate(records):
        n = _encoded_size(record)
        if i > start and (i - start == MAX_REQUEST_RECORDS or size + n > MAX_REQUEST_BYTES):
            ranges.append((start, i))
            start, size = i, 100
        size += n
    ranges.append((start, len(records)))
    return ranges


def _derived_id(batch_id: str, records: Sequence[DeliveryRecord]) -> str:
    """A request id for part of a batch, stable across retries: it names the part's first and last record."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch_id}/{records[0].record_id}/{records[-1].record_id}"))


def _public_url(url: str) -> str:
    """The URL without user info or query string, either of which may hold credentials."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class HttpEndpointDestination(RecordDestination):
    name = "http_endpoint"
    error_output_type = "http-endpoint-failed"
    retry_clock = "first_failure"

    def __init__(self, config: HttpEndpointDestinationConfiguration, ctx: DestinationContext) -> None:
        self.config = config
        self.retry_seconds = config.retry_seconds
        self._ctx = ctx
        self._url = config.endpoint_configuration.url
        request = config.request_configuration
        self._gzip = request is not None and request.content_encoding == "GZIP"
        #: With SecretsManagerConfiguration enabled, the access key is the secret's ``api_key``.
        self._secret = cached_secret(config.secrets_manager_configuration, HTTP_ENDPOINT_MEMBERS, ctx)
        self._headers = self._static_headers()

    def _static_headers(self) -> dict[str, bytes]:
        """Headers every attempt sends; values are UTF-8 bytes, as a key or attribute may not be ASCII."""
        headers = {
            "X-Amz-Firehose-Protocol-Version": b"1.0",
            "X-Amz-Firehose-Source-Arn": self._ctx.stream_arn.encode(),
            "Content-Type": b"application/json",
        }
        access_key = self.config.endpoint_configuration.access_key
        if access_key and self._secret is None:
            headers["X-Amz-Firehose-Access-Key"] = access_key.encode()
        request = self.config.request_configuration
        if request is not None and request.common_attributes:
            attributes = {a.attribute_name: a.attribute_value for a in request.common_attributes}
            headers["X-Amz-Firehose-Common-Attributes"] = orjson.dumps({"commonAttributes": attributes})
        if self._gzip:
            headers["Content-Encoding"] = b"gzip"
        return headers

    def describe(self) -> str:
        return _public_url(self._url)

    async def check(self) -> None:
        """A ``HEAD`` to the URL: any answer at all, whatever its status, means the endpoint is reachable.

        No data and no access key are sent, and the wait is the connect timeout, not the 3-minute one.
        A secret-sourced access key must be readable.
        """
        if self._secret is not None:
            try:
                await self._secret.value()
            except DestinationError as exc:
                raise DestinationUnavailable(exc.message, code=exc.code) from None
        try:
            await self._ctx.http.head(self._url, follow_redirects=False,
                                      timeout=self._ctx.settings.http.connect_timeout_seconds)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DestinationUnavailable(_transport_failure(exc, self.describe())[1]) from exc

    async def deliver(self, batch: RecordBatch) -> Outcome:
        """One attempt: the batch as one POST (several when it is over the protocol's limits, or the
        endpoint answers 413). A request's records are all delivered or all listed in the outcome."""
        if not batch.records:  # the protocol needs at least one record; there is nothing to send
            return DELIVERED
        retry: list[Failure] = []
        rejected: list[Failure] = []
        for start, end in _requests(batch.records):
            await self._send_range(batch, start, end, retry, rejected)
        return Outcome(retry=tuple(retry), rejected=tuple(rejected))

    async def _send_range(self, batch: RecordBatch, start: int, end: int, retry: list[Failure],
                          rejected: list[Failure]) -> None:
        records = batch.records[start:end]
        whole = start == 0 and end == len(batch.records)
        request_id = batch.batch_id if whole else _derived_id(batch.batch_id, records)
        try:
            secret = await self._secret.value() if self._secret is not None else None
        except DestinationError as exc:  # no access key to send: the request waits for the secret
            retry.extend(_every(batch, start, end, exc.code, exc.message))
            return
        body = await self._body(request_id, records)
        renewed = False
        while True:
            try:
                resp = await self._post(body, request_id, secret)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                retry.extend(_every(batch, start, end, *_transport_failure(exc, self.describe())))
                return
            # A refused secret-sourced key: read the secret again, and send once more if it changed.
            if resp.status in AUTH_FAILURE_STATUSES and not renewed and self._secret is not None \
                    and secret is not None and await self._secret.renew(secret):
                secret, renewed = await self._secret.value(), True
                continue
            break
        if resp.status == 413:
            if end - start > 1:
                middle = (start + end) // 2
                await self._send_range(batch, start, middle, retry, rejected)
                await self._send_range(batch, middle, end, retry, rejected)
                return
            detail = _response_detail(resp.body) if resp.body is not None else "(body over 1 MiB not read)"
            rejected.extend(_every(batch, start, end, REQUEST_TOO_LARGE, f"HTTP 413: {detail}",
                                   error_output=False))
            return
        verdict = _judge(resp, request_id)
        if verdict is not None:
            retry.extend(_every(batch, start, end, *verdict))

    async def _body(self, request_id: str, records: Sequence[DeliveryRecord]) -> bytes:
        """The encoded request, built in the thread pool when it would hold up the event loop."""
        timestamp_ms = now_ms()
        args = (request_id, timestamp_ms, records, self._gzip)
        if self._gzip or sum(len(r.data) for r in records) > INLINE_ENCODE_BYTES:
            return cast(bytes, await self._ctx.run(encode_request, *args))
        return encode_request(*args)

    async def _post(self, body: bytes, request_id: str, secret: SecretValue | None) -> _Response:
        """Send the request and read at most ``MAX_RESPONSE_BYTES`` of the answer; redirects are answers."""
        headers = {**self._headers, "X-Amz-Firehose-Request-Id": request_id.encode()}
        if secret is not None:
            headers["X-Amz-Firehose-Access-Key"] = secret["api_key"].encode()
        async with self._ctx.http.stream("POST", self._url, content=body, headers=headers,
                                         follow_redirects=False) as resp:
            return _Response(resp.status_code, resp.headers, await _read_capped(resp))
