"""Resource-based policies on Kinesis streams: the CRUD operations, and cross-account access through them.

A sidecar with ``auth.mode: sigv4`` and principals in two accounts; boto3
clients sign as each. The owner's stream is reached from the other account by
its StreamARN, and only as far as the stream's policy (and the caller's own
identity policy) allow; an explicit Deny in either wins (security.md §9.2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config as BotoConfig

from tests.support.streams import StreamsServer, unique

REGION = "us-east-1"
OWNER = "111122223333"
PARTNER = "444455556666"


def _allow(actions: list[str] | str, resources: list[str] | str = "*") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


PRINCIPALS = {
    "owner": {"access_key_id": "AKIAOWNERKEY00000001", "secret": "owner-secret", "account_id": OWNER,
              "name": "owner", "policies": [_allow("kinesis:*")]},
    # Same account, no identity policy of its own: only a resource policy naming it can let it in.
    "colleague": {"access_key_id": "AKIACOLLEAGUE0000001", "secret": "colleague-secret", "account_id": OWNER,
                  "name": "colleague"},
    "partner": {"access_key_id": "AKIAPARTNERKEY000001", "secret": "partner-secret", "account_id": PARTNER,
                "name": "partner", "policies": [_allow("kinesis:*")]},
    # Another account's principal whose own account denies it writes.
    "restricted": {"access_key_id": "AKIARESTRICTED000001", "secret": "restricted-secret", "account_id": PARTNER,
                   "name": "restricted", "policies": [{"Version": "2012-10-17", "Statement": [
                       {"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"},
                       {"Effect": "Deny", "Action": "kinesis:PutRecord*", "Resource": "*"}]}]},
}
PARTNER_ARN = f"arn:aws:iam::{PARTNER}:user/partner"
RESTRICTED_ARN = f"arn:aws:iam::{PARTNER}:user/restricted"
COLLEAGUE_ARN = f"arn:aws:iam::{OWNER}:user/colleague"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    root = tmp_path_factory.mktemp("policies")
    config = root / "firehose.yaml"
    config.write_text(yaml.safe_dump({"auth": {"mode": "sigv4", "principals": list(PRINCIPALS.values())}}))
    server = StreamsServer(root / "state", root / "server.log", config=config)
    yield server
    server.stop()


def client(server: StreamsServer, who: str) -> Any:
    p = PRINCIPALS[who]
    return boto3.client("kinesis", endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id=p["access_key_id"], aws_secret_access_key=p["secret"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def error(exc: Any) -> tuple[str, str]:
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def policy(principal: str | list[str], actions: list[str], arn: str, effect: str = "Allow") -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Principal": {"AWS": principal}, "Action": actions, "Resource": arn}]})


def stream(server: StreamsServer) -> tuple[str, str]:
    name = unique("shared")
    owner = client(server, "owner")
    owner.create_stream(StreamName=name, ShardCount=1)
    return name, owner.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def denied(exc: Any, who: str, action: str, arn: str, why: str) -> None:
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error(exc) == ("AccessDeniedException",
                          f"User: {who} is not authorized to perform: kinesis:{action} on resource: {arn} {why}")


def test_get_put_delete_resource_policy(server: StreamsServer) -> None:
    owner = client(server, "owner")
    _name, arn = stream(server)
    assert owner.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
    with pytest.raises(owner.exceptions.ResourceNotFoundException) as exc:
        owner.delete_resource_policy(ResourceARN=arn)
    assert error(exc) == ("ResourceNotFoundException", f"No resource policy found for resource ARN {arn}.")
    text = policy(PARTNER_ARN, ["kinesis:DescribeStreamSummary"], arn)
    assert owner.put_resource_policy(ResourceARN=arn, Policy=text)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert owner.get_resource_policy(ResourceARN=arn)["Policy"] == text
    replacement = policy(PARTNER_ARN, ["kinesis:ListShards"], arn)
    owner.put_resource_policy(ResourceARN=arn, Policy=replacement)  # replaces
    assert owner.get_resource_policy(ResourceARN=arn)["Policy"] == replacement
    owner.delete_resource_policy(ResourceARN=arn)
    assert owner.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"


def test_policy_operations_refuse_what_aws_refuses(server: StreamsServer) -> None:
    owner = client(server, "owner")
    name, arn = stream(server)
    missing = arn.replace(name, name + "-gone")
    for call in (lambda: owner.get_resource_policy(ResourceARN=missing),
                 lambda: owner.put_resource_policy(ResourceARN=missing, Policy=policy("*", ["kinesis:*"], missing)),
                 lambda: owner.delete_resource_policy(ResourceARN=missing)):
        with pytest.raises(owner.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error(exc) == ("ResourceNotFoundException", f"Stream {missing} under account {OWNER} not found.")
    with pytest.raises(owner.exceptions.ClientError) as exc:  # the model's pattern (botocore checks no ARN here)
        owner.get_resource_policy(ResourceARN="arn:aws:s3:::bucket")
    assert error(exc) == ("ValidationException", "1 validation error detected: Value at 'resourceARN' failed to "
                          "satisfy constraint: Member must satisfy regular expression pattern: "
                          "arn:aws.*:kinesis:.*:\\d{12}:.*(stream|channel|queue)/\\S+")
    for bad, why in (("{not json", "The resource policy is not valid JSON: "),
                     (json.dumps({"Version": "2012-10-17", "Statement": [
                         {"Effect": "Allow", "Action": "kinesis:*", "Resource": arn}]}),
                      "Invalid resource policy: Statement[0]: a resource-based policy statement needs Principal"),
                     (json.dumps({"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kinesis:*",
                                                 "Resource": arn}]}),
                      "Invalid resource policy: Statement[0]: Effect must be 'Allow' or 'Deny'")):
        with pytest.raises(owner.exceptions.InvalidArgumentException) as exc:
            owner.put_resource_policy(ResourceARN=arn, Policy=bad)
        assert error(exc)[1].startswith(why)
    assert owner.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"  # nothing was stored
    # A consumer ARN is accepted by the model and names a consumer: none is registered.
    consumer = f"{arn}/consumer/c1:1700000000"
    with pytest.raises(owner.exceptions.ResourceNotFoundException):
        owner.get_resource_policy(ResourceARN=consumer)


def test_cross_account_access_needs_the_streams_policy(server: StreamsServer) -> None:
    owner, partner = client(server, "owner"), client(server, "partner")
    name, arn = stream(server)
    owner.put_record(StreamName=name, Data=b"from-owner", PartitionKey="k")
    # No policy: the partner's own allow of kinesis:* is not enough across accounts.
    with pytest.raises(partner.exceptions.ClientError) as exc:
        partner.describe_stream_summary(StreamARN=arn)
    denied(exc, PARTNER_ARN, "DescribeStreamSummary", arn,
           "because no resource-based policy allows the kinesis:DescribeStreamSummary action")
    # By name the partner only ever sees its own account, where there is no such stream.
    with pytest.raises(partner.exceptions.ResourceNotFoundException):
        partner.describe_stream_summary(StreamName=name)

    owner.put_resource_policy(ResourceARN=arn, Policy=policy(PARTNER_ARN, [
        "kinesis:DescribeStreamSummary", "kinesis:PutRecord", "kinesis:PutRecords", "kinesis:GetShardIterator",
        "kinesis:GetRecords", "kinesis:ListShards"], arn))
    summary = partner.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
    assert (summary["StreamName"], summary["StreamARN"]) == (name, arn)
    partner.put_record(StreamARN=arn, Data=b"from-partner", PartitionKey="k")
    assert partner.put_records(StreamARN=arn, Records=[{"Data": b"batch", "PartitionKey": "k"}])[
        "FailedRecordCount"] == 0
    (shard,) = partner.list_shards(StreamARN=arn)["Shards"]
    iterator = partner.get_shard_iterator(StreamARN=arn, ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = partner.get_records(ShardIterator=iterator, StreamARN=arn)["Records"]
    assert [r["Data"] for r in records] == [b"from-owner", b"from-partner", b"batch"]
    # The records went to the owner's stream, which the owner reads as usual.
    own = owner.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert len(owner.get_records(ShardIterator=own)["Records"]) == 3
    # What the policy does not grant stays refused.
    with pytest.raises(partner.exceptions.ClientError) as exc:
        partner.delete_stream(StreamARN=arn)
    denied(exc, PARTNER_ARN, "DeleteStream", arn, "because no resource-based policy allows the kinesis:DeleteStream "
           "action")
    # Only the owner's account manages the policy, whatever the policy says.
    owner.put_resource_policy(ResourceARN=arn, Policy=policy(PARTNER_ARN, ["kinesis:*"], arn))
    with pytest.raises(partner.exceptions.ClientError) as exc:
        partner.get_resource_policy(ResourceARN=arn)
    assert error(exc)[0] == "AccessDeniedException"
    with pytest.raises(partner.exceptions.ClientError) as exc:
        partner.delete_resource_policy(ResourceARN=arn)
    assert error(exc)[0] == "AccessDeniedException"

    # Removing the policy revokes the access at once.
    owner.delete_resource_policy(ResourceARN=arn)
    with pytest.raises(partner.exceptions.ClientError) as exc:
        partner.put_record(StreamARN=arn, Data=b"late", PartitionKey="k")
    denied(exc, PARTNER_ARN, "PutRecord", arn, "because no resource-based policy allows the kinesis:PutRecord action")
    assert len(owner.get_records(ShardIterator=own)["Records"]) == 3


def test_an_explicit_deny_in_either_policy_wins(server: StreamsServer) -> None:
    owner, partner, restricted = client(server, "owner"), client(server, "partner"), client(server, "restricted")
    _name, arn = stream(server)
    owner.put_resource_policy(ResourceARN=arn, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": PARTNER}, "Action": "kinesis:*", "Resource": arn},
        {"Effect": "Deny", "Principal": {"AWS": PARTNER_ARN}, "Action": "kinesis:PutRecord", "Resource": arn}]}))
    partner.describe_stream_summary(StreamARN=arn)  # the account is allowed ...
    with pytest.raises(partner.exceptions.ClientError) as exc:  # ... but this principal's writes denied
        partner.put_record(StreamARN=arn, Data=b"x", PartitionKey="k")
    denied(exc, PARTNER_ARN, "PutRecord", arn, "with an explicit deny in a resource-based policy")
    # The resource policy allows the whole account; restricted's own identity policy denies it writes.
    restricted.describe_stream_summary(StreamARN=arn)
    with pytest.raises(restricted.exceptions.ClientError) as exc:
        restricted.put_records(StreamARN=arn, Records=[{"Data": b"x", "PartitionKey": "k"}])
    denied(exc, RESTRICTED_ARN, "PutRecords", arn, "with an explicit deny in an identity-based policy")
    # The owner's own deny applies in its account too.
    owner.put_resource_policy(ResourceARN=arn, Policy=policy(f"arn:aws:iam::{OWNER}:user/owner",
                                                             ["kinesis:DeleteStream"], arn, "Deny"))
    with pytest.raises(owner.exceptions.ClientError) as exc:
        owner.delete_stream(StreamARN=arn)
    denied(exc, f"arn:aws:iam::{OWNER}:user/owner", "DeleteStream", arn,
           "with an explicit deny in a resource-based policy")
    owner.delete_resource_policy(ResourceARN=arn)
    owner.delete_stream(StreamARN=arn)


def test_in_the_owners_account_either_policy_allows(server: StreamsServer) -> None:
    owner, colleague = client(server, "owner"), client(server, "colleague")
    name, arn = stream(server)
    with pytest.raises(colleague.exceptions.ClientError) as exc:  # no identity policy, no resource policy
        colleague.describe_stream_summary(StreamName=name)
    denied(exc, COLLEAGUE_ARN, "DescribeStreamSummary", arn,
           "because no identity-based policy allows the kinesis:DescribeStreamSummary action")
    owner.put_resource_policy(ResourceARN=arn, Policy=policy(COLLEAGUE_ARN, ["kinesis:DescribeStreamSummary"], arn))
    assert colleague.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamName"] == name
    with pytest.raises(colleague.exceptions.ClientError):
        colleague.put_record(StreamName=name, Data=b"x", PartitionKey="k")


def test_a_policy_survives_a_restart(server: StreamsServer, tmp_path: Path) -> None:
    owner = client(server, "owner")
    _name, arn = stream(server)
    text = policy(PARTNER_ARN, ["kinesis:DescribeStreamSummary"], arn)
    owner.put_resource_policy(ResourceARN=arn, Policy=text)
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait()  # type: ignore[union-attr]
    server.start()
    assert client(server, "owner").get_resource_policy(ResourceARN=arn)["Policy"] == text
    assert client(server, "partner").describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"][
        "StreamARN"] == arn
