"""Opening a shard store reads the segment indexes, not the records: and every read answers as before."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import firehose.storage.log as log_module
from firehose.streams import store as store_module
from firehose.streams.store import ShardStore, StoreOptions

START = 1_800_000_000_000
SHARD = "shardId-000000000000"


def options() -> StoreOptions:
    return StoreOptions(segment_bytes=8192)


def read_from(store: ShardStore, token: str | None) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    while token is not None:
        result = store.get_records(token, 10_000)
        got += [(r.sequence_number, r.data) for r in result.records]
        token = result.next_iterator if result.records else None
    return got


def answers(store: ShardStore, clock: dict[str, int]) -> dict[str, Any]:
    """What the reads of stream ``s`` answer: everything, from every 7th second, the parent's end."""
    stream = store.streams["s"]
    out: dict[str, Any] = {
        "all": [read_from(store, store.iterator("s", sh.shard_id, "TRIM_HORIZON")) for sh in stream.shards],
        "ending": [stream.ending_sequence(sh) for sh in stream.shards],
    }
    for t in range(START - 5000, clock["now"] + 1, 7000):
        token = store.iterator("s", SHARD, "AT_TIMESTAMP", timestamp_ms=t)
        out[f"at {t}"] = store.get_records(token, 3).records[:1]
    return out


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    now = {"now": START}
    monkeypatch.setattr(store_module, "now_ms", lambda: now["now"])
    return now


async def _fill(directory: Path, clock: dict[str, int]) -> tuple[dict[str, Any], str]:
    store = ShardStore(directory, options())
    store.create_stream("s", 1)
    for i in range(300):  # ~30 segments: 300 puts of one to three records, 1.5 s apart
        await store.put("s", [(f"k{j}".encode(), f"{i}-{j}:".encode() + b"x" * 300, 0) for j in range(1 + i % 3)])
        clock["now"] += 1500
    store.split_shard("s", SHARD, 2**127)
    await store.put("s", [(b"k", b"child", 2**127 + 1)])
    before = answers(store, clock)
    await store.close()
    return before, f"s-{store.streams['s'].created_ms}"


def _reopen(directory: Path, clock: dict[str, int]) -> tuple[ShardStore, dict[str, Any]]:
    store = ShardStore(directory, options())
    return store, answers(store, clock)


def test_reopening_reads_no_record_and_every_read_answers_the_same(tmp_path: Path, clock: dict[str, int],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    before, name = asyncio.run(_fill(tmp_path, clock))
    shard_dir = tmp_path / name / SHARD
    assert len(list(shard_dir.glob("*.seg"))) > 10
    assert {p.stem for p in shard_dir.glob("*.idx")} == {p.stem for p in shard_dir.glob("*.seg")}
    checked = [0]
    real = log_module._checksum

    def counting(seq: int, parts: Any) -> int:
        checked[0] += 1
        return real(seq, parts)

    monkeypatch.setattr(log_module, "_checksum", counting)
    store = ShardStore(tmp_path, options())
    assert checked[0] == 0  # opening checked (read) no frame of any segment
    assert store.streams["s"].data[SHARD].last_position is not None
    after = answers(store, clock)
    assert after == before
    assert len(after["all"][0]) == sum(1 + i % 3 for i in range(300))
    for key, records in after.items():
        if key.startswith("at "):  # put i arrived at START + 1500 i: the first at or after t is put ceil(...)
            i = max(0, -(-(int(key[3:]) - START) // 1500))
            assert [r.data[: r.data.index(b":")] for r in records] == ([f"{i}-0".encode()] if i < 300 else [])

    async def put_more() -> None:
        result = await store.put("s", [(b"k", b"after", 2**127 + 1)])
        assert int(result[0].sequence_number or 0) > int(after["all"][2][-1][0])  # the child's numbers go on
        await store.close()

    asyncio.run(put_more())


def test_without_indexes_the_store_opens_the_same_and_writes_them_again(tmp_path: Path,
                                                                        clock: dict[str, int]) -> None:
    before, name = asyncio.run(_fill(tmp_path, clock))
    shard_dir = tmp_path / name / SHARD
    indexes = sorted(shard_dir.glob("*.idx"))
    for i, index in enumerate(indexes):
        if i % 3 == 0:
            index.unlink()
        elif i % 3 == 1:
            index.write_bytes(index.read_bytes()[:-3] + b"bad")  # the points fail their checksum
    store, after = _reopen(tmp_path, clock)
    assert after == before
    asyncio.run(store.close())
    assert {p.stem for p in shard_dir.glob("*.idx")} == {p.stem for p in shard_dir.glob("*.seg")}
    store, after = _reopen(tmp_path, clock)
    assert after == before
    asyncio.run(store.close())


def test_trimming_after_a_restart_drops_old_segments_with_their_indexes(tmp_path: Path,
                                                                       clock: dict[str, int]) -> None:
    _before, name = asyncio.run(_fill(tmp_path, clock))
    shard_dir = tmp_path / name / SHARD
    store = ShardStore(tmp_path, options())
    clock["now"] = START + 24 * 3600 * 1000 + 150 * 1500  # the first 150 puts are past 24 h retention
    first = read_from(store, store.iterator("s", SHARD, "TRIM_HORIZON"))[0][1]
    assert first.startswith(b"150-0:")
    segments = len(list(shard_dir.glob("*.seg")))
    assert store.trim() > 0
    assert len(list(shard_dir.glob("*.seg"))) < segments
    assert {p.stem for p in shard_dir.glob("*.idx")} == {p.stem for p in shard_dir.glob("*.seg")}
    assert read_from(store, store.iterator("s", SHARD, "TRIM_HORIZON"))[0][1] == first
    asyncio.run(store.close())
    store = ShardStore(tmp_path, options())
    assert read_from(store, store.iterator("s", SHARD, "TRIM_HORIZON"))[0][1] == first
    asyncio.run(store.close())
