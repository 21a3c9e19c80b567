"""S3 object compression: one codec per ``CompressionFormat`` value (spec: formats.md §5).

Compression applies to the whole object after its records are concatenated, never per
record. Every codec streams: ``compress`` consumes the body's parts one at a time and
yields compressed bytes as soon as the algorithm emits them, so an object is never held
twice (once plain, once compressed) beyond the codec's own window. Output is
deterministic (no timestamps or file names that vary between runs), so a sealed batch
delivered again after a crash becomes a byte-identical object under the same key.

Framings, and the libraries behind them:

* ``GZIP``: one gzip member (RFC 1952), stdlib ``zlib``; mtime 0, no file name.
* ``ZIP``: an archive with one deflated entry, stdlib ``zipfile`` writing to a
  non-seekable sink, so sizes and CRC follow the data in a data descriptor. Written
  without ZIP64 so that every unzip reads it, which caps the entry at 4 GiB (buffers
  hold at most 128 MiB).
* ``Snappy``: the Snappy framing format (stream identifier ``sNaPpY``, chunks of at most
  64 KiB with masked CRC-32C), via ``cramjam``: maintained Rust bindings with wheels for
  every platform and no system libsnappy; python-snappy 0.7 is itself a wrapper over it.
* ``HADOOP_SNAPPY``: Hadoop's ``BlockCompressorStream`` framing with raw snappy blocks
  from ``cramjam``. Blocks follow ``SnappyCodec``: a 256 KiB buffer of which
  ``bufferSize/6 + 32`` is kept free, so every compressed block fits Hadoop's
  decompression buffer even for incompressible data (aircompressor, used by Trino,
  writes the same layout).
* ``ZSTD``: one zstandard frame with a content checksum, via ``zstandard``, the
  reference bindings to libzstd maintained with the zstd project. Not an AWS value.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cramjam
import zstandard

Chunk = bytes | memoryview
Encoder = Callable[[Iterable[Chunk], str], Iterator[bytes]]
Decoder = Callable[[bytes], bytes]

GZIP_LEVEL = 6  # zlib's default: most of level 9's ratio at a fraction of its CPU.
ZSTD_LEVEL = 3  # zstd's default level.
SNAPPY_FRAME_INPUT = 65536  # the framing format's largest uncompressed chunk.
HADOOP_SNAPPY_BUFFER = 256 * 1024  # Hadoop's io.compression.codec.snappy.buffersize default.
#: Uncompressed bytes per Hadoop block: the buffer less SnappyCodec's compression overhead.
HADOOP_SNAPPY_BLOCK_INPUT = HADOOP_SNAPPY_BUFFER - (HADOOP_SNAPPY_BUFFER // 6 + 32)
_SNAPPY_STREAM_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
_HADOOP_LENGTH = struct.Struct(">I")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest DOS date; fixed so output is deterministic.


def rechunk(chunks: Iterable[Chunk], size: int) -> Iterator[Chunk]:
    """Re-cut a body into pieces of exactly ``size`` bytes, the last one shorter (never empty).

    Block codecs and the encryption segments need fixed-size input while bodies arrive as
    parts of any size. Small parts are gathered and joined in one C-level copy per
    piece; a large part is sliced without copying, so pieces are bytes-like (often
    memoryviews). At most about one piece plus one part is held at a time.
    """
    pending: list[Chunk] = []
    pending_len = 0
    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        pending.append(chunk)
        pending_len += n
        if pending_len < size:
            continue
        blob = pending[0] if len(pending) == 1 else b"".join(pending)
        view = memoryview(blob)
        pos = 0
        while pending_len - pos >= size:
            yield view[pos : pos + size]
            pos += size
        rest = view[pos:]
        pending = [rest] if len(rest) else []
        pending_len = len(rest)
    if pending_len:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


# -- UNCOMPRESSED --------------------------------------------------------------


def _identity(chunks: Iterable[Chunk], _entry_name: str) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            yield chunk if isinstance(chunk, bytes) else bytes(chunk)


def _identity_decode(data: bytes) -> bytes:
    return bytes(data)


# -- GZIP ----------------------------------------------------------------------


def _gzip(chunks: Iterable[Chunk], _entry_name: str) -> Iterator[bytes]:
    # wbits 31 = gzip wrapper around a 32 KiB deflate window; zlib writes mtime 0 and no name.
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    for chunk in chunks:
        if out := deflate.compress(chunk):
            yield out
    yield deflate.flush()


# -- ZIP -----------------------------------------------------------------------


class _Sink:
    """A write-only, non-seekable file for zipfile; the generator drains it after each write.

    Lacking ``tell``/``seek`` is what makes zipfile stream: it sets the data-descriptor
    flag and writes sizes and CRC after the entry's data instead of seeking back.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Chunk) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip(chunks: Iterable[Chunk], entry_name: str) -> Iterator[bytes]:
    sink = _Sink()
    info = zipfile.ZipInfo(entry_name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--, when unzipped on Unix.
    with zipfile.ZipFile(sink, "w") as archive:  # type: ignore[arg-type]  # a duck-typed file
        with archive.open(info, "w") as entry:
            for chunk in chunks:
                entry.write(chunk)
                if out := sink.drain():
                    yield out
    yield sink.drain()


def _unzip(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        if len(names) != 1:
            raise ValueError(f"ZIP: expected one entry, found {len(names)}")
        return archive.read(names[0])


# -- Snappy (framing format) ---------------------------------------------------


def _snappy(chunks: Iterable[Chunk], _entry_name: str) -> Iterator[bytes]:
    # One compress + flush per 64 KiB piece gives one full-sized frame each; feeding
    # small parts directly would give one small, poorly compressed frame per part.
    compressor = cramjam.snappy.Compressor()
    empty = True
    for piece in rechunk(chunks, SNAPPY_FRAME_INPUT):
        compressor.compress(piece if isinstance(piece, bytes) else bytes(piece))  # cramjam wants bytes here
        empty = False
        yield bytes(compressor.flush())
    # cramjam writes the stream identifier with the first frame; an empty object still
    # starts with it, so readers that sniff the format recognise it.
    yield _SNAPPY_STREAM_IDENTIFIER if empty else bytes(compressor.finish())


def _unsnappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress(data))


# -- HADOOP_SNAPPY -------------------------------------------------------------


def _hadoop_snappy(chunks: Iterable[Chunk], _entry_name: str) -> Iterator[bytes]:
    for piece in rechunk(chunks, HADOOP_SNAPPY_BLOCK_INPUT):
        block = bytes(cramjam.snappy.compress_raw(piece))
        yield _HADOOP_LENGTH.pack(len(piece)) + _HADOOP_LENGTH.pack(len(block)) + block


def _hadoop_unsnappy(data: bytes) -> bytes:
    """Read any valid BlockCompressorStream output, including blocks split into several chunks."""
    view = memoryview(data)
    out = bytearray()

    def take(n: int) -> memoryview:
        nonlocal view
        if len(view) < n:
            raise ValueError("HADOOP_SNAPPY: the object is truncated")
        head, view = view[:n], view[n:]
        return head

    while view:
        (block_length,) = _HADOOP_LENGTH.unpack(take(4))
        produced = 0
        while produced < block_length:
            (compressed_length,) = _HADOOP_LENGTH.unpack(take(4))
            chunk = cramjam.snappy.decompress_raw(bytes(take(compressed_length)))
            produced += len(chunk)
            out += chunk
        if produced != block_length:
            raise ValueError("HADOOP_SNAPPY: a block's chunks do not add up to its stated length")
    return bytes(out)


# -- ZSTD ----------------------------------------------------------------------


def _zstd(chunks: Iterable[Chunk], _entry_name: str) -> Iterator[bytes]:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def _unzstd(data: bytes) -> bytes:
    # Streamed frames carry no content size, which the one-shot decompress() requires.
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)


# -- Registry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """One ``CompressionFormat``: how objects are compressed, named and labelled."""

    name: str
    extension: str
    content_encoding: str | None
    _encode: Encoder = field(repr=False, compare=False)
    _decode: Decoder = field(repr=False, compare=False)

    def compress(self, chunks: Iterable[Chunk], *, entry_name: str = "data") -> Iterator[bytes]:
        """Compressed bytes of the body ``chunks``, yielded while the input is consumed.

        ``entry_name`` names the single entry inside a ZIP archive; other codecs ignore it.
        """
        return (out for out in self._encode(chunks, entry_name) if out)

    def decompress(self, data: bytes) -> bytes:
        """The whole plain body of one compressed object (for tests and offline tooling)."""
        return self._decode(data)


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("UNCOMPRESSED", "", None, _identity, _identity_decode),
        Codec("GZIP", ".gz", "gzip", _gzip, gzip.decompress),
        Codec("ZIP", ".zip", None, _zip, _unzip),
        Codec("Snappy", ".snappy", None, _snappy, _unsnappy),
        Codec("HADOOP_SNAPPY", ".hsnappy", None, _hadoop_snappy, _hadoop_unsnappy),
        Codec("ZSTD", ".zst", "zstd", _zstd, _unzstd),
    )
}


def codec(name: str) -> Codec:
    """The codec for a ``CompressionFormat`` value, spelled exactly as AWS does (``Snappy``)."""
    try:
        return CODECS[name]
    except KeyError:
        allowed = ", ".join(CODECS)
        raise ValueError(f"unknown CompressionFormat {name!r}; expected one of {allowed}") from None
