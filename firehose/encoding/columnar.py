"""Converted rows written as one Parquet file (pyarrow) or one ORC file (pyorc).

The rules (types, options, what each library cannot do) are ``convert.py``'s; this module holds only
the writers, apart because their libraries (pyarrow, pyorc) cost the process tens of MiB of memory
once imported: a daemon whose streams convert nothing never loads them, and worker processes
import them as they start (``convert.WRITERS_MODULE``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyorc
from pyorc.converters import ORCConverter

from firehose.encoding import arrow
from firehose.encoding.convert import HiveType, Schema, SerializerOptions

__all__ = ["orc_file", "parquet_file"]

_NS = 1_000_000_000
_PARQUET_CODECS = {"UNCOMPRESSED": "NONE", "GZIP": "GZIP", "SNAPPY": "SNAPPY"}


def parquet_file(schema: Schema, columns: Sequence[Sequence[Any]], groups: list[tuple[int, int]],
                  serializer: SerializerOptions) -> bytes:
    table = arrow.table(schema, columns)
    out = pa.BufferOutputStream()
    with pq.ParquetWriter(
        out, table.schema,
        compression=_PARQUET_CODECS[serializer.compression],
        use_dictionary=serializer.enable_dictionary_compression,
        data_page_size=serializer.page_size_bytes,
        data_page_version="2.0" if serializer.writer_version == "V2" else "1.0",
        use_deprecated_int96_timestamps=True,  # Hive's (and Athena's) timestamp encoding
        store_schema=False,  # no Arrow-specific metadata: the file is what Hive would write
    ) as writer:
        for start, end in groups:
            writer.write_table(table.slice(start, end - start), row_group_size=end - start)
    return bytes(out.getvalue())


# -- ORC (pyorc) -------------------------------------------------------------------------------


class _Nanoseconds(ORCConverter):
    """Timestamps arrive as int nanoseconds since the epoch; pyorc's default takes datetime (µs)."""

    @staticmethod
    def from_orc(seconds: int, nanoseconds: int, timezone: Any) -> int:
        return seconds * _NS + nanoseconds

    @staticmethod
    def to_orc(ns: int, timezone: Any) -> tuple[int, int]:
        return divmod(ns, _NS)


class _EpochDays(ORCConverter):
    """Dates arrive as days since 1970-01-01, which is what ORC stores."""

    @staticmethod
    def from_orc(days: int) -> int:
        return days

    @staticmethod
    def to_orc(days: int) -> int:
        return days


class _Unscaled(ORCConverter):
    """Decimals arrive as exact unscaled integers; pyorc's default rounds a Decimal in a context."""

    @staticmethod
    def from_orc(text: str) -> Decimal:
        return Decimal(text)

    @staticmethod
    def to_orc(precision: int, scale: int, unscaled: int) -> int:
        return unscaled


_ORC_CONVERTERS: dict[pyorc.TypeKind, type[ORCConverter]] = {
    pyorc.TypeKind.TIMESTAMP: _Nanoseconds,
    pyorc.TypeKind.DATE: _EpochDays,
    pyorc.TypeKind.DECIMAL: _Unscaled,
}
_ORC_PRIMITIVES: Mapping[str, Callable[[], pyorc.TypeDescription]] = {
    "string": pyorc.String, "tinyint": pyorc.TinyInt, "smallint": pyorc.SmallInt, "int": pyorc.Int,
    "bigint": pyorc.BigInt, "float": pyorc.Float, "double": pyorc.Double, "boolean": pyorc.Boolean,
    "timestamp": pyorc.Timestamp, "date": pyorc.Date, "binary": pyorc.Binary,
}


def _orc_type(t: HiveType) -> pyorc.TypeDescription:
    if t.name in _ORC_PRIMITIVES:
        return _ORC_PRIMITIVES[t.name]()
    if t.name == "char":
        return pyorc.Char(t.length)
    if t.name == "varchar":
        return pyorc.VarChar(t.length)
    if t.name == "decimal":
        return pyorc.Decimal(t.precision, t.scale)
    if t.name == "array":
        return pyorc.Array(_orc_type(t.children[0]))
    if t.name == "map":
        return pyorc.Map(_orc_type(t.children[0]), _orc_type(t.children[1]))
    return pyorc.Struct(**{name: _orc_type(child) for name, child in zip(t.fields, t.children, strict=True)})


def orc_file(schema: Schema, rows: list[tuple[Any, ...]], serializer: SerializerOptions,
             bloom_filter_columns: list[str]) -> bytes:
    out = io.BytesIO()
    with pyorc.Writer(
        out,
        pyorc.Struct(**{c.name: _orc_type(c.type) for c in schema.columns}),
        stripe_size=serializer.stripe_size_bytes,
        row_index_stride=serializer.row_index_stride,
        compression=pyorc.CompressionKind[serializer.compression],
        bloom_filter_columns=bloom_filter_columns,
        bloom_filter_fpp=serializer.bloom_filter_false_positive_probability,
        padding_tolerance=serializer.padding_tolerance if serializer.enable_padding else 0.0,
        dict_key_size_threshold=serializer.dictionary_key_threshold,
        converters=_ORC_CONVERTERS,
    ) as writer:
        writer.writerows(rows)
    return out.getvalue()
