"""Delivery to Splunk through the HTTP Event Collector (HEC), with indexer acknowledgement.

One attempt (spec: destinations.md §3) POSTs the batch to ``<HECEndpoint>/services/collector/raw``
(``HECEndpointType`` Raw: the records' bytes back to back, no delimiter added) or
``/services/collector/event`` (Event: each record already holds HEC event JSON, sent as it is),
then polls ``/services/collector/ack`` until Splunk reports every request indexed or
``HECAcknowledgmentTimeoutInSeconds`` runs out. Invariants:

* A record counts as delivered only when the ackId of the request that carried it read true: an
  HTTP 200 only means the HEC parsed the data, not that an indexer wrote it.
* A batch travels as requests of at most ``max_request_bytes`` (cut between records; a larger
  record travels alone), sent one after the other on one channel, each with its own ackId and its
  own ack timer started when that ackId arrived. Each request succeeds or fails as a whole.
* Acknowledgement is at-least-once: when the timer runs out (``Splunk.AckTimeout``) or the token
  has acknowledgement off (``Splunk.DisabledAck``), the data may have been indexed anyway, and
  retrying it can index it twice, as with Firehose.
* The channel is a random GUID per destination instance, never persisted. Stability across
  restarts would buy nothing: ackIds are never resumed (after a restart the spool re-delivers the
  batch in a new attempt, which gets new ackIds). A fresh GUID keeps every sender on a channel of
  its own (a second daemon with the same stream name, or the old instance still finishing during an
  UpdateDestination), so no one else's acks count against the channel's pending-ack limits.
* Only data errors (HEC codes 5, 6, 12, 13, 15) reject records: retrying the same bytes cannot
  help. Token, acknowledgement, index and server problems retry: an operator can fix them while
  the pipeline's retry duration runs, after which the records go to the ``splunk-failed`` error
  output. Event records that are not HEC event JSON are rejected before sending, so one bad
  record does not sink the request that would have carried it.

Error codes are the ones Firehose writes (developer guide, "Splunk Data Delivery Errors"), plus
``Splunk.IndexerBusy``, which Firehose reports for a busy HEC (HTTP 503, code 9) without
documenting it. The token never appears in a message, a log or ``describe()``.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from firehose.definitions import SplunkDestinationConfiguration
from firehose.destinations.base import DestinationContext, Failure, Outcome, RecordDestination
from firehose.destinations.secrets import SPLUNK_MEMBERS, SecretValue, cached_secret
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import DeliveryRecord, RecordBatch

ACK_TIMEOUT = "Splunk.AckTimeout"
CONNECTION_CLOSED = "Splunk.ConnectionClosed"
CONNECTION_TIMEOUT = "Splunk.ConnectionTimeout"
DISABLED_ACK = "Splunk.DisabledAck"
DISABLED_TOKEN = "Splunk.DisabledToken"
INDEXER_BUSY = "Splunk.IndexerBusy"
INVALID_DATA_FORMAT = "Splunk.InvalidDataFormat"
INVALID_ENDPOINT = "Splunk.InvalidEndpoint"
INVALID_INDEX = "Splunk.InvalidIndex"
INVALID_TOKEN = "Splunk.InvalidToken"
SERVER_ERROR = "Splunk.ServerError"
SSL_HANDSHAKE = "Splunk.SSLHandshake"
SSL_UNVERIFIED = "Splunk.SSLUnverified"

#: HEC response codes (Splunk "Troubleshoot HTTP Event Collector", possible error codes) →
#: errorCode and whether a retry can succeed. Channel codes 10/11 mean something between here and
#: the HEC dropped or mangled the channel this destination always sends: a server-side problem.
_HEC_CODES: dict[int, tuple[str, bool]] = {
    1: (DISABLED_TOKEN, True),
    2: (INVALID_TOKEN, True),
    3: (INVALID_TOKEN, True),
    4: (INVALID_TOKEN, True),
    5: (INVALID_DATA_FORMAT, False),
    6: (INVALID_DATA_FORMAT, False),
    7: (INVALID_INDEX, True),
    8: (SERVER_ERROR, True),
    9: (INDEXER_BUSY, True),
    10: (SERVER_ERROR, True),
    11: (SERVER_ERROR, True),
    12: (INVALID_DATA_FORMAT, False),
    13: (INVALID_DATA_FORMAT, False),
    14: (DISABLED_ACK, True),
    15: (INVALID_DATA_FORMAT, False),
}

#: Ack-poll failures that another poll a moment later would only repeat: stop waiting at once.
_FINAL_POLL_CODES = frozenset({DISABLED_ACK, DISABLED_TOKEN, INVALID_TOKEN})
#: The HEC refused the token: a secret-sourced token is read again at once.
_TOKEN_CODES = frozenset({DISABLED_TOKEN, INVALID_TOKEN})

#: The HEC answers "No data" (code 5) once token and channel passed: the health check's token probe.
_NO_DATA = 5

RAW_PATH = "/services/collector/raw"
EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"

#: Ack polling: the first poll after this many seconds, each wait twice the last, at most the cap.
POLL_FIRST_SECONDS = 0.1
POLL_MAX_SECONDS = 2.0
#: A poll may outlive the ack deadline by this much, so the last poll is not cut off at birth.
POLL_GRACE_SECONDS = 1.0

#: Whitespace JSON allows between values.
_JSON_SPACE = re.compile(r"[ \t\n\r]*")

#: Event batches at least this large are validated in the thread pool, off the event loop.
OFFLOAD_BYTES = 256 * 1024


# -- the requests -------------------------------------------------------------------


def event_error(data: bytes | memoryview) -> str | None:
    """Why a record cannot go to the event endpoint, or None when it is HEC event JSON.

    The HEC reads its body as JSON objects back to back, each needing an ``event`` member that
    is present, not null and not the empty string (HEC codes 12 and 13). A record may hold several
    such objects, as the HEC would accept them.
    """
    try:
        values: list[Any] = [orjson.loads(data)]
    except orjson.JSONDecodeError:
        try:
            values = _json_objects(bytes(data).decode())
        except (UnicodeDecodeError, ValueError) as exc:
            return f"The record is not HEC event JSON: {exc}"
    for value in values:
        if not isinstance(value, dict):
            return f"The record holds a JSON {type(value).__name__}, not a HEC event object."
        if value.get("event") is None:
            return "The HEC event has no 'event' field (HEC code 12, Event field is required)."
        if value["event"] == "":
            return "The HEC event's 'event' field is blank (HEC code 13, Event field cannot be blank)."
    return None


def _json_objects(text: str) -> list[Any]:
    """Every JSON value in ``text``, back to back with optional whitespace between (ValueError if none)."""
    decoder = json.JSONDecoder()
    values = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
        pos = _skip_space(text, pos)
    if not values:
        raise ValueError("the record is empty")
    return values


def _skip_space(text: str, pos: int) -> int:
    match = _JSON_SPACE.match(text, pos)
    return match.end() if match else pos


def invalid_events(records: Sequence[DeliveryRecord]) -> list[tuple[int, str]]:
    """(index, reason) of each record that is not HEC event JSON."""
    return [(i, reason) for i, r in enumerate(records) if (reason := event_error(r.data)) is not None]


def split_requests(records: Sequence[DeliveryRecord], indexes: Sequence[int],
                   limit: int) -> list[tuple[int, ...]]:
    """``indexes`` cut, in order, into runs whose data adds up to at most ``limit`` bytes.

    A record larger than ``limit`` gets a run of its own (cutting it would split an event).
    Empty records carry no bytes and join no run: leaving them out sends the same body.
    """
    runs: list[tuple[int, ...]] = []
    run: list[int] = []
    size = 0
    for i in indexes:
        n = len(records[i].data)
        if n == 0:
            continue
        if run and size + n > limit:
            runs.append(tuple(run))
            run, size = [], 0
        run.append(i)
        size += n
    if run:
        runs.append(tuple(run))
    return runs


# -- the answers --------------------------------------------------------------------


def _answer(response: httpx.Response) -> tuple[int | None, str, dict[str, Any]]:
    """The HEC ``code``, ``text`` and whole JSON body of a response (code None if it has none)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return None, response.text[:500].strip() or response.reason_phrase, {}
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("text", "")), body


def classify(status: int, code: int | None, text: str) -> tuple[str, bool]:
    """errorCode and retriable for a failed HEC answer: by HEC code, else by HTTP status."""
    if code in _HEC_CODES:
        return _HEC_CODES[code]
    if status in (401, 403):
        return INVALID_TOKEN, True
    if status == 400 and "invalid data format" in text.lower():
        return INVALID_DATA_FORMAT, False
    if status == 404:
        return INVALID_ENDPOINT, True
    if status == 503:
        return INDEXER_BUSY, True
    return SERVER_ERROR, True


def _hec_error(what: str, response: httpx.Response) -> DestinationError:
    code, text, body = _answer(response)
    error_code, retriable = classify(response.status_code, code, text)
    detail = f"HTTP {response.status_code}" + (f", HEC code {code}" if code is not None else "")
    if "invalid-event-number" in body:
        detail += f", invalid-event-number {body['invalid-event-number']}"
    return DestinationError(f"{what}: {text or response.reason_phrase} ({detail})", retriable=retriable,
                            code=error_code)


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error (httpx chains it as a cause), if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _transport_error(what: str, exc: Exception) -> DestinationError:
    """A request that got no HTTP answer, as Firehose names it: timeout, TLS, connect, or cut."""
    tls = _ssl_error(exc)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        code = CONNECTION_TIMEOUT
    elif isinstance(tls, ssl.SSLCertVerificationError):
        code = SSL_UNVERIFIED
    elif tls is not None:
        code = SSL_HANDSHAKE
    elif isinstance(exc, httpx.ConnectError):
        code = INVALID_ENDPOINT
    else:
        code = CONNECTION_CLOSED
    detail = str(tls or exc) or type(exc).__name__
    return DestinationError(f"{what}: {type(exc).__name__}: {detail}", code=code)


# -- the destination ----------------------------------------------------------------


@dataclass(slots=True)
class _Auth:
    """The token one attempt sends: the secret it came from (if any), the headers that carry it, and
    whether the attempt already read the secret again after a refusal (once per attempt)."""

    secret: SecretValue | None
    headers: dict[str, str] = field(repr=False)
    renewed: bool = False


@dataclass(frozen=True, slots=True)
class _Sent:
    """A request the HEC took: the batch records it carried, its ackId, when its ack timer ends."""

    indexes: tuple[int, ...]
    ack_id: int
    deadline: float
    #: When the HEC took it (monotonic): its ack latency runs from here.
    sent_at: float


class SplunkDestination(RecordDestination):
    name = "splunk"
    error_output_type = "splunk-failed"
    retry_clock = "first_failure"

    #: Bytes per HEC request: 1,000,000 is ``max_content_length`` in Splunk's older defaults and
    #: still the limit of many HEC setups; a 5 MiB batch then takes about six requests.
    max_request_bytes: int = 1_000_000

    def __init__(self, config: SplunkDestinationConfiguration, ctx: DestinationContext) -> None:
        self.config = config
        self.retry_seconds = config.retry_seconds
        self.channel = str(uuid.uuid4())
        self._ctx = ctx
        self._base = config.hec_endpoint.rstrip("/")
        self._url = self._base + (RAW_PATH if config.hec_endpoint_type == "Raw" else EVENT_PATH)
        self._headers = {"X-Splunk-Request-Channel": self.channel, "Content-Type": "application/json"}
        #: With SecretsManagerConfiguration enabled, the token is the secret's ``hec_token``.
        self._secret = cached_secret(config.secrets_manager_configuration, SPLUNK_MEMBERS, ctx)
        if config.hec_token and self._secret is None:
            self._headers["Authorization"] = f"Splunk {config.hec_token}"

    def describe(self) -> str:
        return f"Splunk HEC {self._base} ({self.config.hec_endpoint_type})"

    async def check(self) -> None:
        """The HEC says it is healthy, and it takes the token on the data endpoint.

        The token probe is an empty POST: a HEC that accepts the token and channel answers it
        "No data" (code 5) and indexes nothing, so the check never adds an event.
        """
        if not self.config.hec_token and self._secret is None:
            raise DestinationUnavailable("No HECToken is configured for the Splunk destination.",
                                         code=INVALID_TOKEN)
        try:
            auth = await self._auth()
        except DestinationError as exc:
            raise DestinationUnavailable(exc.message, code=exc.code) from None
        health = await self._probe("GET", self._base + HEALTH_PATH, {})
        if health.status_code != 200:
            error = _hec_error(f"The HEC at {self._base} is not healthy", health)
            raise DestinationUnavailable(error.message, code=error.code)
        probe = await self._probe("POST", self._url, auth.headers)
        if not probe.is_success and _answer(probe)[0] != _NO_DATA:
            error = _hec_error(f"The HEC at {self._url} refused the token probe", probe)
            raise DestinationUnavailable(error.message, code=error.code)

    async def _probe(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self._ctx.http.request(method, url, headers=headers)
        except httpx.RequestError as exc:
            error = _transport_error(f"Cannot reach the HEC at {url}", exc)
            raise DestinationUnavailable(error.message, code=error.code) from exc

    async def _auth(self) -> _Auth:
        """The token for an attempt: the definition's, or the secret's (a retriable ``DestinationError``
        with a ``SecretsManager.*`` code when the secret cannot be read)."""
        if self._secret is None:
            return _Auth(None, self._headers)
        secret = await self._secret.value()
        return _Auth(secret, {**self._headers, "Authorization": f"Splunk {secret['hec_token']}"})

    async def _send_as(self, body: bytes, auth: _Auth) -> int:
        """``_send``; when the HEC refuses a secret-sourced token, read the secret again and, if the
        token changed, send once more with it (``auth`` then carries the new token for the rest)."""
        try:
            return await self._send(body, auth.headers)
        except DestinationError as exc:
            if exc.code not in _TOKEN_CODES or auth.renewed or self._secret is None or auth.secret is None:
                raise
            auth.renewed = True
            if not await self._secret.renew(auth.secret):
                raise
        fresh = await self._auth()
        auth.secret, auth.headers = fresh.secret, fresh.headers
        return await self._send(body, auth.headers)

    async def deliver(self, batch: RecordBatch) -> Outcome:
        records = batch.records
        auth = await self._auth()
        rejected, sendable = await self._validate(records)
        retry: list[Failure] = []
        sent: list[_Sent] = []
        requests = split_requests(records, sendable, self.max_request_bytes)
        for n, indexes in enumerate(requests):
            try:
                ack_id = await self._send_as(b"".join(records[i].data for i in indexes), auth)
            except DestinationError as exc:
                if not exc.retriable:
                    rejected += self._failures(records, indexes, exc.code, exc.message)
                    continue
                # The HEC cannot take data now: the requests not sent yet would fare no better.
                for later in requests[n:]:
                    retry += self._failures(records, later, exc.code, exc.message)
                break
            now = time.monotonic()
            sent.append(_Sent(indexes, ack_id, now + self.config.ack_timeout_seconds, now))
        latencies: list[float] = []
        retry += await self._await_acks(records, sent, latencies, auth.headers)
        return Outcome(retry=tuple(retry), rejected=tuple(rejected), ack_seconds=tuple(latencies))

    async def _validate(self, records: tuple[DeliveryRecord, ...]) -> tuple[list[Failure], list[int]]:
        """Event records that are not HEC event JSON, as rejections; and the indexes of the rest."""
        if self.config.hec_endpoint_type == "Raw":
            return [], list(range(len(records)))
        if sum(len(r.data) for r in records) >= OFFLOAD_BYTES:
            invalid: list[tuple[int, str]]
            invalid = await self._ctx.run(invalid_events, records)  # type: ignore[assignment]
        else:
            invalid = invalid_events(records)
        bad = {i for i, _ in invalid}
        rejected = [self._failure(records[i], i, INVALID_DATA_FORMAT, reason) for i, reason in invalid]
        return rejected, [i for i in range(len(records)) if i not in bad]

    async def _send(self, body: bytes, headers: dict[str, str]) -> int:
        """POST one request; its ackId, or DestinationError saying why the HEC did not take it."""
        try:
            response = await self._ctx.http.post(self._url, content=body, headers=headers)
        except httpx.RequestError as exc:
            raise _transport_error(f"POST {self._url} failed", exc) from exc
        if not response.is_success:
            raise _hec_error(f"The HEC at {self._url} refused the data", response)
        code, text, answer = _answer(response)
        ack_id = answer.get("ackId")
        if code == 0 and isinstance(ack_id, int) and not isinstance(ack_id, bool):
            return ack_id
        if code == 0:
            raise DestinationError(
                f"The HEC at {self._url} took the data without an ackId: indexer acknowledgement is off "
                "for this token. Firehose needs it on; the data may have been indexed, so a retry can "
                "duplicate it.", code=DISABLED_ACK)
        raise DestinationError(f"The HEC at {self._url} answered HTTP {response.status_code} without "
                               f"success: {text}", code=SERVER_ERROR)

    async def _await_acks(self, records: tuple[DeliveryRecord, ...], sent: list[_Sent],
                          latencies: list[float], headers: dict[str, str]) -> list[Failure]:
        """Poll until every sent request is acknowledged or past its deadline; failures for the rest,
        and in ``latencies`` the seconds each acknowledged request waited for its ack.

        A failed poll is remembered and polling goes on (an ack can still turn true), except for
        answers a later poll would repeat (token or acknowledgement off), which end the wait.
        """
        pending = {s.ack_id: s for s in sent}
        failures: list[Failure] = []
        wait = POLL_FIRST_SECONDS
        last_error = ""
        while pending:
            earliest = min(s.deadline for s in pending.values())
            await asyncio.sleep(max(0.0, min(wait, earliest - time.monotonic())))
            wait = min(wait * 2, POLL_MAX_SECONDS)
            latest = max(s.deadline for s in pending.values())
            try:
                acked = await self._poll(list(pending), max(latest - time.monotonic(), POLL_GRACE_SECONDS),
                                         headers)
            except DestinationError as exc:
                if exc.code in _TOKEN_CODES and self._secret is not None:
                    self._secret.invalidate()  # the next attempt reads the secret again
                if exc.code in _FINAL_POLL_CODES:
                    for s in pending.values():
                        failures += self._failures(records, s.indexes, exc.code, exc.message)
                    return failures
                acked, last_error = set(), exc.message
            now = time.monotonic()
            for ack_id in acked:
                done = pending.pop(ack_id, None)
                if done is not None:
                    latencies.append(now - done.sent_at)
            for s in [s for s in pending.values() if s.deadline <= now]:
                del pending[s.ack_id]
                reason = self._timeout_reason(s, last_error)
                failures += self._failures(records, s.indexes, ACK_TIMEOUT, reason)
        return failures

    async def _poll(self, ack_ids: list[int], timeout: float, headers: dict[str, str]) -> set[int]:
        """One ack query; the ackIds it reports true (the HEC forgets those once reported)."""
        url = self._base + ACK_PATH
        try:
            async with asyncio.timeout(timeout):
                response = await self._ctx.http.post(url, params={"channel": self.channel},
                                                     headers=headers,
                                                     content=orjson.dumps({"acks": ack_ids}))
        except (httpx.RequestError, TimeoutError) as exc:
            raise _transport_error(f"Polling {url} failed", exc) from exc
        acks = _answer(response)[2].get("acks")
        if not response.is_success or not isinstance(acks, dict):
            raise _hec_error(f"Polling {url} failed", response)
        return {int(k) for k, v in acks.items() if v is True and k.isdigit()}

    def _timeout_reason(self, sent: _Sent, last_error: str) -> str:
        reason = (f"No indexer acknowledgement for ackId {sent.ack_id} on channel {self.channel} within "
                  f"{self.config.ack_timeout_seconds} s. The data may have been indexed anyway, so a retry "
                  "can index it twice.")
        return reason + (f" The last ack poll failed: {last_error}" if last_error else "")

    def _failures(self, records: tuple[DeliveryRecord, ...], indexes: tuple[int, ...], code: str,
                  reason: str) -> list[Failure]:
        return [self._failure(records[i], i, code, reason) for i in indexes]

    @staticmethod
    def _failure(record: DeliveryRecord, index: int, code: str, reason: str) -> Failure:
        """A failure of batch record ``index``, with the ``EventId`` of Firehose's Splunk error record."""
        return Failure(index, reason, code=code, extra={"EventId": record.record_id})
