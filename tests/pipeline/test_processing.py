"""The processing chain end to end through the daemon: transforms, built-ins, partitioning, error output."""

from __future__ import annotations

import base64
import gzip
import json
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import read_local
from tests.support.transforms import TRANSFORMS_DIR, verdicts, write_function
from tests.support.waiting import wait_until

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


def lambda_processor(name: str, **params: str) -> dict[str, Any]:
    values = {"LambdaArn": ARN.format(name), "BufferIntervalInSeconds": "0", **params}
    return {"Type": "Lambda", "Parameters": [{"ParameterName": k, "ParameterValue": v} for k, v in values.items()]}


def processing(*processors: dict[str, Any]) -> dict[str, Any]:
    return {"Enabled": True, "Processors": list(processors)}


UPPER = verdicts("data.upper()")


def objects(root: Path, part: str = "") -> dict[str, bytes]:
    return {k: v for k, v in read_local(root).items() if part in k}


def error_docs(root: Path, kind: str) -> list[dict[str, Any]]:
    docs = []
    for key, body in read_local(root).items():
        if f"{kind}/" in key:
            docs.extend(json.loads(line) for line in body.splitlines())
    return docs


@pytest.fixture
def fn_dir(tmp_path: Path) -> Path:
    return tmp_path / "fns"


def start(start_daemon: Any, fn_dir: Path, stream: dict[str, Any], **settings: Any) -> RunningDaemon:
    return start_daemon([stream], transforms_dir=str(fn_dir), **settings)


def test_lambda_transforms_records_drops_and_fails_them(start_daemon: Any, fn_dir: Path, tmp_path: Path) -> None:
    write_function(fn_dir, "upper", UPPER)
    stream = local_stream("t", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          ProcessingConfiguration=processing(lambda_processor("upper")))
    daemon = start(start_daemon, fn_dir, stream)
    records = [b"hello\n", b"drop me\n", b"fail me\n", b"world\n"]
    resp = daemon.client().put_record_batch(DeliveryStreamName="t", Records=[{"Data": r} for r in records])
    assert resp["FailedPutCount"] == 0
    wait_until(lambda: daemon.idle("t"), timeout=30)
    out = tmp_path / "out"
    delivered = b"".join(v for k, v in read_local(out).items() if not k.startswith("errors/"))
    assert delivered == b"HELLO\nWORLD\n"
    [doc] = error_docs(out, "processing-failed")
    assert base64.b64decode(doc["rawData"]) == b"fail me\n"
    assert doc["lambdaArn"] == ARN.format("upper")
    assert doc["errorCode"] == "Lambda.ProcessingFailedStatus"
    assert doc["attemptsMade"] == 1
    assert set(doc) >= {"arrivalTimestamp", "errorMessage", "attemptEndingTimestamp"}
    metrics = daemon.call(lambda: daemon.daemon.metrics.processing_dropped.labels("t")._value.get())
    assert metrics == 1


BROKEN = {
    "raises": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            raise RuntimeError("boom")
    """,
    "hangs": """
        import time
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            time.sleep(30)
    """,
    "crashes": """
        import os
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            os._exit(3)
    """,
    "malformed": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            return {"records": "nope"}
    """,
    "missing_id": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]}
                                for r in event["records"][1:]]}
    """,
    "repeated_id": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            rs = event["records"]
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]} for r in rs + rs[:1]]}
    """,
    "unknown_result": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            return {"records": [{"recordId": r["recordId"], "result": "Fine", "data": r["data"]}
                                for r in event["records"]]}
    """,
    "bad_base64": """
        def lambda_handler(event, context):
            open(COUNTER, "a").write("x")
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": "@@not base64@@"}
                                for r in event["records"]]}
    """,
}
EXPECTED_CODE = {
    "raises": "Lambda.FunctionError", "hangs": "Lambda.FunctionTimeout", "crashes": "Lambda.FunctionError",
    "malformed": "Lambda.MalformedResponse", "missing_id": "Lambda.MissingRecordId",
    "repeated_id": "Lambda.DuplicatedRecordId", "unknown_result": "Lambda.InvalidResult",
    "bad_base64": "Lambda.InvalidBase64",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_transform_is_retried_then_its_records_go_to_processing_failed(
    start_daemon: Any, fn_dir: Path, tmp_path: Path, kind: str
) -> None:
    counter = tmp_path / "calls"
    write_function(fn_dir, "broken", f"COUNTER = {str(counter)!r}\n" + textwrap.dedent(BROKEN[kind]))
    stream = local_stream("b", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          ProcessingConfiguration=processing(lambda_processor("broken", NumberOfRetries="1")))
    daemon = start(start_daemon, fn_dir, stream,
                   # a tight timeout only where it is the failure: elsewhere a busy machine must not turn
                   # the function's own failure into a timeout
                   functions={ARN.format("broken"): {"path": str(fn_dir / "broken.py"),
                                                     "timeout_seconds": 1 if kind == "hangs" else 10}})
    sent = [b"one\n", b"two\n"]
    daemon.client().put_record_batch(DeliveryStreamName="b", Records=[{"Data": r} for r in sent])
    wait_until(lambda: daemon.idle("b"), timeout=40)
    docs = error_docs(tmp_path / "out", "processing-failed")
    assert sorted(base64.b64decode(d["rawData"]) for d in docs) == sorted(sent)
    assert {d["errorCode"] for d in docs} == {EXPECTED_CODE[kind]}
    assert all(d["attemptsMade"] == 2 for d in docs)
    assert counter.read_text() == "xx"  # NumberOfRetries=1: two invocations
    # The daemon is still up and still delivers.
    assert daemon.client().list_delivery_streams()["DeliveryStreamNames"] == ["b"]


def test_builtin_processors_decompress_cloudwatch_and_deaggregate(start_daemon: Any, tmp_path: Path) -> None:
    def cwl(kind: str, messages: list[str]) -> bytes:
        events = [{"id": str(i), "timestamp": 1700000000000 + i, "message": m} for i, m in enumerate(messages)]
        return gzip.compress(json.dumps({"messageType": kind, "owner": "1", "logGroup": "g", "logStream": "s",
                                         "subscriptionFilters": ["f"], "logEvents": events}).encode())

    stream = local_stream("cw", ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          ProcessingConfiguration=processing(
                              {"Type": "Decompression", "Parameters": [
                                  {"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]},
                              {"Type": "CloudWatchLogProcessing", "Parameters": [
                                  {"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]}))
    daemon = start_daemon([stream])
    records = [cwl("DATA_MESSAGE", ["first", "second"]), cwl("CONTROL_MESSAGE", ["CWL CONTROL"]),
               b"not gzip at all", cwl("DATA_MESSAGE", ["third"])]
    daemon.client().put_record_batch(DeliveryStreamName="cw", Records=[{"Data": r} for r in records])
    wait_until(lambda: daemon.idle("cw"), timeout=30)
    out = tmp_path / "out"
    data = b"".join(v for k, v in read_local(out).items() if not k.startswith("errors/"))
    assert data == b"first\nsecond\nthird\n"
    [doc] = error_docs(out, "decompression-failed")
    assert base64.b64decode(doc["rawData"]) == b"not gzip at all"


@pytest.mark.parametrize(("params", "record", "expected"), [
    ([{"ParameterName": "SubRecordType", "ParameterValue": "JSON"}],
     b'{"a":1}{"a":2}\n {"a":[3,4]}', b'{"a":1}\n{"a":2}\n{"a":[3,4]}\n'),
    ([{"ParameterName": "SubRecordType", "ParameterValue": "DELIMITED"},
      {"ParameterName": "Delimiter", "ParameterValue": base64.b64encode(b"####").decode()}],
     b"x####y####z", b"x\ny\nz\n"),
])
def test_deaggregation_with_appended_delimiters(start_daemon: Any, tmp_path: Path, params: list[dict[str, str]],
                                                record: bytes, expected: bytes) -> None:
    stream = local_stream("d", ProcessingConfiguration=processing(
        {"Type": "RecordDeAggregation", "Parameters": params}, {"Type": "AppendDelimiterToRecord"}))
    daemon = start_daemon([stream])
    daemon.client().put_record(DeliveryStreamName="d", Record={"Data": record})
    wait_until(lambda: daemon.idle("d"), timeout=30)
    assert b"".join(read_local(tmp_path / "out").values()) == expected


def partitioned(name: str, query: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return local_stream(
        name, Prefix=prefix, ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
        DynamicPartitioningConfiguration={"Enabled": True},
        ProcessingConfiguration=processing(
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
            {"Type": "AppendDelimiterToRecord"}), **extra)


def test_dynamic_partitioning_by_jq_query(start_daemon: Any, tmp_path: Path) -> None:
    stream = partitioned("p", "{customer:.customer, kind:.type.kind}",
                         "customer=!{partitionKeyFromQuery:customer}/kind=!{partitionKeyFromQuery:kind}/")
    daemon = start_daemon([stream])
    rows = [{"customer": c, "type": {"kind": k}, "n": i}
            for i, (c, k) in enumerate([("a", "x"), ("b", "x"), ("a", "x"), ("a", "y"), ("b", "x")])]
    bad = [b"not json", json.dumps({"customer": None, "type": {"kind": "x"}}).encode()]
    daemon.client().put_record_batch(
        DeliveryStreamName="p", Records=[{"Data": json.dumps(r).encode()} for r in rows] + [{"Data": b} for b in bad])
    wait_until(lambda: daemon.idle("p"), timeout=30)
    out = tmp_path / "out"
    by_prefix: dict[str, list[int]] = {}
    for key, body in read_local(out).items():
        if key.startswith("errors/"):
            continue
        prefix = key.rsplit("/", 1)[0]
        by_prefix.setdefault(prefix, []).extend(json.loads(line)["n"] for line in body.splitlines())
    assert by_prefix == {"customer=a/kind=x": [0, 2], "customer=b/kind=x": [1, 4], "customer=a/kind=y": [3]}
    docs = error_docs(out, "partitioning-failed")
    assert sorted(base64.b64decode(d["rawData"]).rstrip(b"\n") for d in docs) == sorted(bad)
    assert all(d["errorCode"] == "DynamicPartitioning.KeyExtractionFailed" for d in docs)
    assert any("null or empty" in d["errorMessage"] for d in docs)


def test_records_over_the_active_partition_limit_go_to_the_error_output(start_daemon: Any, tmp_path: Path) -> None:
    stream = partitioned("cap", "{id:.id}", "id=!{partitionKeyFromQuery:id}/", BufferingHints={
        "SizeInMBs": 1, "IntervalInSeconds": 2})
    daemon = start_daemon([stream], processing={"max_active_partitions": 3})
    daemon.client().put_record_batch(DeliveryStreamName="cap", Records=[
        {"Data": json.dumps({"id": i}).encode()} for i in range(5)])
    wait_until(lambda: daemon.idle("cap"), timeout=30)
    out = tmp_path / "out"
    data_keys = [k for k in read_local(out) if not k.startswith("errors/")]
    assert sorted(k.split("/")[0] for k in data_keys) == ["id=0", "id=1", "id=2"]
    docs = error_docs(out, "partitioning-failed")
    assert sorted(json.loads(base64.b64decode(d["rawData"]))["id"] for d in docs) == [3, 4]
    assert all(d["errorCode"] == "DynamicPartitioning.PartitionLimitExceeded" for d in docs)


def test_partition_keys_from_the_transform(start_daemon: Any, fn_dir: Path, tmp_path: Path) -> None:
    write_function(fn_dir, "keys", """
        import base64, json

        def lambda_handler(event, context):
            out = []
            for r in event["records"]:
                doc = json.loads(base64.b64decode(r["data"]))
                out.append({"recordId": r["recordId"], "result": "Ok", "data": r["data"],
                            "metadata": {"partitionKeys": {"region": doc["region"]}}})
            return {"records": out}
    """)
    stream = local_stream("lk", Prefix="region=!{partitionKeyFromLambda:region}/",
                          ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          DynamicPartitioningConfiguration={"Enabled": True},
                          ProcessingConfiguration=processing(lambda_processor("keys"),
                                                             {"Type": "AppendDelimiterToRecord"}))
    daemon = start(start_daemon, fn_dir, stream)
    daemon.client().put_record_batch(DeliveryStreamName="lk", Records=[
        {"Data": json.dumps({"region": r}).encode()} for r in ["eu", "us", "eu"]])
    wait_until(lambda: daemon.idle("lk"), timeout=30)
    prefixes = sorted(k.split("/")[0] for k in read_local(tmp_path / "out"))
    assert prefixes == ["region=eu", "region=us"]


def test_definitions_that_cannot_run_are_refused_by_the_api(start_daemon: Any, fn_dir: Path) -> None:
    client = start(start_daemon, fn_dir, local_stream("ok")).client()
    cases = [
        (local_stream("x", ProcessingConfiguration=processing(lambda_processor("missing"))), "missing.py"),
        (partitioned("x", "{a: .a", "a=!{partitionKeyFromQuery:a}/"), "not a valid jq program"),
        (local_stream("x", Prefix="!{partitionKeyFromQuery:a}/", ErrorOutputPrefix="e/!{firehose:error-output-type}/",
                      DynamicPartitioningConfiguration={"Enabled": True}), "no MetadataExtraction"),
        (local_stream("x", ProcessingConfiguration=processing(
            {"Type": "RecordDeAggregation", "Parameters": [{"ParameterName": "SubRecordType",
                                                            "ParameterValue": "XML"}]})), "JSON or DELIMITED"),
        (local_stream("x", ProcessingConfiguration=processing(
            lambda_processor("missing", BufferSizeInMBs="9"))), "missing.py"),
    ]
    for body, fragment in cases:
        with pytest.raises(client.exceptions.InvalidArgumentException) as info:
            client.create_delivery_stream(**body)
        assert fragment in info.value.response["Error"]["Message"], info.value.response["Error"]["Message"]


@pytest.mark.parametrize(("fmt", "ext"), [("GZIP", ".gz"), ("ZSTD", ".zst"), ("Snappy", ".snappy"),
                                          ("HADOOP_SNAPPY", ".hsnappy"), ("ZIP", ".zip")])
def test_objects_are_compressed_with_the_stream_codec(start_daemon: Any, tmp_path: Path, fmt: str, ext: str) -> None:
    from firehose.encoding.compress import codec

    daemon = start_daemon([local_stream("z", CompressionFormat=fmt)])
    sent = [b"line %d\n" % i for i in range(200)]
    daemon.client().put_record_batch(DeliveryStreamName="z", Records=[{"Data": r} for r in sent])
    wait_until(lambda: daemon.idle("z"), timeout=30)
    objects_ = read_local(tmp_path / "out")
    assert objects_ and all(k.endswith(ext) for k in objects_)
    assert b"".join(codec(fmt).decompress(v) for v in objects_.values()) == b"".join(sent)


def test_encrypting_bucket_writes_envelopes_that_decrypt(start_daemon: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "2026-01-old.key").write_text(base64.b64encode(b"o" * 32).decode())
    (keys / "2026-02-new.key").write_text(base64.b64encode(b"n" * 32).decode())
    daemon = start_daemon([local_stream("enc", "secret", CompressionFormat="GZIP")],
                          buckets={"secret": {"directory": str(tmp_path / "vault"), "encrypt": True}},
                          encryption={"keys_dir": str(keys)})
    daemon.client().put_record_batch(DeliveryStreamName="enc", Records=[{"Data": b"top secret %d\n" % i}
                                                                         for i in range(50)])
    wait_until(lambda: daemon.idle("enc"), timeout=30)
    [(key, blob)] = read_local(tmp_path / "vault").items()
    assert key.endswith(".gz") and b"top secret" not in blob and blob.startswith(b"FHENC")
    config = tmp_path / "decrypt.yaml"
    config.write_text(json.dumps({"encryption": {"keys_dir": str(keys)}}))
    out = tmp_path / "plain.gz"
    done = subprocess.run([sys.executable, "-m", "firehose", "decrypt", str(tmp_path / "vault" / key),
                           "--out", str(out), "--config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert gzip.decompress(out.read_bytes()) == b"".join(b"top secret %d\n" % i for i in range(50))
    # Tampering is detected and nothing is written.
    (tmp_path / "vault" / key).write_bytes(blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:])
    bad = subprocess.run([sys.executable, "-m", "firehose", "decrypt", str(tmp_path / "vault" / key), "--out",
                          str(tmp_path / "tampered"), "--config", str(config)], capture_output=True, text=True)
    assert bad.returncode == 1 and "authentication" in bad.stderr
    assert not (tmp_path / "tampered").exists()


def test_encrypting_bucket_needs_a_key(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start_daemon([], buckets={"secret": {"directory": str(tmp_path / "v"), "encrypt": True}},
                          encryption={"keys_dir": str(tmp_path), "env_prefix": None})
    client = daemon.client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.create_delivery_stream(**local_stream("e", "secret"))
    assert "keyring is empty" in info.value.response["Error"]["Message"]


def test_encrypted_objects_in_s3_carry_their_envelope_in_metadata(
    start_daemon: Any, tmp_path: Path, moto_server: Any, bucket: str
) -> None:
    import subprocess
    import sys

    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k1.key").write_text(base64.b64encode(b"k" * 32).decode())
    daemon = start_daemon([local_stream("s3enc", bucket)], s3={"endpoint_url": moto_server.endpoint},
                          buckets={bucket: {"encrypt": True}}, encryption={"keys_dir": str(keys)})
    daemon.client().put_record(DeliveryStreamName="s3enc", Record={"Data": b"classified\n"})
    s3 = moto_server.client()
    wait_until(lambda: daemon.idle("s3enc") and s3.list_objects_v2(Bucket=bucket).get("Contents"), timeout=30)
    [obj] = s3.list_objects_v2(Bucket=bucket)["Contents"]
    head = s3.head_object(Bucket=bucket, Key=obj["Key"])
    assert head["Metadata"]["firehose-enc-key-id"] == "k1"
    assert b"classified" not in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    config = tmp_path / "decrypt.yaml"
    config.write_text(json.dumps({"encryption": {"keys_dir": str(keys)}, "s3": {"endpoint_url": moto_server.endpoint}}))
    done = subprocess.run([sys.executable, "-m", "firehose", "decrypt", f"s3://{bucket}/{obj['Key']}", "--config",
                           str(config)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"classified\n"


@pytest.mark.parametrize(("serializer", "ext"), [("ParquetSerDe", ".parquet"), ("OrcSerDe", ".orc")])
def test_format_conversion_writes_columnar_files_and_refuses_what_does_not_fit(
    start_daemon: Any, tmp_path: Path, serializer: str, ext: str
) -> None:
    import io

    import pyarrow.orc as orc
    import pyarrow.parquet as pq

    conversion = {
        "SchemaConfiguration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "DatabaseName": "db",
                                "TableName": "events"},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": {serializer: {"Compression": "SNAPPY"}}},
    }
    stream = local_stream("conv", size_mb=64, interval=1, ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          DataFormatConversionConfiguration=conversion)
    schema = {"db.events": {"columns": [{"Name": "id", "Type": "bigint"}, {"Name": "name", "Type": "string"},
                                        {"Name": "price", "Type": "decimal(10,2)"}]}}
    daemon = start_daemon([stream], schemas=schema)
    rows = [{"id": i, "Name": f"item {i}", "price": f"{i}.25"} for i in range(20)]
    records = [json.dumps(r).encode() for r in rows] + [b'{"id": "not a number"}', b"[1, 2]"]
    daemon.client().put_record_batch(DeliveryStreamName="conv", Records=[{"Data": r} for r in records])
    wait_until(lambda: daemon.idle("conv"), timeout=30)
    out = tmp_path / "out"
    [(key, body)] = [(k, v) for k, v in read_local(out).items() if not k.startswith("errors/")]
    assert key.endswith(ext)
    table = pq.read_table(io.BytesIO(body)) if ext == ".parquet" else orc.ORCFile(io.BytesIO(body)).read()
    got = table.to_pylist()
    assert [r["id"] for r in got] == list(range(20))
    assert got[3]["name"] == "item 3" and str(got[3]["price"]) == "3.25"
    docs = error_docs(out, "format-conversion-failed")
    assert sorted(base64.b64decode(d["rawData"]) for d in docs) == sorted(records[-2:])
    assert all(d["dataCatalogTable"]["tableName"] == "events" and d["lastErrorMessage"] for d in docs)


NESTED_SCHEMA = {"db.orders": {"columns": [
    {"Name": "id", "Type": "bigint"},
    {"Name": "customer", "Type": "struct<name:string,address:struct<city:string,zip:string>>"},
    {"Name": "lines", "Type": "array<struct<sku:string,qty:int,price:decimal(8,2)>>"},
    {"Name": "attrs", "Type": "map<string,array<int>>"},
]}}


def nested_conversion(serializer: str, table: str = "orders") -> dict[str, Any]:
    return {"SchemaConfiguration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "DatabaseName": "db",
                                    "TableName": table},
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {serializer: {}}}}


@pytest.mark.parametrize(("serializer", "ext"), [("ParquetSerDe", ".parquet"), ("OrcSerDe", ".orc")])
def test_nested_columns_convert_and_a_record_that_does_not_fit_fails_alone(
    start_daemon: Any, tmp_path: Path, serializer: str, ext: str
) -> None:
    import io

    import pyarrow.orc as orc
    import pyarrow.parquet as pq

    stream = local_stream("nested", size_mb=64, interval=1,
                          ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          DataFormatConversionConfiguration=nested_conversion(serializer))
    daemon = start_daemon([stream], schemas=NESTED_SCHEMA)
    records = [json.dumps({"id": i, "Customer": {"Name": f"c{i}", "address": {"City": "Oslo", "zip": None}},
                           "lines": [{"sku": "a", "qty": i, "price": 1.5}, None],
                           "attrs": {"Tags": [i, None]}}).encode() for i in range(5)]
    bad = b'{"id": 99, "lines": [{"sku": "b", "qty": "many"}]}'
    records.insert(2, bad)
    daemon.client().put_record_batch(DeliveryStreamName="nested", Records=[{"Data": r} for r in records])
    wait_until(lambda: daemon.idle("nested"), timeout=30)
    out = tmp_path / "out"
    [(key, body)] = [(k, v) for k, v in read_local(out).items() if not k.startswith("errors/")]
    assert key.endswith(ext)
    table = pq.read_table(io.BytesIO(body)) if ext == ".parquet" else orc.ORCFile(io.BytesIO(body)).read()
    got = table.to_pylist()
    assert [r["id"] for r in got] == [0, 1, 2, 3, 4]
    assert got[3] == {"id": 3, "customer": {"name": "c3", "address": {"city": "Oslo", "zip": None}},
                      "lines": [{"sku": "a", "qty": 3, "price": Decimal("1.50")}, None],
                      "attrs": [("tags", [3, None])]}
    [doc] = error_docs(out, "format-conversion-failed")
    assert base64.b64decode(doc["rawData"]) == bad
    assert doc["lastErrorCode"] == "DataFormatConversion.MalformedData"
    assert doc["lastErrorMessage"] == "field 'lines': cannot convert 'many' to int"


def test_a_schema_the_converter_cannot_write_is_refused_by_create_and_update(start_daemon: Any) -> None:
    deep = "array<" * 50 + "int" + ">" * 50
    schemas = {**NESTED_SCHEMA, "db.deep": {"columns": [{"Name": "id", "Type": "int"}, {"Name": "nest", "Type": deep}]}}
    client = start_daemon(schemas=schemas).client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.create_delivery_stream(**local_stream(
            "d", size_mb=64, DataFormatConversionConfiguration=nested_conversion("ParquetSerDe", "deep")))
    message = info.value.response["Error"]["Message"]
    assert "schema 'db.deep' cannot be converted: column 'nest' is nested 100 Parquet levels deep" in message
    client.create_delivery_stream(**local_stream(
        "d", size_mb=64, DataFormatConversionConfiguration=nested_conversion("ParquetSerDe")))
    desc = client.describe_delivery_stream(DeliveryStreamName="d")["DeliveryStreamDescription"]

    def update(serializer: str) -> None:
        client.update_destination(
            DeliveryStreamName="d", CurrentDeliveryStreamVersionId=desc["VersionId"],
            DestinationId=desc["Destinations"][0]["DestinationId"],
            ExtendedS3DestinationUpdate={"DataFormatConversionConfiguration": nested_conversion(serializer, "deep")})

    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        update("ParquetSerDe")
    assert "column 'nest' is nested 100 Parquet levels deep" in info.value.response["Error"]["Message"]
    update("OrcSerDe")  # the same columns as ORC (no such limit) are accepted


def test_format_conversion_needs_a_declared_schema(start_daemon: Any) -> None:
    conversion = {
        "SchemaConfiguration": {"DatabaseName": "db", "TableName": "missing"},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}},
    }
    client = start_daemon().client()
    with pytest.raises(client.exceptions.InvalidArgumentException) as info:
        client.create_delivery_stream(**local_stream("c", size_mb=64, DataFormatConversionConfiguration=conversion))
    assert "no schema 'db.missing'" in info.value.response["Error"]["Message"]


def test_the_transform_buffer_interval_is_honoured(start_daemon: Any, fn_dir: Path, tmp_path: Path) -> None:
    import time

    calls = tmp_path / "calls"
    write_function(fn_dir, "count", f"CALLS = {str(calls)!r}\n" + textwrap.dedent("""
        import json, time

        def lambda_handler(event, context):
            with open(CALLS, "a") as f:
                f.write(json.dumps({"records": len(event["records"]), "at": time.time()}) + "\\n")
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]}
                                for r in event["records"]]}
    """))
    stream = local_stream("buf", ProcessingConfiguration=processing(
        lambda_processor("count", BufferIntervalInSeconds="3", BufferSizeInMBs="1")))
    daemon = start(start_daemon, fn_dir, stream)
    client = daemon.client()
    started = time.time()
    for i in range(3):
        client.put_record(DeliveryStreamName="buf", Record={"Data": b"r%d\n" % i})
    wait_until(lambda: daemon.idle("buf"), timeout=20)
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]  # one invocation for the three records
    assert call["records"] == 3
    assert call["at"] - started >= 2.9, "the transform ran before its buffer interval"


def test_the_shipped_json_filter_runs_as_a_transform(start_daemon: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """transforms/json_filter.py, unchanged, partitions and redacts inside the daemon's worker processes."""
    monkeypatch.setenv("PARTITION_KEYS", "team=owner.team")
    monkeypatch.setenv("REDACT_FIELDS", "password")
    monkeypatch.setenv("DROP_WHEN", "level=debug")
    stream = local_stream("jf", Prefix="team=!{partitionKeyFromLambda:team}/",
                          ErrorOutputPrefix="errors/!{firehose:error-output-type}/",
                          DynamicPartitioningConfiguration={"Enabled": True},
                          ProcessingConfiguration=processing(lambda_processor("json_filter")))
    daemon = start_daemon([stream], transforms_dir=str(TRANSFORMS_DIR))
    docs = [{"owner": {"team": "red"}, "password": "hunter2", "level": "info"},
            {"owner": {"team": "blue"}, "password": "x", "level": "debug"},
            {"owner": {"team": "blue"}, "password": "y", "level": "info"}]
    daemon.client().put_record_batch(DeliveryStreamName="jf", Records=[{"Data": json.dumps(d).encode() + b"\n"}
                                                                        for d in docs])
    wait_until(lambda: daemon.idle("jf"), timeout=30)
    out = {k.split("/")[0]: [json.loads(line) for line in v.splitlines()]
           for k, v in read_local(tmp_path / "out").items()}
    assert sorted(out) == ["team=blue", "team=red"]
    assert out["team=red"][0]["password"] == "REDACTED"
    assert len(out["team=blue"]) == 1 and out["team=blue"][0]["level"] == "info"
