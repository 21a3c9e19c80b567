"""Building a destination: one call gives the destination and the object store it needs, and the
modules worker processes import come from the destination classes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from firehose import destinations
from firehose.definitions import DeliveryStreamDefinition
from firehose.destinations import DestinationContext
from firehose.destinations.elasticsearch import ElasticsearchDestination
from firehose.destinations.http_endpoint import HttpEndpointDestination
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import RedshiftDestination
from firehose.destinations.s3 import S3Destination
from firehose.destinations.splunk import SplunkDestination
from firehose.records import ObjectBatch
from firehose.settings import Settings

ROLE = "arn:aws:iam::123456789012:role/firehose"
STORE = {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::store"}


def built(member: str, config: dict[str, Any], tmp_path: Path, executor: ThreadPoolExecutor) -> destinations.Built:
    definition = DeliveryStreamDefinition.model_validate({"DeliveryStreamName": "s", member: config})
    settings = Settings.model_validate({"buckets": {"store": {"directory": str(tmp_path / "store")}}})
    return destinations.build(definition, DestinationContext(stream="s", settings=settings, executor=executor))


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def test_an_s3_destination_is_its_own_store(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    local = built("ExtendedS3DestinationConfiguration", STORE, tmp_path, executor)
    assert isinstance(local.destination, LocalDirectoryDestination) and local.store is None
    remote = built("ExtendedS3DestinationConfiguration", {**STORE, "BucketARN": "arn:aws:s3:::elsewhere"},
                   tmp_path, executor)
    assert isinstance(remote.destination, S3Destination) and remote.store is None


@pytest.mark.parametrize(("member", "config", "kind"), [
    ("HttpEndpointDestinationConfiguration",
     {"EndpointConfiguration": {"Url": "https://example.com/in"}, "S3Configuration": STORE}, HttpEndpointDestination),
    ("SplunkDestinationConfiguration",
     {"HECEndpoint": "https://splunk.example.com:8088", "HECEndpointType": "Raw", "HECToken": "t",
      "S3Configuration": STORE}, SplunkDestination),
    ("AmazonopensearchserviceDestinationConfiguration",
     {"RoleARN": ROLE, "ClusterEndpoint": "https://search.example.com", "IndexName": "i", "S3Configuration": STORE},
     ElasticsearchDestination),
])
def test_a_record_destination_comes_with_its_s3_configuration_as_its_store(
    member: str, config: dict[str, Any], kind: type, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    b = built(member, config, tmp_path, executor)
    assert isinstance(b.destination, kind)
    assert isinstance(b.store, LocalDirectoryDestination)
    assert b.store.describe() == f"local directory {tmp_path / 'store'}"


def test_redshift_stages_into_the_store_it_comes_with(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    b = built("RedshiftDestinationConfiguration", {
        "RoleARN": ROLE, "ClusterJDBCURL": "jdbc:postgresql://db.internal/warehouse",
        "Username": "u", "Password": "secret-enough",
        "CopyCommand": {"DataTableName": "events"}, "S3Configuration": STORE,
    }, tmp_path, executor)
    assert isinstance(b.destination, RedshiftDestination) and isinstance(b.store, LocalDirectoryDestination)
    batch = ObjectBatch("s", "2024/01/02/03/s-1-x", (b"1\n",), 2, 1, 1704164645000)
    asyncio.run(b.destination.expired(batch, "the retry duration ran out"))
    assert (tmp_path / "store" / "errors/manifests/2024/01/02/03/s-1-x").read_bytes() == (
        b'{"entries": [{"url": "s3://store/2024/01/02/03/s-1-x", "mandatory": true}]}')


def test_worker_modules_are_those_of_the_destination_classes() -> None:
    """Redshift's row loads run in workers: the module a worker imports as it starts is the one the
    function it is sent lives in."""
    from firehose.destinations.redshift.postgres_load import load_rows

    assert destinations.worker_modules() == (RedshiftDestination.worker_module,)
    assert load_rows.__module__ == RedshiftDestination.worker_module
