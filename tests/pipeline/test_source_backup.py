"""Source-record backup (``S3BackupMode: Enabled``) on ExtendedS3 and Redshift destinations, and
``FileExtension``: object layout in moto's S3 server, ``BackupToS3`` figures, UpdateDestination rules,
and a backup bucket that fails without holding up or losing the main delivery."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from firehose.spool.ledger import Ledger
from tests.support.aws import ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import read_local
from tests.support.servers import MotoServer, PostgresServer
from tests.support.transforms import verdicts, write_function
from tests.support.waiting import wait_until

FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}
UPPER = verdicts("data.upper()")
LAMBDA = {"Enabled": True, "Processors": [{"Type": "Lambda", "Parameters": [
    {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:upper"},
    {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"}]}]}
def key_pattern(prefix: str, stream: str, ext: str = "", version: int = 1) -> re.Pattern[str]:
    """``<prefix>YYYY/MM/dd/HH/<stream>-<version>-YYYY-MM-dd-HH-mm-ss-<uuid><extension>``"""
    hour = r"(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
    suffix = rf"{re.escape(stream)}-{version}-\1-\2-\3-\4-\d{{2}}-\d{{2}}-[0-9a-f-]{{36}}{re.escape(ext)}$"
    return re.compile(re.escape(prefix) + hour + suffix)


def backup_config(bucket: str, **extra: Any) -> dict[str, Any]:
    return {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}, **extra}


def contents(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def metric(d: RunningDaemon, name: str, stream: str) -> float | None:
    text = httpx.get(f"{d.endpoint}/metrics").text
    found = re.search(rf'^{re.escape(name)}{{delivery_stream="{re.escape(stream)}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


def put(d: RunningDaemon, stream: str, records: list[bytes]) -> None:
    d.client().put_record_batch(DeliveryStreamName=stream, Records=[{"Data": r} for r in records])


@pytest.fixture
def backup_bucket(moto_server: MotoServer, bucket: str) -> str:
    name = bucket[:50] + "-bk"
    moto_server.client().create_bucket(Bucket=name)
    return name


def test_the_backup_holds_the_records_as_received_under_its_own_prefix_and_compression(
        start_daemon: Any, tmp_path: Path, moto_server: MotoServer, bucket: str, backup_bucket: str) -> None:
    """A Lambda transform upper-cases the delivered records; the backup has them as they were put,
    gzipped under ``raw/YYYY/MM/dd/HH/``; a second stream's backup with no prefix gets the default
    time prefix; ``FileExtension`` names the delivered objects only, and the backup is counted as
    ``BackupToS3``, never as a delivery."""
    fns = tmp_path / "fns"
    write_function(fns, "upper", UPPER)
    transformed = local_stream("shout", bucket, Prefix="data/", ErrorOutputPrefix="err/!{firehose:error-output-type}/",
                               ProcessingConfiguration=LAMBDA, FileExtension=".ndjson", S3BackupMode="Enabled",
                               S3BackupConfiguration=backup_config(backup_bucket, Prefix="raw/",
                                                                   CompressionFormat="GZIP"))
    plain = local_stream("plain", bucket, Prefix="plain/", CompressionFormat="GZIP", FileExtension=".json.gz",
                         S3BackupMode="Enabled", S3BackupConfiguration=backup_config(backup_bucket))
    d = start_daemon([transformed, plain], transforms_dir=str(fns), s3={"endpoint_url": moto_server.endpoint},
                     **FAST)
    records = [b"alpha\n", b"drop me\n", b"beta\n"]
    put(d, "shout", records)
    put(d, "plain", [b"x\n", b"y\n"])
    s3 = moto_server.client()
    wait_until(lambda: d.idle("shout") and d.idle("plain") and len(contents(s3, backup_bucket)) == 2
               and len(contents(s3, bucket)) == 2, timeout=30)

    delivered = contents(s3, bucket)
    [(data_key, data)] = [(k, v) for k, v in delivered.items() if k.startswith("data/")]
    assert key_pattern("data/", "shout", ".ndjson").match(data_key), data_key
    assert data == b"ALPHA\nBETA\n", "the destination gets the transformed records"
    [(plain_key, plain_body)] = [(k, v) for k, v in delivered.items() if k.startswith("plain/")]
    assert key_pattern("plain/", "plain", ".json.gz").match(plain_key), "FileExtension replaces .gz"
    assert gzip.decompress(plain_body) == b"x\ny\n"

    backups = contents(s3, backup_bucket)
    [(raw_key, raw)] = [(k, v) for k, v in backups.items() if k.startswith("raw/")]
    assert key_pattern("raw/", "shout", ".gz").match(raw_key), raw_key
    assert gzip.decompress(raw) == b"".join(records), "the backup holds every record as it was put"
    [(default_key, default_body)] = [(k, v) for k, v in backups.items() if not k.startswith("raw/")]
    assert key_pattern("", "plain").match(default_key), "no prefix: the default YYYY/MM/dd/HH/"
    assert default_body == b"x\ny\n"

    assert metric(d, "firehose_backup_to_s3_records_total", "shout") == 3
    assert metric(d, "firehose_backup_to_s3_bytes_total", "shout") == len(raw)
    assert metric(d, "firehose_backup_to_s3_success_total", "shout") == 1
    assert metric(d, "firehose_backup_to_s3_attempts_total", "shout") == 1
    assert metric(d, "firehose_backup_to_s3_success_ratio", "shout") == 1
    assert metric(d, "firehose_backup_to_s3_data_freshness_seconds", "shout") == 0
    assert metric(d, "firehose_delivery_to_s3_records_total", "shout") == 2, "backups are not deliveries"


def test_a_failing_backup_bucket_neither_holds_up_nor_loses_the_delivery_and_lands_once_after_a_restart(
        start_daemon: Any, tmp_path: Path, moto_server: MotoServer, bucket: str) -> None:
    """The backup bucket does not exist yet: delivery goes on, the spool keeps the records (in several
    segments the main delivery has done with) for the backup, the backup's freshness grows; after a
    stop and a start with the bucket there, the batch sealed before the stop lands under its key."""
    missing = bucket[:50] + "-later"
    stream = local_stream("keep", bucket, S3BackupMode="Enabled", S3BackupConfiguration=backup_config(missing))
    settings = {"s3": {"endpoint_url": moto_server.endpoint}, "state_dir": str(tmp_path / "state"),
                "spool": {"segment_bytes": 4096},
                "delivery": {**FAST["delivery"], "shutdown_timeout_seconds": 0.5}}
    d = start_daemon([stream], **settings)
    records = [b"%05d-%s\n" % (i, b"r" * 200) for i in range(60)]
    for i in range(0, 60, 10):
        put(d, "keep", records[i:i + 10])
    s3 = moto_server.client()
    wait_until(lambda: b"".join(sorted(contents(s3, bucket).values())) and
               sum(v.count(b"\n") for v in contents(s3, bucket).values()) == 60, timeout=30)
    wait_until(lambda: (metric(d, "firehose_backup_to_s3_attempts_total", "keep") or 0) >= 2, timeout=20)
    assert metric(d, "firehose_backup_to_s3_success_total", "keep") == 0
    assert (metric(d, "firehose_backup_to_s3_data_freshness_seconds", "keep") or 0) > 0
    assert metric(d, "firehose_delivery_to_s3_data_freshness_seconds", "keep") == 0
    assert d.call(lambda: d.daemon.spool.used_bytes) > 60 * 200, "the spool keeps what the backup needs"
    d.stop()
    [ledger_dir] = (tmp_path / "state").rglob("ledger-backup")
    sealed = {s.key for s in Ledger(ledger_dir, None).open.values()}  # type: ignore[arg-type]  # read only
    assert sealed, "backup batches were sealed, named, before the stop"

    s3.create_bucket(Bucket=missing)
    again = start_daemon([stream], **settings)
    wait_until(lambda: again.idle("keep") and contents(s3, missing), timeout=30)
    backups = contents(s3, missing)
    lines = [line + b"\n" for body in backups.values() for line in body.splitlines()]
    assert sorted(lines) == records, "every record backed up, once"
    assert sealed <= backups.keys(), "a batch sealed before the stop lands under the key it was sealed with"
    assert sum(v.count(b"\n") for v in contents(s3, bucket).values()) == 60, "nothing delivered twice"
    wait_until(lambda: again.call(lambda: again.daemon.spool.used_bytes) < 60 * 200, timeout=20)


def test_update_destination_enables_a_backup_and_refuses_to_disable_it(
        start_daemon: Any, moto_server: MotoServer, bucket: str, backup_bucket: str) -> None:
    d = start_daemon([], s3={"endpoint_url": moto_server.endpoint}, **FAST)
    client = d.client()
    dest = {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}
    with pytest.raises(ClientError) as refused:
        client.create_delivery_stream(DeliveryStreamName="later", ExtendedS3DestinationConfiguration={
            **dest, "S3BackupMode": "Enabled"})
    assert refused.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "S3BackupConfiguration is required" in refused.value.response["Error"]["Message"]

    client.create_delivery_stream(DeliveryStreamName="later", ExtendedS3DestinationConfiguration=dest)
    wait_until(lambda: client.describe_delivery_stream(DeliveryStreamName="later")[
        "DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE", timeout=10)

    def described() -> dict[str, Any]:
        desc = client.describe_delivery_stream(DeliveryStreamName="later")["DeliveryStreamDescription"]
        return desc | {"Destination": desc["Destinations"][0]["ExtendedS3DestinationDescription"]}

    first = described()
    assert first["Destination"]["S3BackupMode"] == "Disabled"
    client.update_destination(
        DeliveryStreamName="later", CurrentDeliveryStreamVersionId=first["VersionId"],
        DestinationId=first["Destinations"][0]["DestinationId"],
        ExtendedS3DestinationUpdate={"S3BackupMode": "Enabled", "S3BackupUpdate": {
            "RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{backup_bucket}", "Prefix": "src/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}})
    second = described()
    assert second["Destination"]["S3BackupMode"] == "Enabled"
    assert second["Destination"]["S3BackupDescription"]["BucketARN"] == f"arn:aws:s3:::{backup_bucket}"
    assert second["Destination"]["S3BackupDescription"]["Prefix"] == "src/"
    assert second["Destination"]["S3BackupDescription"]["CompressionFormat"] == "UNCOMPRESSED"

    put(d, "later", [b"after\n"])
    s3 = moto_server.client()
    wait_until(lambda: d.idle("later") and contents(s3, backup_bucket), timeout=30)
    [(key, body)] = contents(s3, backup_bucket).items()
    assert key_pattern("src/", "later", version=2).match(key), key
    assert body == b"after\n"

    # S3BackupUpdate alone changes the backup (its prefix), keeping the rest; Disabled is refused.
    client.update_destination(
        DeliveryStreamName="later", CurrentDeliveryStreamVersionId=second["VersionId"],
        DestinationId=second["Destinations"][0]["DestinationId"],
        ExtendedS3DestinationUpdate={"S3BackupUpdate": {"Prefix": "src2/"}})
    third = described()
    assert third["Destination"]["S3BackupDescription"]["Prefix"] == "src2/"
    assert third["Destination"]["S3BackupDescription"]["BucketARN"] == f"arn:aws:s3:::{backup_bucket}"
    with pytest.raises(ClientError) as disabled:
        client.update_destination(
            DeliveryStreamName="later", CurrentDeliveryStreamVersionId=third["VersionId"],
            DestinationId=third["Destinations"][0]["DestinationId"],
            ExtendedS3DestinationUpdate={"S3BackupMode": "Disabled"})
    assert disabled.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "cannot be disabled" in disabled.value.response["Error"]["Message"]
    assert described()["Destination"]["S3BackupMode"] == "Enabled"


def test_redshift_loads_the_transformed_rows_and_backs_up_the_source_records(
        start_daemon: Any, tmp_path: Path, postgres_server: PostgresServer, moto_server: MotoServer,
        backup_bucket: str) -> None:
    database = postgres_server.create_database("e2e_backup")
    with postgres_server.connect(database) as conn:
        conn.execute("CREATE TABLE events (id integer, name text)")
    fns = tmp_path / "fns"
    write_function(fns, "upper", UPPER)
    stream = {"DeliveryStreamName": "rows", "RedshiftDestinationConfiguration": {
        "RoleARN": ROLE, "ClusterJDBCURL": postgres_server.url(database=database), "Username": "firehose",
        "Password": "s3cret-pw", "RetryOptions": {"DurationInSeconds": 60},
        "CopyCommand": {"DataTableName": "events", "DataTableColumns": "id,name", "CopyOptions": "JSON 'auto'"},
        "ProcessingConfiguration": LAMBDA,
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local", "Prefix": "staging/",
                            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}},
        "S3BackupMode": "Enabled",
        "S3BackupConfiguration": backup_config(backup_bucket, Prefix="source/", CompressionFormat="GZIP")}}
    d = start_daemon([stream], transforms_dir=str(fns), s3={"endpoint_url": moto_server.endpoint}, **FAST)
    records = [b'{"id":%d,"name":"n%d"}\n' % (i, i) for i in range(20)]
    put(d, "rows", records)
    s3 = moto_server.client()
    wait_until(lambda: d.idle("rows") and contents(s3, backup_bucket), timeout=30)
    with postgres_server.connect(database) as conn:
        assert conn.execute("SELECT count(*), min(name) FROM events").fetchone() == (20, "N0")
    [(key, body)] = contents(s3, backup_bucket).items()
    assert key_pattern("source/", "rows", ".gz").match(key), key
    assert gzip.decompress(body) == b"".join(records), "lower case: the records before the transform"
    assert not any(k.startswith("source/") for k in read_local(tmp_path / "out")), "not in the staging bucket"
    assert metric(d, "firehose_backup_to_s3_records_total", "rows") == 20
    desc = d.client().describe_delivery_stream(DeliveryStreamName="rows")["DeliveryStreamDescription"]
    redshift = desc["Destinations"][0]["RedshiftDestinationDescription"]
    assert redshift["S3BackupMode"] == "Enabled"
    assert redshift["S3BackupDescription"]["Prefix"] == "source/"
