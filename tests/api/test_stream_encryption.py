"""Server-side encryption of delivery streams through boto3: the spool holds no record in clear text while
encryption is on, records are delivered as sent, the states DescribeDeliveryStream reports, restarts with
the keyring, a key gone refusing the start, and kill -9 losing nothing."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.errors import LimitExceededException
from firehose.sse import MAX_CHANGES_PER_DAY, Encryption
from tests.support.config import local_stream, write_config
from tests.support.delivered import read_local, wait_for_lines
from tests.support.killcycles import Acknowledged, Ids, Load, Tally, firehose_putter, ids_in, kill_cycle
from tests.support.ports import free_port
from tests.support.waiting import wait_until

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0f3b2c6e-6a53-4b0c-9a52-3c1f0d4f7a10"
SSE = {"KeyType": "AWS_OWNED_CMK"}


def _keys(tmp_path: Path, *ids: str) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(exist_ok=True)
    for path in directory.glob("*.key"):
        path.unlink()
    for i, key_id in enumerate(ids):
        (directory / f"{key_id}.key").write_text(base64.b64encode(bytes([i + 1]) * 32).decode())
    return directory


def _spool_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((state / "spool").rglob("*.seg")))


def _sse(client: Any, name: str) -> dict[str, Any]:
    desc = client.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    return dict(desc["DeliveryStreamEncryptionConfiguration"])


def _wait_status(client: Any, name: str, status: str) -> dict[str, Any]:
    return dict(wait_until(lambda: (s := _sse(client, name))["Status"] == status and s, timeout=10, interval=0.02))


def _put(client: Any, name: str, *lines: bytes) -> bool:
    resp = client.put_record_batch(DeliveryStreamName=name, Records=[{"Data": line + b"\n"} for line in lines])
    assert resp["FailedPutCount"] == 0
    return bool(resp["Encrypted"])


def test_created_encrypted_spool_holds_no_clear_text_and_records_are_delivered(tmp_path: Path,
                                                                                start_daemon: Any) -> None:
    daemon = start_daemon(encryption={"keys_dir": str(_keys(tmp_path, "k1"))})
    client = daemon.client()
    client.create_delivery_stream(**local_stream("sealed", interval=1),
                                  DeliveryStreamEncryptionConfigurationInput=SSE)
    assert _sse(client, "sealed") == {"Status": "ENABLED", "KeyType": "AWS_OWNED_CMK"}
    secrets = [f"secret-{i:04d}-4111111111111111".encode() for i in range(50)]
    assert _put(client, "sealed", *secrets) is True
    assert client.put_record(DeliveryStreamName="sealed", Record={"Data": b"secret-single\n"})["Encrypted"] is True
    spooled = _spool_bytes(tmp_path / "state")
    assert len(spooled) > 50 * 30, "the records were not spooled"
    assert b"secret-" not in spooled and b"4111111111111111" not in spooled
    assert sorted(wait_for_lines(tmp_path / "out", 51)) == sorted([s + b"\n" for s in secrets] + [b"secret-single\n"])


def test_start_and_stop_on_a_stream_with_plain_records(tmp_path: Path, start_daemon: Any) -> None:
    daemon = start_daemon(encryption={"keys_dir": str(_keys(tmp_path, "k1"))})
    client = daemon.client()
    client.create_delivery_stream(**local_stream("mixed", interval=1))
    assert _sse(client, "mixed") == {"Status": "DISABLED"}
    assert _put(client, "mixed", b"plain-before") is False
    client.start_delivery_stream_encryption(
        DeliveryStreamName="mixed",
        DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": KEY_ARN})
    assert _wait_status(client, "mixed", "ENABLED") == {"Status": "ENABLED", "KeyType": "CUSTOMER_MANAGED_CMK",
                                                          "KeyARN": KEY_ARN}
    assert _put(client, "mixed", b"sealed-while-enabled") is True
    with pytest.raises(client.exceptions.InvalidArgumentException, match="KeyARN is required"):
        client.start_delivery_stream_encryption(
            DeliveryStreamName="mixed", DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK"})
    client.stop_delivery_stream_encryption(DeliveryStreamName="mixed")
    assert _wait_status(client, "mixed", "DISABLED") == {"Status": "DISABLED"}
    assert _put(client, "mixed", b"plain-after") is False
    spooled = _spool_bytes(tmp_path / "state")
    assert b"plain-before" in spooled and b"plain-after" in spooled  # plain history stays as it was
    assert b"sealed-while-enabled" not in spooled
    assert sorted(wait_for_lines(tmp_path / "out", 3)) == [b"plain-after\n", b"plain-before\n",
                                                           b"sealed-while-enabled\n"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.start_delivery_stream_encryption(DeliveryStreamName="nope")


def test_failures_are_reported_as_aws_does(tmp_path: Path, start_daemon: Any) -> None:
    daemon = start_daemon(encryption={"keys_dir": str(_keys(tmp_path))})  # an empty keyring
    client = daemon.client()
    with pytest.raises(client.exceptions.InvalidKMSResourceException, match="keyring"):
        client.create_delivery_stream(**local_stream("born-sealed"), DeliveryStreamEncryptionConfigurationInput=SSE)
    client.create_delivery_stream(**local_stream("s"))
    client.start_delivery_stream_encryption(DeliveryStreamName="s")  # AWS_OWNED_CMK by default
    failed = _wait_status(client, "s", "ENABLING_FAILED")
    assert failed["KeyType"] == "AWS_OWNED_CMK"
    assert failed["FailureDescription"]["Type"] == "KMS_KEY_NOT_FOUND"
    assert "keyring" in failed["FailureDescription"]["Details"]
    assert _put(client, "s", b"still-plain") is False
    with pytest.raises(client.exceptions.InvalidArgumentException, match="KeyARN must not be given"):
        client.create_delivery_stream(**local_stream("x"), DeliveryStreamEncryptionConfigurationInput={
            "KeyType": "AWS_OWNED_CMK", "KeyARN": KEY_ARN})


def test_start_and_stop_together_are_limited_per_day() -> None:
    enc = Encryption()
    for i in range(MAX_CHANGES_PER_DAY):
        if i % 2 == 0:
            enc.start("AWS_OWNED_CMK", None, 1000 + i, "s")
        else:
            enc.stop(1000 + i, "s")
        enc.applied()
    with pytest.raises(LimitExceededException, match="25 times"):
        enc.stop(2000, "s")
    enc.start("AWS_OWNED_CMK", None, 1000 + 24 * 3600 * 1000 + 1, "s")  # the first change is a day old


def test_restart_with_the_keyring_rotates_and_a_missing_key_refuses_to_start(tmp_path: Path,
                                                                             start_daemon: Any) -> None:
    state = tmp_path / "state"
    # A long buffer and no wait at shutdown: the records wait in the spool across the restarts.
    daemon = start_daemon(encryption={"keys_dir": str(_keys(tmp_path, "k1"))},
                          delivery={"shutdown_timeout_seconds": 0})
    client = daemon.client()
    client.create_delivery_stream(**local_stream("kept", interval=900, size_mb=64),
                                  DeliveryStreamEncryptionConfigurationInput=SSE)
    _put(client, "kept", b"waiting-under-k1")
    daemon.stop()
    [keys_file] = (state / "spool").glob("*/keys.json")

    # The missing key: `firehose serve` refuses to start, names the stream and the key id, exit status 2.
    config = write_config(tmp_path / "refuse.yaml", {"state_dir": str(state), "log_level": "INFO",
                                                     "encryption": {"keys_dir": str(_keys(tmp_path, "k2"))}}, [])
    run = subprocess.run([sys.executable, "-m", "firehose", "serve", "--config", str(config), "--port",
                          str(free_port())], capture_output=True, timeout=60, text=True)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "delivery stream 'kept' of account 123456789012" in run.stderr and "key id 'k1'" in run.stderr
    assert "Traceback" not in run.stderr

    # Rotation: k2 joins the keyring; new records are sealed under it, old ones still read with k1.
    daemon = start_daemon(state_dir=state, encryption={"keys_dir": str(_keys(tmp_path, "k1", "k2"))})
    client = daemon.client()
    assert _sse(client, "kept")["Status"] == "ENABLED"
    assert _put(client, "kept", b"waiting-under-k2") is True
    generations = orjson.loads(keys_file.read_bytes())["data_keys"]
    assert [g["kek_id"] for g in generations] == ["k1", "k2"]
    assert b"waiting-under" not in _spool_bytes(state)
    client.update_destination(DeliveryStreamName="kept", CurrentDeliveryStreamVersionId="1",
                              DestinationId="destinationId-000000000001",
                              ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
    assert sorted(wait_for_lines(tmp_path / "out", 2)) == [b"waiting-under-k1\n", b"waiting-under-k2\n"]


def test_kill_9_with_encryption_on_loses_nothing(tmp_path: Path, daemon_process: Any) -> None:
    keys = _keys(tmp_path, "k1")
    config = write_config(
        tmp_path / "crash.yaml",
        {"state_dir": str(tmp_path / "state"), "log_level": "WARNING", "encryption": {"keys_dir": str(keys)},
         "buckets": {"local": {"directory": str(tmp_path / "out")}}},
        [{**local_stream("crash", interval=1), "DeliveryStreamEncryptionConfigurationInput": SSE}],
    )
    rng = random.Random(20261201)
    ids, acked = Ids(), Acknowledged()
    daemon = daemon_process(config)
    put = firehose_putter(daemon.endpoint)
    for _ in range(2):
        kill_cycle(daemon, lambda: [Load(put, ["crash"], ids, acked, seed=rng.randrange(2**32))], rng, (0.5, 1.2))
    daemon.start()
    wait_until(lambda: daemon.idle("crash"), timeout=60)
    assert daemon.terminate() == 0
    seen: Counter[int] = Counter(i for body in read_local(tmp_path / "out").values() for i in ids_in(body))
    tally = Tally.of(acked.ids["crash"], seen)
    assert tally.acknowledged > 200, "the load was too light to mean anything"
    assert not tally.lost, f"{len(tally.lost)} acknowledged records lost, e.g. {tally.lost[:5]}"
    assert tally.duplicated == 0
    assert json.dumps({"id": 0}).encode()[:6] not in _spool_bytes(tmp_path / "state")
