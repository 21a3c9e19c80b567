"""The model-driven request validator: AWS's type errors, constraint messages, Java regexes, robustness."""

from __future__ import annotations

import base64
import datetime
import math
import random
import re
import unicodedata
import warnings
from typing import Any

import pytest
from botocore.loaders import Loader

from firehose.errors import FirehoseError, InvalidArgumentException, SerializationException
from firehose.frontdoor.shapes import ServiceShapes, java_regex
from firehose.streams.errors import ValidationException

KINESIS = ServiceShapes.load("kinesis", validation_error=ValidationException)
FIREHOSE = ServiceShapes.load("firehose", validation_error=InvalidArgumentException)
ROLE = "arn:aws:iam::123456789012:role/firehose"
BUCKET = "arn:aws:s3:::bucket"
PATTERN_NAME = "[a-zA-Z0-9_.-]+"
ITERATOR_TYPES = "[AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"


def errors(*items: str) -> str:
    n = len(items)
    return f"{n} validation error{'s' if n != 1 else ''} detected: " + "; ".join(items)


def at(path: str, constraint: str) -> str:
    return f"Value at '{path}' failed to satisfy constraint: {constraint}"


def null(path: str) -> str:
    return f"Value null at '{path}' failed to satisfy constraint: Member must not be null"


def raised(shapes: ServiceShapes, operation: str, body: dict[str, Any], **kwargs: Any) -> FirehoseError | None:
    try:
        shapes.validator(operation).validate(body, **kwargs)
    except FirehoseError as exc:
        return exc
    return None


def check(shapes: ServiceShapes, operation: str, body: dict[str, Any], kind: type[FirehoseError] | None,
          message: str | None = None, **kwargs: Any) -> None:
    exc = raised(shapes, operation, body, **kwargs)
    if kind is None:
        assert exc is None, exc.message if exc else ""
        return
    assert type(exc) is kind, (exc, message)
    assert exc.message == message


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- Kinesis --------------------------------------------------------------------------------

KINESIS_CASES: list[tuple[str, str, dict[str, Any], type[FirehoseError] | None, str | None]] = [
    ("create {}", "CreateStream", {}, ValidationException, errors(null("streamName"))),
    ("create empty name, zero shards", "CreateStream", {"StreamName": "", "ShardCount": 0}, ValidationException,
     errors(at("streamName", f"Member must satisfy regular expression pattern: {PATTERN_NAME}"),
            at("streamName", "Member must have length greater than or equal to 1"),
            at("shardCount", "Member must have value greater than or equal to 1"))),
    ("create long name", "CreateStream", {"StreamName": "a" * 129}, ValidationException,
     errors(at("streamName", "Member must have length less than or equal to 128"))),
    ("create ok", "CreateStream", {"StreamName": "s", "ShardCount": 2, "Tags": {"k": ""}}, None, None),
    ("create bad mode enum", "CreateStream", {"StreamName": "s", "StreamModeDetails": {"StreamMode": "X"}},
     ValidationException,
     errors(at("streamModeDetails.streamMode", "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]"))),
    ("create mode null inside", "CreateStream", {"StreamName": "s", "StreamModeDetails": {}}, ValidationException,
     errors(null("streamModeDetails.streamMode"))),
    ("create record size range", "CreateStream", {"StreamName": "s", "MaxRecordSizeInKiB": 99999},
     ValidationException, errors(at("maxRecordSizeInKiB", "Member must have value less than or equal to 10240"))),
    ("put records 501", "PutRecords", {"StreamName": "s", "Records": [{"Data": "", "PartitionKey": "k"}] * 501},
     ValidationException, errors(at("records", "Member must have length less than or equal to 500"))),
    ("put records 0", "PutRecords", {"StreamName": "s", "Records": []}, ValidationException,
     errors(at("records", "Member must have length greater than or equal to 1"))),
    ("partition key 257", "PutRecords", {"StreamName": "s", "Records": [
        {"Data": "", "PartitionKey": "a"}, {"Data": "", "PartitionKey": "a" * 257}]}, ValidationException,
     errors(at("records.2.member.partitionKey", "Member must have length less than or equal to 256"))),
    ("records children before streamName", "PutRecords", {"StreamName": "", "Records": [
        {"Data": "", "PartitionKey": ""}]}, ValidationException,
     errors(at("records.1.member.partitionKey", "Member must have length greater than or equal to 1"),
            at("streamName", f"Member must satisfy regular expression pattern: {PATTERN_NAME}"),
            at("streamName", "Member must have length greater than or equal to 1"))),
    ("record list length before children; ten listed and counted", "PutRecords", {"StreamName": "", "Records": [
        {"Data": "", "PartitionKey": "", "ExplicitHashKey": "x"}] * 501}, ValidationException,
     f"10 validation errors detected: {at('records', 'Member must have length less than or equal to 500')}; "
     + "; ".join([at("records.1.member.explicitHashKey",
                     "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$"),
                  at("records.1.member.partitionKey", "Member must have length greater than or equal to 1")]
                 + [item for i in (2, 3, 4) for item in (
                     at(f"records.{i}.member.explicitHashKey",
                        "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$"),
                     at(f"records.{i}.member.partitionKey", "Member must have length greater than or equal to 1"))]
                 + [at("records.5.member.explicitHashKey",
                       "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$")])),
    ("null record", "PutRecords", {"StreamName": "s", "Records": [{"Data": ""}, None]}, ValidationException,
     errors(null("records.2.member"))),
    ("record without data", "PutRecords", {"StreamName": "s", "Records": [{"PartitionKey": "k"}]},
     ValidationException, errors(null("records.1.member.data"))),
    ("record not a structure", "PutRecords", {"Records": ["x"]}, SerializationException, "Expected null"),
    ("records a map", "PutRecords", {"Records": {"Data": ""}}, SerializationException,
     "Start of structure or map found where not expected."),
    ("put record", "PutRecord", {"StreamName": "s", "Data": b64(b"x"), "PartitionKey": "k",
                                 "SequenceNumberForOrdering": "01"}, ValidationException,
     errors(at("sequenceNumberForOrdering",
               "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,128}))$"))),
    ("tag keys [{}]", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": [{}]}, SerializationException,
     "Start of structure or map found where not expected."),
    ("tag keys [[1]]", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": [[1]]}, SerializationException,
     "Start of list found where not expected"),
    ("tag keys [1, null]", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": [1, None]},
     SerializationException, "NUMBER_VALUE can not be converted to a String"),
    ("tag keys [a, null]", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a", None]},
     ValidationException, errors(null("tagKeys.2.member"))),
    ("tag keys element lengths", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["", "a" * 129, "b"]},
     ValidationException,
     errors(at("tagKeys", "Member must satisfy constraint: [Member must have length less than or equal to 128, "
                          "Member must have length greater than or equal to 1]"))),
    ("tag keys 51", "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["k"] * 51}, ValidationException,
     errors(at("tagKeys", "Member must have length less than or equal to 50"))),
    ("timestamp 1e308", "GetShardIterator", {"ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP",
                                             "Timestamp": 1e308}, SerializationException,
     "NUMBER_VALUE can not be converted to milliseconds since epoch"),
    ("timestamp -1e308", "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "LATEST", "Timestamp": -1e308},
     SerializationException, "NUMBER_VALUE can not be converted to milliseconds since epoch"),
    ("timestamp huge int", "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "LATEST",
                                                "Timestamp": 10**30}, SerializationException,
     "NUMBER_VALUE can not be converted to milliseconds since epoch"),
    ("timestamp ok", "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "AT_TIMESTAMP",
                                          "Timestamp": 1700000000.123}, None, None),
    ("timestamp string", "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "LATEST",
                                              "Timestamp": "1700000000"}, SerializationException,
     "STRING_VALUE can not be converted to milliseconds since epoch"),
    ("bad enum", "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "OLDEST"}, ValidationException,
     errors(at("shardIteratorType", f"Member must satisfy enum value set: {ITERATOR_TYPES}"))),
    ("shard filter nested", "ListShards", {"StreamName": "s", "ShardFilter": {"Type": "X", "ShardId": ""}},
     ValidationException,
     errors(at("shardFilter.type", "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, "
                                   "FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"),
            at("shardFilter.shardId", f"Member must satisfy regular expression pattern: {PATTERN_NAME}"),
            at("shardFilter.shardId", "Member must have length greater than or equal to 1"))),
    ("tags bad value", "AddTagsToStream", {"StreamName": "s", "Tags": {"k": "v" * 257}}, ValidationException,
     errors(at("tags", "Map value must satisfy constraint: [Member must have length less than or equal to 256, "
                       "Member must have length greater than or equal to 0]"))),
    ("tags bad key and value", "AddTagsToStream", {"StreamName": "s", "Tags": {"": "v" * 257}}, ValidationException,
     errors(at("tags", "Map keys must satisfy constraint: [Member must have length less than or equal to 128, "
                       "Member must have length greater than or equal to 1]"),
            at("tags", "Map value must satisfy constraint: [Member must have length less than or equal to 256, "
                       "Member must have length greater than or equal to 0]"))),
    ("tags null value", "AddTagsToStream", {"StreamName": "s", "Tags": {"a": "", "k": None}}, ValidationException,
     errors(null("tags.k.member"))),
    ("tags empty", "AddTagsToStream", {"StreamName": "s", "Tags": {}}, ValidationException,
     errors(at("tags", "Member must have length greater than or equal to 1"))),
    ("tags number value", "AddTagsToStream", {"StreamName": "s", "Tags": {"k": 1}}, SerializationException,
     "NUMBER_VALUE can not be converted to a String"),
    ("tags a list", "AddTagsToStream", {"StreamName": "s", "Tags": ["k"]}, SerializationException,
     "Start of list found where not expected"),
    ("more than 10 errors", "PutRecords", {"StreamName": "s", "Records": [{"Data": "", "PartitionKey": ""}] * 12},
     ValidationException,
     "10 validation errors detected: " + "; ".join(
         at(f"records.{i}.member.partitionKey", "Member must have length greater than or equal to 1")
         for i in range(1, 11))),
    ("type error wins over constraint errors", "PutRecords",
     {"StreamName": "", "Records": [{"Data": "", "PartitionKey": ""}, {"Data": 7}]}, SerializationException,
     "NUMBER_VALUE can not be converted to a Blob"),
    ("top-level type error after constraint error", "CreateStream", {"StreamName": "", "ShardCount": "3"},
     SerializationException, "STRING_VALUE can not be converted to an Integer"),
    ("null is absent", "CreateStream", {"StreamName": "s", "ShardCount": None, "Tags": None}, None, None),
]


@pytest.mark.parametrize(("operation", "body", "kind", "message"), [c[1:] for c in KINESIS_CASES],
                         ids=[c[0] for c in KINESIS_CASES])
def test_kinesis(operation: str, body: dict[str, Any], kind: type[FirehoseError] | None, message: str | None) -> None:
    check(KINESIS, operation, body, kind, message)


#: (operation, member, declared type, a body member value that fits) for each declared type.
DECLARED = {
    "String": ("CreateStream", "StreamName", "s"),
    "Integer": ("CreateStream", "ShardCount", 1),
    "Boolean": ("DeleteStream", "EnforceConsumerDeletion", True),
    "Blob": ("PutRecord", "Data", "AAAA"),
    "Timestamp": ("ListShards", "StreamCreationTimestamp", 1.5),
    "List": ("RemoveTagsFromStream", "TagKeys", ["k"]),
    "Map": ("AddTagsToStream", "Tags", {"k": "v"}),
    "Structure": ("CreateStream", "StreamModeDetails", {"StreamMode": "ON_DEMAND"}),
}
LIST_START = "Start of list found where not expected"
MAP_START = "Start of structure or map found where not expected."
#: What each JSON value gives for each declared type: None when it is accepted.
TYPE_TABLE: dict[str, dict[str, str | None]] = {
    "String": {"str": None, "int": "NUMBER_VALUE can not be converted to a String",
               "float": "NUMBER_VALUE can not be converted to a String",
               "true": "TRUE_VALUE can not be converted to a String",
               "false": "FALSE_VALUE can not be converted to a String", "list": LIST_START, "dict": MAP_START},
    "Integer": {"str": "STRING_VALUE can not be converted to an Integer", "int": None, "float": None,
                "true": "TRUE_VALUE can not be converted to an Integer",
                "false": "FALSE_VALUE can not be converted to an Integer", "list": LIST_START, "dict": MAP_START},
    "Boolean": {"str": "STRING_VALUE can not be converted to an Boolean",
                "int": "NUMBER_VALUE can not be converted to an Boolean",
                "float": "NUMBER_VALUE can not be converted to an Boolean", "true": None, "false": None,
                "list": LIST_START, "dict": MAP_START},
    "Blob": {"str": None, "int": "NUMBER_VALUE can not be converted to a Blob",
             "float": "NUMBER_VALUE can not be converted to a Blob",
             "true": "TRUE_VALUE can not be converted to a Blob",
             "false": "FALSE_VALUE can not be converted to a Blob", "list": LIST_START, "dict": MAP_START},
    "Timestamp": {"str": "STRING_VALUE can not be converted to milliseconds since epoch", "int": None,
                  "float": None, "true": "TRUE_VALUE can not be converted to milliseconds since epoch",
                  "false": "FALSE_VALUE can not be converted to milliseconds since epoch",
                  "list": LIST_START, "dict": MAP_START},
    "List": {"str": "Expected list or null", "int": "Expected list or null", "float": "Expected list or null",
             "true": "Expected list or null", "false": "Expected list or null", "list": None, "dict": MAP_START},
    "Map": {"str": "Expected map or null", "int": "Expected map or null", "float": "Expected map or null",
            "true": "Expected map or null", "false": "Expected map or null", "list": LIST_START, "dict": None},
    "Structure": {"str": "Expected null", "int": "Expected null", "float": "Expected null", "true": "Expected null",
                  "false": "Expected null", "list": LIST_START, "dict": None},
}
JSON_VALUES = {"str": "QUJD", "int": 7, "float": 7.5, "true": True, "false": False, "list": [], "dict": {}}


@pytest.mark.parametrize("declared", sorted(TYPE_TABLE))
@pytest.mark.parametrize("given", sorted(JSON_VALUES))
def test_type_table(declared: str, given: str) -> None:
    operation, member, _ = DECLARED[declared]
    body = {"StreamName": "s", member: JSON_VALUES[given]}
    expected = TYPE_TABLE[declared][given]
    exc = raised(KINESIS, operation, body)
    if expected is None:
        assert not isinstance(exc, SerializationException), exc
    else:
        assert type(exc) is SerializationException and exc.message == expected


def test_json_blob_must_be_canonical_base64() -> None:
    cases = {
        "abc": "Base64 encoded length is expected a multiple of 4 bytes but found: 3",
        "ab!=": "Invalid Base64 character: '!'",
        "QQ=A": "Invalid Base64 character: '='",
        "QQ==QQ==": "Invalid Base64 character: '='",
        "QR==": "Invalid last non-pad Base64 character dectected",
        "QUJ=": "Invalid last non-pad Base64 character dectected",
        "A===": "Invalid last non-pad Base64 character dectected",
        "ééé=": "Invalid Base64 character: 'é'",
    }
    for data, reason in cases.items():
        check(KINESIS, "PutRecord", {"Data": data}, SerializationException,
              f"STRING_VALUE can not be converted to a Blob: {reason}")
    for data in ("", "QQ==", "QUI=", "QUJD", b64(bytes(range(256)))):
        check(KINESIS, "PutRecord", {"Data": data}, None)


def test_cbor_values() -> None:
    check(KINESIS, "PutRecord", {"Data": b"\x00\xff", "PartitionKey": "k"}, None, cbor=True)
    check(KINESIS, "PutRecord", {"Data": b"x", "StreamName": b"s"}, SerializationException,
          "BLOB_VALUE can not be converted to a String", cbor=True)
    check(KINESIS, "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "LATEST",
                                        "Timestamp": datetime.datetime(2024, 1, 1)}, SerializationException,
          "EMBEDDED_OBJECT_VALUE can not be converted to milliseconds since epoch", cbor=True)
    for bad in (math.nan, math.inf, -math.inf):
        check(KINESIS, "GetShardIterator", {"ShardId": "s", "ShardIteratorType": "LATEST", "Timestamp": bad},
              SerializationException, "NUMBER_VALUE can not be converted to milliseconds since epoch", cbor=True)
        check(KINESIS, "ListStreams", {"Limit": bad}, SerializationException,
              "NUMBER_VALUE can not be converted to an Integer", cbor=True)
    check(KINESIS, "AddTagsToStream", {"Tags": {1: "v"}}, SerializationException,
          "NUMBER_VALUE can not be converted to a String", cbor=True)
    check(KINESIS, "AddTagsToStream", {"Tags": {(1, 2): "v"}}, SerializationException,
          "EMBEDDED_OBJECT_VALUE can not be converted to a String", cbor=True)
    odd_keys: dict[Any, Any] = {"StreamName": "s", 5: "x", b"k": [1]}
    check(KINESIS, "CreateStream", odd_keys, None, cbor=True)
    check(KINESIS, "RemoveTagsFromStream", {"TagKeys": {"a", "b"}}, SerializationException,
          "Expected list or null", cbor=True)


def test_string_length_counts_utf16_units() -> None:
    check(KINESIS, "PutRecord", {"Data": "", "PartitionKey": "\U0001F600" * 128}, None)
    check(KINESIS, "PutRecord", {"Data": "", "PartitionKey": "é" * 256}, None)
    check(KINESIS, "PutRecord", {"Data": "", "PartitionKey": "\U0001F600" * 128 + "a"}, ValidationException,
          errors(at("partitionKey", "Member must have length less than or equal to 256")))


def test_numbers_are_floored_and_clamped_in_place() -> None:
    validator = KINESIS.validator("ListStreams")
    body: dict[str, Any] = {"Limit": 5.7}
    validator.validate(body)
    assert body["Limit"] == 5 and type(body["Limit"]) is int
    body = {"Limit": 1e30}
    with pytest.raises(ValidationException) as info:
        validator.validate(body)
    assert info.value.message == errors(at("limit", "Member must have value less than or equal to 10000"))
    assert body["Limit"] == 2**31 - 1
    body = {"Limit": -0.5}
    with pytest.raises(ValidationException):
        validator.validate(body)
    assert body["Limit"] == -1
    body = {"Limit": -(10**40)}
    with pytest.raises(ValidationException):
        validator.validate(body)
    assert body["Limit"] == -(2**31)


def test_values_kinesalite_style() -> None:
    shapes = ServiceShapes.load("kinesis", validation_error=ValidationException, show_values=True)
    assert shapes is ServiceShapes.load("kinesis", validation_error=ValidationException, show_values=True)
    assert shapes is not KINESIS
    check(shapes, "CreateStream", {"StreamName": "", "ShardCount": 0.5}, ValidationException, errors(
        f"Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: "
        f"{PATTERN_NAME}",
        "Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1",
        "Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"))
    check(shapes, "RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a", ""]}, ValidationException, errors(
        "Value '[a, ]' at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: "
        "[Member must have length less than or equal to 128, Member must have length greater than or equal to 1]"))
    check(shapes, "AddTagsToStream", {"Tags": {"k": "v" * 257}}, ValidationException, errors(
        f"Value '{{k={'v' * 257}}}' at 'tags' failed to satisfy constraint: Map value must satisfy constraint: "
        "[Member must have length less than or equal to 256, Member must have length greater than or equal to 0]"))
    exc = raised(shapes, "PutRecords", {"StreamName": "s", "Records": []})
    assert isinstance(exc, ValidationException)
    assert exc.message == errors("Value '[]' at 'records' failed to satisfy constraint: "
                                 "Member must have length greater than or equal to 1")
    exc = raised(shapes, "PutRecords", {"StreamName": "s", "Records": [{"Data": ""}] * 501})
    assert isinstance(exc, ValidationException)
    assert re.fullmatch(r"1 validation error detected: Value '\[(com\.amazonaws\.kinesis\.v20131202\."
                        r"PutRecordsRequestEntry@[0-9a-f]{8}(, )?){501}\]' at 'records' failed to satisfy "
                        r"constraint: Member must have length less than or equal to 500", exc.message)
    check(shapes, "PutRecord", {"Data": "!!!!"}, SerializationException,
          "'!!!!' can not be converted to a Blob: Invalid Base64 character: '!'")


def test_unknown_members_are_ignored_and_never_walked() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = {"a": [deep]}
    for shapes, operation in ((KINESIS, "ListStreams"), (KINESIS, "DescribeLimits"),
                              (FIREHOSE, "ListDeliveryStreams")):
        check(shapes, operation, {"Unknown": deep, "streamName": 5, "limit": "x"}, None)


def test_top_level_not_an_object() -> None:
    validator = KINESIS.validator("ListStreams")
    for body, message in (([], LIST_START), ("x", "Expected null"), (None, "Expected null")):
        with pytest.raises(SerializationException) as info:
            validator.validate(body)  # type: ignore[arg-type]
        assert info.value.message == message


# -- Firehose -------------------------------------------------------------------------------

SKIP_DATA = frozenset({"Records.*.Data"})
FIREHOSE_CASES: list[tuple[str, str, dict[str, Any], type[FirehoseError] | None, str | None, frozenset[str]]] = [
    ("batch 0 records", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": []}, InvalidArgumentException,
     errors(at("records", "Member must have length greater than or equal to 1")), frozenset()),
    ("batch 501 records", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": [{"Data": "QQ=="}] * 501},
     InvalidArgumentException, errors(at("records", "Member must have length less than or equal to 500")),
     SKIP_DATA),
    ("bad name pattern", "PutRecordBatch", {"DeliveryStreamName": "a b", "Records": [{"Data": ""}]},
     InvalidArgumentException,
     errors(at("deliveryStreamName", f"Member must satisfy regular expression pattern: {PATTERN_NAME}")),
     frozenset()),
    ("name too long", "PutRecordBatch", {"DeliveryStreamName": "a" * 65, "Records": [{"Data": ""}]},
     InvalidArgumentException, errors(at("deliveryStreamName", "Member must have length less than or equal to 64")),
     frozenset()),
    ("empty name", "PutRecord", {"DeliveryStreamName": "", "Record": {"Data": ""}}, InvalidArgumentException,
     errors(at("deliveryStreamName", f"Member must satisfy regular expression pattern: {PATTERN_NAME}"),
            at("deliveryStreamName", "Member must have length greater than or equal to 1")), frozenset()),
    ("bad data, not skipped", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": [{"Data": 5}]},
     SerializationException, "NUMBER_VALUE can not be converted to a Blob", frozenset()),
    ("bad base64, not skipped", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": [{"Data": "!!"}]},
     SerializationException,
     "STRING_VALUE can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but "
     "found: 2", frozenset()),
    ("missing data, not skipped", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": [{}]},
     InvalidArgumentException, errors(null("records.1.member.data")), frozenset()),
    ("data over 1000 KiB, not skipped", "PutRecordBatch",
     {"DeliveryStreamName": "s", "Records": [{"Data": b64(bytes(1024001))}]}, InvalidArgumentException,
     errors(at("records.1.member.data", "Member must have length less than or equal to 1024000")), frozenset()),
    ("bad data skipped", "PutRecordBatch",
     {"DeliveryStreamName": "s", "Records": [{"Data": 5}, {"Data": "!!"}, {}, {"Data": [1]}]}, None, None,
     SKIP_DATA),
    ("skipped data, sibling still checked", "PutRecordBatch", {"DeliveryStreamName": 5, "Records": [{"Data": 5}]},
     SerializationException, "NUMBER_VALUE can not be converted to a String", SKIP_DATA),
    ("skipped data, record must still be a structure", "PutRecordBatch",
     {"DeliveryStreamName": "s", "Records": ["QQ=="]}, SerializationException, "Expected null", SKIP_DATA),
    ("skip whole records", "PutRecordBatch", {"DeliveryStreamName": "s", "Records": ["QQ==", None, 5]}, None, None,
     frozenset({"Records.*"})),
    ("nested wrong type", "CreateDeliveryStream", {"DeliveryStreamName": "s", "ExtendedS3DestinationConfiguration": {
        "RoleARN": ROLE, "BucketARN": BUCKET, "ProcessingConfiguration": {"Enabled": True, "Processors": [
            {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": 5}]}]}}},
     SerializationException, "NUMBER_VALUE can not be converted to a String", frozenset()),
    ("nested integer as string", "CreateDeliveryStream", {"DeliveryStreamName": "s",
                                                          "ExtendedS3DestinationConfiguration": {
        "RoleARN": ROLE, "BucketARN": BUCKET, "BufferingHints": {"SizeInMBs": "5"}}}, SerializationException,
     "STRING_VALUE can not be converted to an Integer", frozenset()),
    ("nested constraints", "CreateDeliveryStream", {"DeliveryStreamName": "s", "ExtendedS3DestinationConfiguration": {
        "RoleARN": "role", "BufferingHints": {"SizeInMBs": 0}, "ProcessingConfiguration": {"Processors": [
            {"Type": "Lambda", "Parameters": [{"ParameterName": "Arn", "ParameterValue": " "}]}]},
        "CompressionFormat": "gzip"}}, InvalidArgumentException,
     errors(at("extendedS3DestinationConfiguration.roleARN",
               "Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+"),
            null("extendedS3DestinationConfiguration.bucketARN"),
            at("extendedS3DestinationConfiguration.bufferingHints.sizeInMBs",
               "Member must have value greater than or equal to 1"),
            at("extendedS3DestinationConfiguration.compressionFormat",
               "Member must satisfy enum value set: [UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY]"),
            at("extendedS3DestinationConfiguration.processingConfiguration.processors.1.member.parameters.1.member"
               ".parameterName", "Member must satisfy enum value set: [LambdaArn, NumberOfRetries, "
               "MetadataExtractionQuery, JsonParsingEngine, RoleArn, BufferSizeInMBs, BufferIntervalInSeconds, "
               "SubRecordType, Delimiter, CompressionFormat, DataMessageExtraction]"),
            at("extendedS3DestinationConfiguration.processingConfiguration.processors.1.member.parameters.1.member"
               ".parameterValue", "Member must satisfy regular expression pattern: ^(?!\\s*$).+")), frozenset()),
    ("create ok", "CreateDeliveryStream", {"DeliveryStreamName": "s", "DeliveryStreamType": "DirectPut",
                                           "ExtendedS3DestinationConfiguration": {
        "RoleARN": ROLE, "BucketARN": BUCKET, "Prefix": "p/!{timestamp:yyyy}/", "BufferingHints": {
            "SizeInMBs": 5, "IntervalInSeconds": 60}, "CompressionFormat": "GZIP"},
        "Tags": [{"Key": "Ünïcødé 名前 ٣", "Value": "a b:c/d=e+f-g@h%"}]}, None, None, frozenset()),
    ("list limit 0", "ListDeliveryStreams", {"Limit": 0}, InvalidArgumentException,
     errors(at("limit", "Member must have value greater than or equal to 1")), frozenset()),
    ("51 tags", "TagDeliveryStream", {"DeliveryStreamName": "s", "Tags": [{"Key": "k", "Value": "v"}] * 51},
     InvalidArgumentException, errors(at("tags", "Member must have length less than or equal to 50")), frozenset()),
    ("aws: tag key", "TagDeliveryStream", {"DeliveryStreamName": "s", "Tags": [{"Key": "k"}, {"Key": "aws:k"}]},
     InvalidArgumentException, errors(at("tags.2.member.key", "Member must satisfy regular expression pattern: "
                                                              "^(?!aws:)[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$")),
     frozenset()),
    ("tag without key", "TagDeliveryStream", {"DeliveryStreamName": "s", "Tags": [{"Value": "v"}]},
     InvalidArgumentException, errors(null("tags.1.member.key")), frozenset()),
    ("untag bad keys", "UntagDeliveryStream", {"DeliveryStreamName": "s", "TagKeys": ["ok", "no!"]},
     InvalidArgumentException, errors(at("tagKeys", (
         "Member must satisfy constraint: [Member must have length less than or equal to 128, Member must have length "
         "greater than or equal to 1, Member must satisfy regular expression pattern: "
         "^(?!aws:)[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$]"))), frozenset()),
]


@pytest.mark.parametrize(("operation", "body", "kind", "message", "skip"), [c[1:] for c in FIREHOSE_CASES],
                         ids=[c[0] for c in FIREHOSE_CASES])
def test_firehose(operation: str, body: dict[str, Any], kind: type[FirehoseError] | None, message: str | None,
                  skip: frozenset[str]) -> None:
    check(FIREHOSE, operation, body, kind, message, skip=skip)


def test_overrides_accept_what_the_daemon_adds() -> None:
    body = {"DeliveryStreamName": "s", "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": "http://localhost:8080/"}, "S3Configuration": {
            "RoleARN": ROLE, "BucketARN": BUCKET, "CompressionFormat": "ZSTD"}}}
    check(FIREHOSE, "CreateDeliveryStream", body, InvalidArgumentException, errors(
        at("httpEndpointDestinationConfiguration.endpointConfiguration.url",
           "Member must satisfy regular expression pattern: https://.*"),
        at("httpEndpointDestinationConfiguration.s3Configuration.compressionFormat",
           "Member must satisfy enum value set: [UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY]")))
    overrides: dict[str, dict[str, Any]] = {
        "CompressionFormat": {"enum": ["UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY", "ZSTD"]},
        "HttpEndpointUrl": {"pattern": None}}
    patched = ServiceShapes.load("firehose", validation_error=InvalidArgumentException, overrides=overrides)
    assert patched is not FIREHOSE
    assert patched is ServiceShapes.load("firehose", validation_error=InvalidArgumentException, overrides=overrides)
    check(patched, "CreateDeliveryStream", body, None)
    check(FIREHOSE, "CreateDeliveryStream", {"DeliveryStreamName": "s", "S3DestinationConfiguration": {
        "RoleARN": ROLE, "BucketARN": BUCKET, "CompressionFormat": "ZSTD"}}, InvalidArgumentException, errors(
        at("s3DestinationConfiguration.compressionFormat",
           "Member must satisfy enum value set: [UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY]")))
    with pytest.raises(KeyError):
        ServiceShapes.load("firehose", validation_error=InvalidArgumentException, overrides={"NoSuchShape": {}})


def test_skip_paths_must_name_members() -> None:
    validator = FIREHOSE.validator("PutRecordBatch")
    for bad in ("Records.Data", "Nope", "Records.*.Nope", "DeliveryStreamName.x", "Records..Data"):
        with pytest.raises(ValueError):
            validator.validate({}, skip=frozenset({bad}))


# -- models, patterns, synthetic shapes -----------------------------------------------------


@pytest.mark.parametrize("shapes", [KINESIS, FIREHOSE], ids=["kinesis", "firehose"])
def test_every_operation_compiles(shapes: ServiceShapes) -> None:
    assert len(shapes.operations) >= 12
    for operation in sorted(shapes.operations):
        validator = shapes.validator(operation)
        assert validator is shapes.validator(operation)
        exc = raised(shapes, operation, {})
        assert exc is None or type(exc) is shapes.validation_error
        check(shapes, operation, {"NotAMember": [1, {"x": None}]}, type(exc) if exc else None,
              exc.message if exc else None)


def test_every_model_pattern_translates() -> None:
    seen = set()
    for service in ("firehose", "kinesis"):
        for shape in Loader().load_service_model(service, "service-2")["shapes"].values():
            if "pattern" in shape:
                seen.add(shape["pattern"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pattern in seen:
            java_regex(pattern)
    assert len(seen) > 40


def test_java_regex_semantics() -> None:
    any_ = java_regex(".*")
    for terminator in "\n\r\u0085\u2028\u2029":
        assert any_.fullmatch(f"a{terminator}b") is None
    assert any_.fullmatch("a\tb\u00a0c\U0001F600") is not None
    not_blank = java_regex("^(?!\\s*$).+")
    assert not_blank.fullmatch(" a ") and not not_blank.fullmatch("  ") and not not_blank.fullmatch("a\n")
    assert not not_blank.fullmatch("\u2028") and not_blank.fullmatch("\u3000") is not None  # \s is ASCII in Java
    digits = java_regex("\\d{12}")
    assert digits.fullmatch("123456789012") and not digits.fullmatch("١٢٣٤٥٦٧٨٩٠١٢")
    word = java_regex("arn:.*:s3:::[\\w\\.\\-]{1,255}")
    assert word.fullmatch("arn:aws:s3:::my.bucket-1") and not word.fullmatch("arn:aws:s3:::bücket")
    no_ws = java_regex("^\\S+$")
    assert no_ws.fullmatch("ab") and not no_ws.fullmatch("ab\n") and no_ws.fullmatch("a\u00a0b")
    either = java_regex("^$|[a-zA-Z/_]+")
    assert either.fullmatch("") and either.fullmatch("Europe/Paris") and not either.fullmatch("x\n")
    topic = java_regex("[a-zA-Z0-9\\\\._\\\\-]+")
    assert topic.fullmatch("a\\b.c-d_e") and not topic.fullmatch("a b")
    assert java_regex("[\\u0001-\\uFFFF]*").fullmatch("\U0001F600") is None
    assert java_regex("(?<year>\\d{4})").fullmatch("2024")
    for unsupported in ("\\Qa\\E", "[a-z&&[^b]]", "\\h", "[\\P{L}]", "[^\\p{L}]", "a\\", "[a", "\\p{Alpha}",
                        "[[a]]", "\\v"):
        with pytest.raises(ValueError):
            java_regex(unsupported)


def test_tag_pattern_is_letters_separators_numbers() -> None:
    tag = java_regex("^[\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@%]*$")
    for cp in range(0x110000):
        c = chr(cp)
        expected = unicodedata.category(c)[0] in "LZN" or c in "_.:/=+-@%"
        assert (tag.fullmatch(c) is not None) == expected, hex(cp)
    upper = java_regex("\\p{Lu}+")
    assert upper.fullmatch("ABCÄΩ") and not upper.fullmatch("aB")
    numbers = java_regex("[\\p{N}x]+")
    assert numbers.fullmatch("12x٣Ⅻ½") and not numbers.fullmatch("a")


def synthetic(shapes: dict[str, Any], members: dict[str, str], required: tuple[str, ...] = ()) -> ServiceShapes:
    model = {"metadata": {"endpointPrefix": "test", "apiVersion": "2020-01-01"},
             "operations": {"Op": {"input": {"shape": "Input"}}, "NoInput": {}},
             "shapes": {**shapes, "Input": {"type": "structure", "required": list(required),
                                            "members": {k: {"shape": v} for k, v in members.items()}}}}
    return ServiceShapes(model, validation_error=ValidationException)


def test_long_double_and_lists_of_numbers() -> None:
    shapes = synthetic({
        "L": {"type": "long", "min": 0, "max": 10},
        "D": {"type": "double", "min": 0, "max": 1},
        "F": {"type": "float"},
        "Ints": {"type": "list", "member": {"shape": "I"}},
        "I": {"type": "integer", "min": 1, "max": 5},
        "B": {"type": "blob", "min": 1, "max": 2},
    }, {"Long": "L", "Double": "D", "Float": "F", "Ints": "Ints", "Blob": "B"})
    check(shapes, "Op", {"Long": "1"}, SerializationException, "STRING_VALUE can not be converted to a Long")
    check(shapes, "Op", {"Double": True}, SerializationException, "TRUE_VALUE can not be converted to a Double")
    check(shapes, "Op", {"Float": []}, SerializationException, LIST_START)
    check(shapes, "Op", {"Double": 0.5, "Float": -1e300, "Long": 9.99}, None)
    body: dict[str, Any] = {"Long": 10**30, "Double": 1.5, "Ints": [1.9, 7, None]}
    check_body = raised(shapes, "Op", body)
    assert isinstance(check_body, ValidationException)
    assert check_body.message == errors(
        at("long", "Member must have value less than or equal to 10"),
        at("double", "Member must have value less than or equal to 1"),
        at("ints", "Member must satisfy constraint: [Member must have value less than or equal to 5, "
                   "Member must have value greater than or equal to 1]"),
        null("ints.3.member"))
    assert body == {"Long": 2**63 - 1, "Double": 1.5, "Ints": [1, 7, None]}
    check(shapes, "Op", {"Blob": b""}, ValidationException,
          errors(at("blob", "Member must have length greater than or equal to 1")))
    shown = ServiceShapes(shapes_model(shapes), validation_error=ValidationException, show_values=True)
    check(shown, "Op", {"Blob": "QUJD"}, ValidationException, errors(
        "Value 'java.nio.HeapByteBuffer[pos=0 lim=3 cap=3]' at 'blob' failed to satisfy constraint: "
        "Member must have length less than or equal to 2"))
    check(shapes, "NoInput", {"x": 1}, None)


def shapes_model(shapes: ServiceShapes) -> dict[str, Any]:
    return {"metadata": {}, "operations": {"Op": {"input": {"shape": "Input"}}}, "shapes": shapes._shapes}


def test_recursive_shape_and_deep_nesting() -> None:
    shapes = synthetic({"Node": {"type": "structure", "members": {"Child": {"shape": "Node"},
                                                                  "Name": {"shape": "S"}}},
                        "S": {"type": "string", "min": 1}}, {"Root": "Node"})
    check(shapes, "Op", {"Root": {"Child": {"Child": {"Name": ""}}}}, ValidationException,
          errors(at("root.child.child.name", "Member must have length greater than or equal to 1")))
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"Child": deep}
    check(shapes, "Op", {"Root": deep}, SerializationException, "The request is nested too deeply.")


# -- robustness -----------------------------------------------------------------------------


def _junk(rnd: random.Random, depth: int) -> Any:
    roll = rnd.random()
    if depth <= 0 or roll < 0.55:
        return rnd.choice([
            None, True, False, 0, -1, 1, 2**31, 2**63, 10**40, -(10**40), 0.5, -0.5, 1e308, -1e308, math.nan,
            math.inf, "", "a", "x" * 300, "QUJD", "QQ=", "\U0001F600", "\u2028", "aws:x", "0", "01",
            "AT_TIMESTAMP", "DirectPut", b"", b"\x00" * 3, bytearray(b"a"), datetime.datetime(2020, 1, 1),
            frozenset({1}), (1, 2), object(),
        ])
    if roll < 0.8:
        return [_junk(rnd, depth - 1) for _ in range(rnd.randrange(0, 4))]
    keys = ["Data", "Key", "Value", "Type", "Records", "StreamName", 1, b"k", (1,), "x" * 200]
    return {rnd.choice(keys): _junk(rnd, depth - 1) for _ in range(rnd.randrange(0, 4))}


def _fit(rnd: random.Random, shapes: dict[str, Any], name: str, depth: int) -> Any:
    """A value for ``name`` that mostly fits its shape, sometimes not."""
    if rnd.random() < 0.08 or depth > 12:
        return _junk(rnd, 2)
    shape = shapes[name]
    kind = shape["type"]
    if kind == "structure":
        members = shape.get("members", {})
        return {m: _fit(rnd, shapes, ref["shape"], depth + 1) for m, ref in members.items() if rnd.random() < 0.6}
    if kind == "list":
        return [_fit(rnd, shapes, shape["member"]["shape"], depth + 1) for _ in range(rnd.choice([0, 1, 2, 3, 51]))]
    if kind == "map":
        return {rnd.choice(["k", "", "x" * 129]): _fit(rnd, shapes, shape["value"]["shape"], depth + 1)
                for _ in range(rnd.randrange(0, 3))}
    if kind == "string":
        if shape.get("enum") and rnd.random() < 0.7:
            return rnd.choice(shape["enum"])
        return rnd.choice(["s", "", "a b", "arn:aws:iam::123456789012:role/r", "x" * 129, "\n", "aws:k"])
    if kind in ("integer", "long"):
        return rnd.choice([0, 1, 5, -3, 2.7, 10**20, 1e300])
    if kind in ("double", "float"):
        return rnd.choice([0, 0.5, 2, -1.5])
    if kind == "boolean":
        return rnd.random() < 0.5
    if kind == "blob":
        return rnd.choice(["", "QUJD", "QQ==", "QR==", "abc", b"raw"])
    if kind == "timestamp":
        return rnd.choice([0, 1.7e9, 1e308, -5])
    return _junk(rnd, 1)


@pytest.mark.parametrize("service", ["kinesis", "firehose"])
def test_fuzz_only_two_exception_types(service: str) -> None:
    shapes = KINESIS if service == "kinesis" else FIREHOSE
    shown = ServiceShapes.load(service, validation_error=shapes.validation_error, show_values=True)
    model = Loader().load_service_model(service, "service-2")
    rnd = random.Random(20240601 if service == "kinesis" else 7)
    operations = sorted(shapes.operations)
    outcomes = {"ok": 0, "serialization": 0, "validation": 0}
    for _ in range(8000):
        operation = rnd.choice(operations)
        input_shape = model["operations"][operation].get("input", {}).get("shape")
        body = _fit(rnd, model["shapes"], input_shape, 0) if input_shape and rnd.random() < 0.8 else None
        if not isinstance(body, dict):
            body = _junk(rnd, 4)
            body = body if isinstance(body, dict) else {"X": body}
        skip = frozenset({"Records.*.Data"}) if operation in ("PutRecordBatch", "PutRecords") and rnd.random() < 0.5 \
            else frozenset()
        try:
            (shown if rnd.random() < 0.3 else shapes).validator(operation).validate(
                body, skip=skip, cbor=rnd.random() < 0.5)
            outcomes["ok"] += 1
        except SerializationException:
            outcomes["serialization"] += 1
        except FirehoseError as exc:
            assert type(exc) is shapes.validation_error
            assert re.match(r"\d+ validation errors? detected: Value", exc.message), exc.message
            outcomes["validation"] += 1
    assert all(outcomes.values()), outcomes
