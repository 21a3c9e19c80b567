"""Create/Describe/List/Update/Delete/Tag delivery streams through boto3; persistence across restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.delivered import read_local
from tests.support.transforms import write_function
from tests.support.waiting import wait_until


def test_create_describe_and_list(start_daemon: Any) -> None:
    client = start_daemon().client()
    before = time.time()
    arn = client.create_delivery_stream(**local_stream("orders", Prefix="o/"))["DeliveryStreamARN"]
    assert arn == "arn:aws:firehose:us-east-1:123456789012:deliverystream/orders"
    desc = client.describe_delivery_stream(DeliveryStreamName="orders")["DeliveryStreamDescription"]
    assert desc["DeliveryStreamStatus"] == "ACTIVE"
    assert desc["DeliveryStreamType"] == "DirectPut"
    assert desc["VersionId"] == "1"
    assert desc["HasMoreDestinations"] is False
    assert desc["CreateTimestamp"].timestamp() >= before - 1
    [dest] = desc["Destinations"]
    assert dest["DestinationId"] == "destinationId-000000000001"
    ext = dest["ExtendedS3DestinationDescription"]
    assert ext["BucketARN"] == "arn:aws:s3:::local" and ext["Prefix"] == "o/"
    assert ext["CompressionFormat"] == "UNCOMPRESSED"
    assert ext["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}
    assert dest["S3DestinationDescription"]["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 0}
    assert client.list_delivery_streams()["DeliveryStreamNames"] == ["orders"]


def test_defaults_are_filled_in_descriptions(start_daemon: Any) -> None:
    client = start_daemon().client()
    client.create_delivery_stream(DeliveryStreamName="plain", S3DestinationConfiguration={
        "RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"})
    ext = client.describe_delivery_stream(DeliveryStreamName="plain")["DeliveryStreamDescription"][
        "Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 300}


def test_duplicate_create_is_resource_in_use(start_daemon: Any) -> None:
    client = start_daemon().client()
    client.create_delivery_stream(**local_stream("dup"))
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.create_delivery_stream(**local_stream("dup"))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (local_stream("x", size_mb=129), "sizeInMBs"),
        (local_stream("x", Prefix="!{timestamp:yyyy}"), "ErrorOutputPrefix is required"),
        ({"DeliveryStreamName": "x"}, "destination configuration is required"),
        ({**local_stream("x"), "S3DestinationConfiguration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::b"}},
         "only one destination"),
        (local_stream("x", BufferingHints={"SizeInMBs": 1}), "both SizeInMBs and IntervalInSeconds"),
        ({**local_stream("x"),
          "ExtendedS3DestinationConfiguration": {"RoleARN": "nope", "BucketARN": "arn:aws:s3:::b"}},
         "roleARN"),
    ],
)
def test_invalid_definitions_are_invalid_argument(start_daemon: Any, body: dict[str, Any], fragment: str) -> None:
    client = start_daemon().client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.create_delivery_stream(**body)
    assert fragment in info.value.response["Error"]["Message"]


def test_list_is_alphabetical_and_paginates(start_daemon: Any) -> None:
    client = start_daemon().client()
    for name in ["c", "a", "e", "b", "d"]:
        client.create_delivery_stream(**local_stream(name))
    page = client.list_delivery_streams(Limit=2)
    assert page["DeliveryStreamNames"] == ["a", "b"] and page["HasMoreDeliveryStreams"] is True
    page = client.list_delivery_streams(Limit=2, ExclusiveStartDeliveryStreamName="b")
    assert page["DeliveryStreamNames"] == ["c", "d"]
    page = client.list_delivery_streams(ExclusiveStartDeliveryStreamName="d")
    assert page == {**page, "DeliveryStreamNames": ["e"], "HasMoreDeliveryStreams": False}
    assert client.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"] == []


def test_update_destination_merges_bumps_version_and_checks_it(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start_daemon()
    client = daemon.client()
    client.create_delivery_stream(**local_stream("u", Prefix="v1/"))
    client.update_destination(
        DeliveryStreamName="u", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
        ExtendedS3DestinationUpdate={"Prefix": "v2/"})
    desc = client.describe_delivery_stream(DeliveryStreamName="u")["DeliveryStreamDescription"]
    ext = desc["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert desc["VersionId"] == "2"
    assert ext["Prefix"] == "v2/"
    assert ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 0}  # kept
    assert desc["LastUpdateTimestamp"] >= desc["CreateTimestamp"]
    with pytest.raises(client.exceptions.ConcurrentModificationException):
        client.update_destination(
            DeliveryStreamName="u", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"Prefix": "v3/"})
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.update_destination(
            DeliveryStreamName="u", CurrentDeliveryStreamVersionId="2", DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 999, "IntervalInSeconds": 1}})
    # New objects use the new prefix and carry the new version in their name.
    client.put_record(DeliveryStreamName="u", Record={"Data": b"after update\n"})
    wait_until(lambda: read_local(tmp_path / "out"))
    [key] = read_local(tmp_path / "out")
    assert key.startswith("v2/") and "/u-2-" in key


def test_delete_removes_the_stream(start_daemon: Any) -> None:
    client = start_daemon().client()
    client.create_delivery_stream(**local_stream("gone"))
    client.delete_delivery_stream(DeliveryStreamName="gone")
    assert client.list_delivery_streams()["DeliveryStreamNames"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_delivery_stream(DeliveryStreamName="gone")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_delivery_stream(DeliveryStreamName="gone")
    client.create_delivery_stream(**local_stream("gone"))  # the name can be used again


def test_tags(start_daemon: Any) -> None:
    client = start_daemon().client()
    client.create_delivery_stream(**local_stream("t"), Tags=[{"Key": "team", "Value": "a"}])
    client.tag_delivery_stream(DeliveryStreamName="t", Tags=[{"Key": "team", "Value": "b"}, {"Key": "env"}])
    tags = client.list_tags_for_delivery_stream(DeliveryStreamName="t")
    assert tags["Tags"] == [{"Key": "env", "Value": ""}, {"Key": "team", "Value": "b"}]
    assert tags["HasMoreTags"] is False
    client.untag_delivery_stream(DeliveryStreamName="t", TagKeys=["env"])
    assert client.list_tags_for_delivery_stream(DeliveryStreamName="t")["Tags"] == [{"Key": "team", "Value": "b"}]
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.tag_delivery_stream(DeliveryStreamName="t", Tags=[{"Key": "aws:reserved", "Value": "x"}])
    with pytest.raises(client.exceptions.LimitExceededException):
        client.tag_delivery_stream(DeliveryStreamName="t", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    page = client.list_tags_for_delivery_stream(DeliveryStreamName="t", Limit=1)
    assert page["HasMoreTags"] is False and len(page["Tags"]) == 1


def test_stream_count_limit(start_daemon: Any) -> None:
    client = start_daemon(max_delivery_streams=2).client()
    client.create_delivery_stream(**local_stream("one"))
    client.create_delivery_stream(**local_stream("two"))
    with pytest.raises(client.exceptions.LimitExceededException):
        client.create_delivery_stream(**local_stream("three"))


def test_streams_created_through_the_api_survive_a_restart(start_daemon: Any, tmp_path: Path) -> None:
    first = start_daemon()
    client = first.client()
    client.create_delivery_stream(**local_stream("kept", size_mb=1, interval=900), Tags=[{"Key": "k", "Value": "v"}])
    client.put_record(DeliveryStreamName="kept", Record={"Data": b"buffered before restart\n"})
    first.stop()  # a clean stop delivers what is buffered
    second = start_daemon()
    client = second.client()
    desc = client.describe_delivery_stream(DeliveryStreamName="kept")["DeliveryStreamDescription"]
    assert desc["VersionId"] == "1"
    assert client.list_tags_for_delivery_stream(DeliveryStreamName="kept")["Tags"] == [{"Key": "k", "Value": "v"}]
    assert b"".join(read_local(tmp_path / "out").values()) == b"buffered before restart\n"


def test_config_streams_show_up_and_config_changes_bump_the_version(start_daemon: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_daemon([local_stream("declared", Prefix="a/")], state_dir=state)
    assert first.client().list_delivery_streams()["DeliveryStreamNames"] == ["declared"]
    first.stop()
    second = start_daemon([local_stream("declared", Prefix="b/")], state_dir=state)
    desc = second.client().describe_delivery_stream(DeliveryStreamName="declared")["DeliveryStreamDescription"]
    assert desc["VersionId"] == "2"
    assert desc["Destinations"][0]["ExtendedS3DestinationDescription"]["Prefix"] == "b/"
    second.stop()
    third = start_daemon([], state_dir=state)
    assert third.client().list_delivery_streams()["DeliveryStreamNames"] == []


def test_encryption_changes_need_an_active_stream(start_daemon: Any) -> None:
    """(The encryption itself: tests/api/test_stream_encryption.py.)"""
    client = start_daemon(create_delay_seconds=30).client()
    client.create_delivery_stream(**local_stream("e"))
    with pytest.raises(client.exceptions.ResourceInUseException, match="not ACTIVE"):
        client.start_delivery_stream_encryption(DeliveryStreamName="e")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.stop_delivery_stream_encryption(DeliveryStreamName="missing")


def test_http_destinations_may_only_point_where_the_operator_allows(start_daemon: Any) -> None:
    """http.allowed_endpoints: whoever may create streams cannot make the daemon post to internal services."""
    client = start_daemon(http={"allowed_endpoints": ["https://*.example.com/*"]}).client()

    def http_stream(name: str, url: str) -> dict[str, Any]:
        return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
            "EndpointConfiguration": {"Url": url}, "S3Configuration": {"RoleARN": ROLE,
                                                                       "BucketARN": "arn:aws:s3:::local"}}}

    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.create_delivery_stream(**http_stream("metadata", "http://169.254.169.254/latest/meta-data/"))
    assert "http://169.254.169.254/latest/meta-data/ is not allowed here" in info.value.response["Error"]["Message"]
    client.create_delivery_stream(**http_stream("partner", "https://ingest.example.com/v1/events"))
    version = client.describe_delivery_stream(DeliveryStreamName="partner")["DeliveryStreamDescription"]["VersionId"]
    with pytest.raises(client.exceptions.InvalidArgumentException):
        client.update_destination(DeliveryStreamName="partner", CurrentDeliveryStreamVersionId=version,
                                  DestinationId="destinationId-000000000001",
                                  HttpEndpointDestinationUpdate={"EndpointConfiguration": {
                                      "Url": "http://127.0.0.1:6379/"}})
    assert client.list_delivery_streams()["DeliveryStreamNames"] == ["partner"]


def test_describe_fills_in_what_aws_fills_in(start_daemon: Any, tmp_path: Path) -> None:
    """DescribeDeliveryStream as recorded against AWS (LocalStack's snapshots of CloudFormation stacks,
    2022-2024): a Lambda processor's defaults listed after the given parameters, CloudWatch logging
    off, dynamic partitioning's retry, no LastUpdateTimestamp before an update, and no encryption
    configuration for a stream that reads a Kinesis stream."""
    fns = tmp_path / "fns"
    write_function(fns, "clicks", """
        def lambda_handler(event, context):
            records = event["records"]
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]} for r in records]}
    """)
    client = start_daemon(transforms_dir=str(fns)).client()
    arn = "arn:aws:lambda:us-east-1:123456789012:function:clicks"
    client.create_delivery_stream(**local_stream("clicks", Prefix="firehose/", ProcessingConfiguration={
        "Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
            {"ParameterName": "LambdaArn", "ParameterValue": arn}]}]}))
    desc = client.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
    assert "LastUpdateTimestamp" not in desc and desc["VersionId"] == "1"
    assert desc["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}
    ext = desc["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["ProcessingConfiguration"]["Processors"][0]["Parameters"] == [
        {"ParameterName": "LambdaArn", "ParameterValue": arn},
        {"ParameterName": "NumberOfRetries", "ParameterValue": "3"},
        {"ParameterName": "RoleArn", "ParameterValue": ROLE},
        {"ParameterName": "BufferSizeInMBs", "ParameterValue": "1"},
        {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "60"},
    ]
    assert ext["CloudWatchLoggingOptions"] == {"Enabled": False}
    s3 = desc["Destinations"][0]["S3DestinationDescription"]
    assert s3["CloudWatchLoggingOptions"] == {"Enabled": False} and "ProcessingConfiguration" not in s3
    client.update_destination(DeliveryStreamName="clicks", CurrentDeliveryStreamVersionId="1",
                              DestinationId="destinationId-000000000001",
                              ExtendedS3DestinationUpdate={"Prefix": "v2/"})
    desc = client.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
    assert desc["LastUpdateTimestamp"] >= desc["CreateTimestamp"]

    client.create_delivery_stream(
        DeliveryStreamName="fromkinesis", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                                          "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=local_stream(
            "x", Prefix="t/!{partitionKeyFromQuery:p}/", ErrorOutputPrefix="e/!{firehose:error-output-type}/",
            DynamicPartitioningConfiguration={"Enabled": True},
            ProcessingConfiguration={"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{p: .t}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]},
        )["ExtendedS3DestinationConfiguration"])
    desc = client.describe_delivery_stream(DeliveryStreamName="fromkinesis")["DeliveryStreamDescription"]
    assert "DeliveryStreamEncryptionConfiguration" not in desc and "LastUpdateTimestamp" not in desc
    ext = desc["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["DynamicPartitioningConfiguration"] == {"Enabled": True, "RetryOptions": {"DurationInSeconds": 300}}
    assert len(ext["ProcessingConfiguration"]["Processors"][0]["Parameters"]) == 2  # only Lambda's are filled in
