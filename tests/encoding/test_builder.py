"""The object builder turns a batch's records into objects from an ``Encoding`` alone: no stream
configuration, no spool (records come through the ``Records`` protocol)."""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pybase64
import pytest

from firehose.encoding import convert
from firehose.encoding.builder import DATA, ERRORS, OVERFLOW, Encoding, ObjectBuilder
from firehose.encoding.encrypt import EnvelopeHeader, Keyring, decrypt
from firehose.records import FileRange, read_ranges

ARRIVAL = 1_700_000_000_000


@dataclass(frozen=True)
class Listed:
    """Records held in memory, one part per record, optionally known to lie in a file."""

    records: Sequence[bytes]
    located: tuple[FileRange, ...] | None = None

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def first_arrival_ms(self) -> int:
        return ARRIVAL

    def parts(self) -> list[memoryview]:
        return [memoryview(r) for r in self.records]

    def extents(self) -> tuple[FileRange, ...] | None:
        return self.located

    def each(self) -> list[memoryview]:
        return self.parts()

    def arrivals(self) -> list[int]:
        return [ARRIVAL + i for i in range(len(self.records))]


RECORDS = [b'{"id": %d}\n' % i for i in range(5)]
KEYRING = Keyring({"k1": bytes(range(32))})


def plain(codec: str = "UNCOMPRESSED", *, encrypt: bool = False) -> Encoding:
    return Encoding.of(codec, None, encrypt=encrypt)


def build(encoding: Encoding, kind: str, records: Listed, **kw: str) -> list:  # type: ignore[type-arg]
    builder = ObjectBuilder("orders", KEYRING if encoding.encrypt else None, None)
    return asyncio.run(builder.build(encoding, kind, "prefix/orders-1", records, **kw))


def in_file(tmp_path: Path) -> Listed:
    f = tmp_path / "spooled"
    f.write_bytes(b"header" + b"".join(RECORDS))
    return Listed(RECORDS, (FileRange(str(f), len(b"header"), sum(map(len, RECORDS))),))


def test_an_object_of_plain_records_is_the_records_where_they_lie(tmp_path: Path) -> None:
    records = in_file(tmp_path)
    [obj] = build(plain(), DATA, records)
    assert obj.key == "prefix/orders-1" and obj.record_count == 5 and obj.first_arrival_ms == ARRIVAL
    assert obj.body() == b"".join(RECORDS) and obj.size == len(obj.body())
    assert obj.extents == records.located and bytes(read_ranges(obj.extents)) == obj.body()
    assert obj.content_encoding is None and obj.metadata is None


@pytest.mark.parametrize(("codec", "encrypt"), [("GZIP", False), ("UNCOMPRESSED", True)])
def test_a_compressed_or_encrypted_object_is_sent_as_it_is(tmp_path: Path, codec: str, encrypt: bool) -> None:
    """Its bytes are not the spooled ones, so it carries no extents."""
    [obj] = build(plain(codec, encrypt=encrypt), DATA, in_file(tmp_path))
    assert obj.extents is None


def test_the_codec_compresses_and_labels_a_data_object() -> None:
    [obj] = build(plain("GZIP"), DATA, Listed(RECORDS))
    assert gzip.decompress(obj.body()) == b"".join(RECORDS)
    assert obj.content_encoding == "gzip"


def test_an_encrypting_store_gets_the_envelope_in_metadata_and_prelude() -> None:
    [obj] = build(plain("GZIP", encrypt=True), DATA, Listed(RECORDS))
    header = EnvelopeHeader.from_metadata(obj.metadata)
    assert obj.prelude == header.to_bytes()
    assert obj.content_encoding is None  # the stored bytes are ciphertext
    assert gzip.decompress(b"".join(decrypt(header, obj.parts, KEYRING))) == b"".join(RECORDS)


def test_the_builder_refuses_to_encrypt_without_a_keyring() -> None:
    with pytest.raises(RuntimeError, match="no keyring"):
        asyncio.run(ObjectBuilder("orders", None, None).build(plain(encrypt=True), DATA, "k", Listed(RECORDS)))


def test_error_batches_are_written_as_they_are_never_compressed() -> None:
    docs = [b'{"errorCode": "x"}\n', b'{"errorCode": "y"}\n']
    [obj] = build(plain("GZIP"), ERRORS, Listed(docs))
    assert obj.body() == b"".join(docs) and obj.content_encoding is None


def test_records_over_the_partition_limit_become_error_documents() -> None:
    [obj] = build(plain("GZIP"), OVERFLOW, Listed(RECORDS), reason="too many partitions")
    docs = [orjson.loads(line) for line in obj.body().splitlines()]
    assert [pybase64.b64decode(d["rawData"]) for d in docs] == RECORDS
    assert [d["arrivalTimestamp"] for d in docs] == [ARRIVAL + i for i in range(5)]
    assert {d["errorCode"] for d in docs} == {"DynamicPartitioning.PartitionLimitExceeded"}
    assert {d["errorMessage"] for d in docs} == {"too many partitions"}


def test_a_backup_is_every_record_compressed_by_the_codec() -> None:
    builder = ObjectBuilder("orders", None, None)
    obj = asyncio.run(builder.backup(plain("GZIP"), "backup/k", Listed(RECORDS)))
    assert obj.key == "backup/k" and gzip.decompress(obj.body()) == b"".join(RECORDS)


def test_a_converting_batch_splits_into_the_file_and_the_records_that_do_not_fit() -> None:
    schema = convert.parse_schema([{"Name": "id", "Type": "bigint"}])
    table = {"databaseName": "db", "tableName": "events"}
    conversion = convert.Conversion(schema, convert.DeserializerOptions(), convert.SerializerOptions(), table)
    records = Listed([*RECORDS, b'{"id": "x"}'])
    data, errors = build(Encoding.of("UNCOMPRESSED", conversion, encrypt=False), DATA, records,
                         error_key="errors/format-conversion-failed/k")
    assert data.key == "prefix/orders-1" and data.record_count == 5
    assert pq.read_table(io.BytesIO(data.body())).column("id").to_pylist() == list(range(5))
    assert errors.key == "errors/format-conversion-failed/k" and errors.record_count == 1
    [doc] = [orjson.loads(line) for line in errors.body().splitlines()]
    assert pybase64.b64decode(doc["rawData"]) == b'{"id": "x"}'
    assert doc["dataCatalogTable"] == table and doc["arrivalTimestamp"] == ARRIVAL + 5


def test_a_batch_the_writer_cannot_write_is_all_error_documents_with_the_reason() -> None:
    """A column nested deeper than Parquet readers take: no data object, every record an error
    document at once (stream creation refuses such a schema; this is a schema changed under it)."""
    schema = convert.parse_schema([{"Name": "tags", "Type": "array<" * 50 + "string" + ">" * 50}])
    conversion = convert.Conversion(schema, convert.DeserializerOptions(), convert.SerializerOptions(), {})
    [errors] = build(Encoding.of("UNCOMPRESSED", conversion, encrypt=False), DATA, Listed(RECORDS),
                     error_key="errors/format-conversion-failed/k")
    assert errors.key == "errors/format-conversion-failed/k" and errors.record_count == len(RECORDS)
    docs = [orjson.loads(line) for line in errors.body().splitlines()]
    assert [pybase64.b64decode(d["rawData"]) for d in docs] == RECORDS
    assert {d["lastErrorCode"] for d in docs} == {"DataFormatConversion.InvalidSchema"}
    assert "column 'tags' is nested 100 Parquet levels deep" in docs[0]["lastErrorMessage"]
    assert errors.reason.startswith("DataFormatConversion.InvalidSchema: The schema is invalid: column 'tags'")


def test_the_extension_is_the_definitions_else_the_formats_else_the_codecs() -> None:
    schema = convert.parse_schema([{"Name": "id", "Type": "bigint"}])
    orc = convert.Conversion(schema, convert.DeserializerOptions(), convert.SerializerOptions(kind="orc"), {})
    parquet = convert.Conversion(schema, convert.DeserializerOptions(), convert.SerializerOptions(), {})
    assert Encoding.of("UNCOMPRESSED", orc, encrypt=False).extension == ".orc"
    assert Encoding.of("UNCOMPRESSED", parquet, encrypt=False).extension == ".parquet"
    assert Encoding.of("UNCOMPRESSED", parquet, encrypt=False, file_extension=".pq").extension == ".pq"
    assert Encoding.of("ZSTD", None, encrypt=True, file_extension="").extension == ".zst"
    assert Encoding.of("UNCOMPRESSED", None, encrypt=False).extension == ""
