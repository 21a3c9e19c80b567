"""The Kinesis API through boto3 (and the AWS CLI) against the real ``firehose streams serve`` process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from typing import Any

import botocore.exceptions
import httpx
import pytest

from firehose.streams.hashkeys import MAX_HASH_KEY
from tests.support.aws import CREDS
from tests.support.streams import StreamsServer, read_all, read_shard, unique
from tests.support.waiting import wait_until


def error_of(exc_info: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    err = exc_info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_create_describe_list_and_delete(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=3, Tags={"team": "data"})
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 3
    assert summary["RetentionPeriodHours"] == 24
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert summary["StreamARN"] == f"arn:aws:kinesis:us-east-1:123456789012:stream/{name}"
    desc = kinesis.describe_stream(StreamName=name)["StreamDescription"]
    assert [s["ShardId"] for s in desc["Shards"]] == [f"shardId-{i:012d}" for i in range(3)]
    assert desc["HasMoreShards"] is False
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in desc["Shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == MAX_HASH_KEY
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all("EndingSequenceNumber" not in s["SequenceNumberRange"] for s in desc["Shards"])
    # StreamARN works wherever StreamName does
    by_arn = kinesis.describe_stream_summary(StreamARN=summary["StreamARN"])["StreamDescriptionSummary"]
    assert by_arn["StreamName"] == name
    assert name in kinesis.list_streams()["StreamNames"]
    assert any(s["StreamName"] == name for s in kinesis.list_streams()["StreamSummaries"])
    assert kinesis.list_tags_for_stream(StreamName=name)["Tags"] == [{"Key": "team", "Value": "data"}]
    kinesis.delete_stream(StreamName=name)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as exc:
        kinesis.describe_stream(StreamName=name)
    assert error_of(exc) == ("ResourceNotFoundException", f"Stream {name} under account 123456789012 not found.",
                             400)


def test_on_demand_stream_has_four_shards_and_refuses_resharding(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert summary["OpenShardCount"] == 4
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey="10")
    assert error_of(exc)[0] == "ValidationException"


def test_put_and_get_every_record_exactly_once_in_order(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=4)
    sent: dict[str, tuple[str, bytes]] = {}
    for batch in range(4):
        records = [{"Data": f"{batch}-{i}".encode() * 10, "PartitionKey": f"key-{i % 37}"} for i in range(250)]
        resp = kinesis.put_records(StreamName=name, Records=records)
        assert resp["FailedRecordCount"] == 0
        for rec, res in zip(records, resp["Records"], strict=True):
            sent[res["SequenceNumber"]] = (res["ShardId"], rec["Data"])
            assert len(res["SequenceNumber"]) == 56
    got = {}
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        records = read_shard(kinesis, name, shard["ShardId"])
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "strictly increasing within a shard"
        for r in records:
            got[r["SequenceNumber"]] = (shard["ShardId"], r["Data"])
    assert got == sent


def test_partition_keys_route_by_md5_and_explicit_hash_key(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=4)
    shards = kinesis.list_shards(StreamName=name)["Shards"]

    def owner(h: int) -> str:
        return next(s["ShardId"] for s in shards
                    if int(s["HashKeyRange"]["StartingHashKey"]) <= h <= int(s["HashKeyRange"]["EndingHashKey"]))

    for key in ("alpha", "beta", "gamma", "delta", "ünïcode"):
        expected = owner(int.from_bytes(hashlib.md5(key.encode()).digest(), "big"))
        assert kinesis.put_record(StreamName=name, Data=b"x", PartitionKey=key)["ShardId"] == expected
    assert kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="any",
                              ExplicitHashKey=str(MAX_HASH_KEY))["ShardId"] == "shardId-000000000003"
    assert kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="any",
                              ExplicitHashKey="0")["ShardId"] == "shardId-000000000000"
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="any", ExplicitHashKey=str(MAX_HASH_KEY + 1))
    assert "ExplicitHashKey must be in the range" in error_of(exc)[1]


def test_a_shards_starting_sequence_number_comes_before_its_first_record(kinesis: Any) -> None:
    """As on AWS: AT and AFTER the shard's StartingSequenceNumber both begin at its first record, and a
    closed shard that never held one ends where it starts."""
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=2)
    shards = kinesis.list_shards(StreamName=name)["Shards"]
    shard, empty = shards[0], shards[1]
    start = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    sent = [kinesis.put_record(StreamName=name, Data=b"r%d" % i, PartitionKey="k",
                               ExplicitHashKey="0")["SequenceNumber"] for i in range(3)]
    assert all(int(start) < int(seq) for seq in sent)
    for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        got = read_shard(kinesis, name, shard["ShardId"], kind, StartingSequenceNumber=start)
        assert [r["SequenceNumber"] for r in got] == sent, kind
    after_first = read_shard(kinesis, name, shard["ShardId"], "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=sent[0])
    assert [r["Data"] for r in after_first] == [b"r1", b"r2"]
    kinesis.merge_shards(StreamName=name, ShardToMerge=shard["ShardId"], AdjacentShardToMerge=empty["ShardId"])
    closed = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=name)["Shards"]}[empty["ShardId"]]
    assert closed["SequenceNumberRange"]["EndingSequenceNumber"] == \
        closed["SequenceNumberRange"]["StartingSequenceNumber"]


def test_iterator_types_limit_and_millis_behind(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    shard = "shardId-000000000000"
    first = [kinesis.put_record(StreamName=name, Data=f"a{i}".encode(), PartitionKey="k")["SequenceNumber"]
             for i in range(5)]
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    latest = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    second = [kinesis.put_record(StreamName=name, Data=f"b{i}".encode(), PartitionKey="k")["SequenceNumber"]
              for i in range(5)]

    assert [r["SequenceNumber"] for r in read_shard(kinesis, name, shard)] == first + second
    at = read_shard(kinesis, name, shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=first[2])
    assert [r["Data"] for r in at] == [b"a2", b"a3", b"a4"] + [f"b{i}".encode() for i in range(5)]
    after = read_shard(kinesis, name, shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=first[4])
    assert [r["SequenceNumber"] for r in after] == second
    ts = read_shard(kinesis, name, shard, "AT_TIMESTAMP", Timestamp=middle)
    assert [r["SequenceNumber"] for r in ts] == second
    resp = kinesis.get_records(ShardIterator=latest)
    assert [r["SequenceNumber"] for r in resp["Records"]] == second

    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=it, Limit=3)
    assert [r["Data"] for r in page["Records"]] == [b"a0", b"a1", b"a2"]
    assert page["MillisBehindLatest"] > 0
    assert isinstance(page["Records"][0]["ApproximateArrivalTimestamp"].timestamp(), float)
    rest = kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=10000)
    assert len(rest["Records"]) == 7 and rest["MillisBehindLatest"] == 0
    empty = kinesis.get_records(ShardIterator=rest["NextShardIterator"])
    assert empty["Records"] == [] and empty["MillisBehindLatest"] == 0 and empty["NextShardIterator"]


def test_validation_and_limits_have_aws_errors(kinesis: Any, streams_server: StreamsServer) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=2)
    cases: list[tuple[Any, str, str]] = [
        (lambda: kinesis.create_stream(StreamName="bad name!", ShardCount=1), "ValidationException",
         "Member must satisfy regular expression pattern"),
        (lambda: kinesis.create_stream(StreamName="x" * 129, ShardCount=1), "ValidationException",
         "Member must have length less than or equal to 128"),
        (lambda: kinesis.create_stream(StreamName=name, ShardCount=1), "ResourceInUseException",
         f"Stream {name} under account 123456789012 already exists."),
        (lambda: kinesis.put_record(StreamName="nope-" + name, Data=b"x", PartitionKey="k"),
         "ResourceNotFoundException", "not found"),
        (lambda: kinesis.put_record(StreamName=name, Data=b"x" * (1024 * 1024), PartitionKey="k"),
         "ValidationException", "Member must have length less than or equal to"),
        (lambda: kinesis.put_records(StreamName=name, Records=[{"Data": b"x", "PartitionKey": "k"}] * 501),
         "ValidationException", "Member must have length less than or equal to 500"),
        (lambda: kinesis.put_records(StreamName=name, Records=[{"Data": b"x" * (1000 * 1024), "PartitionKey": "k"}]
                                     * 6), "InvalidArgumentException", "Records size exceeds 5 MB limit"),
        (lambda: kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k" * 257), "ValidationException",
         "partitionKey"),
        (lambda: kinesis.get_records(ShardIterator="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
         "InvalidArgumentException", "Invalid ShardIterator."),
        (lambda: kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000009",
                                            ShardIteratorType="LATEST"), "ResourceNotFoundException",
         "Shard shardId-000000000009 in stream"),
        (lambda: kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                            ShardIteratorType="AT_SEQUENCE_NUMBER"), "InvalidArgumentException",
         "StartingSequenceNumber"),
        (lambda: kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber="123"),
         "InvalidArgumentException", "is invalid"),
        (lambda: kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=8761),
         "InvalidArgumentException", "Maximum allowed retention period is 8760 hours"),
        (lambda: kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=23),
         "InvalidArgumentException", "Minimum allowed retention period is 24 hours"),
        (lambda: kinesis.update_shard_count(StreamName=name, TargetShardCount=5, ScalingType="UNIFORM_SCALING"),
         "InvalidArgumentException", "over double"),
        (lambda: kinesis.merge_shards(StreamName=name, ShardToMerge="shardId-000000000000",
                                      AdjacentShardToMerge="shardId-000000000000"), "InvalidArgumentException",
         "not an adjacent pair"),
        (lambda: kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey="0"),
         "InvalidArgumentException", "NewStartingHashKey"),
    ]
    for call, code, fragment in cases:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            call()
        got_code, message, status = error_of(exc)
        assert (got_code, status) == (code, 400), (code, message)
        assert fragment in message, message
    # the server is still up and the stream intact
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_limit_above_10000_is_a_validation_error(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    it = kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                    ShardIteratorType="LATEST")["ShardIterator"]
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.get_records(ShardIterator=it, Limit=10001)
    assert error_of(exc)[0] == "ValidationException"


def test_sequence_number_from_another_shard_is_refused(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=2)
    seq = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k", ExplicitHashKey="0")["SequenceNumber"]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000001",
                                   ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq)
    assert error_of(exc)[1] == ("Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was used "
                                "in a call to a shard with shardId-000000000001")


def test_sequence_number_of_an_earlier_stream_of_the_same_name_is_refused(kinesis: Any) -> None:
    """A checkpoint kept across a stream's deletion and re-creation under its name is refused as AWS refuses
    it (readers such as KCL then start over)."""
    name, other = unique(), unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.create_stream(StreamName=other, ShardCount=1)
    old = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k")["SequenceNumber"]
    foreign = kinesis.put_record(StreamName=other, Data=b"y", PartitionKey="k")["SequenceNumber"]
    kinesis.delete_stream(StreamName=name)
    wait_until(lambda: name not in kinesis.list_streams()["StreamNames"], timeout=10)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    wait_until(lambda: kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
               == "ACTIVE", timeout=10)
    kinesis.put_record(StreamName=name, Data=b"new", PartitionKey="k")
    for seq in (old, foreign):
        for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
                kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000", ShardIteratorType=kind,
                                           StartingSequenceNumber=seq)
            assert error_of(exc) == ("InvalidArgumentException", f"StartingSequenceNumber {seq} used in "
                                     f"GetShardIterator on shard shardId-000000000000 in stream {name} under account "
                                     "123456789012 is invalid because it did not come from this stream.", 400)
    assert [r["Data"] for r in read_shard(kinesis, name, "shardId-000000000000")] == [b"new"]


def test_malformed_requests_never_take_the_server_down(streams_server: StreamsServer, kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    url = streams_server.endpoint

    def post(body: bytes, target: str = "Kinesis_20131202.PutRecord",
             ctype: str = "application/x-amz-json-1.1") -> httpx.Response:
        return httpx.post(url, content=body, headers={"X-Amz-Target": target, "Content-Type": ctype})

    bad_b64 = post(json.dumps({"StreamName": name, "PartitionKey": "k", "Data": "%%%notbase64"}).encode())
    assert bad_b64.status_code == 400 and bad_b64.json()["__type"] == "SerializationException"
    assert post(b"{not json").json()["__type"] == "SerializationException"
    assert post(b"[]").json()["__type"] == "SerializationException"
    assert post(b"{}", target="Kinesis_20131202.Nope").json()["__type"] == "UnknownOperationException"
    wrong_type = post(json.dumps({"StreamName": 5}).encode(), target="Kinesis_20131202.DescribeStream")
    assert wrong_type.status_code == 400 and wrong_type.json()["__type"] == "SerializationException"
    records = post(json.dumps({"StreamName": name, "Records": "x"}).encode(), target="Kinesis_20131202.PutRecords")
    assert records.json()["__type"] == "SerializationException"
    assert kinesis.put_record(StreamName=name, Data=b"ok", PartitionKey="k")["ShardId"] == "shardId-000000000000"


def test_shard_limit_is_enforced(start_streams_server: Any) -> None:
    server = start_streams_server({"kinesis": {"shard_limit": 5}})
    client = server.client()
    client.create_stream(StreamName="a", ShardCount=4)
    with pytest.raises(client.exceptions.LimitExceededException) as exc:
        client.create_stream(StreamName="b", ShardCount=2)
    assert "would exceed the shard limit for the account 123456789012" in error_of(exc)[1]
    with pytest.raises(client.exceptions.LimitExceededException):
        client.update_shard_count(StreamName="a", TargetShardCount=8, ScalingType="UNIFORM_SCALING")
    # 4 → 5 would end with 5 open, within the limit, but splits all 4 first: 8 open for a moment
    with pytest.raises(client.exceptions.LimitExceededException) as exc:
        client.update_shard_count(StreamName="a", TargetShardCount=5, ScalingType="UNIFORM_SCALING")
    assert "Number of additional shards that would have resulted from this request: 4." in error_of(exc)[1]
    client.create_stream(StreamName="c", ShardCount=1)


def test_status_delays_and_operations_on_streams_not_active(start_streams_server: Any) -> None:
    server = start_streams_server({"kinesis": {"create_delay_seconds": 3, "update_delay_seconds": 2}})
    client = server.client()
    client.create_stream(StreamName="slow", ShardCount=2)
    summary = client.describe_stream_summary(StreamName="slow")["StreamDescriptionSummary"]
    assert (summary["StreamStatus"], summary["OpenShardCount"]) == ("CREATING", 0)
    # AWS describes a stream being created without shards (kinesalite recorded it)
    description = client.describe_stream(StreamName="slow")["StreamDescription"]
    assert (description["StreamStatus"], description["Shards"], description["HasMoreShards"]) == ("CREATING", [], False)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_record(StreamName="slow", Data=b"x", PartitionKey="k")
    with pytest.raises(client.exceptions.ResourceInUseException) as exc:
        client.split_shard(StreamName="slow", ShardToSplit="shardId-000000000000", NewStartingHashKey="12345")
    assert "not ACTIVE, instead in state CREATING" in error_of(exc)[1]
    for i in range(4):
        client.create_stream(StreamName=f"slow-{i}", ShardCount=1)
    with pytest.raises(client.exceptions.LimitExceededException):  # AWS: at most 5 streams CREATING at once
        client.create_stream(StreamName="one-too-many", ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName="slow", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    assert len(client.describe_stream(StreamName="slow")["StreamDescription"]["Shards"]) == 2
    client.split_shard(StreamName="slow", ShardToSplit="shardId-000000000000", NewStartingHashKey="12345")
    assert client.describe_stream_summary(StreamName="slow")["StreamDescriptionSummary"]["StreamStatus"] == "UPDATING"
    client.put_record(StreamName="slow", Data=b"x", PartitionKey="k")  # writes still work while UPDATING
    assert len(client.list_shards(StreamName="slow")["Shards"]) == 2  # the change lands after the delay
    client.get_waiter("stream_exists").wait(StreamName="slow", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    assert len(client.list_shards(StreamName="slow")["Shards"]) == 4


def test_retention_increase_and_decrease(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=168)
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 168
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as exc:
        kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    assert "can not be shorter than existing retention period (168 hours)" in error_of(exc)[1]
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
    assert kinesis.describe_stream(StreamName=name)["StreamDescription"]["RetentionPeriodHours"] == 24


def test_tags(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.add_tags_to_stream(StreamName=name, Tags={f"k{i:02d}": str(i) for i in range(30)})
    page = kinesis.list_tags_for_stream(StreamName=name, Limit=10)
    assert [t["Key"] for t in page["Tags"]] == [f"k{i:02d}" for i in range(10)] and page["HasMoreTags"]
    rest = kinesis.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey="k09")
    assert len(rest["Tags"]) == 20 and not rest["HasMoreTags"]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.add_tags_to_stream(StreamName=name, Tags={f"x{i}": "v" for i in range(21)})
    kinesis.remove_tags_from_stream(StreamName=name, TagKeys=[f"k{i:02d}" for i in range(25)])
    assert [t["Key"] for t in kinesis.list_tags_for_stream(StreamName=name)["Tags"]] == [f"k{i}" for i in
                                                                                        range(25, 30)]


def test_list_shards_pagination_and_filters(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=3)
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**120))
    page = kinesis.list_shards(StreamName=name, MaxResults=2)
    assert [s["ShardId"] for s in page["Shards"]] == ["shardId-000000000000", "shardId-000000000001"]
    rest = kinesis.list_shards(NextToken=page["NextToken"])
    assert [s["ShardId"] for s in rest["Shards"]] == [f"shardId-{i:012d}" for i in (2, 3, 4)]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.list_shards(StreamName=name, NextToken=page["NextToken"])
    latest = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert [s["ShardId"] for s in latest] == [f"shardId-{i:012d}" for i in (1, 2, 3, 4)]
    after = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AFTER_SHARD_ID",
                                                              "ShardId": "shardId-000000000002"})["Shards"]
    assert [s["ShardId"] for s in after] == ["shardId-000000000003", "shardId-000000000004"]
    horizon = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "FROM_TRIM_HORIZON"})["Shards"]
    assert len(horizon) == 5
    many = kinesis.list_streams(Limit=1)
    assert len(many["StreamNames"]) == 1 and many["HasMoreStreams"] and many["NextToken"]


def test_split_merge_and_scaling_keep_lineage_and_every_record(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=2)
    sent: list[bytes] = []

    def put(tag: str) -> None:
        records = [{"Data": f"{tag}-{i}".encode(), "PartitionKey": f"p{i}"} for i in range(200)]
        assert kinesis.put_records(StreamName=name, Records=records)["FailedRecordCount"] == 0
        sent.extend(r["Data"] for r in records)

    put("before")
    kinesis.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
    put("split")
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=name)["Shards"]}
    parent = shards["shardId-000000000000"]
    assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
    assert shards["shardId-000000000002"]["ParentShardId"] == "shardId-000000000000"
    assert shards["shardId-000000000002"]["HashKeyRange"] == {"StartingHashKey": "0",
                                                              "EndingHashKey": str(2**126 - 1)}
    assert shards["shardId-000000000003"]["HashKeyRange"]["StartingHashKey"] == str(2**126)
    kinesis.merge_shards(StreamName=name, ShardToMerge="shardId-000000000003",
                         AdjacentShardToMerge="shardId-000000000001")
    put("merged")
    merged = kinesis.list_shards(StreamName=name)["Shards"][-1]
    assert merged["ParentShardId"] == "shardId-000000000003"
    assert merged["AdjacentParentShardId"] == "shardId-000000000001"
    resp = kinesis.update_shard_count(StreamName=name, TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    assert resp["CurrentShardCount"] == 2 and resp["TargetShardCount"] == 3
    put("scaled")
    open_shards = kinesis.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert len(open_shards) == 3
    starts = sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in open_shards)
    # every open shard split at its middle, then the lowest pair merged back (AWS's totals, §4.3 of the spec)
    assert starts == [0, 2**126, 2**127 + 2**125]
    # a closed shard read to its end: no next iterator, and its children named
    it = kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    resp = kinesis.get_records(ShardIterator=it)
    assert resp["Records"] and "NextShardIterator" not in resp
    assert sorted(c["ShardId"] for c in resp["ChildShards"]) == ["shardId-000000000002", "shardId-000000000003"]
    assert resp["ChildShards"][0]["ParentShards"] == ["shardId-000000000000"]
    # every parent and child together hold every record once
    assert sorted(r["Data"] for r in read_all(kinesis, name)) == sorted(sent)
    # writes never go to closed shards
    closed = {s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]
              if "EndingSequenceNumber" in s["SequenceNumberRange"]}
    res = kinesis.put_records(StreamName=name, Records=[{"Data": b"z", "PartitionKey": f"q{i}"} for i in range(50)])
    assert not {r["ShardId"] for r in res["Records"]} & closed


def test_expired_and_stale_iterators(streams_server: StreamsServer, kinesis: Any) -> None:
    from firehose.streams import iterators

    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    created = int(kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamCreationTimestamp"].timestamp() * 1000)
    key = bytes.fromhex(json.loads((streams_server.state_dir / "streams.json").read_text())["key"])
    old = iterators.issue(key, iterators.Iterator(int(time.time() * 1000) - 301_000, name, created, 0, 0, 0))
    with pytest.raises(kinesis.exceptions.ExpiredIteratorException) as exc:
        kinesis.get_records(ShardIterator=old)
    assert "tolerated delay of 300000 milliseconds" in error_of(exc)[1]
    fresh = iterators.issue(key, iterators.Iterator(int(time.time() * 1000), name, created, 0, 0, 0))
    assert kinesis.get_records(ShardIterator=fresh)["Records"] == []
    forged = base64.b64encode(b"x" * 16 + base64.b64decode(fresh)[16:]).decode()
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.get_records(ShardIterator=forged)
    kinesis.delete_stream(StreamName=name)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.get_records(ShardIterator=fresh)  # the iterator was for the deleted incarnation


def test_per_shard_limits_when_enabled(start_streams_server: Any) -> None:
    server = start_streams_server({"kinesis": {"enforce_limits": True}})
    client = server.client()
    client.create_stream(StreamName="t", ShardCount=1)
    failed = 0
    started = time.monotonic()
    for _ in range(3):
        resp = client.put_records(StreamName="t", Records=[{"Data": b"x", "PartitionKey": "k"}] * 500)
        failed += resp["FailedRecordCount"]
        for r in resp["Records"]:
            if "ErrorCode" in r:
                assert r["ErrorCode"] == "ProvisionedThroughputExceededException"
                assert "Rate exceeded for shard shardId-000000000000 in stream t" in r["ErrorMessage"]
    elapsed = time.monotonic() - started
    # 1,000 records/s with one second of burst: what was accepted fits the budget, the rest failed alone
    assert failed > 0
    assert 1500 - failed <= 1000 + 1000 * elapsed + 1
    big = b"x" * (1024 * 1024 - 100)
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        for _ in range(3):  # 1 MiB/s: the second or third MiB within a second is refused
            client.put_record(StreamName="t", Data=big, PartitionKey="k")
    it = client.get_shard_iterator(StreamName="t", ShardId="shardId-000000000000",
                                   ShardIteratorType="LATEST")["ShardIterator"]
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        for _ in range(10):
            it = client.get_records(ShardIterator=it)["NextShardIterator"]
    # Every refusal is counted, as CloudWatch names them: the records refused (PutRecords' and the
    # PutRecord call's) and each GetRecords call refused as a whole.
    metrics = httpx.get(server.endpoint + "/metrics").text

    def value(name: str) -> float:
        return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + "{"))

    assert value("kinesis_write_throughput_exceeded_total") == failed + 1
    assert value("kinesis_put_records_throttled_records_total") == failed
    assert value("kinesis_read_throughput_exceeded_total") == 1


def test_aws_cli_works_unchanged(streams_server: StreamsServer) -> None:
    """The AWS CLI, pointed at the sidecar with --endpoint-url, as users would run it."""
    name = unique()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    aws = [sys.executable, "-m", "awscli", "kinesis", "--endpoint-url", streams_server.endpoint, "--output", "json"]

    def run(*args: str) -> dict[str, Any]:
        out = subprocess.run([*aws, *args], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out) if out.strip() else {}

    run("create-stream", "--stream-name", name, "--shard-count", "1")
    put = run("put-record", "--stream-name", name, "--partition-key", "k", "--data", "hi")  # CLI v1: raw text
    assert put["ShardId"] == "shardId-000000000000"
    it = run("get-shard-iterator", "--stream-name", name, "--shard-id", "shardId-000000000000",
             "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    records = run("get-records", "--shard-iterator", it)["Records"]
    assert [base64.b64decode(r["Data"]) for r in records] == [b"hi"]


def test_list_tokens_page_and_expire_after_300_seconds(kinesis: Any, streams_server: StreamsServer) -> None:
    names = sorted(unique("page") for _ in range(3))
    for name in names:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    seen: list[str] = []
    page = kinesis.list_streams(Limit=2)
    seen += page["StreamNames"]
    while page.get("NextToken"):
        page = kinesis.list_streams(NextToken=page["NextToken"], Limit=2)
        seen += page["StreamNames"]
    assert seen == sorted(seen) and set(names) <= set(seen) and len(seen) == len(set(seen))
    # A token is opaque and signed: one a client edits is refused, and one issued 301 s ago (signed here with
    # the store's own key, as the server would have signed it then) is refused as AWS refuses it.
    raw = base64.urlsafe_b64decode(kinesis.list_streams(Limit=1)["NextToken"])
    mac, body = raw[:16], json.loads(raw[16:])
    edited = base64.urlsafe_b64encode(mac + json.dumps({**body, "after": ""}).encode()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.list_streams(NextToken=edited)
    assert error_of(exc)[0] == "InvalidArgumentException"
    key = bytes.fromhex(json.loads((streams_server.state_dir / "streams.json").read_bytes())["key"])
    payload = json.dumps({**body, "t": body["t"] - 301}).encode()
    signature = hmac.new(key, b"next-token:" + payload, hashlib.sha256).digest()[:16]
    stale = base64.urlsafe_b64encode(signature + payload).decode()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        kinesis.list_streams(NextToken=stale)
    assert error_of(exc)[0] == "ExpiredNextTokenException"


def test_get_records_answers_at_most_10_mib(kinesis: Any) -> None:
    name = unique()
    kinesis.create_stream(StreamName=name, ShardCount=1)
    record = b"r" * (1000 * 1024)
    for _ in range(3):  # 12 records of 1,000 KiB: more than one answer may carry
        assert kinesis.put_records(StreamName=name, Records=[{"Data": record, "PartitionKey": "k"}] * 4)[
            "FailedRecordCount"] == 0
    it = kinesis.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    first = kinesis.get_records(ShardIterator=it)
    assert sum(len(r["Data"]) + len(r["PartitionKey"]) for r in first["Records"]) <= 10 * 1024 * 1024
    assert 0 < len(first["Records"]) < 12 and first["MillisBehindLatest"] > 0
    rest = kinesis.get_records(ShardIterator=first["NextShardIterator"])
    assert len(first["Records"]) + len(rest["Records"]) == 12


def test_metrics_carry_cloudwatchs_names_per_stream_and_shard(streams_server: StreamsServer) -> None:
    """IncomingRecords/Bytes per stream, OutgoingRecords and IteratorAge per shard (enhanced metrics
    enabled), PutRecords.* and GetRecords.Success, under the names docs/metrics.md gives them."""
    client = streams_server.client()
    name = unique()
    client.create_stream(StreamName=name, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    client.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
    client.put_records(StreamName=name, Records=[{"Data": b"x" * 10, "PartitionKey": "k"} for _ in range(5)])
    client.put_record(StreamName=name, Data=b"y" * 20, PartitionKey="k")
    shard = "shardId-000000000000"
    it = client.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = client.get_records(ShardIterator=it)["Records"]
    assert len(got) == 6
    metrics = httpx.get(streams_server.endpoint + "/metrics").text

    def value(sample: str) -> float:
        return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(sample + " "))

    assert value(f'kinesis_incoming_records_total{{stream="{name}"}}') == 6
    assert value(f'kinesis_incoming_bytes_total{{stream="{name}"}}') == 5 * 11 + 21
    assert value(f'kinesis_put_records_records_total{{stream="{name}"}}') == 5
    assert value(f'kinesis_put_records_successful_records_total{{stream="{name}"}}') == 5
    assert value(f'kinesis_put_record_bytes_total{{stream="{name}"}}') == 21
    assert value(f'kinesis_outgoing_records_total{{shard_id="{shard}",stream="{name}"}}') == 6
    assert value(f'kinesis_get_records_bytes_total{{stream="{name}"}}') == 5 * 11 + 21
    assert 0 <= value(f'kinesis_iterator_age_seconds{{shard_id="{shard}",stream="{name}"}}') < 60
    assert 0 <= value(f'kinesis_get_records_iterator_age_seconds{{stream="{name}"}}') < 60
    assert value(f'kinesis_shard_incoming_records_total{{shard_id="{shard}",stream="{name}"}}') == 6
    assert value("kinesis_get_records_success_total") >= 1
    assert value("kinesis_get_records_attempts_total") >= value("kinesis_get_records_success_total")
