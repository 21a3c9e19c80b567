"""Record format conversion: JSON records → one Parquet or ORC file per batch (spec: formats.md §1-4).

A batch of records is converted against a table schema (Glue-style columns with Hive type strings)
with one deserializer (OpenX or Hive JSON SerDe rules) and one serializer (Parquet or ORC):

* A record holds one or more JSON objects, concatenated with optional whitespace between them; each
  object is one row. A record converts whole or not at all: if any of its objects fails, none of its
  rows are written and the record is reported in ``ConversionResult.failed`` with the reason (the
  pipeline sends it to the error output as ``format-conversion-failed``). The rest of the batch is
  still converted.
* JSON fields absent from the schema are ignored; schema columns absent from (or null in) the JSON
  are null. Every column is nullable, as in Hive.
* Values are coerced exactly or the record fails: JSON numbers are parsed as ``Decimal`` so decimal
  columns never pass through a binary float; an integer column refuses 1.5 rather than truncating;
  a decimal refuses digits its scale cannot hold rather than rounding. Hive semantics that are not
  failures are kept: ``varchar(n)`` truncates to n characters and ``char(n)`` is space-padded to n.
* Timestamps are UTC instants held as int64 nanoseconds (years 1677-2262); text without a zone is
  read as UTC, as AWS does.

Deserializers. OpenX matches JSON keys case-insensitively by default, can turn dots in keys into
underscores and can map a column to a differently named key; it is lenient: numeric and boolean
strings are accepted for numeric and boolean columns, nested objects and arrays are stored in string
columns as their JSON text, and timestamps are read from ISO-8601 (``T`` or space, optional ``Z`` or
offset, up to 9 fraction digits) or from epoch numbers (seconds, or milliseconds when the magnitude
is at least 1e11, i.e. after 1973 in milliseconds / after year 5138 in seconds; a fraction means
seconds). Hive is strict: a string in a numeric or boolean column fails, nested JSON in a string
column fails, and timestamps are read with the configured Joda patterns (``millis`` = epoch
milliseconds), then ``java.sql.Timestamp.valueOf``'s ``yyyy-[m]m-[d]d hh:mm:ss[.f...]``. Dates are
``yyyy-[M]M-[d]d`` text for both (an epoch-day number is ambiguous with epoch seconds, so it fails).
Binary columns take a JSON string's UTF-8 bytes.

Nested columns (array, map, struct, to any depth) follow the same rules at every level; a null at
any level is a null, and a value that does not fit fails the record, naming the top-level field.
A struct's fields are matched like columns (OpenX: case-insensitively by default, dots to
underscores when asked, and ``ColumnToJsonKeyMappings`` by field name, since OpenX's options apply
to every struct; Hive: case-insensitively); JSON keys a struct does not declare are ignored. Map
keys are always JSON strings, so they are parsed to the key type with the lenient rules under both
deserializers, and OpenX lowercases them when CaseInsensitive is on, as it does every JSON key
("converts JSON keys to lowercase before deserializing them"). OpenX reads a value that is not a
JSON array as a one-element array (as its ARRAY inspector does); Hive refuses it.

Serializers and the limits of the libraries. A type or option value that the library cannot write as
asked is refused with a ValueError rather than written differently; a layout option that has no
counterpart in the library (it tunes HDFS block alignment or page sizing, never the data) is validated
and ignored:

* Parquet is written with pyarrow (``arrow.py`` maps the schema) for flat and nested schemas alike:
  it writes nested types, which fastparquet cannot, and was faster for flat schemas too (measured:
  docs/benchmarks.md). Types follow Hive's Parquet writer: strings UTF8, tinyint/smallint INT32 with
  INT(8)/INT(16), timestamp INT96, date INT32 DATE, decimal FIXED_LEN_BYTE_ARRAY DECIMAL; arrays,
  maps and structs in the standard three-level LIST and MAP layouts. Options: Compression → the
  codec; WriterVersion → data page v1/v2; PageSizeBytes → the data page size; EnableDictionaryCompression
  → dictionary encoding of every column, falling back to plain past a 1 MiB dictionary page as
  parquet-mr does; BlockSizeBytes → a new row group once the JSON input of its rows reaches it (input
  size is the estimate of row group size available before encoding). MaxPaddingBytes is validated and
  ignored (it aligns row groups to HDFS blocks; an S3 object has none). A schema nested more than
  98 Parquet levels deep (an array or map adds two, a struct one) is refused: Arrow-based readers
  refuse such files.
* ORC is written with pyorc (the ORC C++ writer); nested types are supported. Options:
  Compression, StripeSizeBytes, RowIndexStride, BloomFilterColumns,
  BloomFilterFalsePositiveProbability and DictionaryKeyThreshold map to the writer arguments of the
  same meaning; PaddingTolerance → ``padding_tolerance`` when EnablePadding, else 0. BlockSizeBytes
  (HDFS block size for padding) has no counterpart and is validated and ignored. pyorc always writes
  format 0.12, so FormatVersion V0_11 is refused. The ORC timestamp encoding cannot represent the
  instants from 1969-12-31T23:59:59.001 up to the epoch (readers shift them by a second), so such
  values fail the record for ORC. ORC stays on pyorc although pyarrow's ORC writer is also there:
  pyarrow writes char(n)/varchar(n) as plain string (pyorc keeps the ORC CHAR/VARCHAR types), and
  pyorc from the rows was faster for nested data (47 vs 82 ms for 20,000 nested rows, pyarrow's
  time including building the Arrow arrays).

All functions are pure: ``convert`` builds the file in memory and is CPU-bound, so the pipeline runs
it in a worker process.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Context as DecimalContext
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

from firehose.definitions import (
    DataFormatConversionConfiguration,
    Deserializer,
    HiveJsonSerDe,
    OpenShape,
    OpenXJsonSerDe,
    OrcSerDe,
    ParquetSerDe,
    Serializer,
)

MIB = 1 << 20

#: The module that writes the files (``columnar.py``), with the libraries it needs: worker processes
#: import it as they start; the daemon only if it converts records itself.
WRITERS_MODULE = "firehose.encoding.columnar"


# -- schema ------------------------------------------------------------------------------------

_PRIMITIVES = frozenset({
    "string", "tinyint", "smallint", "int", "bigint", "float", "double", "boolean", "timestamp", "date",
    "binary",
})
_NESTED = frozenset({"array", "map", "struct"})
_MAX_DECIMAL_PRECISION = 38
_MAX_VARCHAR = 65535
_MAX_CHAR = 255
#: Type nesting the parser follows; deeper types are refused rather than exhausting the stack.
_MAX_NESTING = 100
_TYPE_TOKEN = re.compile(r"\s*(?:(\w+)|([<>(),:]))")


@dataclass(frozen=True, slots=True)
class HiveType:
    """A parsed Hive type. ``name`` is the lower-case type name ("int", "decimal", "struct", ...)."""

    name: str
    length: int = 0  # char/varchar maximum length
    precision: int = 0  # decimal
    scale: int = 0  # decimal
    children: tuple[HiveType, ...] = ()  # array: (element,); map: (key, value); struct: field types
    fields: tuple[str, ...] = ()  # struct field names, parallel to children

    @property
    def nested(self) -> bool:
        return self.name in _NESTED

    def __str__(self) -> str:
        if self.name in ("char", "varchar"):
            return f"{self.name}({self.length})"
        if self.name == "decimal":
            return f"decimal({self.precision},{self.scale})"
        if self.name == "struct":
            pairs = zip(self.fields, self.children, strict=True)
            return "struct<" + ",".join(f"{name}:{child}" for name, child in pairs) + ">"
        if self.nested:
            return f"{self.name}<" + ",".join(map(str, self.children)) + ">"
        return self.name


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: HiveType


@dataclass(frozen=True, slots=True)
class Schema:
    columns: tuple[Column, ...]


def parse_schema(columns: list[dict[str, str]]) -> Schema:
    """Glue-style ``[{"Name": ..., "Type": ...}]`` → Schema; other keys (Comment, ...) are ignored.

    Column names are compared case-insensitively for duplicates because Hive, Glue and Athena treat
    them so; a JSON key could not tell two such columns apart.
    """
    if not isinstance(columns, list) or not columns:
        raise ValueError("schema must be a non-empty list of columns")
    out: list[Column] = []
    seen: set[str] = set()
    for position, spec in enumerate(columns):
        name = spec.get("Name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ValueError(f"column {position}: Name must be a non-empty string of at most 255 characters")
        if name.lower() in seen:
            raise ValueError(f"column '{name}': duplicate column name")
        seen.add(name.lower())
        text = spec.get("Type")
        if not isinstance(text, str):
            raise ValueError(f"column '{name}': Type must be a string")
        try:
            out.append(Column(name, parse_type(text)))
        except ValueError as e:
            raise ValueError(f"column '{name}': {e}") from None
    return Schema(tuple(out))


def parse_type(text: str) -> HiveType:
    """A Hive type string (case-insensitive names, nested types in any depth) → HiveType."""
    tokens = _tokenize(text)
    t, end = _parse_type_at(tokens, 0, text)
    if end != len(tokens):
        raise ValueError(f"unexpected '{tokens[end]}' in type '{text}'")
    return t


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    for m in _TYPE_TOKEN.finditer(text):
        if m.start() != pos:
            break
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    if text[pos:].strip():
        raise ValueError(f"unexpected character {text[pos:].strip()[0]!r} in type '{text}'")
    if not tokens:
        raise ValueError("empty type")
    return tokens


def _expect(tokens: list[str], i: int, want: str, text: str) -> int:
    if i >= len(tokens) or tokens[i] != want:
        found = f"'{tokens[i]}'" if i < len(tokens) else "the end"
        raise ValueError(f"expected '{want}' but found {found} in type '{text}'")
    return i + 1


def _number(tokens: list[str], i: int, text: str) -> tuple[int, int]:
    if i >= len(tokens) or not tokens[i].isdigit():
        raise ValueError(f"expected a number in type '{text}'")
    return int(tokens[i]), i + 1


def _parse_type_at(tokens: list[str], i: int, text: str, depth: int = 0) -> tuple[HiveType, int]:
    """Recursive descent: returns the type starting at token i and the index after it."""
    if i >= len(tokens):
        raise ValueError(f"type '{text}' ends early")
    if depth > _MAX_NESTING:
        raise ValueError(f"type nested deeper than {_MAX_NESTING} levels")
    name = tokens[i].lower()
    i += 1
    if name in _PRIMITIVES:
        return HiveType(name), i
    if name in ("char", "varchar"):
        i = _expect(tokens, i, "(", text)
        length, i = _number(tokens, i, text)
        limit = _MAX_CHAR if name == "char" else _MAX_VARCHAR
        if not 1 <= length <= limit:
            raise ValueError(f"{name} length must be 1-{limit}, got {length}")
        return HiveType(name, length=length), _expect(tokens, i, ")", text)
    if name == "decimal":
        return _parse_decimal(tokens, i, text)
    if name == "array":
        element, i = _parse_type_at(tokens, _expect(tokens, i, "<", text), text, depth + 1)
        return HiveType("array", children=(element,)), _expect(tokens, i, ">", text)
    if name == "map":
        key, i = _parse_type_at(tokens, _expect(tokens, i, "<", text), text, depth + 1)
        if key.name not in _PRIMITIVES and key.name not in ("char", "varchar", "decimal"):
            raise ValueError(f"map key type must be primitive, got {key}")
        value, i = _parse_type_at(tokens, _expect(tokens, i, ",", text), text, depth + 1)
        return HiveType("map", children=(key, value)), _expect(tokens, i, ">", text)
    if name == "struct":
        return _parse_struct(tokens, _expect(tokens, i, "<", text), text, depth)
    raise ValueError(f"unsupported type '{tokens[i - 1]}'")


def _parse_decimal(tokens: list[str], i: int, text: str) -> tuple[HiveType, int]:
    """``decimal`` alone is Hive's decimal(10,0); ``decimal(p)`` has scale 0."""
    precision, scale = 10, 0
    if i < len(tokens) and tokens[i] == "(":
        precision, i = _number(tokens, i + 1, text)
        if i < len(tokens) and tokens[i] == ",":
            scale, i = _number(tokens, i + 1, text)
        i = _expect(tokens, i, ")", text)
    if not 1 <= precision <= _MAX_DECIMAL_PRECISION:
        raise ValueError(f"decimal precision must be 1-{_MAX_DECIMAL_PRECISION}, got {precision}")
    if scale > precision:
        raise ValueError(f"decimal scale {scale} exceeds precision {precision}")
    return HiveType("decimal", precision=precision, scale=scale), i


def _parse_struct(tokens: list[str], i: int, text: str, depth: int) -> tuple[HiveType, int]:
    names: list[str] = []
    types: list[HiveType] = []
    while True:
        if i >= len(tokens) or not re.fullmatch(r"\w+", tokens[i]):
            raise ValueError(f"expected a struct field name in type '{text}'")
        if tokens[i].lower() in (n.lower() for n in names):
            raise ValueError(f"duplicate struct field '{tokens[i]}'")
        names.append(tokens[i])
        field_type, i = _parse_type_at(tokens, _expect(tokens, i + 1, ":", text), text, depth + 1)
        types.append(field_type)
        if i < len(tokens) and tokens[i] == ",":
            i += 1
            continue
        return HiveType("struct", children=tuple(types), fields=tuple(names)), _expect(tokens, i, ">", text)


# -- options -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeserializerOptions:
    """How JSON keys and values are read. ``options_from_aws`` fills it from OpenXJsonSerDe or
    HiveJsonSerDe; the Hive SerDe always matches keys case-insensitively and has no key rewriting."""

    kind: Literal["openx", "hive"] = "openx"
    case_insensitive: bool = True
    convert_dots_in_json_keys_to_underscores: bool = False
    column_to_json_key_mappings: tuple[tuple[str, str], ...] = ()  # (column, JSON key)
    timestamp_formats: tuple[str, ...] = ()  # Hive: Joda patterns or "millis"


@dataclass(frozen=True, slots=True)
class SerializerOptions:
    """ParquetSerDe or OrcSerDe settings with the AWS defaults; fields of the other format are unused.

    ``compression`` holds the AWS enum value of the chosen format (Parquet UNCOMPRESSED/GZIP/SNAPPY,
    ORC NONE/ZLIB/SNAPPY). See the module docstring for what each option maps to.
    """

    kind: Literal["parquet", "orc"] = "parquet"
    compression: str = "SNAPPY"
    block_size_bytes: int = 256 * MIB
    # Parquet
    page_size_bytes: int = MIB
    enable_dictionary_compression: bool = True
    max_padding_bytes: int = 0
    writer_version: Literal["V1", "V2"] = "V1"
    # ORC
    stripe_size_bytes: int = 64 * MIB
    row_index_stride: int = 10_000
    enable_padding: bool = False
    padding_tolerance: float = 0.05
    bloom_filter_columns: tuple[str, ...] = ()
    bloom_filter_false_positive_probability: float = 0.05
    dictionary_key_threshold: float = 0.8
    format_version: Literal["V0_11", "V0_12"] = "V0_12"

    @property
    def extension(self) -> str:
        """The key extension of this format's files, as AWS names them."""
        return ".orc" if self.kind == "orc" else ".parquet"


_INPUT = "InputFormatConfiguration"
_OUTPUT = "OutputFormatConfiguration"


def options_from_aws(cfg: DataFormatConversionConfiguration) -> tuple[DeserializerOptions, SerializerOptions]:
    """AWS ``DataFormatConversionConfiguration`` → options, with AWS's validation rules.

    The model has checked each member's type; this checks the values: one SerDe on each side, AWS's
    ranges and enum values, and what the libraries can write. Members AWS does not define are refused
    inside the SerDe choice and the SerDes (the AWS API refuses them too, and a typo would otherwise
    silently keep a default). ``Enabled`` and ``SchemaConfiguration`` belong to the caller.
    """
    input_format = _required(cfg.input_format_configuration, _INPUT)
    deserializer = _required(input_format.deserializer, f"{_INPUT}.Deserializer")
    name, des_body = _exactly_one(deserializer, f"{_INPUT}.Deserializer")
    path = f"{_INPUT}.Deserializer.{name}"
    des = _openx(des_body, path) if isinstance(des_body, OpenXJsonSerDe) else _hive(des_body, path)
    output_format = _required(cfg.output_format_configuration, _OUTPUT)
    serializer = _required(output_format.serializer, f"{_OUTPUT}.Serializer")
    name, ser_body = _exactly_one(serializer, f"{_OUTPUT}.Serializer")
    path = f"{_OUTPUT}.Serializer.{name}"
    ser = _parquet(ser_body, path) if isinstance(ser_body, ParquetSerDe) else _orc(ser_body, path)
    return des, ser


def _openx(body: OpenXJsonSerDe, path: str) -> DeserializerOptions:
    _known(body, path)
    mappings = body.column_to_json_key_mappings or {}
    if not all(column and key for column, key in mappings.items()):
        raise ValueError(f"{path}.ColumnToJsonKeyMappings must map column names to non-empty JSON keys")
    return DeserializerOptions(
        kind="openx",
        case_insensitive=_or(body.case_insensitive, True),
        convert_dots_in_json_keys_to_underscores=_or(body.convert_dots_in_json_keys_to_underscores, False),
        column_to_json_key_mappings=tuple(sorted(mappings.items())),
    )


def _hive(body: HiveJsonSerDe, path: str) -> DeserializerOptions:
    _known(body, path)
    formats = _strings(body.timestamp_formats, "TimestampFormats", path)
    for i, pattern in enumerate(formats):
        try:
            _timestamp_format(pattern)
        except ValueError as e:
            raise ValueError(f"{path}.TimestampFormats[{i}] {pattern!r}: {e}") from None
    return DeserializerOptions(kind="hive", timestamp_formats=formats)


def _parquet(body: ParquetSerDe, path: str) -> SerializerOptions:
    _known(body, path)
    return SerializerOptions(
        kind="parquet",
        block_size_bytes=_at_least(body.block_size_bytes, "BlockSizeBytes", path, 256 * MIB, 64 * MIB),
        page_size_bytes=_at_least(body.page_size_bytes, "PageSizeBytes", path, MIB, 64 * 1024),
        compression=_one_of(body.compression, "Compression", path, "SNAPPY", ("UNCOMPRESSED", "GZIP", "SNAPPY")),
        enable_dictionary_compression=_or(body.enable_dictionary_compression, True),
        max_padding_bytes=_at_least(body.max_padding_bytes, "MaxPaddingBytes", path, 0, 0),
        writer_version=_one_of(body.writer_version, "WriterVersion", path, "V1", ("V1", "V2")),  # type: ignore[arg-type]
    )


def _orc(body: OrcSerDe, path: str) -> SerializerOptions:
    _known(body, path)
    fpp = _fraction(body.bloom_filter_false_positive_probability, "BloomFilterFalsePositiveProbability", path, 0.05)
    if not 0.0 < fpp < 1.0:
        raise ValueError(f"{path}.BloomFilterFalsePositiveProbability must be greater than 0 and less than 1 "
                         "(an ORC bloom filter cannot be built for 0 or 1)")
    version = _one_of(body.format_version, "FormatVersion", path, "V0_12", ("V0_11", "V0_12"))
    if version == "V0_11":
        raise ValueError(f"{path}.FormatVersion V0_11 is not supported: the ORC writer (pyorc) writes "
                         "format 0.12 only")
    return SerializerOptions(
        kind="orc",
        stripe_size_bytes=_at_least(body.stripe_size_bytes, "StripeSizeBytes", path, 64 * MIB, 8 * MIB),
        block_size_bytes=_at_least(body.block_size_bytes, "BlockSizeBytes", path, 256 * MIB, 64 * MIB),
        row_index_stride=_at_least(body.row_index_stride, "RowIndexStride", path, 10_000, 1000),
        enable_padding=_or(body.enable_padding, False),
        padding_tolerance=_fraction(body.padding_tolerance, "PaddingTolerance", path, 0.05),
        compression=_one_of(body.compression, "Compression", path, "SNAPPY", ("NONE", "ZLIB", "SNAPPY")),
        bloom_filter_columns=_strings(body.bloom_filter_columns, "BloomFilterColumns", path),
        bloom_filter_false_positive_probability=fpp,
        dictionary_key_threshold=_fraction(body.dictionary_key_threshold, "DictionaryKeyThreshold", path, 0.8),
        format_version="V0_12",
    )


_Member = TypeVar("_Member")


def _required(value: _Member | None, where: str) -> _Member:
    if value is None:
        raise ValueError(f"{where} is required")
    return value


def _members(shape: OpenShape) -> dict[str, Any]:
    """The members AWS defines for a shape, by their AWS names in AWS's order, with their values."""
    return {field.alias or name: getattr(shape, name) for name, field in type(shape).model_fields.items()}


def _exactly_one(choice: Deserializer | Serializer, path: str) -> tuple[str, OpenShape]:
    """The one SerDe a choice sets, with its AWS name."""
    _known(choice, path)
    members = _members(choice)
    present = [(name, value) for name, value in members.items() if value is not None]
    if len(present) != 1:
        raise ValueError(f"{path} must set exactly one of {', '.join(members)}")
    return present[0]


def _known(shape: OpenShape, path: str) -> None:
    for key in shape.model_extra or {}:
        raise ValueError(f"{path}.{key} is not a known field (expected {', '.join(_members(shape))})")


def _or(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def _at_least(value: int | None, key: str, path: str, default: int, minimum: int) -> int:
    if value is None:
        return default
    if value < minimum:
        raise ValueError(f"{path}.{key} must be at least {minimum}")
    return value


def _fraction(value: float | None, key: str, path: str, default: float) -> float:
    if value is None:
        return default
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{path}.{key} must be a number from 0 to 1")
    return float(value)


def _one_of(value: str | None, key: str, path: str, default: str, values: tuple[str, ...]) -> str:
    if value is None:
        return default
    if value not in values:
        raise ValueError(f"{path}.{key} must be one of {', '.join(values)}")
    return value


def _strings(value: list[str] | None, key: str, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not all(v.strip() for v in value):
        raise ValueError(f"{path}.{key} must be a list of non-empty strings")
    return tuple(value)


def check_schema(schema: Schema, deserializer: DeserializerOptions, serializer: SerializerOptions) -> None:
    """Refuse a schema (or options) that cannot be converted faithfully: ValueError naming the column.

    Stream creation, UpdateDestination, ``firehose validate`` and the daemon's start run it (through
    ``pipeline.config``), so such a stream never runs; ``convert`` runs it on every batch too, so a
    schema that changed under a running stream fails every record (to the error output, with this
    reason) instead of producing a file that misrepresents the data.
    """
    for column in schema.columns:
        if serializer.kind == "parquet" and (depth := _parquet_depth(column.type)) > _PARQUET_MAX_DEPTH:
            raise ValueError(f"column '{column.name}' is nested {depth} Parquet levels deep (an array or map "
                             f"adds two, a struct one): readers built on Arrow refuse files nested deeper than "
                             f"{_PARQUET_MAX_DEPTH}")
        if deserializer.kind == "hive" and "." in column.name:
            raise ValueError(f"column '{column.name}': HiveJsonSerDe does not allow dots in column names")
    if serializer.kind == "orc":
        if serializer.format_version != "V0_12":
            raise ValueError("ORC FormatVersion V0_11 is not supported: pyorc writes format 0.12 only")
        _orc_bloom_filter_columns(schema, serializer)


def _orc_bloom_filter_columns(schema: Schema, serializer: SerializerOptions) -> list[str]:
    """BloomFilterColumns resolved to the schema's spelling (names are case-insensitive in Hive)."""
    names = {c.name.lower(): c.name for c in schema.columns}
    missing = [n for n in serializer.bloom_filter_columns if n.lower() not in names]
    if missing:
        raise ValueError(f"BloomFilterColumns names {', '.join(map(repr, missing))}, "
                         "not a column of the schema")
    return [names[n.lower()] for n in serializer.bloom_filter_columns]


@dataclass(frozen=True)
class Conversion:
    """One stream's format conversion: the table's schema, the SerDe options, and the table as
    the error documents of records that do not fit it report it (``dataCatalogTable``)."""

    schema: Schema
    deserializer: DeserializerOptions
    serializer: SerializerOptions
    table: dict[str, Any]


# -- timestamps --------------------------------------------------------------------------------

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NS = 1_000_000_000
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MILLIS_THRESHOLD = 10**11  # an epoch integer at least this large is milliseconds, not seconds
_ISO = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.IGNORECASE,
)
_SQL_TIMESTAMP = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,9}))?")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

TimestampParser = Callable[[str], int | None]


def _instant(year: int, month: int, day: int, hour: int, minute: int, second: int,
             fraction: str | None, offset: str | None) -> int | None:
    """Nanoseconds since the epoch for validated calendar fields, or None if any field is invalid."""
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        return None
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - _offset_seconds(offset)
    return seconds * _NS + (int(fraction.ljust(9, "0")) if fraction else 0)


def _offset_seconds(offset: str | None) -> int:
    """'Z', '+HH', '+HHMM' or '+HH:MM' → seconds east of UTC; no offset means UTC."""
    if not offset or offset in ("Z", "z"):
        return 0
    digits = offset[1:].replace(":", "")
    seconds = int(digits[:2]) * 3600 + int(digits[2:] or 0) * 60
    return -seconds if offset[0] == "-" else seconds


def _calendar(m: re.Match[str]) -> int | None:
    """A match of _ISO or _SQL_TIMESTAMP (groups: y, M, d, H, m, s, fraction[, offset])."""
    g = m.groups()
    return _instant(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), g[6],
                    g[7] if len(g) > 7 else None)


def _epoch_integer(n: int) -> int:
    return n * (1_000_000 if abs(n) >= _MILLIS_THRESHOLD else _NS)


def _epoch_seconds(d: Decimal) -> int | None:
    """Fractional epoch seconds → nanoseconds (floored); None for magnitudes beyond the int64 range."""
    if not d.is_finite() or d.adjusted() > 12:
        return None
    return math.floor(d.scaleb(9))


def _openx_timestamp(value: Any) -> int | None:
    if type(value) is str:
        m = _ISO.fullmatch(value)
        if m:
            return _calendar(m)
        if _INTEGER.fullmatch(value):
            return _epoch_integer(int(value))
        return _epoch_seconds(Decimal(value)) if _NUMBER.fullmatch(value) else None
    if type(value) is int:
        return _epoch_integer(value)
    if type(value) is Decimal:
        return _epoch_seconds(value)
    return None


def _hive_timestamp(formats: tuple[str, ...]) -> Callable[[Any], int | None]:
    """The configured formats in order, then Timestamp.valueOf's default, as Hive's TimestampParser.

    A JSON number is parsed from its text, as Hive reads every scalar token's text (so ``millis``
    accepts a number)."""
    parsers = [_timestamp_format(f) for f in formats]

    def parse(value: Any) -> int | None:
        if type(value) is str:
            text = value
        elif type(value) is int or type(value) is Decimal:
            text = str(value)
        else:
            return None
        for parser in parsers:
            ns = parser(text)
            if ns is not None:
                return ns
        m = _SQL_TIMESTAMP.fullmatch(text)
        return _calendar(m) if m else None

    return parse


def _millis(text: str) -> int | None:
    return int(text) * 1_000_000 if _INTEGER.fullmatch(text) else None


_JODA_TOKEN = re.compile(r"'((?:[^']|'')*)'|([A-Za-z])\2*|(.)", re.DOTALL)
_JODA_NUMERIC = {"y": "year", "M": "month", "d": "day", "H": "hour", "h": "hour12", "m": "minute",
                 "s": "second", "S": "fraction"}


@lru_cache(maxsize=64)
def _timestamp_format(pattern: str) -> TimestampParser:
    """A Hive TimestampFormats entry → parser. ``millis`` is epoch milliseconds; anything else is a
    Joda DateTimeFormat pattern (subset: y M d H h m s S a E Z, quoted literals). As in Joda, text
    matches case-insensitively, a numeric field followed directly by another numeric field has a
    fixed width, and missing fields default to 2000-01-01T00:00:00. Two-digit years (yy) are
    refused: Joda resolves them against the current century at parse time."""
    if pattern == "millis":
        return _millis
    tokens = [(m.group(1), m.group(2), m.group(0), m.group(3)) for m in _JODA_TOKEN.finditer(pattern)]
    parts: list[str] = []
    used: set[str] = set()
    for i, (quoted, letter, run, other) in enumerate(tokens):
        if quoted is not None:
            parts.append(re.escape(quoted.replace("''", "'") if quoted else "'"))
        elif other == "'":
            raise ValueError("unterminated quoted text")
        elif other is not None:
            parts.append(re.escape(other))
        else:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            adjacent = nxt is not None and nxt[1] in _JODA_NUMERIC and not (nxt[1] == "M" and len(nxt[2]) > 2)
            group, regex = _joda_field(letter, len(run), adjacent)
            if group in used:
                raise ValueError(f"field '{letter}' appears twice")
            used.add(group)
            parts.append(f"(?P<{group}>{regex})")
    if "hour12" in used and "hour" in used:
        raise ValueError("pattern has both H and h")
    compiled = re.compile("".join(parts), re.IGNORECASE)
    return lambda text: _joda_instant(compiled.fullmatch(text))


def _joda_field(letter: str, count: int, adjacent: bool) -> tuple[str, str]:
    """(group name, regex) for one pattern letter run."""
    if letter == "y":
        if count == 2:
            raise ValueError("two-digit years (yy) are not supported")
        return "year", rf"\d{{{count}}}" if adjacent else r"\d{1,9}"
    if letter == "M" and count >= 3:
        return "monthname", "|".join([*_MONTHS, *(m[:3] for m in _MONTHS)])
    if letter in _JODA_NUMERIC:
        if letter == "S" and count > 9:
            raise ValueError("at most 9 fraction digits (S) are supported")
        width = rf"\d{{{count}}}" if adjacent else rf"\d{{1,{9 if letter == 'S' else max(count, 2)}}}"
        return _JODA_NUMERIC[letter], width
    if letter == "a":
        return "ampm", "am|pm"
    if letter == "E":
        return "weekday", "|".join([*_DAYS, *(d[:3] for d in _DAYS)])
    if letter == "Z":
        return "offset", r"Z|[+-]\d{2}(?::?\d{2})?"
    raise ValueError(f"unsupported Joda pattern letter '{letter}'")


def _joda_instant(m: re.Match[str] | None) -> int | None:
    if m is None:
        return None
    g = m.groupdict()

    def number(field: str, default: int) -> int:
        return int(g[field]) if g.get(field) else default

    month = number("month", 1)
    if g.get("monthname"):
        month = next(i for i, full in enumerate(_MONTHS, 1) if full.startswith(g["monthname"].lower()))
    hour = number("hour", 0)
    if g.get("hour12"):
        if not 1 <= number("hour12", 0) <= 12:
            return None
        hour = number("hour12", 0) % 12 + (12 if (g.get("ampm") or "am").lower() == "pm" else 0)
    return _instant(number("year", 2000), month, number("day", 1), hour, number("minute", 0),
                    number("second", 0), g.get("fraction"), g.get("offset"))


# -- coercion: JSON value → column value -------------------------------------------------------


class _Reject(Exception):
    """A value that does not fit its column; the message becomes the record's failure reason."""


class _Inexact(Exception):
    """A float (parsed by orjson on the fast path) met a type that needs the number's exact text:
    the record is decoded again with the exact decoder, which gives Decimal instead."""


Coerce = Callable[[Any], Any]
_INT_BITS = {"tinyint": 8, "smallint": 16, "int": 32, "bigint": 64}
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class _Rules:
    """Everything value coercion depends on, fixed for one convert call."""

    openx: bool
    normalize: Callable[[str], str] | None  # JSON key → lookup key (struct fields, and top-level columns)
    timestamp: Callable[[Any], int | None]
    orc: bool  # values for pyorc (decimals as unscaled integers), else for Arrow (decimals as Decimal)
    mappings: Mapping[str, str] = field(default_factory=dict)  # lower-case column or struct field name → JSON key
    lower_map_keys: bool = False  # OpenX CaseInsensitive lowercases every JSON key, map keys too
    #: Coercers for the fast path (orjson's values): a value that already has its type's JSON type
    #: passes unchecked, since orjson only yields valid UTF-8 strings and 64-bit integers.
    fast: bool = False

    def key(self, name: str) -> str:
        """The normalized JSON key a column or struct field reads."""
        key = self.mappings.get(name.lower(), name)
        return self.normalize(key) if self.normalize else key


def _show(value: Any) -> str:
    """A short rendering of a JSON value for failure reasons."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        return "a JSON object"
    elif isinstance(value, list):
        return "a JSON array"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _cannot(value: Any, t: HiveType, why: str = "") -> Exception:
    """The failure for a value that does not fit; a float (fast path) is first retried exactly."""
    if type(value) is float:
        return _Inexact()
    return _Reject(f"cannot convert {_show(value)} to {t}" + (f": {why}" if why else ""))


def _coercer(t: HiveType, rules: _Rules) -> Coerce:
    """The coercion function for one type; it raises _Reject and is never called with None."""
    if t.name in ("string", "varchar", "char"):
        return _text_coercer(t, rules)
    if t.name in _INT_BITS:
        return _integer_coercer(t, rules)
    return _COERCERS[t.name](t, rules)


def _valid_text(s: str) -> str:
    """JSON escapes can produce lone surrogates, which neither file format can encode."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise _Reject(f"string {_show(s)} holds an unpaired UTF-16 surrogate") from None
    return s


def _decimal_fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # the number as written (parsed exactly, never via float)
    raise TypeError


def _text_coercer(t: HiveType, rules: _Rules) -> Coerce:
    def text(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return _valid_text(value)
        if kind is bool:
            return "true" if value else "false"
        if kind is int or kind is Decimal:
            return str(value)
        if kind is float:
            raise _Inexact  # the number's text as written, not the float's
        if not rules.openx:
            raise _cannot(value, t, "HiveJsonSerDe does not turn nested JSON into text")
        try:
            return orjson.dumps(value, default=_decimal_fragment).decode()
        except orjson.JSONEncodeError as e:
            raise _cannot(value, t, str(e)) from None

    if t.name == "string":
        return text
    if t.name == "varchar":
        return lambda value: text(value)[: t.length]
    return lambda value: text(value)[: t.length].ljust(t.length)


def _scaled(d: Decimal, scale: int, max_digits: int) -> int | str:
    """d x 10**scale as an exact integer of at most max_digits digits, or why it is not one.

    Works on the digits, not with Decimal arithmetic, whose 28-digit context would round a
    decimal(38,s), and checks sizes before building an integer, so 1e999999 costs nothing.
    """
    if not d.is_finite():
        return "not a finite number"
    sign, digits, exponent = d.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    shift = int(exponent) + len(digits) - len(significant) + scale  # unscaled = significant x 10**shift
    if shift < 0:  # significant ends in a non-zero digit, so a negative shift leaves a fraction
        return "too many fraction digits"
    if len(significant) + shift > max_digits:
        return "out of range"
    unscaled = int(significant) * 10**shift
    return -unscaled if sign else unscaled


def _integer_coercer(t: HiveType, rules: _Rules) -> Coerce:
    bits = _INT_BITS[t.name]
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def coerce(value: Any) -> int:
        kind = type(value)
        if kind is int:
            n = value
        elif kind is Decimal:  # 1.0 or 1e3 are whole numbers; 1.5 is refused, not truncated
            scaled = _scaled(value, 0, 20)
            if isinstance(scaled, str):
                raise _cannot(value, t, "not a whole number" if "fraction" in scaled else scaled)
            n = scaled
        elif kind is str and rules.openx and _INTEGER.fullmatch(value):
            n = int(value)
        else:
            raise _cannot(value, t)
        if not low <= n <= high:
            raise _cannot(value, t, "out of range")
        return n

    return coerce


def _float_coercer(t: HiveType, rules: _Rules) -> Coerce:
    limit = _FLOAT32_MAX if t.name == "float" else math.inf

    def coerce(value: Any) -> float:
        kind = type(value)
        if kind is float:  # parsed by the fast path; float/double columns only
            x = value
            if abs(x) > limit:
                raise _cannot(value, t, "out of range")
            return x
        if kind is Decimal or kind is int or (kind is str and rules.openx and _NUMBER.fullmatch(value)):
            try:
                x = float(value)
            except OverflowError:
                x = math.inf
            if abs(x) > limit or math.isinf(x):
                raise _cannot(value, t, "out of range")
            return x
        raise _cannot(value, t)

    return coerce


def _boolean_coercer(t: HiveType, rules: _Rules) -> Coerce:
    def coerce(value: Any) -> bool:
        if type(value) is bool:
            return value
        if type(value) is str and rules.openx and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _cannot(value, t)

    return coerce


def _binary_coercer(t: HiveType, rules: _Rules) -> Coerce:
    def coerce(value: Any) -> bytes:
        if type(value) is str:
            return _valid_text(value).encode("utf-8")
        raise _cannot(value, t)

    return coerce


#: Enough digits that scaling a decimal(38,s)'s unscaled integer back is exact (the default 28 rounds).
_EXACT = DecimalContext(prec=_MAX_DECIMAL_PRECISION + 2)


def _decimal_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns the unscaled integer (value x 10**scale) for pyorc, the exact Decimal for Arrow."""

    def coerce(value: Any) -> int | Decimal:
        kind = type(value)
        if kind is Decimal:
            d = value
        elif kind is int:
            d = Decimal(value)
        elif kind is str and rules.openx and _NUMBER.fullmatch(value):
            d = Decimal(value)
        else:
            raise _cannot(value, t)
        scaled = _scaled(d, t.scale, t.precision)
        if isinstance(scaled, str):
            raise _cannot(value, t, scaled)
        return scaled if rules.orc else Decimal(scaled).scaleb(-t.scale, _EXACT)

    return coerce


def _date_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns days since 1970-01-01."""

    def coerce(value: Any) -> int:
        m = _DATE.fullmatch(value) if type(value) is str else None
        if m:
            try:
                return date(int(m[1]), int(m[2]), int(m[3])).toordinal() - _EPOCH_ORDINAL
            except ValueError:
                pass
        raise _cannot(value, t)

    return coerce


def _timestamp_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns nanoseconds since the epoch (UTC)."""

    def coerce(value: Any) -> int:
        ns = rules.timestamp(value)
        if ns is None:
            raise _cannot(value, t)
        if not _INT64_MIN <= ns <= _INT64_MAX:
            raise _cannot(value, t, "outside 1677-09-21..2262-04-11")
        if rules.orc and -_NS < ns < 0 and ns % _NS > 999_999:
            raise _cannot(value, t, "ORC cannot store a fraction above 1 ms in the second before 1970")
        return ns

    return coerce


def _array_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns a list. A list whose elements all have the element type's JSON type already (strings
    for string, ...) is returned as it is: one type check per element instead of a call."""
    element = _coercer(t.children[0], rules)
    direct = _DIRECT.get(t.children[0].name) if rules.fast else None

    def coerce(value: Any) -> list[Any]:
        if type(value) is not list:
            if not rules.openx:
                raise _cannot(value, t)
            value = [value]  # OpenX reads a lone value as a one-element array
        if direct is not None:
            for v in value:
                if v is not None and type(v) is not direct:
                    break
            else:
                return value
        return [None if v is None else element(v) for v in value]

    return coerce


def _map_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns a dict (keys parsed from the JSON keys; a later key that parses the same wins)."""
    key = _coercer(t.children[0], replace(rules, openx=True))  # JSON keys are strings whatever the key type
    item = _coercer(t.children[1], rules)
    direct = _DIRECT.get(t.children[1].name) if rules.fast else None
    lower = rules.lower_map_keys
    # Fast path, string keys: a map whose keys need no change and whose values are direct is kept.
    keep = direct is not None and t.children[0].name == "string"

    def coerce(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise _cannot(value, t)
        if keep:
            for k, v in value.items():
                if (lower and not (k.islower() or k == k.lower())) or (v is not None and type(v) is not direct):
                    break
            else:
                return value
        out = {}
        for k, v in value.items():
            out[key(k.lower() if lower else k)] = v if v is None or type(v) is direct else item(v)
        return out

    return coerce


def _struct_coercer(t: HiveType, rules: _Rules) -> Coerce:
    """Returns a tuple in field order (what pyorc and pyarrow take for a struct); see _fields_coercer."""
    return _fields_coercer(t, t.fields, t.children, rules, name_errors=False)


def _row_coercer(schema: Schema, rules: _Rules) -> Coerce:
    """One JSON object → one row: a tuple of column values, a failure naming the column."""
    columns = schema.columns
    return _fields_coercer(schema, tuple(c.name for c in columns), tuple(c.type for c in columns), rules,
                           name_errors=True)


def _fields_coercer(what: object, names: tuple[str, ...], types: tuple[HiveType, ...], rules: _Rules, *,
                    name_errors: bool) -> Coerce:
    """A JSON object → the tuple of its fields' values, fields looked up like columns (``_Rules.key``).

    The function is generated with lines per field, because it is the inner loop of conversion (a
    loop over the fields cost a third more). Keys need normalizing only when the object has a key
    that matched no field: when every key matched, they were all normal already. Otherwise whether
    the object's keys are normal is cached per key tuple, since a stream's objects mostly share a
    shape. A later duplicate key wins, as in the JSON. ``name_errors``: a failure names the field.
    """
    env: dict[str, Any] = {"_cannot": _cannot, "t": what, "dict": dict, "type": type, "tuple": tuple, "all": all,
                           "len": len, "str": str, "_Reject": _Reject, "_MISSING": _MISSING,
                           "normalize": rules.normalize, "normal": {}}
    for i, (name, child) in enumerate(zip(names, types, strict=True)):
        env[f"k{i}"] = rules.key(name)
        env[f"d{i}"] = _DIRECT.get(child.name) if rules.fast else None
        env[f"c{i}"] = _coercer(child, rules)
        env[f"n{i}"] = f"field '{name}': "
    keys = [env[f"k{i}"] for i in range(len(names))]
    # (Two fields mapped to one JSON key would count one key twice: no shortcut then.)
    shortcut = len(set(keys)) == len(keys)
    exec("\n".join(_fields_lines(len(keys), rules.normalize is not None, shortcut, name_errors)), env)  # noqa: S102
    return env["coerce"]  # type: ignore[no-any-return]


_MISSING = object()


def _fields_lines(n: int, normalizing: bool, shortcut: bool, name_errors: bool) -> list[str]:
    """The source of a coercer of n fields: its names come from indices only; the keys, direct
    types, coercers and error prefixes of the fields are the globals k<i>, d<i>, c<i>, n<i>."""
    tuple_of = "(" + "".join(f"v{i}, " for i in range(n)) + ")"
    lines = ["def coerce(value):",
             "    if type(value) is not dict:",
             "        raise _cannot(value, t)"]
    if normalizing:
        # Every key is a field's (normal) key when as many fields were found as the object has keys.
        lines += ["    get = value.get",
                  *(f"    v{i} = get(k{i}, _MISSING)" for i in range(n)),
                  ("    if " + " + ".join(f"(v{i} is not _MISSING)" for i in range(n)) + " != len(value):")
                  if shortcut else "    if True:",
                  "        keys = tuple(value)",
                  "        plain = normal.get(keys)",
                  "        if plain is None:",
                  "            if len(normal) > 1024:",
                  "                normal.clear()",
                  "            plain = normal[keys] = all(normalize(k) == k for k in keys)",
                  "        if not plain:",
                  "            value = {normalize(k): v for k, v in value.items()}",
                  "        get = value.get",
                  *(f"        v{i} = get(k{i}, _MISSING)" for i in range(n))]
    else:
        lines += ["    get = value.get", *(f"    v{i} = get(k{i}, _MISSING)" for i in range(n))]
    for i in range(n):
        lines += [f"    if v{i} is _MISSING:",
                  f"        v{i} = None",
                  f"    elif v{i} is not None and type(v{i}) is not d{i}:"]
        if name_errors:
            lines += ["        try:",
                      f"            v{i} = c{i}(v{i})",
                      "        except _Reject as e:",
                      f"            raise _Reject(n{i} + str(e)) from None"]
        else:
            lines.append(f"        v{i} = c{i}(v{i})")
    lines.append(f"    return {tuple_of}")
    return lines


_COERCERS: dict[str, Callable[[HiveType, _Rules], Coerce]] = {
    "float": _float_coercer, "double": _float_coercer, "boolean": _boolean_coercer, "binary": _binary_coercer,
    "decimal": _decimal_coercer, "date": _date_coercer, "timestamp": _timestamp_coercer,
    "array": _array_coercer, "map": _map_coercer, "struct": _struct_coercer,
}


def _normalizer(options: DeserializerOptions) -> Callable[[str], str] | None:
    lower, dots = options.case_insensitive, options.convert_dots_in_json_keys_to_underscores
    if lower and dots:
        return lambda k: k.lower().replace(".", "_")
    if lower:
        return str.lower
    if dots:
        return lambda k: k.replace(".", "_")
    return None


# -- records -----------------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


# Numbers with a fraction or exponent are parsed as Decimal so decimal columns stay exact.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _objects(record: bytes | memoryview) -> list[dict[str, Any]]:
    """The JSON objects of one record, in order (at least one)."""
    try:
        text = str(record, "utf-8")
    except UnicodeDecodeError as e:
        bad = e.object[e.start]
        raise _Reject(f"record is not valid UTF-8 (byte 0x{bad:02x} at offset {e.start})") from None
    objects: list[dict[str, Any]] = []
    pos = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    while pos < len(text):
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise _Reject(f"record is not valid JSON: {e.msg} at offset {e.pos}") from None
        except ValueError as e:  # NaN/Infinity, or an integer beyond Python's digit limit
            raise _Reject(f"record is not valid JSON: {e}") from None
        except RecursionError:
            raise _Reject("record is not valid JSON: nested too deeply") from None
        if type(value) is not dict:
            what = "array" if type(value) is list else "scalar"
            raise _Reject(f"record holds a top-level JSON {what}; each row must be a JSON object")
        objects.append(value)
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
    if not objects:
        raise _Reject("record holds no JSON object")
    return objects


# -- conversion --------------------------------------------------------------------------------


#: errorCodes of format-conversion error documents (AWS's names): a record that does not fit the
#: schema; a schema the serializer cannot write (every record of every batch fails alike).
MALFORMED_DATA = "DataFormatConversion.MalformedData"
INVALID_SCHEMA = "DataFormatConversion.InvalidSchema"


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """Why no record of a batch (beyond those ``failed`` names) could be converted: a schema the
    writer cannot write, or the writer raising for the batch. Retrying cannot change it."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ConversionResult:
    body: bytes  # one complete Parquet or ORC file with every converted row; b"" when none converted
    rows: int
    failed: list[tuple[int, str]]  # (index of the input record, reason)
    #: Set when the batch failed as a whole: then ``body`` is empty and every record not in
    #: ``failed`` failed for this reason.
    batch_failure: BatchFailure | None = None

    def failures(self, count: int) -> list[tuple[int, str, str]]:
        """Every failed record of a batch of ``count``, in order: (index, errorCode, reason)."""
        out = [(i, MALFORMED_DATA, why) for i, why in self.failed]
        if self.batch_failure is not None:
            named = {i for i, _ in self.failed}
            out += [(i, self.batch_failure.code, self.batch_failure.message) for i in range(count) if i not in named]
            out.sort()
        return out


def convert(
    records: Sequence[bytes | memoryview],
    schema: Schema,
    deserializer: DeserializerOptions,
    serializer: SerializerOptions,
) -> ConversionResult:
    """Convert a batch: every record that fits the schema becomes rows of one file, the others are
    reported by index with the reason.

    Never raises for the data or the schema: a schema/options pairing the writer cannot do
    (``check_schema``) or a writer that raises for the batch fails every record of the batch, with
    the reason (``batch_failure``), so the pipeline sends them to the error output at once instead
    of retrying a batch that can never convert.
    """
    try:
        check_schema(schema, deserializer, serializer)
    except ValueError as e:
        return ConversionResult(b"", 0, [], BatchFailure(INVALID_SCHEMA, f"The schema is invalid: {e}"))
    decoded = _decode(records, schema, deserializer, orc=serializer.kind == "orc")
    if not decoded.rows:
        return ConversionResult(b"", 0, decoded.failed)
    from firehose.encoding import columnar  # heavy libraries: loaded by the first batch that converts

    try:
        if serializer.kind == "parquet":
            groups = _row_groups(decoded.extents, serializer.block_size_bytes)
            body = columnar.parquet_file(schema, decoded.columns, groups, serializer)
        else:
            body = columnar.orc_file(schema, decoded.rows, serializer, _orc_bloom_filter_columns(schema, serializer))
    except Exception as e:  # the writer refused values the coercions let through: the same on every try
        writer = "Parquet (pyarrow)" if serializer.kind == "parquet" else "ORC (pyorc)"
        return ConversionResult(b"", 0, decoded.failed, BatchFailure(
            MALFORMED_DATA, f"The {writer} writer could not write the batch: {type(e).__name__}: {e}"))
    return ConversionResult(body, len(decoded.rows), decoded.failed)


@dataclass(frozen=True, slots=True)
class ArrowBatch:
    """Records as an Arrow table (``to_arrow``): the rows of every record that fits the schema, in
    record order, and the others by index with the reason."""

    table: pa.Table  # pyarrow's, imported only for type checking
    failed: list[tuple[int, str]]  # (index of the input record, reason)


def to_arrow(
    records: Sequence[bytes | memoryview], schema: Schema, deserializer: DeserializerOptions,
) -> ArrowBatch:
    """JSON records → an Arrow table of the schema (``arrow.arrow_schema``), with the SerDe's rules.

    The same decoding as ``convert`` (one record whole or not at all, coercions, nested types), for
    writers that take Arrow data. The table has no rows when no record fits. Raises only where
    pyarrow refuses values the coercions let through (as ``convert``'s writer would).
    """
    from firehose.encoding import arrow  # pyarrow: loaded by the first caller

    decoded = _decode(records, schema, deserializer, orc=False)
    return ArrowBatch(arrow.table(schema, decoded.columns), decoded.failed)


@dataclass(frozen=True, slots=True)
class _Decoded:
    rows: list[tuple[Any, ...]]  # converted values, one tuple per row in schema order
    failed: list[tuple[int, str]]
    extents: list[tuple[int, int]]  # (rows, input bytes) of each converted record
    width: int  # number of columns

    @property
    def columns(self) -> list[Sequence[Any]]:
        """The values column by column (the transposition runs in C: zip)."""
        if not self.rows:
            return [[] for _ in range(self.width)]
        return list(zip(*self.rows, strict=True))  # tuples: pyarrow takes any sequence


#: Column types whose values pass through unchanged when the JSON value already has this type.
#: (bigint: orjson only yields ints that fit 64 bits; double: floats are already doubles.)
_DIRECT: dict[str, type] = {"string": str, "bigint": int, "double": float, "boolean": bool}


def _decode(records: Sequence[bytes | memoryview], schema: Schema, deserializer: DeserializerOptions, *,
            orc: bool) -> _Decoded:
    """Every record's rows in the writer's form (``orc``: pyorc's, else Arrow's).

    Most records take the fast path: one JSON object, parsed by orjson, whose values mostly pass
    unchecked where they already have their column's JSON type (``_Rules.fast``). orjson reads
    fractional numbers as floats, which is exact only for float/double; a float anywhere else (a
    decimal, an integer written as 1.0, a timestamp in fractional epoch seconds, a number into a
    string) raises _Inexact, and such a record, or one orjson does not take as one object
    (concatenated objects, NaN, huge integers, invalid text), is decoded again by the exact decoder
    (Decimal numbers, every value checked). Decoding allocates many small objects and no cycles,
    so the cyclic garbage collector is paused meanwhile (it cost about a third of the time).
    """
    rules = _Rules(
        openx=deserializer.kind == "openx",
        normalize=_normalizer(deserializer),
        timestamp=_openx_timestamp if deserializer.kind == "openx" else _hive_timestamp(
            deserializer.timestamp_formats),
        orc=orc,
        mappings={column.lower(): key for column, key in deserializer.column_to_json_key_mappings},
        lower_map_keys=deserializer.kind == "openx" and deserializer.case_insensitive,
    )
    exact, fast = _row_coercer(schema, rules), _row_coercer(schema, replace(rules, fast=True))
    rows: list[tuple[Any, ...]] = []
    failed: list[tuple[int, str]] = []
    extents: list[tuple[int, int]] = []
    loads, decode_error, append = orjson.loads, orjson.JSONDecodeError, rows.append
    collecting = gc.isenabled()
    gc.disable()
    try:
        for index, record in enumerate(records):
            start = len(rows)
            try:
                try:
                    obj = loads(record)
                    if type(obj) is not dict:
                        raise _Inexact
                    append(fast(obj))
                except (decode_error, _Inexact):
                    for obj in _objects(record):
                        append(exact(obj))
            except _Reject as e:
                del rows[start:]
                failed.append((index, str(e)))
            except Exception as e:  # a value no rule foresaw: this record fails, the batch goes on
                del rows[start:]
                failed.append((index, f"the record could not be converted: {type(e).__name__}: {e}"))
            else:
                extents.append((len(rows) - start, len(record)))
    finally:
        if collecting:
            gc.enable()
    return _Decoded(rows, failed, extents, len(schema.columns))


def _row_groups(extents: list[tuple[int, int]], block_size: int) -> list[tuple[int, int]]:
    """[start, end) row ranges, cut at record boundaries once a group's JSON input reaches block_size."""
    groups: list[tuple[int, int]] = []
    start = end = size = 0
    for rows, nbytes in extents:
        end += rows
        size += nbytes
        if size >= block_size:
            groups.append((start, end))
            start, size = end, 0
    if end > start:
        groups.append((start, end))
    return groups


# -- Parquet nesting depth (checked without loading pyarrow) -----------------------------------

#: Arrow's Parquet reader refuses schemas nested deeper than this many levels (array/map 2, struct 1).
_PARQUET_MAX_DEPTH = 98


def _parquet_depth(t: HiveType) -> int:
    """Schema levels below the column's own node: a list or map adds its repeated group and its
    element/key_value node, a struct its fields' group."""
    if t.name in ("array", "map"):
        return 2 + max(_parquet_depth(child) for child in t.children)
    if t.name == "struct":
        return 1 + max(_parquet_depth(child) for child in t.children)
    return 0
