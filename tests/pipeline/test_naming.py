"""Batch names: a pure function of the batch and its seal time, so a re-delivery writes the same key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firehose.definitions import DeliveryStreamDefinition
from firehose.partitions import data_partition, error_partition
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.naming import OVERFLOW_PARTITION, name_batch
from firehose.settings import Settings
from firehose.spool import entry
from firehose.spool.entry import Span

ARRIVAL = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SEALED = 1_700_000_100_000


def config(tmp_path: Path, **extra: Any) -> StreamConfig:
    extra.setdefault("CompressionFormat", "GZIP")
    definition = DeliveryStreamDefinition.model_validate({
        "DeliveryStreamName": "orders", "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::out",
            "Prefix": "data/!{partitionKeyFromQuery:customer}/",
            "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
            "DynamicPartitioningConfiguration": {"Enabled": True},
            "ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{customer: .customer}"},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]},
            **extra}})
    settings = Settings.model_validate({"buckets": {"out": {"directory": str(tmp_path / "out")}},
                                        "schemas": {"db.events": {"columns": [{"Name": "n", "Type": "int"}]}}})
    return StreamConfig.build(definition, 3, settings)


def spans(seq: int = 4, start: int = 1, end: int = 3) -> list[Span]:
    e = entry.decode(seq, memoryview(b"".join(entry.encode([b"a", b"b", b"c"], ARRIVAL))))
    return [Span(e, start, end)]


def named(cfg: StreamConfig, partition: str, **kw: Any):  # type: ignore[no-untyped-def]
    args: dict[str, Any] = {"stream": "orders", "incarnation": "inc1", "source": "raw", "partition": partition,
                            "spans": spans(), "sealed_ms": SEALED, "error_output_type": "http-endpoint-failed",
                            "max_partitions": 500, **kw}
    return name_batch(cfg, **args)


def test_the_same_batch_gets_the_same_key_and_another_batch_another(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    part = data_partition({"partitionKeyFromQuery:customer": "c1"})
    first = named(cfg, part)
    assert named(cfg, part) == first
    assert first.key.startswith("data/c1/orders-3-2023-11-14-22-15-00-") and first.key.endswith(".gz")
    assert first.meta == {"version": 3, "arrival_ms": ARRIVAL, "kind": "data"} and first.positions is None
    assert named(cfg, part, spans=spans(start=2)).key != first.key  # another first position
    assert named(cfg, part, incarnation="inc2").key != first.key  # the stream was deleted and created again
    assert named(cfg, part, source="proc").key != first.key


def test_two_nodes_of_a_fleet_name_the_same_position_differently(tmp_path: Path) -> None:
    """Daemons behind a load balancer share a bucket: even at the same incarnation and position
    (a copied data directory), each node's ``cluster.node_id`` makes its keys its own."""
    import dataclasses

    cfg = config(tmp_path)
    part = data_partition({"partitionKeyFromQuery:customer": "c1"})
    a, b = dataclasses.replace(cfg, node="web-1"), dataclasses.replace(cfg, node="web-2")
    assert named(a, part).key != named(b, part).key
    assert named(a, part).key == named(dataclasses.replace(cfg, node="web-1"), part).key
    assert cfg.node == Settings().node_id != ""


def test_error_partitions_and_overflow_go_under_the_error_prefix(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    errors = named(cfg, error_partition("processing-failed"))
    assert errors.key.startswith("errors/processing-failed/") and not errors.key.endswith(".gz")
    assert errors.meta["kind"] == "errors"
    overflow = named(cfg, OVERFLOW_PARTITION, max_partitions=7)
    assert overflow.key.startswith("errors/partitioning-failed/")
    assert overflow.positions == ((4, 1), (4, 2))
    assert "More than 7 active partitions" in overflow.meta["reason"]


def test_a_converting_stream_knows_its_error_key_before_delivery(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert "error_key" not in named(cfg, data_partition({"partitionKeyFromQuery:customer": "c1"})).meta
    converting = config(tmp_path, CompressionFormat="UNCOMPRESSED", DataFormatConversionConfiguration={
        "Enabled": True, "SchemaConfiguration": {"DatabaseName": "db", "TableName": "events"},
        "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}})
    name = named(converting, data_partition({"partitionKeyFromQuery:customer": "c1"}))
    assert name.meta["error_key"].startswith("errors/format-conversion-failed/")
    assert name.meta["error_key"] != name.key
