"""From a sealed batch's records to the objects written for it: convert → compress → encrypt.

* Data batches: with format conversion, the records become one Parquet/ORC
  file (in a worker process) and the records that do not fit the schema become
  a second object of error documents under the ``format-conversion-failed``
  error prefix, at a key fixed when the batch was sealed; the rest of the batch
  is still delivered. A schema the writer cannot write, or a writer that fails
  for the batch, sends every record of it there at once, with the reason:
  retrying cannot change the outcome, so it must not hold up the stream.
  Otherwise the records are concatenated and compressed with the stream's codec.
* Error batches (records the chain could not process) are already error
  documents, one JSON line each; batches of records over the active-partition
  limit are turned into such documents here.
* If the bucket encrypts, every object is envelope-encrypted; the envelope goes
  into S3 object metadata and, for local directories, in front of the body.

Everything CPU-heavy runs in threads (zlib, zstd, AES-GCM release the GIL) or
the conversion worker processes, never on the event loop.

The builder is handed what it acts on and nothing more: the records through
the ``Records`` protocol (the pipeline adapts its spool spans to it, without
copying a byte) and the stream's ``Encoding`` (codec, conversion, whether the
store encrypts), which the pipeline builds once per definition version.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Protocol

from firehose import failures
from firehose.encoding import compress, convert, encrypt
from firehose.records import FileRange, ObjectBatch

#: Kinds of sealed batches.
DATA = "data"
RECORDS = "records"  # a batch for a record destination (OpenSearch, Splunk, HTTP endpoint)
ERRORS = "errors"  # error documents produced by the chain
OVERFLOW = "overflow"  # records over the active-partition limit


class Records(Protocol):
    """A sealed batch's records, in order, as the builder reads them.

    Implementations hand out views of bytes they already hold (no copies): ``parts`` are
    contiguous runs of records, concatenated as they are for plain objects; ``each`` and
    ``arrivals`` are the records one by one with their arrival times (ms since the epoch),
    for conversion and error documents.
    """

    @property
    def count(self) -> int: ...

    @property
    def first_arrival_ms(self) -> int: ...

    def parts(self) -> Sequence[bytes | memoryview]: ...

    def extents(self) -> tuple[FileRange, ...] | None:
        """Where ``parts`` lie on disk, or None if they do not all come from a file."""
        ...

    def each(self) -> Sequence[bytes | memoryview]: ...

    def arrivals(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class Encoding:
    """What turns one stream's batches into objects: all the builder needs of its definition.

    ``codec`` compresses data objects (never with ``conversion``, whose formats compress
    inside the file); ``encrypt``: the store envelope-encrypts every object. ``extension``
    ends the data objects' keys: ``FileExtension`` if the definition sets one, else the
    output format's or the codec's.
    """

    codec: compress.Codec
    conversion: convert.Conversion | None
    encrypt: bool
    extension: str

    @classmethod
    def of(cls, compression: str, conversion: convert.Conversion | None, *, encrypt: bool,
           file_extension: str | None = None) -> Encoding:
        """``compression`` is a ``CompressionFormat`` value (ValueError if unknown)."""
        codec = compress.codec(compression)
        default = conversion.serializer.extension if conversion is not None else codec.extension
        return cls(codec, conversion, encrypt, file_extension or default)


class ObjectBuilder:
    """Builds one stream's objects. ``keyring`` is needed when its encoding encrypts; conversions run
    in ``convert_pool`` (worker processes; None: the event loop's default executor)."""

    def __init__(self, stream: str, keyring: encrypt.Keyring | None, convert_pool: Executor | None) -> None:
        self.stream = stream
        self.keyring = keyring
        self.convert_pool = convert_pool

    async def build(self, encoding: Encoding, kind: str, key: str, records: Records, *,
                    error_key: str | None = None, reason: str = "") -> list[ObjectBatch]:
        if kind == DATA and encoding.conversion is not None:
            return await self._converted(encoding, key, records, error_key)
        if kind == DATA:
            extents = None
            if encoding.codec.name == "UNCOMPRESSED":
                parts: tuple[bytes | memoryview, ...] = tuple(records.parts())
                extents = records.extents()
            else:
                body = await asyncio.to_thread(
                    lambda: b"".join(encoding.codec.compress(records.parts(), entry_name=posixpath.basename(key))))
                parts = (body,)
            return [await self._finish(encoding, key, parts, records.count, records.first_arrival_ms,
                                       content_encoding=encoding.codec.content_encoding, extents=extents)]
        if kind == OVERFLOW:
            docs = [failures.document(raw=d, arrival_ms=a, code="DynamicPartitioning.PartitionLimitExceeded",
                                      message=reason) for d, a in zip(records.each(), records.arrivals(), strict=True)]
            return [await self._finish(encoding, key, tuple(docs), records.count, records.first_arrival_ms,
                                       documents=failures.tail(docs))]
        return [await self._finish(encoding, key, tuple(records.parts()), records.count, records.first_arrival_ms,
                                   documents=failures.tail(records.each()))]

    async def documents(self, encoding: Encoding, key: str, docs: tuple[bytes, ...],
                        first_arrival_ms: int) -> ObjectBatch:
        """An error-output object: one JSON document per line, never compressed, encrypted if the store is."""
        return await self._finish(encoding, key, docs, len(docs), first_arrival_ms, documents=failures.tail(docs))

    async def backup(self, encoding: Encoding, key: str, records: Records) -> ObjectBatch:
        """A copy of every record of a batch (``AllDocuments``/``AllEvents``/``AllData``), compressed
        as the S3Configuration says."""
        return (await self.build(encoding, DATA, key, records))[0]

    async def _converted(self, encoding: Encoding, key: str, records: Records,
                         error_key: str | None) -> list[ObjectBatch]:
        conv = encoding.conversion
        assert conv is not None
        datas = [bytes(d) for d in records.each()]
        arrivals = records.arrivals()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.convert_pool, convert.convert, datas, conv.schema, conv.deserializer, conv.serializer)
        out: list[ObjectBatch] = []
        if result.rows:
            good = len(datas) - len(result.failed)
            out.append(await self._finish(encoding, key, (result.body,), good, records.first_arrival_ms))
        failed = result.failures(len(datas))
        if failed:
            assert error_key is not None, "a converting batch is sealed with its error key"
            ended = failures.now_ms()
            docs = tuple(failures.conversion_document(raw=datas[i], arrival_ms=arrivals[i], message=why, code=code,
                                                      table=conv.table, ended_ms=ended) for i, code, why in failed)
            first = min(arrivals[i] for i, _, _ in failed)
            reason = (f"{result.batch_failure.code}: {result.batch_failure.message}" if result.batch_failure
                      else f"{failed[0][1]}: {failed[0][2]}")
            obj = await self._finish(encoding, error_key, docs, len(docs), first, documents=failures.tail(docs))
            out.append(replace(obj, reason=reason))
        return out

    async def _finish(self, encoding: Encoding, key: str, parts: tuple[bytes | memoryview, ...], count: int,
                      first_arrival_ms: int, *, content_encoding: str | None = None,
                      extents: tuple[FileRange, ...] | None = None, documents: tuple[bytes, ...] = ()) -> ObjectBatch:
        metadata = None
        prelude = b""
        if encoding.encrypt:
            extents = None  # the stored bytes are ciphertext, not the spooled records
            if self.keyring is None:
                raise RuntimeError("the bucket encrypts but the daemon has no keyring")
            keyring = self.keyring
            header, parts = await asyncio.to_thread(lambda: _encrypt(parts, keyring))
            metadata = header.to_metadata()
            prelude = header.to_bytes()
            content_encoding = None  # the stored bytes are ciphertext, whatever is inside
        return ObjectBatch(
            stream=self.stream, key=key, parts=parts, size=sum(len(p) for p in parts),
            record_count=count, first_arrival_ms=first_arrival_ms,
            content_encoding=content_encoding, metadata=metadata, prelude=prelude, extents=extents,
            documents=documents,
        )


def _encrypt(parts: tuple[bytes | memoryview, ...], keyring: encrypt.Keyring
             ) -> tuple[encrypt.EnvelopeHeader, tuple[bytes, ...]]:
    """The ciphertext as its segments: destinations write parts, so no joined copy is made."""
    header, stream = encrypt.encrypt(parts, keyring)
    return header, tuple(stream)
