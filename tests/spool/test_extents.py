"""Batches of spooled records know where their bytes lie on disk, so a worker process can read a
batch there (``read_ranges``) instead of being sent it through a pipe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firehose.definitions import DeliveryStreamDefinition
from firehose.encoding.encrypt import Keyring
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.objects import DATA, ObjectBuilder, Records
from firehose.records import FileRange, read_ranges
from firehose.settings import Settings
from firehose.spool import entry
from firehose.spool.buffer import Span
from firehose.spool.log import SegmentLog


def spans_from(log: SegmentLog) -> list[Span]:
    """Every record of the log but the first and last, as the deliverer buffers them."""
    entries = [entry.decode(f.seq, f.payload, (f.path, f.offset)) for f in log.read_frames(0, 1 << 30)]
    spans = [Span(e, 0, e.count, 0.0) for e in entries]
    spans[0] = Span(entries[0], 1, entries[0].count, 0.0)
    spans[-1] = Span(entries[-1], 0, entries[-1].count - 1, 0.0)
    return spans


@pytest.fixture
def spooled(tmp_path: Path) -> SegmentLog:
    log = SegmentLog(tmp_path / "records", segment_bytes=300)  # the batch crosses segment files
    for n in range(6):
        log.write([entry.encode([b'{"n": %d, "i": %d}\n' % (n, i) for i in range(5)], 1_700_000_000_000 + n)])
    log.sync()
    return log


def test_the_extents_of_a_batch_hold_exactly_its_records(spooled: SegmentLog) -> None:
    records = Records(spans_from(spooled))
    extents = records.extents()
    assert extents is not None
    assert len({r.path for r in extents}) > 1
    assert bytes(read_ranges(extents)) == b"".join(records.parts())
    assert read_ranges(extents).count(b"\n") == 6 * 5 - 2
    # Spans that meet in one entry are one range.
    e = records.spans[2].entry
    assert Records([Span(e, 0, 2, 0.0), Span(e, 2, 5, 0.0)]).extents() == (e.extent(0, 5),)


def test_a_range_past_the_end_of_its_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "short"
    f.write_bytes(b"0123456789")
    assert read_ranges([FileRange(str(f), 2, 5), FileRange(str(f), 0, 2)]) == b"2345601"
    with pytest.raises(OSError, match="ends before offset 12"):
        read_ranges([FileRange(str(f), 4, 8)])
    with pytest.raises(FileNotFoundError):
        read_ranges([FileRange(str(tmp_path / "gone"), 0, 1)])


def stream_config(tmp_path: Path, *, compression: str = "UNCOMPRESSED", encrypt: bool = False) -> StreamConfig:
    definition = DeliveryStreamDefinition.model_validate({
        "DeliveryStreamName": "orders", "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::out",
            "CompressionFormat": compression}})
    settings = Settings.model_validate({"buckets": {"out": {"directory": str(tmp_path / "out"), "encrypt": encrypt}}})
    return StreamConfig.build(definition, 1, settings)


@pytest.mark.parametrize(("compression", "encrypt", "located"),
                         [("UNCOMPRESSED", False, True), ("GZIP", False, False), ("UNCOMPRESSED", True, False)])
def test_only_an_object_of_plain_records_carries_extents(
    spooled: SegmentLog, tmp_path: Path, compression: str, encrypt: bool, located: bool
) -> None:
    """A compressed or encrypted object's bytes are not the spooled ones: it is sent as it is."""
    keyring = Keyring({"k1": bytes(range(32))}) if encrypt else None
    builder = ObjectBuilder("orders", keyring, None)
    records = Records(spans_from(spooled))
    [obj] = asyncio.run(builder.build(stream_config(tmp_path, compression=compression, encrypt=encrypt), DATA,
                                      "key", records))
    if located:
        assert obj.extents is not None
        assert bytes(read_ranges(obj.extents)) == obj.body()
    else:
        assert obj.extents is None
