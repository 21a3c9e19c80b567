"""Encryption at rest of the shard logs: StartStreamEncryption / StopStreamEncryption with the daemon's keyring.

The store-level tests drive the shard store in-process (real logs on disk, real AES-GCM); the API tests
go through boto3 to ``firehose streams serve`` with a keyring configured.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from firehose.errors import InternalFailure
from firehose.keyring import Keyring
from firehose.streams import encryption
from firehose.streams.errors import KMSNotFoundException
from firehose.streams.store import ShardStore, StoreOptions
from tests.support.streams import StreamsServer, read_all, unique

KEY_UUID = "12345678-1234-1234-1234-123456789012"
SHARD = "shardId-000000000000"


def _key(n: int) -> bytes:
    return bytes([n]) * 32


def _loader(keys: dict[str, bytes]) -> Callable[[], Keyring]:
    return lambda: Keyring(dict(keys))


def _run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def _put(store: ShardStore, name: str, *datas: bytes, key: bytes = b"pk") -> None:
    results = await store.put(name, [(key, d, 0) for d in datas])
    assert all(r.error_code is None for r in results)


def _read(store: ShardStore, name: str, shard: str = SHARD) -> list[tuple[bytes, bool]]:
    token: str | None = store.iterator(name, shard, "TRIM_HORIZON")
    got: list[tuple[bytes, bool]] = []
    while token is not None:
        result = store.get_records(token, 10000)
        if not result.records:
            break
        got += [(r.data, r.sealed) for r in result.records]
        token = result.next_iterator
    return got


def _segments(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*.seg")))


def _open(directory: Path, keys: dict[str, bytes]) -> ShardStore:
    return ShardStore(directory, StoreOptions(), keyring=_loader(keys))


def test_records_on_disk_are_sealed_and_a_restart_with_the_keyring_reads_everything(tmp_path: Path) -> None:
    secret = b"credit-card-4111111111111111"

    async def scenario() -> None:
        store = _open(tmp_path, {"k1": _key(1)})
        store.create_stream("s", 1)
        await _put(store, "s", b"plain-before")
        encryption.start(store, "s", "KMS", KEY_UUID)
        await _put(store, "s", *[secret + bytes([i]) for i in range(20)], key=b"partition-key-secret")
        assert _read(store, "s")[0] == (b"plain-before", False)
        assert all(sealed for _data, sealed in _read(store, "s")[1:])
        await store.close()

        disk = _segments(tmp_path)
        assert b"plain-before" in disk  # stored before encryption started: plain, as AWS leaves it
        assert secret not in disk and b"partition-key-secret" not in disk
        assert secret not in (tmp_path / "streams.json").read_bytes()

        store = _open(tmp_path, {"k1": _key(1)})
        assert _read(store, "s") == [(b"plain-before", False)] + [(secret + bytes([i]), True) for i in range(20)]
        await _put(store, "s", b"after-restart")  # still encrypted: a new data key for this run
        assert _read(store, "s")[-1] == (b"after-restart", True)
        await store.close()

    _run(scenario)


def test_rotation_new_records_use_the_newest_key_and_old_ones_stay_readable(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _open(tmp_path, {"2026-01": _key(1)})
        store.create_stream("s", 1)
        encryption.start(store, "s", "KMS", "alias/aws/kinesis")
        await _put(store, "s", b"under-old")
        await store.close()

        store = _open(tmp_path, {"2026-01": _key(1), "2026-02": _key(2)})  # a key added: rotation
        await _put(store, "s", b"under-new")
        state = store.streams["s"].encryption
        assert state is not None and [k.kek_id for k in state.data_keys][-1] == "2026-02"
        assert _read(store, "s") == [(b"under-old", True), (b"under-new", True)]
        await store.close()

        # the old key is still needed (its records are within retention): without it the store refuses to start
        with pytest.raises(encryption.MissingKeyError) as info:
            _open(tmp_path, {"2026-02": _key(2)})
        assert "'s'" in str(info.value) and "'2026-01'" in str(info.value)
        store = _open(tmp_path, {"2026-01": _key(1), "2026-02": _key(2)})  # and the refusal left it intact
        assert [d for d, _ in _read(store, "s")] == [b"under-old", b"under-new"]
        await store.close()

    _run(scenario)


def test_a_missing_or_wrong_key_refuses_start_naming_the_stream_and_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _open(tmp_path, {"main": _key(1)})
        store.create_stream("orders", 1)
        encryption.start(store, "orders", "KMS", KEY_UUID)
        await _put(store, "orders", b"x")
        await store.close()

    _run(scenario)
    with pytest.raises(encryption.MissingKeyError, match=r"stream 'orders' .* key id 'main', which is not in"):
        _open(tmp_path, {"other": _key(2)})
    with pytest.raises(encryption.MissingKeyError, match=r"stream 'orders' .*'main'.* a different key"):
        _open(tmp_path, {"main": _key(9)})
    with pytest.raises(encryption.MissingKeyError, match="stream 'orders'"):
        ShardStore(tmp_path, StoreOptions())  # no keyring at all


def test_stop_makes_new_records_plain_and_mixed_history_reads_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _open(tmp_path, {"k": _key(1)})
        store.create_stream("s", 1)
        expected = []
        for phase in range(4):  # plain, sealed, plain, sealed
            if phase in (1, 3):
                encryption.start(store, "s", "KMS", KEY_UUID)
            elif phase == 2:
                encryption.stop(store, "s", "KMS", KEY_UUID)
            for i in range(3):
                data = f"p{phase}-{i}".encode()
                await _put(store, "s", data)
                expected.append((data, phase in (1, 3)))
        assert _read(store, "s") == expected
        await store.close()
        store = _open(tmp_path, {"k": _key(1)})
        assert _read(store, "s") == expected
        # partial reads inside sealed entries (Limit) keep positions right
        token = store.iterator("s", SHARD, "TRIM_HORIZON")
        seen = []
        while len(seen) < len(expected):
            result = store.get_records(token, 1)
            seen += [r.data for r in result.records]
            assert result.next_iterator is not None
            token = result.next_iterator
        assert seen == [d for d, _ in expected]
        await store.close()

    _run(scenario)


def test_a_sealed_entry_moved_to_another_position_or_altered_does_not_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _open(tmp_path, {"k": _key(1)})
        store.create_stream("s", 1)
        encryption.start(store, "s", "KMS", KEY_UUID)
        await _put(store, "s", b"first")
        await _put(store, "s", b"second")
        data = store.streams["s"].data[SHARD]
        keys = store.streams["s"].keys
        (_, first), (_, second) = data.log.read(0, 1 << 20)
        assert keys.open(0, 0, first).endswith(b"first")
        with pytest.raises(InternalFailure, match="moved"):
            keys.open(0, 1, first)  # entry 0's bytes where entry 1 lies
        with pytest.raises(InternalFailure, match="failed authentication"):
            keys.open(1, 0, first)  # another shard
        tampered = bytearray(second)
        tampered[0] ^= 1  # the arrival time, in the clear but authenticated
        with pytest.raises(InternalFailure, match="failed authentication"):
            keys.open(0, 1, memoryview(bytes(tampered)))
        await store.close()

    _run(scenario)


def test_no_keyring_answers_kms_not_found_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = ShardStore(tmp_path, StoreOptions())
        store.create_stream("s", 1)
        with pytest.raises(KMSNotFoundException, match="no key-encryption key is configured"):
            encryption.start(store, "s", "KMS", KEY_UUID)
        assert store.streams["s"].status == "ACTIVE"
        await _put(store, "s", b"still-plain")
        assert _read(store, "s") == [(b"still-plain", False)]
        await store.close()

    _run(scenario)


def test_retired_data_keys_are_forgotten_after_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once everything a key sealed is past retention (plus a day), the key may leave the keyring."""
    from firehose.streams import encryption as enc_module
    from firehose.streams import store as store_module

    clock = {"now": 1_800_000_000_000}
    monkeypatch.setattr(store_module, "now_ms", lambda: clock["now"])
    monkeypatch.setattr(enc_module, "now_ms", lambda: clock["now"])

    async def scenario() -> None:
        store = _open(tmp_path, {"old": _key(1)})
        store.create_stream("s", 1)
        encryption.start(store, "s", "KMS", KEY_UUID)
        await _put(store, "s", b"sealed")
        encryption.stop(store, "s", "KMS", KEY_UUID)
        clock["now"] += 1000
        await _put(store, "s", b"plain")
        await store.close()
        clock["now"] += 49 * 3600 * 1000
        store = ShardStore(tmp_path, StoreOptions())  # no keyring needed any more
        state = store.streams["s"].encryption
        assert state is not None and state.data_keys == []
        store.streams["s"].retention_hours = 168  # a longer retention does not bring unreadable records back
        assert _read(store, "s") == [(b"plain", False)]
        await store.close()

    _run(scenario)


# -- through the API, with boto3 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    root = tmp_path_factory.mktemp("kinesis-enc")
    keys = root / "keys"
    keys.mkdir()
    (keys / "2026-01-main.key").write_text(_key(7).hex())
    config = root / "firehose.yaml"
    config.write_text(yaml.safe_dump({"encryption": {"keys_dir": str(keys)}}))
    server = StreamsServer(root / "state", root / "server.log", config)
    yield server
    server.stop()


def _error(info: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str]:
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def test_boto3_start_describe_put_get_stop(keyed_server: StreamsServer) -> None:
    client = keyed_server.client()
    name = unique("enc")
    client.create_stream(StreamName=name, ShardCount=1)
    assert client.put_record(StreamName=name, Data=b"before", PartitionKey="k")["EncryptionType"] == "NONE"
    key_arn = f"arn:aws:kms:us-east-1:123456789012:key/{KEY_UUID}"
    assert client.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=key_arn)
    desc = client.describe_stream(StreamName=name)["StreamDescription"]
    assert (desc["StreamStatus"], desc["EncryptionType"], desc["KeyId"]) == ("ACTIVE", "KMS", key_arn)
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["EncryptionType"], summary["KeyId"]) == ("KMS", key_arn)
    assert client.put_record(StreamName=name, Data=b"one", PartitionKey="k")["EncryptionType"] == "KMS"
    resp = client.put_records(StreamName=name, Records=[{"Data": b"two", "PartitionKey": "k"}])
    assert resp["EncryptionType"] == "KMS" and resp["FailedRecordCount"] == 0
    records = read_all(client, name)
    assert [(r["Data"], r.get("EncryptionType")) for r in records] == [
        (b"before", None), (b"one", "KMS"), (b"two", "KMS")]
    stream_dirs = list((keyed_server.state_dir).glob(f"{name}-*"))
    assert stream_dirs and b"before" in _segments(stream_dirs[0]) and b"two" not in _segments(stream_dirs[0])

    client.stop_stream_encryption(StreamARN=desc["StreamARN"], EncryptionType="KMS", KeyId=key_arn)
    desc = client.describe_stream(StreamName=name)["StreamDescription"]
    assert desc["EncryptionType"] == "NONE" and "KeyId" not in desc
    assert client.put_records(StreamName=name, Records=[{"Data": b"three", "PartitionKey": "k"}])[
        "EncryptionType"] == "NONE"
    assert [r.get("EncryptionType") for r in read_all(client, name)] == [None, "KMS", "KMS", None]


@pytest.mark.parametrize("key_id", [
    KEY_UUID, f"arn:aws:kms:eu-west-1:123456789012:key/{KEY_UUID}", "arn:aws:kms:eu-west-1:123456789012:alias/mine",
    "alias/mine", "alias/aws/kinesis"])
def test_every_key_id_form_is_accepted(keyed_server: StreamsServer, key_id: str) -> None:
    client = keyed_server.client()
    name = unique("kid")
    client.create_stream(StreamName=name, ShardCount=1)
    client.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=key_id)
    assert client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["KeyId"] == key_id


@pytest.mark.parametrize(("encryption_type", "key_id", "message"), [
    ("KMS", "not-a-key", "Received KeyId is not a properly formatted Alias or GUID"),
    ("KMS", "arn:aws:kms:us-east-1:123456789012:key/not-a-uuid", "Received KeyId ARN is not a properly formatted ARN"),
    ("KMS", "arn:aws:s3:::bucket", "Received KeyId ARN is not a properly formatted ARN"),
    ("NONE", KEY_UUID, "KMS is the only valid EncryptionType for this request"),
])
def test_bad_arguments_are_invalid_argument(keyed_server: StreamsServer, encryption_type: str, key_id: str,
                                            message: str) -> None:
    client = keyed_server.client()
    name = unique("bad")
    client.create_stream(StreamName=name, ShardCount=1)
    for call in (client.start_stream_encryption, client.stop_stream_encryption):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call(StreamName=name, EncryptionType=encryption_type, KeyId=key_id)
        assert _error(info) == ("InvalidArgumentException", message)
    assert client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["EncryptionType"] == "NONE"


def test_unknown_stream_and_the_daily_limit(keyed_server: StreamsServer) -> None:
    client = keyed_server.client()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.start_stream_encryption(StreamName=unique("none"), EncryptionType="KMS", KeyId=KEY_UUID)
    assert _error(info)[0] == "ResourceNotFoundException"
    name = unique("lim")
    client.create_stream(StreamName=name, ShardCount=1)
    for _ in range(encryption.MAX_CHANGES_PER_DAY):
        client.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=KEY_UUID)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=KEY_UUID)
    assert _error(info)[0] == "LimitExceededException" and "25 times in the last 24 hours" in _error(info)[1]
    client.stop_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId=KEY_UUID)  # counted apart


def test_updating_while_it_applies_then_active(start_streams_server: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k.key").write_text(_key(3).hex())
    server = start_streams_server({"encryption": {"keys_dir": str(keys)}, "kinesis": {"update_delay_seconds": 0.5}})
    client = server.client()
    client.create_stream(StreamName="u", ShardCount=1)
    client.start_stream_encryption(StreamName="u", EncryptionType="KMS", KeyId=KEY_UUID)
    assert client.describe_stream_summary(StreamName="u")["StreamDescriptionSummary"]["StreamStatus"] == "UPDATING"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.stop_stream_encryption(StreamName="u", EncryptionType="KMS", KeyId=KEY_UUID)
    assert _error(info) == ("ResourceInUseException",
                            "Stream u under account 123456789012 not ACTIVE, instead in state UPDATING")
    client.get_waiter("stream_exists").wait(StreamName="u", WaiterConfig={"Delay": 0.2})
    assert client.put_record(StreamName="u", Data=b"x", PartitionKey="k")["EncryptionType"] == "KMS"


def test_the_sidecar_without_a_keyring_answers_kms_not_found(kinesis: Any) -> None:
    name = unique("nokey")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert _error(info)[0] == "KMSNotFoundException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_store_whose_key_is_gone_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = _open(tmp_path / "state", {"2026-01-main": _key(1)})
        store.create_stream("payments", 1)
        encryption.start(store, "payments", "KMS", KEY_UUID)
        await _put(store, "payments", b"x")
        await store.close()

    _run(scenario)
    config = tmp_path / "firehose.yaml"
    (tmp_path / "keys").mkdir()
    config.write_text(yaml.safe_dump({"encryption": {"keys_dir": str(tmp_path / "keys")}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREHOSE_KEK_")}
    out = subprocess.run([sys.executable, "-m", "firehose", "streams", "serve", "--host", "127.0.0.1", "--port", "0",
                          "--state-dir", str(tmp_path / "state"), "--config", str(config)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "stream 'payments'" in text and "'2026-01-main'" in text and "not in the keyring" in text
    assert "Traceback" not in text


def test_concurrent_puts_across_shards_all_open(tmp_path: Path) -> None:
    """Entries the group committer writes together keep the numbers they were sealed for."""
    async def scenario() -> None:
        store = _open(tmp_path, {"k": _key(1)})
        store.create_stream("s", 3)
        encryption.start(store, "s", "KMS", KEY_UUID)
        hash_keys = [0, 2**127, 2**128 - 1]
        await asyncio.gather(*(store.put("s", [(b"k", f"{i}-{j}".encode(), hash_keys[j % 3]) for j in range(7)])
                               for i in range(40)))
        got = [d for shard in range(3) for d, sealed in _read(store, "s", f"shardId-{shard:012d}") if sealed]
        assert sorted(got) == sorted(f"{i}-{j}".encode() for i in range(40) for j in range(7))
        await store.close()

    _run(scenario)


def test_a_keyring_that_cannot_load_answers_kms_invalid_state(tmp_path: Path) -> None:
    from firehose.streams.errors import KMSInvalidStateException

    def broken() -> Keyring:
        return Keyring.load(directory=tmp_path / "no-such-dir", env_prefix=None)

    async def scenario() -> None:
        store = ShardStore(tmp_path / "state", StoreOptions(), keyring=broken)
        store.create_stream("s", 1)
        with pytest.raises(KMSInvalidStateException, match="no-such-dir does not exist"):
            encryption.start(store, "s", "KMS", KEY_UUID)
        assert encryption.describe(store.streams["s"].encryption) == {"EncryptionType": "NONE"}
        await store.close()

    _run(scenario)
