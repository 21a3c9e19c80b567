"""A stream's processing chain (spec: transforms.md §5, delivery.md §4): ``plan`` reads a definition once,
decides the steps and refuses one that cannot run; ``Processor.process`` runs them on a batch in AWS's
order (Decompression, CloudWatchLogProcessing, RecordDeAggregation, Lambda, partition keys,
AppendDelimiterToRecord) and returns the records by partition, every record it could not process
turned into an error-output document of its category."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.definitions import DeliveryStreamDefinition
from firehose.objectkeys import KeyTemplate
from firehose.processing.chain import Plan, ProcessedBatch, Processor, RawRecord, plan
from firehose.processing.transform import WorkerPool
from firehose.settings import Settings
from tests.support.config import local_stream
from tests.support.transforms import verdicts, write_function

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/s"
ARRIVAL = 1_700_000_000_000


def processor(kind: str, **params: str) -> dict[str, Any]:
    return {"Type": kind, "Parameters": [{"ParameterName": k, "ParameterValue": v} for k, v in params.items()]}


def definition(*processors: dict[str, Any], prefix: str | None = None, partitioning: bool = False,
               enabled: bool = True) -> DeliveryStreamDefinition:
    extra: dict[str, Any] = {"ProcessingConfiguration": {"Enabled": enabled, "Processors": list(processors)}}
    if prefix is not None:
        extra.update(Prefix=prefix, ErrorOutputPrefix="errors/!{firehose:error-output-type}/")
    if partitioning:
        extra["DynamicPartitioningConfiguration"] = {"Enabled": True}
    return DeliveryStreamDefinition.model_validate(local_stream("s", **extra))


def settings(fn_dir: Path) -> Settings:
    return Settings.model_validate({"transforms_dir": str(fn_dir)})


@pytest.fixture
def fn_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "fns"
    directory.mkdir()
    return directory


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(1, nice=0)
    yield pool
    pool.close()


def run_chain(defn: DeliveryStreamDefinition, fn_dir: Path, raw: list[bytes], pool: WorkerPool | None = None,
              kinesis: dict[str, Any] | None = None) -> ProcessedBatch:
    """``raw`` through the chain ``defn`` plans, as records 7.0, 7.1, ... arriving a millisecond apart."""
    chain = plan(defn, settings(fn_dir))
    s3 = defn.destination
    keys = KeyTemplate.build(s3.prefix, s3.error_output_prefix, custom_time_zone=None, extension="")
    records = [RawRecord((7, i), data, ARRIVAL + i, kinesis) for i, data in enumerate(raw)]
    return asyncio.run(Processor(chain, keys, pool, stream_arn=STREAM_ARN, region="us-east-1").process(records))


def groups(batch: ProcessedBatch) -> dict[str, list[bytes]]:
    """The batch's records by partition: ``data`` (with ``name=value`` of its keys) or ``error <type>``."""
    out: dict[str, list[bytes]] = {}
    for partition, items in batch.groups.items():
        described = orjson.loads(partition)  # the partition id as the spool stores it
        name = (f"error {described['e']}" if "e" in described
                else " ".join(["data", *(f"{k}={v}" for k, v in sorted(described["k"].items()))]))
        out[name] = [data for data, _ in items]
    return out


def error_documents(batch: ProcessedBatch, error_type: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in groups(batch).get(f"error {error_type}", [])]


# -- plan: what runs -------------------------------------------------------------------------------------


def test_a_definition_without_processing_plans_nothing(fn_dir: Path) -> None:
    bare = DeliveryStreamDefinition.model_validate(local_stream("s"))
    assert plan(bare, settings(fn_dir)) == Plan() and not Plan().active


def test_disabled_processing_plans_nothing(fn_dir: Path) -> None:
    off = definition(processor("AppendDelimiterToRecord"), processor("Decompression"), enabled=False)
    assert not plan(off, settings(fn_dir)).active


def test_the_plan_reads_every_processor_and_its_parameters(fn_dir: Path) -> None:
    write_function(fn_dir, "fn", "def lambda_handler(event, context):\n    return event\n")
    chain = plan(definition(
        processor("AppendDelimiterToRecord", Delimiter=base64.b64encode(b"\r\n").decode()),
        processor("Lambda", LambdaArn=ARN.format("fn"), NumberOfRetries="5", BufferSizeInMBs="0.5",
                  BufferIntervalInSeconds="10"),
        processor("RecordDeAggregation", SubRecordType="DELIMITED", Delimiter=base64.b64encode(b"|").decode()),
        processor("CloudWatchLogProcessing", DataMessageExtraction="true"),
        processor("Decompression", CompressionFormat="GZIP"),
    ), settings(fn_dir))
    assert (chain.decompress, chain.cloudwatch, chain.deaggregate, chain.delimiter_in) == (True, True, "DELIMITED",
                                                                                         b"|")
    assert chain.append_delimiter == b"\r\n" and chain.active
    assert chain.transform is not None and chain.transform.function.path == fn_dir / "fn.py"
    assert (chain.transform.retries, chain.buffer_bytes, chain.buffer_interval_s) == (5, 512 * 1024, 10)


def test_a_lambda_step_has_aws_defaults_and_append_delimiter_defaults_to_a_newline(fn_dir: Path) -> None:
    write_function(fn_dir, "fn", "def lambda_handler(event, context):\n    return event\n")
    chain = plan(definition(processor("Lambda", LambdaArn=ARN.format("fn")), processor("AppendDelimiterToRecord")),
                 settings(fn_dir))
    assert chain.transform is not None
    assert (chain.transform.retries, chain.buffer_bytes, chain.buffer_interval_s) == (3, 1024 * 1024, 60)
    assert chain.append_delimiter == b"\n"


# -- plan: what cannot run is refused, with the reason ----------------------------------------------------------

@pytest.mark.parametrize(("processors", "options", "reason"), [
    ([processor("AppendDelimiterToRecord"), processor("AppendDelimiterToRecord")], {}, "more than one"),
    ([{"Type": "Decompression", "Parameters": [
        {"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"},
        {"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]}], {}, "given twice"),
    ([processor("Decompression", CompressionFormat="ZSTD")], {}, "CompressionFormat must be GZIP"),
    ([processor("CloudWatchLogProcessing", DataMessageExtraction="false")], {}, "DataMessageExtraction must be true"),
    ([processor("RecordDeAggregation")], {}, "SubRecordType must be JSON or DELIMITED"),
    ([processor("RecordDeAggregation", SubRecordType="DELIMITED")], {}, "DELIMITED needs a base64 Delimiter"),
    ([processor("RecordDeAggregation", SubRecordType="DELIMITED", Delimiter="!!")], {}, "Delimiter must be base64"),
    ([processor("Lambda")], {}, "LambdaArn is required"),
    ([processor("Lambda", LambdaArn=ARN.format("absent"))], {}, "absent.py"),
    ([processor("Lambda", LambdaArn=ARN.format("fn"), NumberOfRetries="301")], {}, "between 0 and 300"),
    ([processor("Lambda", LambdaArn=ARN.format("fn"), BufferSizeInMBs="4")], {}, "between 0.2 and 3"),
    ([processor("Lambda", LambdaArn=ARN.format("fn"), BufferIntervalInSeconds="soon")], {}, "must be a number"),
    ([processor("MetadataExtraction", JsonParsingEngine="JQ-1.6")],
     {"prefix": "k=!{partitionKeyFromQuery:k}/", "partitioning": True}, "MetadataExtractionQuery is required"),
    ([processor("MetadataExtraction", MetadataExtractionQuery="{k:.k}", JsonParsingEngine="JQ-1.5")],
     {"prefix": "k=!{partitionKeyFromQuery:k}/", "partitioning": True}, "JsonParsingEngine must be JQ-1.6"),
    ([processor("MetadataExtraction", MetadataExtractionQuery="{k:.k")],
     {"prefix": "k=!{partitionKeyFromQuery:k}/", "partitioning": True}, "not a valid jq program"),
    ([processor("MetadataExtraction", MetadataExtractionQuery="{k:.k}")], {"prefix": "k=!{timestamp:yyyy}/"},
     "requires DynamicPartitioningConfiguration.Enabled"),
    ([], {"prefix": "k=!{partitionKeyFromQuery:k}/", "partitioning": True}, "no MetadataExtraction processor"),
    ([], {"prefix": "k=!{partitionKeyFromLambda:k}/", "partitioning": True}, "no Lambda processor"),
    ([], {"prefix": "plain/", "partitioning": True}, "the Prefix uses no partition key"),
], ids=["processor-twice", "parameter-twice", "not-gzip", "no-extraction", "no-sub-record-type",
        "delimited-without-delimiter", "delimiter-not-base64", "no-lambda-arn", "no-such-function",
        "retries-out-of-range", "buffer-size-out-of-range", "interval-not-a-number", "no-query", "wrong-jq-engine",
        "query-does-not-compile", "query-without-partitioning", "query-key-without-query",
        "lambda-key-without-lambda", "partitioning-without-keys"])
def test_a_definition_that_cannot_run_is_refused_with_the_reason(
        fn_dir: Path, processors: list[dict[str, Any]], options: dict[str, Any], reason: str) -> None:
    write_function(fn_dir, "fn", "def lambda_handler(event, context):\n    return event\n")
    with pytest.raises(ValueError, match=reason):
        plan(definition(*processors, **options), settings(fn_dir))


# -- running a batch: built-in steps -------------------------------------------------------------------------


def test_records_keep_their_order_and_arrival_times_and_get_the_delimiter(fn_dir: Path) -> None:
    batch = run_chain(definition(processor("AppendDelimiterToRecord")), fn_dir, [b"one", b"two", b"three"])
    assert batch.groups == {next(iter(batch.groups)): [(b"one\n", ARRIVAL), (b"two\n", ARRIVAL + 1),
                                                       (b"three\n", ARRIVAL + 2)]}
    assert groups(batch) == {"data": [b"one\n", b"two\n", b"three\n"]}
    assert (batch.dropped, batch.failed) == (0, {})


def cloudwatch(kind: str, *messages: str) -> bytes:
    return gzip.compress(json.dumps({
        "messageType": kind, "owner": "123456789012", "logGroup": "/app", "logStream": "s",
        "subscriptionFilters": ["f"],
        "logEvents": [{"id": str(i), "timestamp": ARRIVAL, "message": m} for i, m in enumerate(messages)]}).encode())


def test_cloudwatch_logs_are_decompressed_and_their_messages_kept_control_messages_dropped(fn_dir: Path) -> None:
    defn = definition(processor("Decompression", CompressionFormat="GZIP"),
                      processor("CloudWatchLogProcessing", DataMessageExtraction="true"))
    batch = run_chain(defn, fn_dir, [cloudwatch("DATA_MESSAGE", "first", "second"), cloudwatch("CONTROL_MESSAGE", "hi"),
                                     b"not gzip at all", cloudwatch("DATA_MESSAGE", "third")])
    assert groups(batch)["data"] == [b"first\nsecond\n", b"third\n"]
    assert batch.dropped == 1
    assert batch.failed == {"decompression-failed": 1}
    [doc] = error_documents(batch, "decompression-failed")
    assert base64.b64decode(doc["rawData"]) == b"not gzip at all"  # the record as it came, still compressed
    assert (doc["errorCode"], doc["arrivalTimestamp"]) == ("Decompression.Failed", ARRIVAL + 2)


def test_deaggregation_makes_sub_records_and_a_record_it_cannot_split_fails_whole(fn_dir: Path) -> None:
    defn = definition(processor("RecordDeAggregation", SubRecordType="JSON"), processor("AppendDelimiterToRecord"))
    batch = run_chain(defn, fn_dir, [b'{"a":1}{"a":2}', b'{"a":3}{"a":', b'[{"a":4},{"a":5}]'])
    assert groups(batch)["data"] == [b'{"a":1}\n', b'{"a":2}\n', b'[{"a":4},{"a":5}]\n']
    [doc] = error_documents(batch, "processing-failed")
    assert base64.b64decode(doc["rawData"]) == b'{"a":3}{"a":'
    assert doc["errorCode"] == "Processing.Failed" and "not a sequence of JSON values" in doc["errorMessage"]


def test_the_steps_run_in_aws_order_whatever_order_the_definition_lists_them(fn_dir: Path) -> None:
    listed_backwards = definition(processor("AppendDelimiterToRecord"),
                                  processor("RecordDeAggregation", SubRecordType="JSON"),
                                  processor("Decompression", CompressionFormat="GZIP"))
    batch = run_chain(listed_backwards, fn_dir, [gzip.compress(b'{"n":1} {"n":2}')])
    assert groups(batch) == {"data": [b'{"n":1}\n', b'{"n":2}\n']}


# -- running a batch: the Lambda ------------------------------------------------------------------------------

VERDICTS = verdicts('json.dumps({"id": r["recordId"], "data": data.decode(), '
                    '"kinesis": r.get("kinesisRecordMetadata")}).encode()')


def test_lambda_results_ok_dropped_and_processing_failed_each_go_their_way(fn_dir: Path, pool: WorkerPool) -> None:
    write_function(fn_dir, "verdicts", VERDICTS)
    defn = definition(processor("RecordDeAggregation", SubRecordType="DELIMITED",
                                Delimiter=base64.b64encode(b",").decode()),
                      processor("Lambda", LambdaArn=ARN.format("verdicts"), BufferIntervalInSeconds="0"))
    batch = run_chain(defn, fn_dir, [b"keep-1,drop-1,keep-2", b"fail-1,keep-3"], pool)
    kept = [json.loads(d) for d in groups(batch)["data"]]
    assert [k["data"] for k in kept] == ["keep-1", "keep-2", "keep-3"]
    assert len({k["id"] for k in kept}) == 3, "every sub-record has its own recordId"
    assert batch.dropped == 1 and batch.failed == {"processing-failed": 1}
    [doc] = error_documents(batch, "processing-failed")
    assert base64.b64decode(doc["rawData"]) == b"fail-1"  # the sub-record the function was given
    assert (doc["errorCode"], doc["attemptsMade"], doc["lambdaArn"]) == (
        "Lambda.ProcessingFailedStatus", 1, ARN.format("verdicts"))
    assert doc["arrivalTimestamp"] == ARRIVAL + 1


def test_the_lambda_sees_kinesis_metadata_of_records_read_from_a_kinesis_stream(
        fn_dir: Path, pool: WorkerPool) -> None:
    write_function(fn_dir, "verdicts", VERDICTS)
    meta = {"shardId": "shardId-000000000000", "partitionKey": "pk", "approximateArrivalTimestamp": ARRIVAL,
            "sequenceNumber": "49546986683135544286507457936321625675700192471156785154", "subsequenceNumber": 0}
    defn = definition(processor("Lambda", LambdaArn=ARN.format("verdicts"), BufferIntervalInSeconds="0"))
    [seen] = groups(run_chain(defn, fn_dir, [b"from kinesis"], pool, kinesis=meta))["data"]
    assert json.loads(seen)["kinesis"] == meta


def test_an_invocation_that_fails_past_its_retries_sends_every_record_to_the_error_output(
        fn_dir: Path, pool: WorkerPool) -> None:
    write_function(fn_dir, "broken", "def lambda_handler(event, context):\n    raise KeyError('records')\n")
    defn = definition(processor("Lambda", LambdaArn=ARN.format("broken"), NumberOfRetries="0"),
                      processor("AppendDelimiterToRecord"))
    batch = run_chain(defn, fn_dir, [b"a", b"b"], pool)
    assert "data" not in groups(batch)
    docs = error_documents(batch, "processing-failed")
    assert [base64.b64decode(d["rawData"]) for d in docs] == [b"a", b"b"]
    assert all(d["errorCode"] == "Lambda.FunctionError" and "KeyError" in d["errorMessage"]
               and d["attemptsMade"] == 1 and d["lambdaArn"] == ARN.format("broken") for d in docs)


# -- running a batch: dynamic partitioning --------------------------------------------------------------------


def partitioned_by_query(query: str, prefix: str) -> DeliveryStreamDefinition:
    return definition(processor("MetadataExtraction", MetadataExtractionQuery=query, JsonParsingEngine="JQ-1.6"),
                      processor("AppendDelimiterToRecord"), prefix=prefix, partitioning=True)


def test_records_are_grouped_by_the_partition_keys_their_prefix_uses(fn_dir: Path) -> None:
    defn = partitioned_by_query("{customer: .customer, kind: .kind, unused: .n}",
                                "customer=!{partitionKeyFromQuery:customer}/kind=!{partitionKeyFromQuery:kind}/")
    rows = [{"customer": "a", "kind": "x", "n": 0}, {"customer": "b", "kind": "x", "n": 1},
            {"customer": "a", "kind": "x", "n": 2}, {"customer": "a", "kind": "y", "n": 3}]
    batch = run_chain(defn, fn_dir, [json.dumps(r).encode() for r in rows])
    by_partition = {name: [json.loads(d)["n"] for d in datas] for name, datas in groups(batch).items()}
    assert by_partition == {
        "data partitionKeyFromQuery:customer=a partitionKeyFromQuery:kind=x": [0, 2],
        "data partitionKeyFromQuery:customer=b partitionKeyFromQuery:kind=x": [1],
        "data partitionKeyFromQuery:customer=a partitionKeyFromQuery:kind=y": [3]}


def test_a_record_whose_keys_cannot_be_had_goes_to_the_error_output_not_a_guessed_partition(fn_dir: Path) -> None:
    defn = partitioned_by_query("{customer: .customer}", "customer=!{partitionKeyFromQuery:customer}/")
    long = "x" * 600  # the evaluated prefix would be longer than 512 characters
    batch = run_chain(defn, fn_dir, [b"not json", b'{"customer": null}', b'{"customer": "ok"}',
                                     json.dumps({"customer": long}).encode()])
    assert groups(batch)["data partitionKeyFromQuery:customer=ok"] == [b'{"customer": "ok"}\n']
    docs = error_documents(batch, "partitioning-failed")
    assert [base64.b64decode(d["rawData"]) for d in docs] == [b"not json", b'{"customer": null}',
                                                              json.dumps({"customer": long}).encode()]
    assert all(d["errorCode"] == "DynamicPartitioning.KeyExtractionFailed" for d in docs)
    assert batch.failed == {"partitioning-failed": 3}


def test_partition_keys_may_come_from_the_lambda(fn_dir: Path, pool: WorkerPool) -> None:
    write_function(fn_dir, "keys", """
        import base64, json

        def lambda_handler(event, context):
            out = []
            for r in event["records"]:
                region = json.loads(base64.b64decode(r["data"])).get("region")
                meta = {"partitionKeys": {"region": region}} if region else {}
                out.append({"recordId": r["recordId"], "result": "Ok", "data": r["data"], "metadata": meta})
            return {"records": out}
    """)
    defn = definition(processor("Lambda", LambdaArn=ARN.format("keys"), BufferIntervalInSeconds="0"),
                      prefix="region=!{partitionKeyFromLambda:region}/", partitioning=True)
    batch = run_chain(defn, fn_dir, [b'{"region": "eu"}', b'{"region": "us"}', b'{"region": "eu", "n": 2}',
                                     b'{"no": "region"}'], pool)
    assert groups(batch)["data partitionKeyFromLambda:region=eu"] == [b'{"region": "eu"}', b'{"region": "eu", "n": 2}']
    assert groups(batch)["data partitionKeyFromLambda:region=us"] == [b'{"region": "us"}']
    [doc] = error_documents(batch, "partitioning-failed")
    assert "!{partitionKeyFromLambda:region}" in doc["errorMessage"]
