"""The Kinesis Analytics API behind the shared front door with ``auth.mode: sigv4``: signatures scoped to
``kinesisanalytics``, ``kinesisanalytics:<Operation>`` actions on application ARNs in IAM-style policies,
accounts as walls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from firehose.settings import load_config
from tests.support.analytics import app_body, error
from tests.support.config import write_config
from tests.support.daemon import RunningDaemon
from tests.support.ports import free_port

REGION = "us-east-1"
HOME = "111122223333"
OTHER = "444455556666"
APPS = f"arn:aws:kinesisanalytics:{REGION}:{HOME}:application"


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


PRINCIPALS = {
    "admin": {"access_key_id": "AKIAADMINKEY00000001", "secret": "admin-secret", "account_id": HOME, "name": "admin",
              "policies": [_policy({"Effect": "Allow", "Action": "kinesisanalytics:*", "Resource": "*"},
                                   {"Effect": "Deny", "Action": "kinesisanalytics:DeleteApplication",
                                    "Resource": f"{APPS}/keep-*"})]},
    "reader": {"access_key_id": "AKIAREADERKEY0000001", "secret": "reader-secret", "account_id": HOME,
               "name": "reader", "policies": [_policy(
                   {"Effect": "Allow", "Action": ["kinesisanalytics:Describe*", "kinesisanalytics:ListApplications"],
                    "Resource": f"{APPS}/ticker-*"},
                   {"Effect": "Allow", "Action": "kinesisanalytics:ListApplications", "Resource": "*"})]},
    "firehose-only": {"access_key_id": "AKIAFIREHOSEKEY00001", "secret": "fh-secret", "account_id": HOME,
                      "name": "firehose-only", "policies": [_policy(
                          {"Effect": "Allow", "Action": "firehose:*", "Resource": "*"})]},
    "other": {"access_key_id": "AKIAOTHERKEY00000001", "secret": "other-secret", "account_id": OTHER, "name": "other",
              "policies": [_policy({"Effect": "Allow", "Action": "kinesisanalytics:*", "Resource": "*"})]},
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("secured-analytics")
    settings = {"port": free_port(), "state_dir": str(root / "state"), "log_level": "WARNING",
                "auth": {"mode": "sigv4", "principals": list(PRINCIPALS.values())}}
    daemon = RunningDaemon(load_config(write_config(root / "firehose.yaml", settings, [])))
    yield daemon
    daemon.stop()


def client(daemon: RunningDaemon, who: str, service: str = "kinesisanalytics") -> Any:
    p = PRINCIPALS[who]
    return boto3.client(service, endpoint_url=daemon.endpoint, region_name=REGION,
                        aws_access_key_id=p["access_key_id"], aws_secret_access_key=p["secret"],
                        config=BotoConfig(retries={"max_attempts": 1}))


def test_policies_allow_and_deny_by_action_and_application(secured: RunningDaemon) -> None:
    admin, reader = client(secured, "admin"), client(secured, "reader")
    for name in ("ticker-stats", "keep-forever"):
        admin.create_application(**app_body(name))
    assert reader.describe_application(ApplicationName="ticker-stats")["ApplicationDetail"]["ApplicationARN"] == \
        f"{APPS}/ticker-stats"
    assert len(reader.list_applications()["ApplicationSummaries"]) == 2
    with pytest.raises(ClientError) as exc:
        reader.describe_application(ApplicationName="keep-forever")
    assert error(exc) == ("AccessDeniedException", f"User: arn:aws:iam::{HOME}:user/reader is not authorized to "
                          f"perform: kinesisanalytics:DescribeApplication on resource: {APPS}/keep-forever because "
                          "no identity-based policy allows the kinesisanalytics:DescribeApplication action", 400)
    with pytest.raises(ClientError) as exc:
        reader.create_application(ApplicationName="ticker-new")
    assert error(exc)[0] == "AccessDeniedException"
    created = admin.describe_application(ApplicationName="keep-forever")["ApplicationDetail"]["CreateTimestamp"]
    with pytest.raises(ClientError) as exc:
        admin.delete_application(ApplicationName="keep-forever", CreateTimestamp=created)
    assert error(exc) == ("AccessDeniedException", f"User: arn:aws:iam::{HOME}:user/admin is not authorized to "
                          f"perform: kinesisanalytics:DeleteApplication on resource: {APPS}/keep-forever with an "
                          "explicit deny in an identity-based policy", 400)
    with pytest.raises(ClientError) as exc:  # the tag operations are authorized on the ARN they name
        reader.tag_resource(ResourceARN=f"{APPS}/ticker-stats", Tags=[{"Key": "k", "Value": "v"}])
    assert error(exc)[1].endswith("no identity-based policy allows the kinesisanalytics:TagResource action")


def test_firehose_actions_grant_nothing_here_and_accounts_are_walls(secured: RunningDaemon) -> None:
    with pytest.raises(ClientError) as exc:
        client(secured, "firehose-only").list_applications()
    assert error(exc) == ("AccessDeniedException", f"User: arn:aws:iam::{HOME}:user/firehose-only is not authorized "
                          "to perform: kinesisanalytics:ListApplications on resource: * because no identity-based "
                          "policy allows the kinesisanalytics:ListApplications action", 400)
    client(secured, "admin").create_application(ApplicationName="home-only")
    other = client(secured, "other")
    assert other.list_applications()["ApplicationSummaries"] == []
    other.create_application(ApplicationName="home-only")  # the same name, in another account
    assert other.describe_application(ApplicationName="home-only")["ApplicationDetail"]["ApplicationARN"] == \
        f"arn:aws:kinesisanalytics:{REGION}:{OTHER}:application/home-only"


def test_signatures_are_checked_and_scoped_to_kinesisanalytics(secured: RunningDaemon) -> None:
    p = PRINCIPALS["admin"]
    wrong = boto3.client("kinesisanalytics", endpoint_url=secured.endpoint, region_name=REGION,
                         aws_access_key_id=p["access_key_id"], aws_secret_access_key="not-the-secret",
                         config=BotoConfig(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as exc:
        wrong.list_applications()
    assert error(exc)[0] == "InvalidSignatureException"
    # A Firehose-signed request (scope service "firehose") is not a Kinesis Analytics request.
    request = AWSRequest(method="POST", url=f"{secured.endpoint}/", data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "KinesisAnalytics_20150814.ListApplications"})
    SigV4Auth(Credentials(p["access_key_id"], p["secret"]), "firehose", REGION).add_auth(request)
    answer = httpx.post(f"{secured.endpoint}/", content=b"{}", headers=dict(request.headers.items()))
    assert answer.status_code == 400
    assert answer.json()["__type"] == "InvalidSignatureException"
    assert "Credential should be scoped to correct service: 'kinesisanalytics'." in answer.json()["message"]
    # Unsigned: the front door's answer, as for the other APIs.
    answer = httpx.post(f"{secured.endpoint}/", content=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "KinesisAnalytics_20150814.ListApplications"})
    assert (answer.status_code, answer.json()["__type"]) == (400, "MissingAuthenticationTokenException")
