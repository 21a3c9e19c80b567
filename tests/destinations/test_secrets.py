"""Destination credentials from secrets (``firehose/destinations/secrets.py``): moto's Secrets Manager
server holds the secrets (created and rotated with boto3), the destinations deliver to the HTTP endpoint
and Splunk receivers and to a real PostgreSQL, and the ``secrets:`` setting stands in for Secrets Manager.

Each test drives a destination directly, as the pipeline would: one ``deliver`` per attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import psycopg
import pytest

from firehose.definitions import (
    HttpEndpointDestinationConfiguration,
    RedshiftDestinationConfiguration,
    SplunkDestinationConfiguration,
)
from firehose.destinations.base import Destination, DestinationContext, Outcome
from firehose.destinations.http_endpoint import HttpEndpointDestination
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import RedshiftDestination
from firehose.destinations.redshift.session import AUTHENTICATION_FAILED
from firehose.destinations.secrets import TTL_SECONDS, CachedSecret
from firehose.destinations.splunk import SplunkDestination
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import DeliveryRecord, ObjectBatch, RecordBatch
from firehose.settings import SecretsManagerSettings, Settings, load_config
from tests.support.aws import CREDS, ROLE
from tests.support.config import write_config
from tests.support.receivers.http_endpoint import HttpEndpointReceiver
from tests.support.receivers.splunk import SplunkReceiver, Token
from tests.support.servers import MotoServer, PostgresServer

T = TypeVar("T")
S3 = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::errors"}
STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/orders"
MISSING_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:not-there-AbCdEf"


@pytest.fixture
def secrets(moto_server: MotoServer) -> Any:
    return boto3.client("secretsmanager", endpoint_url=moto_server.endpoint, **CREDS)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def new_secret(secrets: Any, value: dict[str, str]) -> str:
    """A fresh secret in moto holding ``value`` as JSON; its ARN."""
    return str(secrets.create_secret(Name=f"firehose/{uuid.uuid4().hex[:12]}",
                                     SecretString=json.dumps(value))["ARN"])


def rotate(secrets: Any, arn: str, value: dict[str, str]) -> None:
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(value))


def sm(arn: str, enabled: bool = True) -> dict[str, Any]:
    return {"SecretsManagerConfiguration": {"Enabled": enabled, "SecretARN": arn, "RoleARN": ROLE}}


def http_config(url: str, arn: str, **endpoint: Any) -> HttpEndpointDestinationConfiguration:
    return HttpEndpointDestinationConfiguration.model_validate({
        "EndpointConfiguration": {"Url": url, **endpoint}, "RetryOptions": {"DurationInSeconds": 60},
        "S3Configuration": S3, **sm(arn)})


def splunk_config(url: str, arn: str) -> SplunkDestinationConfiguration:
    return SplunkDestinationConfiguration.model_validate({
        "HECEndpoint": url, "HECEndpointType": "Raw", "HECAcknowledgmentTimeoutInSeconds": 5,
        "S3Configuration": S3, **sm(arn)})


def batch(*data: bytes) -> RecordBatch:
    return RecordBatch("orders", str(uuid.uuid4()),
                       tuple(DeliveryRecord(f"r{i}", d, 1_700_000_000_000) for i, d in enumerate(data)))


def run(make: Callable[[DestinationContext], Destination[Any]], settings: Settings, executor: ThreadPoolExecutor,
        *steps: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """Build one destination and run ``steps`` on it in turn (its cache lives across them)."""
    async def go() -> list[Any]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            ctx = DestinationContext(stream="orders", settings=settings, executor=executor, http=http,
                                     stream_arn=STREAM_ARN)
            dest = make(ctx)
            return [await step(dest) for step in steps]
    return asyncio.run(go())


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log record with all its fields (``extra`` included), as text."""
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def moto_settings(moto: MotoServer, **more: Any) -> Settings:
    return Settings(secrets_manager=SecretsManagerSettings(endpoint_url=moto.endpoint), **more)


# -- HTTP endpoint -------------------------------------------------------------------------------


def test_an_http_endpoint_sends_the_secrets_api_key_and_picks_up_a_rotation_after_a_401(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture) -> None:
    arn = new_secret(secrets, {"api_key": "key-one-7f3a"})
    with HttpEndpointReceiver(access_key="key-one-7f3a") as receiver:
        cfg = http_config(receiver.url, arn, AccessKey="definition-key-not-used")

        async def rotated(dest: HttpEndpointDestination) -> Outcome:
            rotate(secrets, arn, {"api_key": "key-two-9c1d"})
            receiver.access_key = "key-two-9c1d"
            return await dest.deliver(batch(b"second"))

        with caplog.at_level(logging.DEBUG, logger="firehose"):
            first, second = run(lambda ctx: HttpEndpointDestination(cfg, ctx), moto_settings(moto_server), executor,
                                lambda d: d.deliver(batch(b"first")), rotated)
    assert first.delivered_all and second.delivered_all
    # The definition's AccessKey is overridden; the cached key was refused once, then the rotated one taken.
    assert [(r.status, r.headers.get("x-amz-firehose-access-key")) for r in receiver.requests] == [
        (200, "key-one-7f3a"), (401, "key-one-7f3a"), (200, "key-two-9c1d")]
    assert receiver.accepted() == [b"first", b"second"]
    logged = everything_logged(caplog)
    assert "key-one" not in logged and "key-two" not in logged
    assert arn in logged  # the re-read is logged, by ARN


def test_the_secret_is_read_once_per_ten_minutes_and_again_when_invalidated(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor) -> None:
    arn = new_secret(secrets, {"api_key": "a-1"})
    now = [1000.0]

    async def steps(ctx: DestinationContext) -> list[str]:
        cached = CachedSecret(arn, ("api_key",), ctx, clock=lambda: now[0])
        seen = [(await cached.value())["api_key"]]
        rotate(secrets, arn, {"api_key": "a-2"})
        now[0] += TTL_SECONDS - 1
        seen.append((await cached.value())["api_key"])  # still cached
        now[0] += 1
        seen.append((await cached.value())["api_key"])  # ten minutes on: read again
        rotate(secrets, arn, {"api_key": "a-3"})
        cached.invalidate()
        seen.append((await cached.value())["api_key"])  # at once after invalidate
        return seen

    async def go() -> list[str]:
        ctx = DestinationContext(stream="s", settings=moto_settings(moto_server), executor=executor)
        return await steps(ctx)

    assert asyncio.run(go()) == ["a-1", "a-1", "a-2", "a-3"]


def test_a_failed_refresh_keeps_the_last_value_but_a_first_read_fails_the_attempt(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor) -> None:
    arn = new_secret(secrets, {"api_key": "kept"})
    now = [0.0]

    async def go() -> tuple[str, str]:
        ctx = DestinationContext(stream="s", settings=moto_settings(moto_server), executor=executor)
        cached = CachedSecret(arn, ("api_key",), ctx, clock=lambda: now[0])
        first = (await cached.value())["api_key"]
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        now[0] += TTL_SECONDS
        stale = (await cached.value())["api_key"]
        cached.invalidate()
        with pytest.raises(DestinationError) as failed:
            await cached.value()
        assert failed.value.retriable and failed.value.code == "SecretsManager.ResourceNotFound"
        return first, stale

    assert asyncio.run(go()) == ("kept", "kept")


@pytest.mark.parametrize(("stored", "code", "words"), [
    (None, "SecretsManager.ResourceNotFound", "ResourceNotFoundException"),
    ('{"apikey": "shhh-value"}', "SecretsManager.InvalidSecret", "has no 'api_key'"),
    ("shhh-value not json", "SecretsManager.InvalidSecret", "is not a JSON object"),
])
def test_a_secret_that_cannot_be_used_fails_the_attempt_with_a_code_and_no_value(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor, stored: str | None, code: str,
        words: str) -> None:
    arn = MISSING_ARN if stored is None else str(
        secrets.create_secret(Name=f"bad/{uuid.uuid4().hex[:8]}", SecretString=stored)["ARN"])
    with HttpEndpointReceiver() as receiver:
        cfg = http_config(receiver.url, arn)
        outcome, = run(lambda ctx: HttpEndpointDestination(cfg, ctx), moto_settings(moto_server), executor,
                       lambda d: d.deliver(batch(b"a", b"b")))
        with pytest.raises(DestinationUnavailable) as unavailable:
            run(lambda ctx: HttpEndpointDestination(cfg, ctx), moto_settings(moto_server), executor,
                lambda d: d.check())
    assert receiver.requests == []  # nothing is sent without the key
    assert [f.index for f in outcome.retry] == [0, 1] and outcome.rejected == ()
    assert {f.code for f in outcome.retry} == {code} and unavailable.value.code == code
    reason = outcome.retry[0].reason
    assert arn in reason and words in reason and "shhh" not in reason


def test_an_unreachable_secrets_manager_is_a_retriable_service_unavailable(executor: ThreadPoolExecutor,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.ports import free_port

    # The standard AWS configuration names the endpoint: nothing is listening there.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    with HttpEndpointReceiver() as receiver:
        cfg = http_config(receiver.url, MISSING_ARN)
        outcome, = run(lambda ctx: HttpEndpointDestination(cfg, ctx), Settings(), executor,
                       lambda d: d.deliver(batch(b"a")))
    assert [f.code for f in outcome.retry] == ["SecretsManager.ServiceUnavailable"]
    assert "Could not connect" in outcome.retry[0].reason


def test_the_environment_names_the_secrets_manager_endpoint(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    arn = new_secret(secrets, {"api_key": "from-env"})
    with HttpEndpointReceiver(access_key="from-env") as receiver:
        outcome, = run(lambda ctx: HttpEndpointDestination(http_config(receiver.url, arn), ctx), Settings(),
                       executor, lambda d: d.deliver(batch(b"a")))
    assert outcome.delivered_all


def test_enabled_false_keeps_the_definitions_access_key(executor: ThreadPoolExecutor) -> None:
    with HttpEndpointReceiver(access_key="own-key") as receiver:
        raw = http_config(receiver.url, MISSING_ARN, AccessKey="own-key").dump()
        raw["SecretsManagerConfiguration"]["Enabled"] = False
        cfg = HttpEndpointDestinationConfiguration.model_validate(raw)
        outcome, = run(lambda ctx: HttpEndpointDestination(cfg, ctx), Settings(), executor,
                       lambda d: d.deliver(batch(b"a")))
    assert outcome.delivered_all


# -- the secrets: setting --------------------------------------------------------------------------


def test_the_secrets_setting_maps_an_arn_to_a_file_reread_after_a_refusal(
        tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    secret_file = tmp_path / "hook.json"
    secret_file.write_text('{"api_key": "file-key-1"}\n')
    with HttpEndpointReceiver(access_key="file-key-1") as receiver:
        cfg = http_config(receiver.url, MISSING_ARN)
        # No Secrets Manager is configured or reachable: the setting is all there is.
        settings = Settings(secrets={MISSING_ARN: f"file:{secret_file}"},
                            secrets_manager=SecretsManagerSettings(endpoint_url="http://127.0.0.1:9"))

        async def rotated(dest: HttpEndpointDestination) -> Outcome:
            secret_file.write_text('{"api_key": "file-key-2"}')
            receiver.access_key = "file-key-2"
            return await dest.deliver(batch(b"two"))

        first, second = run(lambda ctx: HttpEndpointDestination(cfg, ctx), settings, executor,
                            lambda d: d.deliver(batch(b"one")), rotated)
    assert first.delivered_all and second.delivered_all
    assert [r.headers.get("x-amz-firehose-access-key") for r in receiver.requests] == [
        "file-key-1", "file-key-1", "file-key-2"]


def test_the_secrets_setting_takes_members_from_the_environment_in_a_config_file(
        tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_API_KEY", "env-key-5")
    path = write_config(tmp_path / "firehose.yaml",
                        {"secrets": {MISSING_ARN: {"api_key": "${HOOK_API_KEY}"}}}, [])
    settings = load_config(path).settings
    with HttpEndpointReceiver(access_key="env-key-5") as receiver:
        outcome, = run(lambda ctx: HttpEndpointDestination(http_config(receiver.url, MISSING_ARN), ctx), settings,
                       executor, lambda d: d.deliver(batch(b"a")))
    assert outcome.delivered_all


def test_a_secrets_file_that_cannot_be_read_is_refused_when_the_config_is_loaded(tmp_path: Path) -> None:
    from firehose.errors import ConfigError

    path = write_config(tmp_path / "firehose.yaml", {"secrets": {MISSING_ARN: f"file:{tmp_path}/nope.json"}}, [])
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        load_config(path)


# -- Splunk ---------------------------------------------------------------------------------------


def test_splunk_sends_the_secrets_hec_token_and_picks_up_a_rotation_after_invalid_token(
        moto_server: MotoServer, secrets: Any, executor: ThreadPoolExecutor) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    arn = new_secret(secrets, {"hec_token": old})
    with SplunkReceiver({old: Token()}) as hec:
        cfg = splunk_config(hec.url, arn)

        async def rotated(dest: SplunkDestination) -> Outcome:
            rotate(secrets, arn, {"hec_token": new})
            hec.tokens = {new: Token()}
            return await dest.deliver(batch(b"two\n"))

        checked, first, second = run(lambda ctx: SplunkDestination(cfg, ctx), moto_settings(moto_server), executor,
                                     lambda d: d.check(), lambda d: d.deliver(batch(b"one\n")), rotated)
    assert checked is None and first.delivered_all and second.delivered_all
    assert [(i.token, i.body) for i in hec.indexed] == [(old, b"one\n"), (new, b"two\n")]


# -- Redshift (PostgreSQL) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Loader:
    """A login role of its own, owning a database of its own, so its password can change freely."""

    user: str
    password: str
    database: str


@pytest.fixture
def loader(postgres_server: PostgresServer) -> Iterator[Loader]:
    tag = uuid.uuid4().hex[:8]
    made = Loader(f"loader_{tag}", "first-pw-1234", f"secrets_{tag}")
    with postgres_server.connect("postgres") as conn:
        conn.execute(f"CREATE ROLE {made.user} LOGIN PASSWORD '{made.password}'")
        conn.execute(f"CREATE DATABASE {made.database} OWNER {made.user}")
    with psycopg.connect(host="127.0.0.1", port=postgres_server.port, user=made.user, password=made.password,
                         dbname=made.database, autocommit=True) as conn:
        conn.execute("CREATE TABLE secret_events (id int)")
    yield made
    with postgres_server.connect("postgres") as conn:
        conn.execute(f"DROP DATABASE {made.database} WITH (FORCE)")
        conn.execute(f"DROP ROLE {made.user}")


def redshift_config(postgres: PostgresServer, database: str, arn: str) -> RedshiftDestinationConfiguration:
    # No Username or Password in the definition: the secret holds both.
    return RedshiftDestinationConfiguration.model_validate({
        "RoleARN": ROLE, "ClusterJDBCURL": postgres.url(database=database),
        "CopyCommand": {"DataTableName": "secret_events", "CopyOptions": "CSV"},
        "S3Configuration": {**S3, "Prefix": "events/"}, "RetryOptions": {"DurationInSeconds": 60}, **sm(arn)})


def object_batch(body: bytes) -> ObjectBatch:
    return ObjectBatch("orders", f"events/2024/01/02/03/orders-1-{uuid.uuid4()}", (body,), len(body), 1,
                       1704164645000)


def test_redshift_logs_in_with_the_secret_and_picks_up_a_new_password_when_login_is_refused(
        moto_server: MotoServer, secrets: Any, postgres_server: PostgresServer, loader: Loader,
        tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    user, password = loader.user, loader.password
    arn = new_secret(secrets, {"username": user, "password": "stale-pw-0000"})
    cfg = redshift_config(postgres_server, loader.database, arn)

    def make(ctx: DestinationContext) -> RedshiftDestination:
        return RedshiftDestination(cfg, ctx, stage=LocalDirectoryDestination(tmp_path, ctx))

    async def refused(dest: RedshiftDestination) -> DestinationError:
        with pytest.raises(DestinationError) as failed:
            await dest.deliver(object_batch(b"1\n"))
        return failed.value

    async def fixed(dest: RedshiftDestination) -> Outcome:
        rotate(secrets, arn, {"username": user, "password": password})  # the cache still holds the stale one
        return await dest.deliver(object_batch(b"2\n"))

    error, outcome = run(make, moto_settings(moto_server), executor, refused, fixed)
    assert error.retriable and error.code == AUTHENTICATION_FAILED
    assert "password authentication failed" in error.message and "stale-pw" not in error.message
    assert outcome.delivered_all
    with postgres_server.connect(loader.database) as conn:
        assert conn.execute("SELECT id FROM secret_events").fetchall() == [(2,)]
    with pytest.raises(psycopg.OperationalError):  # the stale password really is wrong
        psycopg.connect(host="127.0.0.1", port=postgres_server.port, user=user, password="stale-pw-0000",
                        dbname=loader.database).close()
