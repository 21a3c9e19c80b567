"""AWS's validation answers, operation by operation, from the running sidecar.

Three tables: wrong JSON types (SerializationException and its text), the model's constraints
(ValidationException: member paths, constraint texts, order and count), and the checks beyond the
model (AWS's exception types and messages). botocore validates parameters client-side, so the first
two go as raw HTTP POSTs; the semantic errors go through boto3 where it lets them through.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import httpx
import orjson
import pytest

from tests.support.streams import StreamsServer, unique

ACCT = "123456789012"
ARN = f"arn:aws:kinesis:us-east-1:{ACCT}:stream/"
NAME_PATTERN = "[a-zA-Z0-9_.-]+"
HASH_PATTERN = r"^(0|([1-9]\d{0,38}))$"
STREAM_ARN_PATTERN = r"arn:aws.*:kinesis:.*:\d{12}:stream/\S+"
RESOURCE_ARN_PATTERN = r"arn:aws.*:kinesis:.*:\d{12}:.*(stream|channel|queue)/\S+"
METRICS = ("IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, "
           "ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL")


def raw(server: StreamsServer, operation: str, body: Any) -> tuple[int, dict[str, Any]]:
    """One unsigned awsJson1_1 call (the sidecar runs without authentication), as any client sends it."""
    response = httpx.post(server.endpoint + "/", content=orjson.dumps(body), timeout=30, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"Kinesis_20131202.{operation}"})
    return response.status_code, orjson.loads(response.content)


def error(server: StreamsServer, operation: str, body: Any) -> tuple[str, str]:
    status, out = raw(server, operation, body)
    assert status == 400, (status, out)
    return out["__type"], out.get("message", out.get("Message", ""))


def client_error(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def v(*items: str) -> str:
    """AWS's ValidationException message for these items."""
    n = len(items)
    return f"{n} validation error{'' if n == 1 else 's'} detected: " + "; ".join(items)


def null(path: str) -> str:
    return f"Value null at '{path}' failed to satisfy constraint: Member must not be null"


def at(path: str, constraint: str) -> str:
    return f"Value at '{path}' failed to satisfy constraint: {constraint}"


def ge(n: int) -> str:
    return f"Member must have value greater than or equal to {n}"


def le(n: int) -> str:
    return f"Member must have value less than or equal to {n}"


def len_ge(n: int) -> str:
    return f"Member must have length greater than or equal to {n}"


def len_le(n: int) -> str:
    return f"Member must have length less than or equal to {n}"


def pattern(p: str) -> str:
    return f"Member must satisfy regular expression pattern: {p}"


@pytest.fixture(scope="module")
def streams(streams_server: StreamsServer) -> Iterator[dict[str, str]]:
    """A PROVISIONED stream of 2 shards and an ON_DEMAND one, shared by the semantic cases."""
    client = streams_server.client()
    names = {"p": unique("p"), "od": unique("od")}
    client.create_stream(StreamName=names["p"], ShardCount=2)
    client.create_stream(StreamName=names["od"], StreamModeDetails={"StreamMode": "ON_DEMAND"})
    yield names


# -- wrong JSON types ---------------------------------------------------------------------------

TYPE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("CreateStream", {"StreamName": 1}, "NUMBER_VALUE can not be converted to a String"),
    ("CreateStream", {"StreamName": True}, "TRUE_VALUE can not be converted to a String"),
    ("CreateStream", {"StreamName": ["s"]}, "Start of list found where not expected"),
    ("CreateStream", {"StreamName": {"a": 1}}, "Start of structure or map found where not expected."),
    ("CreateStream", {"StreamName": "s", "ShardCount": "1"}, "STRING_VALUE can not be converted to an Integer"),
    ("CreateStream", {"StreamName": "s", "StreamModeDetails": "ON_DEMAND"}, "Expected null"),
    ("CreateStream", {"StreamName": "s", "Tags": "k=v"}, "Expected map or null"),
    ("DeleteStream", {"StreamName": "s", "EnforceConsumerDeletion": "yes"},
     "STRING_VALUE can not be converted to an Boolean"),
    ("DescribeStream", {"StreamName": "s", "Limit": False}, "FALSE_VALUE can not be converted to an Integer"),
    ("ListShards", {"StreamName": "s", "StreamCreationTimestamp": "yesterday"},
     "STRING_VALUE can not be converted to milliseconds since epoch"),
    ("PutRecord", {"StreamName": "s", "Data": 12, "PartitionKey": "k"}, "NUMBER_VALUE can not be converted to a Blob"),
    ("PutRecord", {"StreamName": "s", "Data": "abc", "PartitionKey": "k"},
     "STRING_VALUE can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but "
     "found: 3"),
    ("PutRecords", {"StreamName": "s", "Records": "x"}, "Expected list or null"),
    ("PutRecords", {"StreamName": "s", "Records": [{"Data": "AA==", "PartitionKey": 7}]},
     "NUMBER_VALUE can not be converted to a String"),
    ("GetShardIterator", {"StreamName": "s", "ShardId": "shardId-0", "ShardIteratorType": "AT_TIMESTAMP",
                          "Timestamp": "now"}, "STRING_VALUE can not be converted to milliseconds since epoch"),
    ("GetRecords", {"ShardIterator": "x", "Limit": "10"}, "STRING_VALUE can not be converted to an Integer"),
    ("IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": "48"},
     "STRING_VALUE can not be converted to an Integer"),
    ("UpdateShardCount", {"StreamName": "s", "TargetShardCount": [2], "ScalingType": "UNIFORM_SCALING"},
     "Start of list found where not expected"),
    ("AddTagsToStream", {"StreamName": "s", "Tags": [["k", "v"]]}, "Start of list found where not expected"),
    ("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": "k"}, "Expected list or null"),
    ("UpdateStreamMode", {"StreamARN": ARN + "s", "StreamModeDetails": {"StreamMode": 1}},
     "NUMBER_VALUE can not be converted to a String"),
    ("UpdateMaxRecordSize", {"StreamARN": ARN + "s", "MaxRecordSizeInKiB": "2048"},
     "STRING_VALUE can not be converted to an Integer"),
    ("EnableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": "ALL"}, "Expected list or null"),
    ("DisableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": [True]},
     "TRUE_VALUE can not be converted to a String"),
    ("TagResource", {"ResourceARN": ARN + "s", "Tags": "x"}, "Expected map or null"),
    ("UntagResource", {"ResourceARN": ARN + "s", "TagKeys": {"k": "v"}},
     "Start of structure or map found where not expected."),
    ("ListTagsForResource", {"ResourceARN": 5}, "NUMBER_VALUE can not be converted to a String"),
]


@pytest.mark.parametrize(("operation", "body", "message"), TYPE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TYPE_CASES)])
def test_wrong_json_types_are_serialization_exceptions(streams_server: StreamsServer, operation: str,
                                                       body: dict[str, Any], message: str) -> None:
    assert error(streams_server, operation, body) == ("SerializationException", message)


def test_a_wrong_type_wins_over_every_constraint(streams_server: StreamsServer) -> None:
    """The type pass runs over the whole body first: constraint failures before the wrong type are not reported."""
    body = {"StreamName": "", "ShardCount": 0, "Tags": {"k": 5}}
    assert error(streams_server, "CreateStream", body) == ("SerializationException",
                                                           "NUMBER_VALUE can not be converted to a String")


# -- the model's constraints ----------------------------------------------------------------

CONSTRAINT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("CreateStream", {}, v(null("streamName"))),
    ("CreateStream", {"StreamName": "", "ShardCount": 0},
     v(at("streamName", pattern(NAME_PATTERN)), at("streamName", len_ge(1)), at("shardCount", ge(1)))),
    ("CreateStream", {"StreamName": "x" * 129, "ShardCount": 1}, v(at("streamName", len_le(128)))),
    ("CreateStream", {"StreamName": "s", "StreamModeDetails": {"StreamMode": "X"}, "MaxRecordSizeInKiB": 10,
                      "Tags": {"": "v"}},
     v(at("streamModeDetails.streamMode", "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]"),
       at("tags", f"Map keys must satisfy constraint: [{len_le(128)}, {len_ge(1)}]"),
       at("maxRecordSizeInKiB", ge(1024)))),
    ("CreateStream", {"StreamName": "s", "StreamModeDetails": {}}, v(null("streamModeDetails.streamMode"))),
    ("DeleteStream", {"StreamARN": "nope"}, v(at("streamARN", pattern(STREAM_ARN_PATTERN)))),
    ("DescribeStream", {"StreamName": "s", "Limit": 0, "ExclusiveStartShardId": ""},
     v(at("limit", ge(1)), at("exclusiveStartShardId", pattern(NAME_PATTERN)),
       at("exclusiveStartShardId", len_ge(1)))),
    ("DescribeStreamSummary", {"StreamName": "bad name"}, v(at("streamName", pattern(NAME_PATTERN)))),
    ("ListStreams", {"Limit": 10001, "ExclusiveStartStreamName": "!"},
     v(at("limit", le(10000)), at("exclusiveStartStreamName", pattern(NAME_PATTERN)))),
    ("ListShards", {"MaxResults": 0, "ShardFilter": {"Type": "NOPE"}},
     v(at("maxResults", ge(1)), at("shardFilter.type", "Member must satisfy enum value set: [AFTER_SHARD_ID, "
                                   "AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"))),
    ("PutRecord", {"StreamName": "s"}, v(null("data"), null("partitionKey"))),
    ("PutRecord", {"StreamName": "s", "Data": "", "PartitionKey": "", "ExplicitHashKey": "x",
                   "SequenceNumberForOrdering": "01"},
     v(at("partitionKey", len_ge(1)), at("explicitHashKey", pattern(HASH_PATTERN)),
       at("sequenceNumberForOrdering", pattern(r"^(0|([1-9]\d{0,128}))$")))),
    ("PutRecord", {"StreamName": "s", "Data": "AA==", "PartitionKey": "k" * 257}, v(at("partitionKey", len_le(256)))),
    ("PutRecords", {"StreamName": "s", "Records": []}, v(at("records", len_ge(1)))),
    ("PutRecords", {"StreamName": "s", "Records": [{"Data": "AA=="}, None]},
     v(null("records.1.member.partitionKey"), null("records.2.member"))),
    ("PutRecords", {"StreamName": "s", "Records": [{"Data": "AA==", "PartitionKey": "k"}] * 501},
     v(at("records", len_le(500)))),
    ("GetShardIterator", {"StreamName": "s", "ShardId": "", "ShardIteratorType": "NOPE"},
     v(at("shardId", pattern(NAME_PATTERN)), at("shardId", len_ge(1)),
       at("shardIteratorType", "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, "
          "TRIM_HORIZON, LATEST, AT_TIMESTAMP]"))),
    ("GetRecords", {"ShardIterator": "", "Limit": 0}, v(at("shardIterator", len_ge(1)), at("limit", ge(1)))),
    ("GetRecords", {"ShardIterator": "x", "Limit": 10001}, v(at("limit", le(10000)))),
    ("IncreaseStreamRetentionPeriod", {"StreamName": "s"}, v(null("retentionPeriodHours"))),
    ("DecreaseStreamRetentionPeriod", {"StreamName": "", "RetentionPeriodHours": 24},
     v(at("streamName", pattern(NAME_PATTERN)), at("streamName", len_ge(1)))),
    ("SplitShard", {"StreamName": "s", "ShardToSplit": "", "NewStartingHashKey": "x"},
     v(at("shardToSplit", pattern(NAME_PATTERN)), at("shardToSplit", len_ge(1)),
       at("newStartingHashKey", pattern(HASH_PATTERN)))),
    ("MergeShards", {"StreamName": "s"}, v(null("shardToMerge"), null("adjacentShardToMerge"))),
    ("UpdateShardCount", {"StreamName": "s", "TargetShardCount": 0, "ScalingType": "X"},
     v(at("targetShardCount", ge(1)), at("scalingType", "Member must satisfy enum value set: [UNIFORM_SCALING]"))),
    ("AddTagsToStream", {"StreamName": "s", "Tags": {}}, v(at("tags", len_ge(1)))),
    ("ListTagsForStream", {"StreamName": "s", "Limit": 51}, v(at("limit", le(50)))),
    ("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["", "k"]},
     v(at("tagKeys", f"Member must satisfy constraint: [{len_le(128)}, {len_ge(1)}]"))),
    ("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a", None]}, v(null("tagKeys.2.member"))),
    ("UpdateStreamMode", {}, v(null("streamARN"), null("streamModeDetails"))),
    ("UpdateStreamMode", {"StreamARN": "x", "StreamModeDetails": {"StreamMode": "NOPE"}},
     v(at("streamARN", pattern(STREAM_ARN_PATTERN)),
       at("streamModeDetails.streamMode", "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]"))),
    ("UpdateMaxRecordSize", {"MaxRecordSizeInKiB": 10241}, v(at("maxRecordSizeInKiB", le(10240)))),
    ("EnableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": []}, v(at("shardLevelMetrics", len_ge(1)))),
    ("DisableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": ["NOPE"]},
     v(at("shardLevelMetrics", f"Member must satisfy constraint: [Member must satisfy enum value set: [{METRICS}]]"))),
    ("TagResource", {}, v(null("tags"), null("resourceARN"))),
    ("TagResource", {"ResourceARN": "arn:x", "Tags": {"k": "v"}}, v(at("resourceARN", pattern(RESOURCE_ARN_PATTERN)))),
    ("UntagResource", {"ResourceARN": ARN + "s", "TagKeys": []}, v(at("tagKeys", len_ge(1)))),
    ("ListTagsForResource", {"ResourceARN": ""},
     v(at("resourceARN", pattern(RESOURCE_ARN_PATTERN)), at("resourceARN", len_ge(1)))),
]


@pytest.mark.parametrize(("operation", "body", "message"), CONSTRAINT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONSTRAINT_CASES)])
def test_constraints_are_validation_exceptions_in_order(streams_server: StreamsServer, operation: str,
                                                        body: dict[str, Any], message: str) -> None:
    assert error(streams_server, operation, body) == ("ValidationException", message)


def test_more_than_ten_violations_are_ten_listed_and_counted(streams_server: StreamsServer) -> None:
    """AWS stops at ten violations, and its count says ten (kinesalite's recording of 501 bad entries)."""
    records = [{"Data": "", "PartitionKey": ""}] * 12
    kind, message = error(streams_server, "PutRecords", {"StreamName": "s", "Records": records})
    assert kind == "ValidationException"
    assert message.startswith("10 validation errors detected: ")
    items = message.removeprefix("10 validation errors detected: ").split("; ")
    assert items == [at(f"records.{i}.member.partitionKey", len_ge(1)) for i in range(1, 11)]


# -- AWS's checks beyond the model ------------------------------------------------------------


def test_semantic_errors_have_aws_types_and_messages(streams_server: StreamsServer,
                                                     streams: dict[str, str]) -> None:
    p, od = streams["p"], streams["od"]
    k = streams_server.client()
    shard0, shard1 = "shardId-000000000000", "shardId-000000000001"
    cases: list[tuple[Any, str, str]] = [
        (lambda: k.create_stream(StreamName=p, ShardCount=1), "ResourceInUseException",
         f"Stream {p} under account {ACCT} already exists."),
        (lambda: k.create_stream(StreamName=unique(), ShardCount=1, StreamModeDetails={"StreamMode": "ON_DEMAND"}),
         "InvalidArgumentException", "ShardCount is not expected when StreamMode=ON_DEMAND"),
        (lambda: k.create_stream(StreamName=unique(), StreamModeDetails={"StreamMode": "PROVISIONED"}),
         "InvalidArgumentException", "ShardCount is required when StreamMode=PROVISIONED"),
        (lambda: k.describe_stream(StreamName="nope-" + p), "ResourceNotFoundException",
         f"Stream nope-{p} under account {ACCT} not found."),
        # with StreamARN, AWS still names the stream by its name (a recording of AWS, September 2025)
        (lambda: k.describe_stream(StreamARN=f"{ARN}nope-{p}"), "ResourceNotFoundException",
         f"Stream nope-{p} under account {ACCT} not found."),
        (lambda: k.describe_stream_summary(StreamARN=f"{ARN}nope-{p}"), "ResourceNotFoundException",
         f"Stream nope-{p} under account {ACCT} not found."),
        (lambda: k.describe_stream(StreamARN=f"arn:aws:kinesis:us-east-1:210987654321:stream/{p}"),
         "ResourceNotFoundException", f"Stream {p} under account 210987654321 not found."),
        (lambda: k.put_record(StreamName=p, Data=b"x", PartitionKey="k", ExplicitHashKey=str(2**128)),
         "InvalidArgumentException", "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. "
                                     f"Specified value was {2**128}"),
        (lambda: k.get_records(ShardIterator="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
         "InvalidArgumentException", "Invalid ShardIterator."),
        (lambda: k.list_shards(StreamName=p, NextToken="x"), "InvalidArgumentException",
         "NextToken and StreamName cannot be provided together."),
        (lambda: k.list_shards(), "InvalidArgumentException", "Either NextToken or StreamName should be provided."),
        # retention: bounds (minimum first) in either direction, then the comparison with the current period
        (lambda: k.increase_stream_retention_period(StreamName=p, RetentionPeriodHours=23),
         "InvalidArgumentException",
         "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short."),
        (lambda: k.decrease_stream_retention_period(StreamName=p, RetentionPeriodHours=8761),
         "InvalidArgumentException",
         "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long."),
        (lambda: k.decrease_stream_retention_period(StreamName=p, RetentionPeriodHours=48),
         "InvalidArgumentException", f"Requested retention period (48 hours) for stream {p} can not be longer than "
                                     "existing retention period (24 hours). Use IncreaseRetentionPeriod API."),
        (lambda: k.decrease_stream_retention_period(StreamARN=ARN + p, RetentionPeriodHours=48),
         "InvalidArgumentException", f"Requested retention period (48 hours) for stream {p} can not be longer "
                                     "than existing retention period (24 hours). Use IncreaseRetentionPeriod API."),
        (lambda: k.increase_stream_retention_period(StreamName="nope-" + p, RetentionPeriodHours=1),
         "ResourceNotFoundException", f"Stream nope-{p} under account {ACCT} not found."),
        (lambda: k.split_shard(StreamName=p, ShardToSplit="shardId-000000000099", NewStartingHashKey="10"),
         "ResourceNotFoundException", f"Could not find shard shardId-000000000099 in stream {p} under account "
                                      f"{ACCT}."),
        (lambda: k.split_shard(StreamName=p, ShardToSplit=shard0, NewStartingHashKey="0"),
         "InvalidArgumentException", f"NewStartingHashKey 0 used in SplitShard() on shard {shard0} in stream {p} "
                                     f"under account {ACCT} is not both greater than one plus the shard's "
                                     f"StartingHashKey 0 and less than the shard's EndingHashKey {2**127 - 1}."),
        (lambda: k.merge_shards(StreamName=p, ShardToMerge=shard0, AdjacentShardToMerge=shard0),
         "InvalidArgumentException", f"Shards {shard0} and {shard0} in stream {p} under account {ACCT} are not an "
                                     "adjacent pair of shards eligible for merging"),
        (lambda: k.update_shard_count(StreamName=p, TargetShardCount=5, ScalingType="UNIFORM_SCALING"),
         "InvalidArgumentException", "UpdateShardCount cannot scale up over double your current open shard count. "
                                     "Current open shard count: 2. Requested: 5."),
        (lambda: k.update_shard_count(StreamName=od, TargetShardCount=5, ScalingType="UNIFORM_SCALING"),
         "ValidationException", f"Request is invalid. Stream {od} under account {ACCT} is in On-Demand mode."),
        (lambda: k.split_shard(StreamName=od, ShardToSplit=shard0, NewStartingHashKey="10"),
         "ValidationException", f"Request is invalid. Stream {od} under account {ACCT} is in On-Demand mode."),
        (lambda: k.merge_shards(StreamName=od, ShardToMerge=shard0, AdjacentShardToMerge=shard1),
         "ValidationException", f"Request is invalid. Stream {od} under account {ACCT} is in On-Demand mode."),
        (lambda: k.enable_enhanced_monitoring(StreamName="nope-" + p, ShardLevelMetrics=["ALL"]),
         "ResourceNotFoundException", f"Stream nope-{p} under account {ACCT} not found."),
        (lambda: k.update_stream_mode(StreamARN=ARN + "nope-" + p, StreamModeDetails={"StreamMode": "ON_DEMAND"}),
         "ResourceNotFoundException", f"Stream nope-{p} under account {ACCT} not found."),
        (lambda: k.tag_resource(ResourceARN=ARN + "nope-" + p, Tags={"k": "v"}), "ResourceNotFoundException",
         f"Stream {ARN}nope-{p} under account {ACCT} not found."),
        (lambda: k.add_tags_to_stream(StreamName=p, Tags={f"k{i}": "v" for i in range(51)}),
         "InvalidArgumentException", f"Failed to add tags to stream {p} under account {ACCT} because a given "
                                     "stream cannot have more than 10 tags associated with it."),
        (lambda: k.add_tags_to_stream(StreamName=p, Tags={"ok": "a;b"}), "InvalidArgumentException",
         "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, "
         "_ . / = + - % @ :."),
        (lambda: k.add_tags_to_stream(StreamName=p, Tags={"ok": "50%"}), "InvalidArgumentException",
         f"Failed to add tags to stream {p} under account {ACCT} because some tags contained illegal characters. "
         "The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@',':'."),
        (lambda: k.remove_tags_from_stream(StreamName=p, TagKeys=["a%"]), "InvalidArgumentException",
         f"Failed to remove tags from stream {p} under account {ACCT} because some tags contained illegal "
         "characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@',':'."),
    ]
    for call, code, message in cases:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            call()
        assert client_error(exc) == (code, message)
    # none of them changed the stream
    summary = k.describe_stream_summary(StreamName=p)["StreamDescriptionSummary"]
    assert (summary["OpenShardCount"], summary["RetentionPeriodHours"]) == (2, 24)


def test_shard_ids_in_requests_are_checked_as_aws_checks_them(streams_server: StreamsServer,
                                                              streams: dict[str, str]) -> None:
    """AWS reads a shard id by its index (kinesalite recorded it), checks it before the stream, and names the
    shard by its canonical id once it has an index; the iterator type's members are checked only then."""
    p, nope = streams["p"], "nope-" + streams["p"]
    k = streams_server.client()
    shard0 = "shardId-000000000000"
    either = ("Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or "
              "(2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified")
    not_both = ("is not both greater than one plus the shard's StartingHashKey {} and less than the shard's "
                "EndingHashKey {}.")
    def iterator(stream: str, shard: str, kind: str = "LATEST", **more: str) -> Any:
        return lambda: k.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType=kind, **more)

    def absent(stream: str, shard: str) -> tuple[str, str]:
        return "ResourceNotFoundException", f"Shard {shard} in stream {stream} under account {ACCT} does not exist"

    def unreadable(stream: str, text: str) -> tuple[str, str]:
        return "ResourceNotFoundException", f"Could not find shard {text} in stream {stream} under account {ACCT}."

    cases: list[tuple[Any, str, str]] = [
        (iterator(nope, "2147483647"), *absent(nope, "shardId-002147483647")),
        (iterator(nope, "a-00002147483647"), *absent(nope, "shardId-002147483647")),
        (iterator(nope, "2147483648"), *unreadable(nope, "2147483648")),
        (iterator(nope, "2.14E4"), *unreadable(nope, "2.14E4")),
        (iterator(p, "shardId-5", "AT_SEQUENCE_NUMBER", StartingSequenceNumber="5"),
         *absent(p, "shardId-000000000005")),
        # the stream and shard first, then the type's members
        (iterator(nope, "0", "AT_SEQUENCE_NUMBER"), *absent(nope, shard0)),
        (iterator(p, "shardId-0", "AT_SEQUENCE_NUMBER"), "InvalidArgumentException",
         f"{either} AT_SEQUENCE_NUMBER and no StartingSequenceNumber."),
        (iterator(p, "0", "AFTER_SEQUENCE_NUMBER"), "InvalidArgumentException",
         f"{either} AFTER_SEQUENCE_NUMBER and no StartingSequenceNumber."),
        (iterator(p, "0", "LATEST", StartingSequenceNumber="5"), "InvalidArgumentException",
         f"{either} LATEST and also a StartingSequenceNumber."),
        (iterator(p, "0", "TRIM_HORIZON", StartingSequenceNumber="5"), "InvalidArgumentException",
         f"{either} TRIM_HORIZON and also a StartingSequenceNumber."),
        # resharding: the shard id before the stream, keys strictly inside (start + 1, end)
        (lambda: k.split_shard(StreamName=nope, ShardToSplit="ABKLFD8", NewStartingHashKey="10"),
         *unreadable(nope, "ABKLFD8")),
        (lambda: k.split_shard(StreamName=p, ShardToSplit="shardId-5", NewStartingHashKey="10"),
         *unreadable(p, "shardId-000000000005")),
        (lambda: k.split_shard(StreamName=p, ShardToSplit="shard-0", NewStartingHashKey="1"),
         "InvalidArgumentException", f"NewStartingHashKey 1 used in SplitShard() on shard {shard0} in stream {p} "
                                     f"under account {ACCT} " + not_both.format(0, 2**127 - 1)),
        (lambda: k.split_shard(StreamName=p, ShardToSplit="0", NewStartingHashKey=str(2**127 - 1)),
         "InvalidArgumentException", f"NewStartingHashKey {2**127 - 1} used in SplitShard() on shard {shard0} in "
                                     f"stream {p} under account {ACCT} " + not_both.format(0, 2**127 - 1)),
        (lambda: k.split_shard(StreamName=p, ShardToSplit="1", NewStartingHashKey="9" * 39),
         "InvalidArgumentException", f"NewStartingHashKey {'9' * 39} used in SplitShard() on shard "
                                     f"shardId-000000000001 in stream {p} under account {ACCT} "
                                     + not_both.format(2**127, 2**128 - 1)),
        # adjacency has an order: the shard to merge ends where the adjacent one starts (kinesalite's recording)
        (lambda: k.merge_shards(StreamName=p, ShardToMerge="x-1", AdjacentShardToMerge="y-0"),
         "InvalidArgumentException", f"Shards shardId-000000000001 and {shard0} in stream {p} under account "
                                     f"{ACCT} are not an adjacent pair of shards eligible for merging"),
        (lambda: k.merge_shards(StreamName=p, ShardToMerge="0", AdjacentShardToMerge="x-"), *unreadable(p, "x-")),
    ]
    for call, code, message in cases:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            call()
        assert client_error(exc) == (code, message)
    assert k.describe_stream_summary(StreamName=p)["StreamDescriptionSummary"]["OpenShardCount"] == 2


def test_a_shard_is_named_by_its_index_in_any_spelling(streams_server: StreamsServer) -> None:
    k = streams_server.client()
    name = unique()
    k.create_stream(StreamName=name, ShardCount=2)
    k.put_record(StreamName=name, Data=b"second shard", PartitionKey="k", ExplicitHashKey=str(2**127))
    for spelling in ("1", "shardId-1", "anything-000000000001", "shardId-000000000001"):
        it = k.get_shard_iterator(StreamName=name, ShardId=spelling, ShardIteratorType="TRIM_HORIZON")
        assert [r["Data"] for r in k.get_records(ShardIterator=it["ShardIterator"])["Records"]] == [b"second shard"]
    # the smallest key AWS lets a split start at: start + 2
    k.split_shard(StreamName=name, ShardToSplit="shard-0", NewStartingHashKey="2")
    ranges = {s["ShardId"]: s["HashKeyRange"] for s in k.list_shards(StreamName=name)["Shards"]}
    assert ranges["shardId-000000000002"] == {"StartingHashKey": "0", "EndingHashKey": "1"}
    assert ranges["shardId-000000000003"] == {"StartingHashKey": "2", "EndingHashKey": str(2**127 - 1)}


def test_single_put_record_names_its_data_member_data(streams_server: StreamsServer,
                                                      streams: dict[str, str]) -> None:
    """A record over the stream's MaxRecordSizeInKiB (1 MiB with its key): the path is 'data', not '.data'."""
    data = base64.b64encode(b"x" * (1024 * 1024)).decode()
    assert error(streams_server, "PutRecord", {"StreamName": streams["p"], "Data": data, "PartitionKey": "k"}) == (
        "ValidationException", v(at("data", len_le(1024 * 1024 - 1))))
    records = [{"Data": "AA==", "PartitionKey": "k"}, {"Data": data, "PartitionKey": "k"}]
    assert error(streams_server, "PutRecords", {"StreamName": streams["p"], "Records": records}) == (
        "ValidationException", v(at("records.2.member.data", len_le(1024 * 1024 - 1))))


def test_shard_iterator_in_quotes_is_accepted(streams_server: StreamsServer, streams: dict[str, str]) -> None:
    k = streams_server.client()
    k.put_record(StreamName=streams["p"], Data=b"quoted", PartitionKey="q", ExplicitHashKey="1")
    it = k.get_shard_iterator(StreamName=streams["p"], ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = k.get_records(ShardIterator=f'"{it}"')
    assert b"quoted" in [r["Data"] for r in got["Records"]] and got["NextShardIterator"]


def test_every_stream_operation_takes_the_stream_arn(streams_server: StreamsServer) -> None:
    k = streams_server.client()
    name = unique()
    arn = ARN + name
    k.create_stream(StreamName=name, ShardCount=1)
    assert k.describe_stream(StreamARN=arn)["StreamDescription"]["StreamName"] == name
    k.put_record(StreamARN=arn, Data=b"a", PartitionKey="k")
    k.put_records(StreamARN=arn, Records=[{"Data": b"b", "PartitionKey": "k"}])
    it = k.get_shard_iterator(StreamARN=arn, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["Data"] for r in k.get_records(ShardIterator=it, StreamARN=arn)["Records"]] == [b"a", b"b"]
    k.increase_stream_retention_period(StreamARN=arn, RetentionPeriodHours=48)
    k.decrease_stream_retention_period(StreamARN=arn, RetentionPeriodHours=24)
    k.add_tags_to_stream(StreamARN=arn, Tags={"a": "1"})
    assert k.list_tags_for_stream(StreamARN=arn)["Tags"] == [{"Key": "a", "Value": "1"}]
    k.remove_tags_from_stream(StreamARN=arn, TagKeys=["a"])
    k.update_shard_count(StreamARN=arn, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    assert len(k.list_shards(StreamARN=arn)["Shards"]) == 3
    k.enable_enhanced_monitoring(StreamARN=arn, ShardLevelMetrics=["IncomingBytes"])
    k.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
    assert k.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 2048
    k.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    k.delete_stream(StreamARN=arn)
    assert name not in k.list_streams()["StreamNames"]
