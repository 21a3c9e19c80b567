"""Delivery to Elasticsearch, Amazon OpenSearch Service and OpenSearch Serverless: the ``_bulk`` API.

One attempt is one ``POST <endpoint>/_bulk`` (spec: destinations.md §2): per record an ``index``
action line naming the target index and document id, then the record itself as the source line,
sent as ``application/json``, as Firehose sends it (the bulk API accepts it as well as
``application/x-ndjson``).
Invariants:

* A record travels only as exactly one line holding one JSON object (one trailing newline is
  stripped). Anything else is rejected before sending (``OS.InvalidDocument``): a newline inside
  a record would shift every later action/source pair, so one bad record could smuggle in actions
  of its own.
* Document ids are the records' ``record_id``s, fixed by spool position: a retry, or a
  re-delivery after a crash, overwrites the document instead of adding a copy. ``NO_DOCUMENT_ID``
  leaves ids to the cluster, and then retries may duplicate, as in AWS.
* The index comes from the record's arrival time (UTC), never from the time of the attempt, so
  a retried record goes to the index its first attempt went to.
* A request-level failure (no connection, timeout, any non-2xx status, a body that is not a bulk
  response) retries every record sent, as Firehose does until the retry duration runs out. Per
  item, 429 and 5xx retry; any other failed status is rejected at once (a mapping error stays a
  mapping error). The pipeline owns backoff, the duration and the error output.

The request goes through the daemon's shared ``httpx`` client (``ctx.http``), not opensearch-py:
every HTTP destination then shares one connection pool and one TLS policy (verification, CA
bundle), configured in one place under ``http:``, and no client library adds retries or node
sniffing of its own behind the pipeline's retry clock. Basic auth comes from ``credentials:``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import httpx
import orjson

from firehose.definitions import (
    AmazonOpenSearchServerlessDestinationConfiguration,
    ElasticsearchDestinationConfiguration,
)
from firehose.destinations.base import DELIVERED, DestinationContext, Failure, Outcome, RecordDestination
from firehose.errors import DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch

Config = ElasticsearchDestinationConfiguration | AmazonOpenSearchServerlessDestinationConfiguration

#: errorCodes of this module's own; the others are HTTP statuses, OpenSearch error types and
#: ``OS.<httpx exception>`` for a request that got no answer (``OS.ConnectError``, ``OS.ReadTimeout``).
INVALID_DOCUMENT = "OS.InvalidDocument"
MALFORMED_RESPONSE = "OS.MalformedResponse"
DOMAIN_NOT_CONFIGURED = "OS.DomainNotConfigured"

#: Bodies this large are built, and responses with this many items parsed, in the thread pool
#: instead of on the event loop. Measured: checking and framing a record costs about 2.5 µs
#: (orjson parsing it is most of that) plus 0.6 ms per MiB, reading a response item about
#: 0.5 µs, a hop to the pool about 0.15 ms. Each limit is roughly half a millisecond of work.
OFFLOAD_RECORDS = 256
OFFLOAD_BYTES = 1024 * 1024
OFFLOAD_ITEMS = 1024

#: Only what classifying items needs: a bulk response otherwise echoes index, id, version and
#: shard counts for every document, several times the size of the statuses.
_FILTER = {"filter_path": "errors,items.*.status,items.*.error"}
_NDJSON = {"Content-Type": "application/json"}
_HOUR_MS = 3_600_000


# -- index names ----------------------------------------------------------------


def index_name(base: str, rotation: str, arrival_ms: int) -> str:
    """``base`` plus the rotation suffix for a record that arrived at ``arrival_ms`` (UTC).

    Every rotation period is a whole number of UTC hours, so the suffix is a function of the
    arrival hour and is cached: a batch computes it once per hour it spans, not per record.
    """
    return base + _suffix(rotation, arrival_ms // _HOUR_MS)


#: strftime suffixes. OneWeek is not here: no strftime directive implements the US week rule
#: (``%U`` puts the days before the year's first Sunday in a week 00).
_ROTATION_FORMATS = {"NoRotation": "", "OneHour": "-%Y-%m-%d-%H", "OneDay": "-%Y-%m-%d", "OneMonth": "-%Y-%m"}


@functools.lru_cache(maxsize=256)
def _suffix(rotation: str, hour: int) -> str:
    at = datetime.fromtimestamp(hour * 3600, UTC)
    if rotation == "OneWeek":
        year, week = _us_week(at.date())
        return f"-{year:04d}-w{week:02d}"
    return at.strftime(_ROTATION_FORMATS[rotation])


def _us_week(day: date) -> tuple[int, int]:
    """The (year, week) ``day`` falls in under Firehose's US rule.

    Weeks run Sunday to Saturday and week 1 is the first week holding a Saturday of the year, so
    a week belongs to the year of its Saturday: 2019-12-31 is in 2020-w01, a year with 53 weeks
    ends in w53. Numbering by the week's own year keeps each week in exactly one index (a
    calendar-year label would send 2019-12-29..31 to January 2019's index "2019-w01"). AWS's
    example table gives 2016-02-25 as w08, which contradicts the rule stated next to it (w09);
    the stated rule is what this implements.
    """
    saturday = day + timedelta(days=(5 - day.weekday()) % 7)
    return saturday.year, (saturday.timetuple().tm_yday - 1) // 7 + 1


# -- the request ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """A ``_bulk`` body and how its lines map back to the batch.

    ``sent[k]`` is the batch position of the k-th document in ``body`` (the k-th response
    item); ``indexes[i]`` and ``ids[i]`` are record i's target index and document id ("" when
    the cluster assigns ids), for its error document.
    """

    body: bytes
    sent: tuple[int, ...]
    indexes: tuple[str, ...]
    ids: tuple[str, ...]
    invalid: tuple[tuple[int, str], ...]


def build_bulk(records: tuple[DeliveryRecord, ...], config: Config) -> BulkRequest:
    """The NDJSON body for ``records``; records that are not one-line JSON objects stay out."""
    base, rotation, type_name = config.index_name, config.rotation, config.type_name
    indexes = [index_name(base, rotation, r.arrival_ms) for r in records]
    ids = [r.record_id for r in records] if config.document_ids else [""] * len(records)
    parts: list[bytes] = []
    sent: list[int] = []
    invalid: list[tuple[int, str]] = []
    for i, record in enumerate(records):
        try:
            source = _source_line(record.data)
        except ValueError as exc:
            invalid.append((i, str(exc)))
            continue
        parts += (_action_line(indexes[i], ids[i], type_name), source, b"\n")
        sent.append(i)
    return BulkRequest(b"".join(parts), tuple(sent), tuple(indexes), tuple(ids), tuple(invalid))


def _action_line(index: str, doc_id: str, type_name: str | None) -> bytes:
    action = {"_index": index}
    if type_name:
        action["_type"] = type_name
    if doc_id:
        action["_id"] = doc_id
    return orjson.dumps({"index": action}, option=orjson.OPT_APPEND_NEWLINE)


def _source_line(data: bytes | memoryview) -> bytes:
    """The record as a source line (without its newline); ValueError says why it cannot be one.

    Parsing is the whole check: JSON strings cannot hold a raw newline, so a valid document with
    one is pretty-printed JSON, which the bulk format cannot carry either.
    """
    doc = bytes(data)
    if doc.endswith(b"\n"):
        doc = doc[:-1]
    if b"\n" in doc:
        raise ValueError("The record spans several lines; OpenSearch needs one JSON object per line.")
    try:
        value = orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"The record is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"The record is a JSON {type(value).__name__}, not an object; "
                         "OpenSearch indexes JSON objects only.")
    return doc


# -- the response -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemError:
    """One failed item of a bulk response: its position among the sent documents and why."""

    position: int
    status: int
    code: str
    reason: str

    @property
    def retriable(self) -> bool:
        return self.status == 429 or self.status >= 500


def parse_bulk_response(payload: bytes, expected: int) -> list[ItemError]:
    """The failed items of a 2xx ``_bulk`` response body for ``expected`` documents.

    Raises ValueError when the body is not a bulk response for that many documents (then no
    item can be trusted, and the caller retries them all).
    """
    try:
        response = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the response is not JSON ({exc})") from None
    if not isinstance(response, dict) or not isinstance(response.get("errors"), bool):
        raise ValueError("the response has no boolean 'errors' member")
    if not response["errors"]:
        return []
    items = response.get("items")
    if not isinstance(items, list) or len(items) != expected:
        count = len(items) if isinstance(items, list) else "no"
        raise ValueError(f"the response has {count} items for {expected} documents")
    failed = []
    for position, item in enumerate(items):
        result = next(iter(item.values()), None) if isinstance(item, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            raise ValueError(f"item {position} has no status")
        if not 200 <= result["status"] < 300:
            code, reason = _describe(result.get("error"), result["status"])
            failed.append(ItemError(position, result["status"], code, reason))
    return failed


def _describe(error: Any, status: int) -> tuple[str, str]:
    """errorCode and errorMessage for an OpenSearch error: its type and reason (with the cause).

    Elasticsearch 1.x reports errors as a plain string; then the status is the code.
    """
    if not isinstance(error, dict):
        return str(status), str(error or f"HTTP {status}")
    reason = str(error.get("reason", ""))
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        reason += f" (caused by {cause.get('type')}: {cause['reason']})"
    return str(error.get("type") or status), reason


def _http_error(response: httpx.Response) -> str:
    """What a failed request's answer says: the OpenSearch error if it is one, else its text."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "error" in body:
        code, reason = _describe(body["error"], response.status_code)
        return f"{code}: {reason}"
    return response.text[:500].strip() or response.reason_phrase


# -- the destination --------------------------------------------------------------


class ElasticsearchDestination(RecordDestination):
    """Elasticsearch, OpenSearch Service or OpenSearch Serverless, by endpoint URL.

    The endpoint is ``ClusterEndpoint`` / ``CollectionEndpoint``, or for a ``DomainARN`` the URL
    that ``domains:`` gives for it (a self-hosted daemon cannot ask AWS to describe the domain).
    Credentials are looked up under ``credentials:`` by that URL exactly as written.
    """

    name = "elasticsearch"
    retry_clock = "first_attempt"

    def __init__(self, config: Config, ctx: DestinationContext) -> None:
        self.config = config
        self.retry_seconds = config.retry_seconds
        # Per instance: the Elasticsearch and OpenSearch Service flavours file failures apart.
        self.error_output_type = config.error_output_type  # type: ignore[misc]
        self._ctx = ctx
        self._serverless = isinstance(config, AmazonOpenSearchServerlessDestinationConfiguration)
        self._domain_arn = (config.domain_arn if isinstance(config, ElasticsearchDestinationConfiguration)
                            else None)
        self._endpoint = config.cluster_endpoint or ctx.settings.domains.get(self._domain_arn or "")
        credentials = ctx.settings.credentials.get(self._endpoint or "")
        self._auth = (httpx.BasicAuth(credentials.username, credentials.password or "")
                      if credentials is not None and credentials.username is not None else None)

    def describe(self) -> str:
        return self._endpoint or f"OpenSearch domain {self._domain_arn} (no endpoint under domains:)"

    def _url(self, path: str) -> str:
        if self._endpoint is None:
            raise DestinationUnavailable(
                f"DomainARN {self._domain_arn} has no endpoint URL: add it to the domains: setting "
                f"(domains: {{{self._domain_arn!r}: 'https://host:9200'}}).", code=DOMAIN_NOT_CONFIGURED)
        return self._endpoint.rstrip("/") + path

    async def check(self) -> None:
        """``GET /`` (cluster info): reachable, and the credentials are accepted."""
        url = self._url("/")
        try:
            response = await self._ctx.http.get(url, auth=self._auth)
        except httpx.RequestError as exc:
            raise DestinationUnavailable(f"Cannot reach the cluster at {url}: {_no_answer(exc)}",
                                         code=_no_answer_code(exc)) from exc
        if not response.is_success:
            raise DestinationUnavailable(
                f"The cluster at {url} answered HTTP {response.status_code}: {_http_error(response)}",
                code=str(response.status_code))

    async def deliver(self, batch: RecordBatch) -> Outcome:
        url = self._url("/_bulk")
        request = await self._build(batch.records)
        rejected = [self._failure(request, i, reason, INVALID_DOCUMENT) for i, reason in request.invalid]
        if not request.sent:
            return Outcome(rejected=tuple(rejected))
        try:
            response = await self._ctx.http.post(url, content=request.body, headers=_NDJSON, params=_FILTER,
                                                 auth=self._auth)
        except httpx.RequestError as exc:
            return self._all_sent(request, rejected, f"POST {url} got no answer: {_no_answer(exc)}",
                                  _no_answer_code(exc))
        if not response.is_success:
            outcome = self._all_sent(request, rejected, f"HTTP {response.status_code} from {url}: "
                                     f"{_http_error(response)}", str(response.status_code))
            return replace(outcome, auth_failed=response.status_code in (401, 403))
        try:
            items = await self._parse(response.content, len(request.sent))
        except ValueError as exc:
            return self._all_sent(request, rejected, f"Unreadable _bulk response from {url}: {exc}",
                                  MALFORMED_RESPONSE)
        retry: list[Failure] = []
        for item in items:
            failure = self._failure(request, request.sent[item.position], item.reason, item.code)
            (retry if item.retriable else rejected).append(failure)
        return Outcome(retry=tuple(retry), rejected=tuple(rejected)) if items or rejected else DELIVERED

    async def _build(self, records: tuple[DeliveryRecord, ...]) -> BulkRequest:
        if len(records) >= OFFLOAD_RECORDS or sum(len(r.data) for r in records) >= OFFLOAD_BYTES:
            return cast(BulkRequest, await self._ctx.run(build_bulk, records, self.config))
        return build_bulk(records, self.config)

    async def _parse(self, payload: bytes, expected: int) -> list[ItemError]:
        if expected >= OFFLOAD_ITEMS:
            return cast(list[ItemError], await self._ctx.run(parse_bulk_response, payload, expected))
        return parse_bulk_response(payload, expected)

    def _all_sent(self, request: BulkRequest, rejected: list[Failure], reason: str, code: str) -> Outcome:
        """Every sent record to retry (the request failed as a whole); local rejections stand."""
        retry = tuple(self._failure(request, i, reason, code) for i in request.sent)
        return Outcome(retry=retry, rejected=tuple(rejected))

    def _failure(self, request: BulkRequest, i: int, reason: str, code: str) -> Failure:
        """A failure of batch record ``i`` with the fields Firehose's error document carries."""
        extra: dict[str, object]
        if self._serverless:
            extra = {"osDocumentId": request.ids[i], "osIndexName": request.indexes[i]}
        else:
            extra = {"esDocumentId": request.ids[i], "esIndexName": request.indexes[i],
                     "esTypeName": self.config.type_name or ""}
        return Failure(i, reason, code=code, extra=extra)


def _no_answer(exc: httpx.RequestError) -> str:
    """httpx's message, which some exceptions (timeouts) leave empty, prefixed by the exception."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _no_answer_code(exc: httpx.RequestError) -> str:
    return f"OS.{type(exc).__name__}"
