"""Authentication and authorization end to end: a daemon (and its Kinesis sidecar) with ``auth.mode: sigv4``.

Real clients sign for real: boto3, the AWS CLI, and botocore's signer for the
requests a test spoils on purpose. Every failure is checked for AWS's error
type, HTTP status and exact message (security.md §5, §6, §9.4); accounts are
checked to be walls (two principals of two accounts never see each other's
streams, even streams of the same name).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from tests.support.aws import ROLE
from tests.support.config import local_stream, write_config
from tests.support.daemon import RunningDaemon
from tests.support.jssdk import kinesis_client_script
from tests.support.ports import free_port
from tests.support.signing import call, send, sign
from tests.support.waiting import wait_until

REGION = "us-east-1"
HOME = "111122223333"
OTHER_ACCOUNT = "444455556666"


def _allow(actions: list[str] | str, resources: list[str] | str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


PRINCIPALS = {
    # The first principal's account is the one config-declared streams belong to.
    "app": {"access_key_id": "AKIAAPPKEY0000000001", "secret": "app-secret", "account_id": HOME, "name": "app",
            "policies": [_allow(["firehose:PutRecord", "firehose:PutRecordBatch"],
                                f"arn:aws:firehose:{REGION}:{HOME}:deliverystream/app-*")]},
    "admin": {"access_key_id": "AKIAADMINKEY00000001", "secret": "admin-secret", "account_id": HOME,
              "name": "admin", "policies": [_allow(["firehose:*", "kinesis:*"], "*")]},
    "careful": {"access_key_id": "AKIACAREFULKEY000001", "secret": "careful-secret", "account_id": HOME,
                "name": "careful", "policies": [{"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "firehose:Delete*", "Resource": "*"}]}]},
    "other": {"access_key_id": "AKIAOTHERKEY00000001", "secret": "other-secret", "account_id": OTHER_ACCOUNT,
              "name": "other", "policies": [_allow(["firehose:*", "kinesis:*"], "*")]},
    "temporary": {"access_key_id": "ASIATEMPKEY000000001", "secret": "temp-secret", "account_id": HOME,
                  "arn": f"arn:aws:sts::{HOME}:assumed-role/writer/session-1",
                  "session_tokens": ["token-of-the-session"], "policies": [_allow("firehose:*", "*")]},
}
SCRAPER_TOKEN = "scrape-me-please"


def creds(who: str) -> dict[str, str]:
    p = PRINCIPALS[who]
    return {"aws_access_key_id": p["access_key_id"], "aws_secret_access_key": p["secret"]}


class Secured:
    """A daemon in sigv4 mode with the sidecar in-process and a separate metrics listener."""

    def __init__(self, daemon: RunningDaemon, kinesis_port: int, metrics_port: int) -> None:
        self.daemon = daemon
        self.endpoint = daemon.endpoint
        self.kinesis_endpoint = f"http://127.0.0.1:{kinesis_port}"
        self.metrics_endpoint = f"http://127.0.0.1:{metrics_port}"

    def firehose(self, who: str, **config: Any) -> Any:
        token = PRINCIPALS[who].get("session_tokens", [None])[0]
        return boto3.client("firehose", endpoint_url=self.endpoint, region_name=config.pop("region", REGION),
                            aws_session_token=token, config=BotoConfig(retries={"max_attempts": 1}, **config),
                            **creds(who))

    def kinesis(self, who: str) -> Any:
        return boto3.client("kinesis", endpoint_url=self.kinesis_endpoint, region_name=REGION,
                            config=BotoConfig(retries={"max_attempts": 1}), **creds(who))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    from firehose.settings import load_config

    root = tmp_path_factory.mktemp("secured")
    kinesis_port, metrics_port = free_port(), free_port()
    settings = {
        "port": free_port(), "state_dir": str(root / "state"), "log_level": "WARNING",
        "buckets": {"local": {"directory": str(root / "out")}},
        "auth": {"mode": "sigv4", "principals": list(PRINCIPALS.values()), "bearer_tokens": [SCRAPER_TOKEN]},
        "kinesis": {"enabled": True, "port": kinesis_port, "streams": [
            {"StreamName": "partner-kinesis", "ShardCount": 1, "AccountId": OTHER_ACCOUNT}]},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }
    path = write_config(root / "firehose.yaml", settings, [
        local_stream("app-events"), {**local_stream("partner-feed"), "AccountId": OTHER_ACCOUNT}])
    daemon = RunningDaemon(load_config(path))
    yield Secured(daemon, kinesis_port, metrics_port)
    daemon.stop()


def error(exc: Any) -> tuple[str, str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- signed clients ------------------------------------------------------------------------


def test_boto3_clients_with_valid_keys_are_served(secured: Secured) -> None:
    app = secured.firehose("app")
    put = app.put_record_batch(DeliveryStreamName="app-events", Records=[{"Data": b"a\n"}, {"Data": b"b\n"}])
    assert put["FailedPutCount"] == 0
    assert secured.firehose("admin").list_delivery_streams()["DeliveryStreamNames"] == ["app-events"]
    described = secured.firehose("admin").describe_delivery_stream(DeliveryStreamName="app-events")
    assert described["DeliveryStreamDescription"]["DeliveryStreamARN"] == \
        f"arn:aws:firehose:{REGION}:{HOME}:deliverystream/app-events"
    kinesis = secured.kinesis("admin")
    kinesis.create_stream(StreamName="signed", ShardCount=1)
    kinesis.put_record(StreamName="signed", Data=b"k", PartitionKey="p")
    summary = kinesis.describe_stream_summary(StreamName="signed")["StreamDescriptionSummary"]
    assert summary["StreamARN"] == f"arn:aws:kinesis:{REGION}:{HOME}:stream/signed"


def test_session_credentials_need_their_token(secured: Secured) -> None:
    assert secured.firehose("temporary").list_delivery_streams()["DeliveryStreamNames"] == ["app-events"]
    wrong = boto3.client("firehose", endpoint_url=secured.endpoint, region_name=REGION,
                         aws_session_token="not-the-token", **creds("temporary"))
    with pytest.raises(wrong.exceptions.ClientError) as exc:
        wrong.list_delivery_streams()
    assert error(exc) == ("UnrecognizedClientException", "The security token included in the request is invalid",
                          400)


def test_the_aws_cli_signs_and_is_served(secured: Secured, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds("admin")["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": creds("admin")["aws_secret_access_key"], "AWS_DEFAULT_REGION": REGION,
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    aws = [sys.executable, "-m", "awscli"]
    out = subprocess.run([*aws, "firehose", "list-delivery-streams", "--endpoint-url", secured.endpoint],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["DeliveryStreamNames"] == ["app-events"]
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    out = subprocess.run([*aws, "firehose", "list-delivery-streams", "--endpoint-url", secured.endpoint],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0 and "InvalidSignatureException" in out.stderr


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_the_javascript_sdk_signs_over_http2_and_is_served(secured: Secured) -> None:
    """The real JavaScript SDK v3 with its default HTTP/2 handler, signing with a principal's keys."""
    script = kinesis_client_script()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds("admin")["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": creds("admin")["aws_secret_access_key"]}
    out = subprocess.run(["node", str(script), secured.kinesis_endpoint, "js-signed"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["data"] == ["js-0", "js-1", "js-2"]
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    out = subprocess.run(["node", str(script), secured.kinesis_endpoint, "js-unsigned"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode != 0 and "InvalidSignatureException" in out.stderr


# -- every authentication failure, as AWS answers it ------------------------------------------------


LIST = "Firehose_20150804.ListDeliveryStreams"
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")


def _admin(**extra: Any) -> dict[str, Any]:
    return {"key": PRINCIPALS["admin"]["access_key_id"], "secret": "admin-secret", **extra}


def test_unsigned(secured: Secured) -> None:
    status, body = send(secured.endpoint + "/", {"Content-Type": "application/x-amz-json-1.1",
                                                  "X-Amz-Target": LIST}, b"{}")
    assert (status, body["__type"], body["message"]) == (400, "MissingAuthenticationTokenException",
                                                         "Missing Authentication Token")


def test_unknown_key(secured: Secured) -> None:
    status, body = call(secured.endpoint, LIST, {}, key="AKIANOBODY0000000000", secret="x")
    assert (status, body["__type"], body["message"]) == (
        400, "UnrecognizedClientException", "The security token included in the request is invalid.")


def test_wrong_secret(secured: Secured) -> None:
    status, body = call(secured.endpoint, LIST, {}, key=PRINCIPALS["admin"]["access_key_id"], secret="wrong")
    assert (status, body["__type"], body["message"]) == (400, "InvalidSignatureException", MISMATCH)


def test_body_tampered_after_signing(secured: Secured) -> None:
    url, headers, _body = sign(secured.endpoint + "/", LIST, b'{"Limit": 1}', **_admin())
    status, body = send(url, headers, b'{"Limit": 2}')
    assert (status, body["__type"], body["message"]) == (400, "InvalidSignatureException", MISMATCH)


def test_signed_header_tampered(secured: Secured) -> None:
    url, headers, body = sign(secured.endpoint + "/", "Firehose_20150804.DescribeDeliveryStream",
                              b'{"DeliveryStreamName": "app-events"}', **_admin())
    headers["X-Amz-Target"] = LIST
    status, answer = send(url, headers, body)
    assert (status, answer["__type"], answer["message"]) == (400, "InvalidSignatureException", MISMATCH)


def test_date_six_minutes_old(secured: Secured) -> None:
    signed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    url, headers, body = sign(secured.endpoint + "/", LIST, b"{}", at=signed_at, **_admin())
    status, answer = send(url, headers, body)
    assert status == 400 and answer["__type"] == "InvalidSignatureException"
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert re.fullmatch(rf"Signature expired: {stamp} is now earlier than (\d{{8}}T\d{{6}}Z) \((\d{{8}}T\d{{6}}Z) "
                        r"- 5 min\.\)", answer["message"]), answer["message"]


def test_missing_x_amz_date(secured: Secured) -> None:
    url, headers, body = sign(secured.endpoint + "/", LIST, b"{}", **_admin())
    del headers["X-Amz-Date"]
    status, answer = send(url, headers, body)
    assert (status, answer["__type"]) == (400, "IncompleteSignatureException")
    assert answer["message"] == ("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                                 f"header. Authorization={headers['Authorization']}")


def test_signature_for_another_service(secured: Secured) -> None:
    status, body = call(secured.endpoint, LIST, {}, service="kinesis", **_admin())
    assert (status, body["__type"], body["message"]) == (
        400, "InvalidSignatureException", "Credential should be scoped to correct service: 'firehose'.")


def test_signature_for_another_region(secured: Secured) -> None:
    status, body = call(secured.endpoint, LIST, {}, region="eu-west-1", **_admin())
    assert (status, body["__type"], body["message"]) == (
        400, "InvalidSignatureException", "Credential should be scoped to a valid region, not 'eu-west-1'.")


def test_presigned_url_expired(secured: Secured) -> None:
    signed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
    url, headers, body = sign(secured.endpoint + "/", LIST, b"{}", at=signed_at, presign_expires=60, **_admin())
    status, answer = send(url, headers, body)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    assert answer["message"].startswith("Signature expired:"), answer["message"]
    url, headers, body = sign(secured.endpoint + "/", LIST, b"{}", presign_expires=60, **_admin())
    assert send(url, headers, body)[0] == 200


def test_kinesis_refuses_unsigned_requests_in_its_own_wire_form(secured: Secured) -> None:
    import cbor2

    response = httpx.post(secured.kinesis_endpoint + "/", content=cbor2.dumps({}), headers={
        "Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"})
    assert response.status_code == 400
    assert cbor2.loads(response.content) == {"__type": "MissingAuthenticationTokenException",
                                             "message": "Missing Authentication Token"}
    status, body = call(secured.kinesis_endpoint, "Kinesis_20131202.ListStreams", {}, **_admin())
    assert (status, body["__type"]) == (400, "InvalidSignatureException")  # signed for firehose, not kinesis
    status, body = call(secured.kinesis_endpoint, "Kinesis_20131202.ListStreams", {}, service="kinesis", **_admin())
    assert status == 200 and "StreamNames" in body


# -- policies --------------------------------------------------------------------------------


def test_a_least_privilege_principal_may_only_put_to_its_streams(secured: Secured) -> None:
    app = secured.firehose("app")
    assert app.put_record(DeliveryStreamName="app-events", Record={"Data": b"ok\n"})["RecordId"]
    with pytest.raises(app.exceptions.ClientError) as exc:
        app.delete_delivery_stream(DeliveryStreamName="app-events")
    assert error(exc) == (
        "AccessDeniedException",
        f"User: arn:aws:iam::{HOME}:user/app is not authorized to perform: firehose:DeleteDeliveryStream on "
        f"resource: arn:aws:firehose:{REGION}:{HOME}:deliverystream/app-events because no identity-based policy "
        "allows the firehose:DeleteDeliveryStream action", 400)
    with pytest.raises(app.exceptions.ClientError) as exc:
        app.list_delivery_streams()
    assert error(exc)[0] == "AccessDeniedException" and "on resource: *" in error(exc)[1]
    with pytest.raises(app.exceptions.ClientError) as exc:
        app.put_record(DeliveryStreamName="billing", Record={"Data": b"x"})
    assert error(exc)[0] == "AccessDeniedException"


def test_an_explicit_deny_wins_over_an_allow(secured: Secured) -> None:
    careful = secured.firehose("careful")
    careful.create_delivery_stream(**local_stream("careful-stream"))
    with pytest.raises(careful.exceptions.ClientError) as exc:
        careful.delete_delivery_stream(DeliveryStreamName="careful-stream")
    assert error(exc)[:2] == (
        "AccessDeniedException",
        f"User: arn:aws:iam::{HOME}:user/careful is not authorized to perform: firehose:DeleteDeliveryStream on "
        f"resource: arn:aws:firehose:{REGION}:{HOME}:deliverystream/careful-stream with an explicit deny in an "
        "identity-based policy")
    secured.firehose("admin").delete_delivery_stream(DeliveryStreamName="careful-stream")


# -- accounts ----------------------------------------------------------------------------------


def test_two_accounts_never_see_each_others_streams(secured: Secured) -> None:
    admin, other = secured.firehose("admin"), secured.firehose("other")
    # A declared stream belongs to the home account (the first principal's) unless it names another.
    assert other.list_delivery_streams()["DeliveryStreamNames"] == ["partner-feed"]
    assert admin.list_delivery_streams()["DeliveryStreamNames"] == ["app-events"]
    with pytest.raises(other.exceptions.ResourceNotFoundException) as exc:
        other.describe_delivery_stream(DeliveryStreamName="app-events")
    assert error(exc)[1] == f"Firehose app-events under account {OTHER_ACCOUNT} not found."
    with pytest.raises(other.exceptions.ResourceNotFoundException):
        other.put_record(DeliveryStreamName="app-events", Record={"Data": b"sneaky\n"})
    with pytest.raises(other.exceptions.ResourceNotFoundException):
        other.delete_delivery_stream(DeliveryStreamName="app-events")
    # The same name in the other account is another stream.
    created = other.create_delivery_stream(**local_stream("app-events"))
    assert created["DeliveryStreamARN"] == f"arn:aws:firehose:{REGION}:{OTHER_ACCOUNT}:deliverystream/app-events"
    other.put_record(DeliveryStreamName="app-events", Record={"Data": b"theirs\n"})
    assert other.list_delivery_streams()["DeliveryStreamNames"] == ["app-events", "partner-feed"]
    other.delete_delivery_stream(DeliveryStreamName="app-events")
    assert other.list_delivery_streams()["DeliveryStreamNames"] == ["partner-feed"]
    assert admin.describe_delivery_stream(DeliveryStreamName="app-events")["DeliveryStreamDescription"][
        "DeliveryStreamStatus"] == "ACTIVE"


def test_kinesis_streams_are_per_account_too(secured: Secured) -> None:
    admin, other = secured.kinesis("admin"), secured.kinesis("other")
    assert "partner-kinesis" in other.list_streams()["StreamNames"]
    assert "partner-kinesis" not in admin.list_streams()["StreamNames"]
    admin.create_stream(StreamName="shared-name", ShardCount=1)
    other.create_stream(StreamName="shared-name", ShardCount=2)
    wait_until(lambda: admin.describe_stream_summary(StreamName="shared-name")["StreamDescriptionSummary"][
        "StreamStatus"] == "ACTIVE")
    mine = admin.describe_stream_summary(StreamName="shared-name")["StreamDescriptionSummary"]
    theirs = other.describe_stream_summary(StreamName="shared-name")["StreamDescriptionSummary"]
    assert (mine["OpenShardCount"], theirs["OpenShardCount"]) == (1, 2)
    assert theirs["StreamARN"] == f"arn:aws:kinesis:{REGION}:{OTHER_ACCOUNT}:stream/shared-name"
    admin.put_record(StreamName="shared-name", Data=b"mine", PartitionKey="p")
    iterator = admin.get_shard_iterator(StreamName="shared-name", ShardId="shardId-000000000000",
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(other.exceptions.ClientError) as exc:  # another account's iterator reads nothing
        other.get_records(ShardIterator=iterator)
    assert error(exc)[0] == "InvalidArgumentException"
    assert [r["Data"] for r in admin.get_records(ShardIterator=iterator)["Records"]] == [b"mine"]
    with pytest.raises(other.exceptions.ClientError) as exc:  # cross-account needs a resource policy
        other.describe_stream_summary(StreamARN=mine["StreamARN"])
    assert error(exc) == (
        "AccessDeniedException",
        f"User: arn:aws:iam::{OTHER_ACCOUNT}:user/other is not authorized to perform: kinesis:DescribeStreamSummary "
        f"on resource: {mine['StreamARN']} because no resource-based policy allows the "
        "kinesis:DescribeStreamSummary action", 400)
    admin.delete_stream(StreamName="shared-name")
    other.delete_stream(StreamName="shared-name")


# -- the operator's endpoints ---------------------------------------------------------------------


def test_health_is_open_and_details_need_an_operator(secured: Secured) -> None:
    assert httpx.get(secured.endpoint + "/healthz").status_code == 200
    minimal = httpx.get(secured.endpoint + "/readyz")
    assert minimal.status_code == 200 and minimal.json() == {"status": "ready"}
    bearer = {"Authorization": f"Bearer {SCRAPER_TOKEN}"}
    detailed = httpx.get(secured.endpoint + "/readyz", headers=bearer).json()
    assert "app-events" in detailed["streams"] and "destination" in detailed["streams"]["app-events"]
    assert httpx.get(secured.endpoint + "/metrics").status_code == 401
    assert httpx.get(secured.endpoint + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert b"firehose_incoming_records" in httpx.get(secured.endpoint + "/metrics", headers=bearer).content
    url, headers, _ = sign(secured.endpoint + "/metrics", None, b"", method="GET", **_admin())
    assert httpx.get(url, headers=headers).status_code == 200
    assert httpx.get(secured.endpoint + "/metrics.json").status_code == 401
    assert httpx.get(secured.endpoint + "/tap?stream=app-events").status_code == 401  # records: operators only
    assert "delivery_streams" in httpx.get(secured.endpoint + "/metrics.json", headers=bearer).json()["current"]
    assert "current" in httpx.get(secured.metrics_endpoint + "/metrics.json").json()
    # The separate listener serves everything to whoever can reach it (keep it private).
    assert "streams" in httpx.get(secured.metrics_endpoint + "/readyz").json()
    assert b"firehose_incoming_records" in httpx.get(secured.metrics_endpoint + "/metrics").content
    assert httpx.get(secured.kinesis_endpoint + "/metrics").status_code == 401


# -- the HTTP endpoint receiver ------------------------------------------------------------------


def test_the_receiver_accepts_sigv4_and_authorizes_it(secured: Secured) -> None:
    import base64

    payload = json.dumps({"requestId": "r-1", "timestamp": 1, "records": [
        {"data": base64.b64encode(b"relayed\n").decode()}]}).encode()
    url, headers, body = sign(secured.endpoint + "/http-endpoint/app-events", None, payload,
                              key=PRINCIPALS["app"]["access_key_id"], secret="app-secret",
                              content_type="application/json")
    assert httpx.post(url, headers=headers, content=body).status_code == 200
    url, headers, body = sign(secured.endpoint + "/http-endpoint/app-events", None, payload,
                              key=PRINCIPALS["app"]["access_key_id"], secret="wrong", content_type="application/json")
    refused = httpx.post(url, headers=headers, content=body)
    assert refused.status_code == 403 and "InvalidSignatureException" in refused.json()["errorMessage"]
    unsigned = httpx.post(secured.endpoint + "/http-endpoint/app-events", content=payload,
                          headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    other = sign(secured.endpoint + "/http-endpoint/app-events", None, payload, content_type="application/json",
                 key=PRINCIPALS["other"]["access_key_id"], secret="other-secret")
    assert httpx.post(other[0], headers=other[1], content=other[2]).status_code == 404  # not in its account


# -- listeners beyond loopback -----------------------------------------------------------------------


def test_a_listener_beyond_loopback_needs_authentication(tmp_path: Path) -> None:
    path = write_config(tmp_path / "open.yaml", {"host": "0.0.0.0", "port": free_port(),
                                                 "state_dir": str(tmp_path / "state")}, [])
    out = subprocess.run([sys.executable, "-m", "firehose", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "0.0.0.0" in out.stderr and "auth.mode: sigv4" in out.stderr and "Traceback" not in out.stderr
    checked = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 1 and "auth.mode: sigv4" in checked.stderr
    sidecar = subprocess.run([sys.executable, "-m", "firehose", "streams", "serve", "--host", "0.0.0.0", "--port",
                              str(free_port()), "--state-dir", str(tmp_path / "k")], capture_output=True, text=True,
                             timeout=60)
    assert sidecar.returncode == 2 and "auth.mode: sigv4" in sidecar.stderr


def test_a_bad_policy_is_a_config_error_naming_the_principal(tmp_path: Path) -> None:
    bad = {**PRINCIPALS["app"], "policies": [{"Version": "2012-10-17", "Statement": [{"Action": "firehose:*",
                                                                                      "Resource": "*"}]}]}
    path = write_config(tmp_path / "bad.yaml", {"auth": {"mode": "sigv4", "principals": [bad]},
                                                "state_dir": str(tmp_path / "state")}, [])
    checked = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 1 and "AKIAAPPKEY0000000001" in checked.stderr and "policies[0]" in checked.stderr


def test_none_mode_takes_the_account_from_a_numeric_key(start_daemon: Any) -> None:
    """With authentication off, a 12-digit access key id acts in that account (LocalStack's convention)."""
    d = start_daemon([local_stream("home-stream")])
    home = d.client()
    elsewhere = boto3.client("firehose", endpoint_url=d.endpoint, region_name=REGION,
                             aws_access_key_id="999988887777", aws_secret_access_key="any")
    assert home.list_delivery_streams()["DeliveryStreamNames"] == ["home-stream"]
    assert elsewhere.list_delivery_streams()["DeliveryStreamNames"] == []
    arn = elsewhere.create_delivery_stream(DeliveryStreamName="mine", ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"})["DeliveryStreamARN"]
    assert arn == f"arn:aws:firehose:{REGION}:999988887777:deliverystream/mine"
    assert home.list_delivery_streams()["DeliveryStreamNames"] == ["home-stream"]


def test_accounts_callers_bring_are_bounded(start_daemon: Any) -> None:
    """With authentication off each 12-digit key is an account with state of its own: at most
    MAX_UNNAMED_ACCOUNTS of them beyond those the configuration names, then LimitExceededException."""
    from firehose.accounts import MAX_UNNAMED_ACCOUNTS, PerAccount

    made: list[str] = []
    accounts = PerAccount("111111111111", lambda a: made.append(a) or a, named={"222222222222"})
    for i in range(MAX_UNNAMED_ACCOUNTS):
        accounts.for_caller(f"{300000000000 + i}")
    assert accounts.for_caller("222222222222") == "222222222222"  # named: not counted
    assert accounts.for_caller("300000000000") == "300000000000"  # known: no new state
    with pytest.raises(Exception) as exc:
        accounts.for_caller("999999999999")
    assert type(exc.value).__name__ == "LimitExceededException"
    assert "999999999999" not in made and len(made) == MAX_UNNAMED_ACCOUNTS + 2

    d = start_daemon([local_stream("home-stream")])
    def client(key: str) -> Any:
        return boto3.client("firehose", endpoint_url=d.endpoint, region_name=REGION, aws_access_key_id=key,
                            aws_secret_access_key="any", config=BotoConfig(retries={"max_attempts": 1}))
    for i in range(MAX_UNNAMED_ACCOUNTS):
        assert client(f"{500000000000 + i}").list_delivery_streams()["DeliveryStreamNames"] == []
    one_more = client("599999999999")
    with pytest.raises(one_more.exceptions.LimitExceededException):
        one_more.list_delivery_streams()
    assert client("500000000000").list_delivery_streams()["DeliveryStreamNames"] == []
    assert d.client().list_delivery_streams()["DeliveryStreamNames"] == ["home-stream"]


def test_the_allowed_clock_skew_is_a_setting(start_daemon: Any) -> None:
    """auth.clock_skew_seconds, for machines with poor clocks: 15 minutes here instead of AWS's 5."""
    d = start_daemon([], auth={"mode": "sigv4", "clock_skew_seconds": 900, "principals": [PRINCIPALS["admin"]]})
    six = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    assert send(*sign(d.endpoint + "/", LIST, b"{}", at=six, **_admin()))[0] == 200
    sixteen = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    status, body = send(*sign(d.endpoint + "/", LIST, b"{}", at=sixteen, **_admin()))
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert body["message"].endswith(" - 15 min.)"), body["message"]
