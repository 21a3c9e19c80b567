"""Acknowledged means durable: kill -9, torn tails, restarts, retention trimming."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.streams import store as store_module
from firehose.streams.store import ShardStore, StoreOptions
from tests.support.streams import read_all


def test_acknowledged_records_survive_kill_9(start_streams_server: Any, tmp_path: Path) -> None:
    server = start_streams_server()
    client = server.client()
    client.create_stream(StreamName="d", ShardCount=2)
    acked = []
    for batch in range(5):
        resp = client.put_records(StreamName="d", Records=[{"Data": f"{batch}-{i}".encode(), "PartitionKey": str(i)}
                                                           for i in range(300)])
        acked += [f"{batch}-{i}".encode() for i in range(300)]
        assert resp["FailedRecordCount"] == 0
    client.split_shard(StreamName="d", ShardToSplit="shardId-000000000001", NewStartingHashKey=str(2**127 + 5))
    client.put_records(StreamName="d", Records=[{"Data": b"after-split", "PartitionKey": "z"}])
    acked.append(b"after-split")
    server.kill()
    server.start()
    client = server.client()
    assert sorted(r["Data"] for r in read_all(client, "d")) == sorted(acked)
    shards = client.list_shards(StreamName="d")["Shards"]
    assert len(shards) == 4 and shards[2]["ParentShardId"] == "shardId-000000000001"
    # new sequence numbers keep increasing after the restart
    last = max(int(r["SequenceNumber"]) for r in read_all(client, "d") if r["PartitionKey"] == "0")
    new = client.put_record(StreamName="d", Data=b"n", PartitionKey="0")["SequenceNumber"]
    assert int(new) > last


def test_torn_tail_is_cut_and_logged(start_streams_server: Any, tmp_path: Path) -> None:
    server = start_streams_server()
    client = server.client()
    client.create_stream(StreamName="t", ShardCount=1)
    client.put_records(StreamName="t", Records=[{"Data": f"r{i}".encode(), "PartitionKey": "k"} for i in range(50)])
    server.stop()
    segments = sorted((server.state_dir).glob("t-*/shardId-000000000000/*.seg"))
    assert segments
    with open(segments[-1], "ab") as f:
        f.write(b"FHS1\x40\x00\x00\x00half a frame")  # what a crash mid-write leaves
    server.start()
    client = server.client()
    assert [r["Data"] for r in read_all(client, "t")] == [f"r{i}".encode() for i in range(50)]
    assert "Cut a torn tail" in server.log()
    client.put_record(StreamName="t", Data=b"next", PartitionKey="k")
    assert read_all(client, "t")[-1]["Data"] == b"next"


def test_retention_hides_and_trims_old_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """White-box on the store with a controlled clock: 25 hours cannot pass in a test."""
    clock = {"now": 1_800_000_000_000}
    monkeypatch.setattr(store_module, "now_ms", lambda: clock["now"])

    async def scenario() -> None:
        store = ShardStore(tmp_path / "k", StoreOptions(segment_bytes=1024 * 1024))
        store.create_stream("r", 1)
        for i in range(40):  # 40 entries of ~100 KiB: several segments
            await store.put("r", [(b"k", bytes([i]) * 100_000, 0)])
            clock["now"] += 60_000  # one a minute
        clock["now"] += 24 * 3600 * 1000 - 20 * 60_000  # the first 20 entries are now older than 24 h
        token = store.iterator("r", "shardId-000000000000", "TRIM_HORIZON")
        first = store.get_records(token, 1)
        assert first.records[0].data[:1] == bytes([20])
        seg_dir = tmp_path / "k" / f"r-{store.streams['r'].created_ms}" / "shardId-000000000000"
        before = len(list(seg_dir.glob("*.seg")))
        freed = store.trim()
        assert freed > 0 and len(list(seg_dir.glob("*.seg"))) < before
        token = store.iterator("r", "shardId-000000000000", "TRIM_HORIZON")
        got = []
        while True:
            result = store.get_records(token, 10000)
            got += [r.data[0] for r in result.records]
            if not result.records:
                break
            assert result.next_iterator is not None
            token = result.next_iterator
        assert got == list(range(20, 40))
        await store.close()

    asyncio.run(scenario())
    assert os.path.exists(tmp_path / "k" / "streams.json")


def test_declared_streams_are_created_at_start_and_checked_by_validate(start_streams_server: Any,
                                                                       tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    server = start_streams_server({"kinesis": {"streams": [
        {"StreamName": "declared", "ShardCount": 3},
        {"StreamName": "od", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}]}})
    client = server.client()
    assert client.describe_stream_summary(StreamName="declared")["StreamDescriptionSummary"]["OpenShardCount"] == 3
    assert client.describe_stream_summary(StreamName="od")["StreamDescriptionSummary"]["OpenShardCount"] == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kinesis": {"streams": [{"StreamName": "ok", "ShardCount": 0}]}}))
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "kinesis stream 'ok'" in out.stderr and "shardCount" in out.stderr


def test_a_second_server_on_the_same_store_refuses_to_start(start_streams_server: Any, tmp_path: Path) -> None:
    """Two processes appending to the same shard logs would corrupt them."""
    import subprocess
    import sys

    from tests.support.ports import free_port

    server = start_streams_server()
    server.client().create_stream(StreamName="mine", ShardCount=1)
    out = subprocess.run([sys.executable, "-m", "firehose", "streams", "serve", "--port", str(free_port()),
                          "--state-dir", str(server.state_dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"the shard store {server.state_dir} is in use by another process" in out.stderr
    server.kill()  # the kernel drops the lock with the process: no stale lock after kill -9
    server.start()
    assert server.client().describe_stream_summary(StreamName="mine")["StreamDescriptionSummary"]["StreamName"]


def test_a_stream_from_before_starting_numbers_moved_keeps_naming_its_records_as_it_did(tmp_path: Path) -> None:
    """Streams whose streams.json entry has no ``first_entry`` (made before a shard's StartingSequenceNumber
    came before its first record) keep their numbering, so sequence numbers clients hold stay valid."""

    async def scenario() -> tuple[str | None, str | None]:
        store = ShardStore(tmp_path / "k", StoreOptions(segment_bytes=1024 * 1024))
        store.create_stream("old", 1)
        (first,) = await store.put("old", [(b"k", b"one", 0)])
        (second,) = await store.put("old", [(b"k", b"two", 0)])
        await store.close()
        return first.sequence_number, second.sequence_number

    new_first, _ = asyncio.run(scenario())
    meta = orjson.loads((tmp_path / "k" / "streams.json").read_bytes())
    (stream,) = meta["streams"]
    assert stream.pop("first_entry") == 1
    (tmp_path / "k" / "streams.json").write_bytes(orjson.dumps(meta))

    async def reopened() -> None:
        store = ShardStore(tmp_path / "k", StoreOptions(segment_bytes=1024 * 1024))
        data = store.streams["old"].data["shardId-000000000000"]
        assert data.sequence_number((0, 0)) != new_first  # numbered from entry 0, as before
        assert data.sequence_number((0, 0)) == store.streams["old"].starting_sequence(
            store.streams["old"].shards[0])
        token = store.iterator("old", "shardId-000000000000", "AFTER_SEQUENCE_NUMBER",
                               sequence_number=data.sequence_number((0, 0)))
        assert [r.data for r in store.get_records(token, 10).records] == [b"two"]
        await store.close()

    asyncio.run(reopened())
