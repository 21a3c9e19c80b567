"""Destination credentials from a secret: ``SecretsManagerConfiguration`` made real.

A destination whose definition has ``SecretsManagerConfiguration`` with ``Enabled: true`` takes its
credentials from the secret ``SecretARN`` names instead of the definition (AWS: "the secrets manager
configuration overwrites the existing secrets in the destination configuration"), reading the JSON
members AWS documents for it ("Understand secrets", Firehose developer guide):

* Redshift: ``{"username": …, "password": …}``
* Splunk: ``{"hec_token": …}``
* HTTP endpoint: ``{"api_key": …}``

Where the secret comes from: the daemon's ``secrets:`` setting when it lists the ARN (a file or an
environment variable, for machines without Secrets Manager), else ``GetSecretValue`` on any Secrets
Manager-compatible endpoint through boto3, configured like the S3 client: ``secrets_manager:``
settings, else the standard AWS configuration (``AWS_ENDPOINT_URL_SECRETS_MANAGER`` /
``AWS_ENDPOINT_URL``, profiles, the credential chain), in the ARN's region. RoleARN is not assumed.

Invariants:

* A fetched secret is kept for ``TTL_SECONDS`` (10 minutes, as Firehose refreshes its cache), then
  fetched again. A refresh that fails keeps the last value (it still worked a moment ago) and is
  tried again after ``STALE_RETRY_SECONDS``; a first fetch that fails fails the attempt.
* ``invalidate()`` (or ``renew()``) forgets the value: a destination calls it when the destination
  refused the credentials (Redshift login refused, HEC 401/403, HTTP endpoint 401/403), so a rotated
  secret is picked up at once, not 10 minutes later. ``renew`` fetches again unless another caller
  already did since the value it was given, so a burst of refusals costs one fetch.
* A secret that cannot be had raises a retriable ``DestinationError`` whose ``code`` names why
  (see the codes below): the pipeline retries with backoff for the destination's retry duration,
  then writes the records to the error output with that code and message, as for any delivery error.
* No secret value is ever put in a message, a log line, a repr or a description: errors name the
  ARN, the source and the member, never what it holds; ``SecretValue`` hides its members in repr.

Error codes. AWS does not document the ``errorCode`` Firehose writes when it cannot read a secret,
so these are chosen in its ``<Service>.<Reason>`` style, the reason being Secrets Manager's own
error code without ``Exception`` (``SecretsManager.ResourceNotFound``, ``SecretsManager.AccessDenied``,
``SecretsManager.DecryptionFailure``, ...), ``SecretsManager.ServiceUnavailable`` when the endpoint
cannot be reached, and ``SecretsManager.InvalidSecret`` for a secret that is not a JSON object with
the members the destination needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from firehose.definitions import SecretsManagerConfiguration
from firehose.destinations.base import DestinationContext
from firehose.destinations.clientcache import ClientCache
from firehose.errors import DestinationError
from firehose.settings import SecretsManagerSettings, Settings, read_secret

log = logging.getLogger("firehose.destinations.secrets")

#: Firehose refreshes its cached secrets every 10 minutes.
TTL_SECONDS = 600.0
#: After a failed refresh the last value is used for this long before the next try.
STALE_RETRY_SECONDS = 60.0

ACCESS_DENIED = "SecretsManager.AccessDenied"
NOT_FOUND = "SecretsManager.ResourceNotFound"
UNAVAILABLE = "SecretsManager.ServiceUnavailable"
INVALID_SECRET = "SecretsManager.InvalidSecret"

#: The members each destination reads (Firehose developer guide, "Understand secrets").
REDSHIFT_MEMBERS = ("username", "password")
SPLUNK_MEMBERS = ("hec_token",)
HTTP_ENDPOINT_MEMBERS = ("api_key",)


@dataclass(frozen=True, slots=True)
class SecretValue:
    """The members of a secret, as fetched once. ``generation`` counts fetches (for ``renew``)."""

    members: Mapping[str, str] = field(repr=False)
    generation: int = 0

    def __getitem__(self, member: str) -> str:
        return self.members[member]

    def __repr__(self) -> str:
        return f"SecretValue(members={sorted(self.members)!r}, generation={self.generation})"


# -- where a secret comes from ---------------------------------------------------------------


_clients = ClientCache()


def shared_client(settings: SecretsManagerSettings, region: str | None) -> Any:
    """The process's Secrets Manager client for these settings and region, made once (``clientcache``)."""
    return _clients.get((settings, region), lambda: make_client(settings, region))


def make_client(settings: SecretsManagerSettings, region: str | None) -> Any:
    """A boto3 Secrets Manager client; explicit settings win over the AWS configuration chain.

    botocore's own retries are off: the pipeline retries the attempt, with its backoff."""
    session = boto3.session.Session(profile_name=settings.profile, aws_access_key_id=settings.access_key_id,
                                    aws_secret_access_key=settings.secret_access_key)
    config = BotoConfig(connect_timeout=settings.connect_timeout_seconds,
                        read_timeout=settings.read_timeout_seconds,
                        retries={"max_attempts": 1, "mode": "standard"})
    return session.client("secretsmanager", endpoint_url=settings.endpoint_url,
                          region_name=settings.region or region or session.region_name or "us-east-1",
                          verify=settings.verify, config=config)


def arn_region(arn: str) -> str | None:
    """``arn:aws:secretsmanager:<region>:…`` → the region (GetSecretValue must be asked there)."""
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 4 else None


def _service_error(arn: str, exc: Exception) -> DestinationError:
    """A GetSecretValue failure as a retriable error naming the ARN and Secrets Manager's reason."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        name = str(err.get("Code") or "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = f"SecretsManager.{name.removesuffix('Exception')}"
        if status is not None and status >= 500:
            code = UNAVAILABLE
        return DestinationError(f"Secrets Manager GetSecretValue for {arn} failed: {name} (HTTP {status}): "
                                f"{err.get('Message') or ''}".rstrip(": "), code=code)
    if isinstance(exc, NoCredentialsError):
        return DestinationError(f"Cannot read the secret {arn}: no AWS credentials for Secrets Manager "
                                "(the credential chain found none; see secrets_manager: settings)",
                                code=ACCESS_DENIED)
    if isinstance(exc, EndpointConnectionError):
        return DestinationError(f"Cannot read the secret {arn}: {exc}", code=UNAVAILABLE)
    return DestinationError(f"Cannot read the secret {arn}: {type(exc).__name__}: {exc}", code=UNAVAILABLE)


def _fetch_from_service(settings: SecretsManagerSettings, arn: str) -> str:
    """The secret's SecretString, from Secrets Manager (blocking: run in the thread pool)."""
    try:
        answer = shared_client(settings, arn_region(arn)).get_secret_value(SecretId=arn)
    except (ClientError, BotoCoreError) as exc:
        raise _service_error(arn, exc) from None  # the cause may hold request details; not chained
    text = answer.get("SecretString")
    if not isinstance(text, str):
        raise DestinationError(f"The secret {arn} has no SecretString (a binary secret): Firehose reads "
                               "secrets as JSON text", code=INVALID_SECRET)
    return text


def _fetch_configured(reference: str | Mapping[str, str], arn: str) -> str | dict[str, str]:
    """The secret from the ``secrets:`` setting: its JSON text, or its members (files read now)."""
    try:
        if isinstance(reference, str):
            return read_secret(reference)
        return {member: read_secret(ref) for member, ref in reference.items()}
    except ValueError as exc:  # the message names the file, never its content
        raise DestinationError(f"Cannot read the secret {arn} given in the secrets: setting: {exc}",
                               code=NOT_FOUND) from None


def _members(raw: str | Mapping[str, str], arn: str, needed: tuple[str, ...]) -> dict[str, str]:
    """The members ``needed`` of a secret (JSON text or a mapping); what is wrong, never its value."""
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None  # the parser's message quotes the text: not shown
        if not isinstance(parsed, dict):
            raise DestinationError(f"The secret {arn} is not a JSON object; this destination reads "
                                   f"{_member_list(needed)} from it", code=INVALID_SECRET)
    else:
        parsed = dict(raw)
    missing = [m for m in needed if not isinstance(parsed.get(m), str) or not parsed[m]]
    if missing:
        raise DestinationError(f"The secret {arn} has no {_member_list(tuple(missing))} (a non-empty string); "
                               f"this destination reads {_member_list(needed)} from it", code=INVALID_SECRET)
    return {m: parsed[m] for m in needed}


def _member_list(members: tuple[str, ...]) -> str:
    return " and ".join(f"{m!r}" for m in members)


def fetch(settings: Settings, arn: str, needed: tuple[str, ...]) -> dict[str, str]:
    """The members ``needed`` of the secret ``arn``, from ``secrets:`` or Secrets Manager (blocking)."""
    configured = settings.secrets.get(arn)
    raw = _fetch_configured(configured, arn) if configured is not None else \
        _fetch_from_service(settings.secrets_manager, arn)
    return _members(raw, arn, needed)


# -- the cache a destination holds -------------------------------------------------------------


class CachedSecret:
    """One destination's view of one secret: fetched when first needed, kept ``TTL_SECONDS``,
    forgotten on ``invalidate``. Used from the destination's event loop only."""

    def __init__(self, arn: str, needed: tuple[str, ...], ctx: DestinationContext, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.arn = arn
        self.needed = needed
        self._ctx = ctx
        self._clock = clock
        self._value: SecretValue | None = None
        self._fetched_at = 0.0
        self._next_try = 0.0
        self._generation = 0
        self._lock: asyncio.Lock | None = None

    def describe(self) -> str:
        source = "the secrets: setting" if self.arn in self._ctx.settings.secrets else "Secrets Manager"
        return f"secret {self.arn} ({source})"

    async def value(self) -> SecretValue:
        """The secret's members: cached, refreshed after ``TTL_SECONDS``; a retriable
        ``DestinationError`` with a ``SecretsManager.*`` code when there is none to be had."""
        usable = self._usable()
        if usable is not None:
            return usable
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            usable = self._usable()  # another caller may have fetched it while this one waited
            return usable if usable is not None else await self._refresh()

    def _usable(self) -> SecretValue | None:
        """The cached value while it is fresh (or, after a failed refresh, until the next try)."""
        now = self._clock()
        if self._value is not None and (now - self._fetched_at < TTL_SECONDS or now < self._next_try):
            return self._value
        return None

    def invalidate(self) -> None:
        """Forget the value: the destination refused it. The next ``value()`` fetches it again."""
        self._value = None

    async def renew(self, seen: SecretValue) -> bool:
        """After the destination refused ``seen``: fetch again (unless another caller already did since),
        and say whether the value now differs, i.e. whether sending again can help."""
        if self._value is not None and self._value.generation != seen.generation:
            return self._value.members != seen.members
        self.invalidate()
        try:
            fresh = await self.value()
        except DestinationError as exc:
            log.warning("The destination refused the credentials, and the secret could not be read again.",
                        extra={"stream": self._ctx.stream, "secret": self.arn, "code": exc.code,
                               "error": exc.message})
            return False
        changed = fresh.members != seen.members
        log.info("The destination refused the credentials; read the secret again.",
                 extra={"stream": self._ctx.stream, "secret": self.arn, "changed": changed})
        return changed

    async def _refresh(self) -> SecretValue:
        stale = self._value
        try:
            members = await self._ctx.run(fetch, self._ctx.settings, self.arn, self.needed)
        except DestinationError as exc:
            if stale is None:
                raise
            self._next_try = self._clock() + STALE_RETRY_SECONDS
            log.warning("Could not refresh a secret; using the value read before.",
                        extra={"stream": self._ctx.stream, "secret": self.arn, "code": exc.code,
                               "error": exc.message})
            return stale
        self._generation += 1
        self._value = SecretValue(members, self._generation)
        self._fetched_at = self._clock()
        return self._value


def cached_secret(config: SecretsManagerConfiguration | None, needed: tuple[str, ...],
                  ctx: DestinationContext) -> CachedSecret | None:
    """The secret a destination reads its credentials from, or None when it uses its definition's
    (no SecretsManagerConfiguration, or ``Enabled`` false)."""
    arn = config.active_arn if config is not None else None
    return CachedSecret(arn, needed, ctx) if arn is not None else None
