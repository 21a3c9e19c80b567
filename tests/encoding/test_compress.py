"""Compression codecs: round trips, streaming, and output that independent readers accept.

Every format is checked against a reader that does not share code with the writer:
the gzip, unzip and zstd command-line tools where installed, the stdlib, pyarrow's
snappy (Google's C++ libsnappy, where the writer uses cramjam's Rust snap) and a
CRC-32C written out here for the Snappy framing checksums.
"""

from __future__ import annotations

import gzip
import io
import random
import shutil
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow
import pytest
import snappy
import zstandard

from firehose.encoding.compress import CODECS, HADOOP_SNAPPY_BLOCK_INPUT, SNAPPY_FRAME_INPUT, codec, rechunk

MiB = 1 << 20


def sample(size: int, seed: int = 7) -> bytes:
    """Alternating JSON-like lines and random bytes, so codecs take both their compressed and
    their stored/incompressible paths."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b'{"ticker":"AMZN","price":%d,"seq":%d}\n' % (rng.randrange(10**6), len(out))
        out += rng.randbytes(rng.randrange(0, 200))
    return bytes(out[:size])


def small_parts(data: bytes) -> list[bytes | memoryview]:
    """``data`` as many parts of uneven size, some empty, some memoryviews (as the spool hands them)."""
    rng = random.Random(3)
    parts: list[bytes | memoryview] = []
    pos = 0
    while pos < len(data):
        n = rng.choice((0, 1, 7, 100, 4096, 70000))
        piece = data[pos : pos + n]
        parts.append(memoryview(piece) if len(parts) % 2 else piece)
        pos += n
    return parts


def compress(name: str, data: bytes, **kw: str) -> bytes:
    return b"".join(CODECS[name].compress([data], **kw))


BODIES = {
    "empty": [],
    "empty-part": [b""],
    "one-byte": [b"x"],
    "several-MiB": [sample(3 * MiB)],
    "many-small-parts": small_parts(sample(600_000)),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("name", CODECS)
def test_every_codec_round_trips(name: str, body: list[bytes | memoryview]) -> None:
    plain = b"".join(body)
    out = b"".join(CODECS[name].compress(body))
    assert CODECS[name].decompress(out) == plain


@pytest.mark.parametrize("name", CODECS)
def test_output_does_not_depend_on_how_the_body_is_cut(name: str) -> None:
    data = sample(400_000)
    assert b"".join(CODECS[name].compress(small_parts(data))) == compress(name, data)


def test_registry_names_extensions_and_content_encodings() -> None:
    table = {name: (c.extension, c.content_encoding) for name, c in CODECS.items()}
    assert table == {
        "UNCOMPRESSED": ("", None),
        "GZIP": (".gz", "gzip"),
        "ZIP": (".zip", None),
        "Snappy": (".snappy", None),
        "HADOOP_SNAPPY": (".hsnappy", None),
        "ZSTD": (".zst", "zstd"),
    }
    assert all(c.name == name for name, c in CODECS.items())
    assert codec("Snappy") is CODECS["Snappy"]


def test_unknown_or_miscased_format_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'SNAPPY'.*UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY, ZSTD"):
        codec("SNAPPY")


@pytest.mark.parametrize("name", CODECS)
def test_compression_streams_instead_of_reading_the_whole_body_first(name: str) -> None:
    part = random.Random(5).randbytes(64 * 1024)  # incompressible: every codec must emit as it goes
    consumed = 0

    def body() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(64):
            consumed += 1
            yield part

    output = CODECS[name].compress(body())
    assert consumed == 0  # nothing is read before the first output is asked for
    first = next(output)
    assert first and consumed <= 5, f"{name} read {consumed} of 64 parts before its first output"
    rest = b"".join(output)
    assert consumed == 64
    assert CODECS[name].decompress(first + rest) == part * 64


def test_rechunk_cuts_exact_pieces_and_keeps_the_remainder() -> None:
    parts = [b"abc", memoryview(b"defgh"), b"", b"ijklmnopq", b"r"]
    assert list(rechunk(parts, 4)) == [b"abcd", b"efgh", b"ijkl", b"mnop", b"qr"]
    assert list(rechunk([b"abcdefgh"], 4)) == [b"abcd", b"efgh"]
    assert list(rechunk([], 4)) == list(rechunk([b""], 4)) == []


# -- GZIP ----------------------------------------------------------------------


def test_gzip_is_one_member_read_by_the_gzip_tool_and_the_stdlib() -> None:
    data = sample(2 * MiB)
    out = compress("GZIP", data)
    inflate = zlib.decompressobj(31)
    assert inflate.decompress(out) == data and inflate.eof and inflate.unused_data == b""
    assert out[4:8] == b"\0\0\0\0"  # mtime 0: a re-delivered batch is byte-identical
    assert gzip.decompress(out) == data
    if shutil.which("gzip") is None:
        pytest.skip("gzip tool not installed")
    assert subprocess.run(["gzip", "-dc"], input=out, capture_output=True, check=True).stdout == data


# -- ZIP -----------------------------------------------------------------------


def test_zip_holds_one_named_entry_read_by_zipfile_and_unzip(tmp_path: Path) -> None:
    data = sample(2 * MiB)
    out = compress("ZIP", data, entry_name="stream-1-2026-01-01-00-00-00-abc")
    with zipfile.ZipFile(io.BytesIO(out)) as archive:
        assert archive.testzip() is None
        (info,) = archive.infolist()
        assert info.filename == "stream-1-2026-01-01-00-00-00-abc"
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.file_size == len(data)
        assert info.flag_bits & 0x08  # sizes in a data descriptor: written without seeking
        assert archive.read(info) == data
    if shutil.which("unzip") is None:
        pytest.skip("unzip not installed")
    (tmp_path / "object.zip").write_bytes(out)  # unzip needs a file: it reads the central directory first
    result = subprocess.run(["unzip", "-p", tmp_path / "object.zip"], capture_output=True, check=True)
    assert result.stdout == data


def test_empty_zip_is_a_valid_archive() -> None:
    with zipfile.ZipFile(io.BytesIO(compress("ZIP", b""))) as archive:
        assert archive.namelist() == ["data"] and archive.read("data") == b""


# -- ZSTD ----------------------------------------------------------------------


def test_zstd_is_read_by_the_zstd_tool_or_a_streaming_reader() -> None:
    data = sample(2 * MiB)
    out = compress("ZSTD", data)
    if shutil.which("zstd"):
        assert subprocess.run(["zstd", "-dcq"], input=out, capture_output=True, check=True).stdout == data
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out))
    assert reader.read() == data


# -- Snappy framing format -----------------------------------------------------

_CRC32C_TABLE = []
for _n in range(256):
    for _ in range(8):
        _n = (_n >> 1) ^ 0x82F63B78 if _n & 1 else _n >> 1
    _CRC32C_TABLE.append(_n)


def masked_crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) masked as the framing format specifies, written out independently."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def raw_snappy_decompress(block: bytes) -> bytes:
    """Decode one raw snappy block with libsnappy (through pyarrow); its length is a varint prefix."""
    size = shift = pos = 0
    while True:
        byte = block[pos]
        size |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if byte < 0x80:
            break
    return pyarrow.Codec("snappy").decompress(block, decompressed_size=size).to_pybytes()


def parse_snappy_frames(out: bytes) -> list[bytes]:
    """Walk the framing format chunk by chunk, checking types, sizes and every checksum."""
    assert out[:10] == b"\xff\x06\x00\x00sNaPpY"
    pos, chunks = 10, []
    while pos < len(out):
        kind, length = out[pos], int.from_bytes(out[pos + 1 : pos + 4], "little")
        body = out[pos + 4 : pos + 4 + length]
        assert len(body) == length
        pos += 4 + length
        assert kind in (0x00, 0x01), f"unexpected chunk type {kind:#x}"
        plain = raw_snappy_decompress(body[4:]) if kind == 0x00 else body[4:]
        assert 0 < len(plain) <= SNAPPY_FRAME_INPUT
        assert int.from_bytes(body[:4], "little") == masked_crc32c(plain)
        chunks.append(plain)
    return chunks


def test_snappy_frames_are_valid_per_the_framing_spec_and_libsnappy() -> None:
    data = sample(300_000)
    chunks = parse_snappy_frames(compress("Snappy", data))
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [SNAPPY_FRAME_INPUT] * 4 + [300_000 - 4 * SNAPPY_FRAME_INPUT]


def test_snappy_is_read_by_python_snappy_stream_decompressor() -> None:
    data = sample(2 * MiB)
    out = compress("Snappy", data)
    reader = snappy.StreamDecompressor()
    assert b"".join(reader.decompress(out[i : i + 10_000]) for i in range(0, len(out), 10_000)) == data
    reader.flush()


def test_empty_snappy_object_is_just_the_stream_identifier() -> None:
    assert compress("Snappy", b"") == b"\xff\x06\x00\x00sNaPpY"


# -- HADOOP_SNAPPY -------------------------------------------------------------


def parse_hadoop_blocks(out: bytes) -> list[bytes]:
    """Walk BlockCompressorStream framing, expecting one raw snappy chunk per block, each small
    enough for Hadoop's 256 KiB decompression buffer."""
    pos, blocks = 0, []
    while pos < len(out):
        plain_len, packed_len = struct.unpack_from(">II", out, pos)
        assert packed_len <= 256 * 1024
        pos += 8
        plain = raw_snappy_decompress(out[pos : pos + packed_len])
        pos += packed_len
        assert len(plain) == plain_len
        blocks.append(plain)
    return blocks


def test_hadoop_snappy_blocks_fit_hadoops_buffer_and_decode_with_libsnappy() -> None:
    data = random.Random(1).randbytes(600_000)  # incompressible: the worst case for buffer sizes
    out = compress("HADOOP_SNAPPY", data)
    blocks = parse_hadoop_blocks(out)
    assert b"".join(blocks) == data
    assert HADOOP_SNAPPY_BLOCK_INPUT == 262144 - (262144 // 6 + 32)
    full = HADOOP_SNAPPY_BLOCK_INPUT
    assert [len(b) for b in blocks] == [full, full, 600_000 - 2 * full]


def test_hadoop_snappy_is_read_by_python_snappy() -> None:
    reader_class = getattr(snappy, "HadoopStreamDecompressor", None)
    if reader_class is None:
        pytest.skip("this python-snappy has no Hadoop decompressor")
    data = sample(2 * MiB)
    out = compress("HADOOP_SNAPPY", data)
    reader = reader_class()
    assert b"".join(reader.decompress(out[i : i + 50_000]) for i in range(0, len(out), 50_000)) == data


def test_hadoop_snappy_decoder_reads_hand_built_frames_including_multi_chunk_blocks() -> None:
    libsnappy = pyarrow.Codec("snappy")
    first, second, third = b"hello " * 50, b"world " * 70, b"!"
    frame = b"".join(
        [
            struct.pack(">I", len(first + second)),  # one block whose data is split in two chunks
            *(struct.pack(">I", len(c)) + c for c in (libsnappy.compress(first, asbytes=True),
                                                        libsnappy.compress(second, asbytes=True))),
            struct.pack(">II", 1, len(packed := libsnappy.compress(third, asbytes=True))) + packed,
        ]
    )
    assert CODECS["HADOOP_SNAPPY"].decompress(frame) == first + second + third
    with pytest.raises(ValueError, match="truncated"):
        CODECS["HADOOP_SNAPPY"].decompress(frame[:-1])


def test_empty_hadoop_snappy_object_is_empty() -> None:
    assert compress("HADOOP_SNAPPY", b"") == b""
