"""Converted rows written as one Parquet file (fastparquet) or one ORC file (pyorc).

The rules (types, options, what each library cannot do) are ``convert.py``'s; this module holds only
the writers, apart because their libraries (fastparquet with pandas and numpy, pyorc) cost the
process about a hundred MiB of memory once imported: a daemon whose streams convert nothing never
loads them, and worker processes import them as they start (``convert.WRITERS_MODULE``).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyorc
from fastparquet import parquet_thrift
from fastparquet.util import created_by
from fastparquet.writer import MARKER, write_column, write_thrift
from pyorc.converters import ORCConverter

from firehose.encoding.convert import MIB, Column, HiveType, Schema, SerializerOptions

__all__ = ["orc_file", "parquet_file"]

_NS = 1_000_000_000

# -- Parquet (fastparquet) ---------------------------------------------------------------------

_PT = parquet_thrift.Type
_CT = parquet_thrift.ConvertedType
_DICTIONARY_LIMIT = MIB  # parquet-mr's default dictionary page size, past which it writes plain
_NAT = np.iinfo(np.int64).min
# pandas dtype of the values handed to write_column, for the Hive types stored as numbers
_PARQUET_NUMERIC = {
    "tinyint": (_PT.INT32, _CT.INT_8, "Int32"), "smallint": (_PT.INT32, _CT.INT_16, "Int32"),
    "int": (_PT.INT32, None, "Int32"), "bigint": (_PT.INT64, None, "Int64"),
    "float": (_PT.FLOAT, None, "Float32"), "double": (_PT.DOUBLE, None, "Float64"),
    "boolean": (_PT.BOOLEAN, None, "boolean"), "date": (_PT.INT32, _CT.DATE, "Int32"),
}


def _decimal_width(precision: int) -> int:
    """Bytes of the smallest two's-complement integer that holds every value of that precision."""
    return next(n for n in range(1, 17) if (1 << (8 * n - 1)) > 10**precision - 1)


def _schema_element(column: Column) -> Any:
    t = column.type
    fields: dict[str, Any] = {
        "name": column.name, "repetition_type": parquet_thrift.FieldRepetitionType.OPTIONAL,
    }
    if t.name in _PARQUET_NUMERIC:
        physical, converted, _ = _PARQUET_NUMERIC[t.name]
        fields.update(type=physical, converted_type=converted)
    elif t.name in ("string", "varchar", "char"):
        fields.update(type=_PT.BYTE_ARRAY, converted_type=_CT.UTF8)
    elif t.name == "binary":
        fields.update(type=_PT.BYTE_ARRAY)
    elif t.name == "timestamp":
        fields.update(type=_PT.INT96)
    else:  # decimal
        fields.update(type=_PT.FIXED_LEN_BYTE_ARRAY, type_length=_decimal_width(t.precision),
                      converted_type=_CT.DECIMAL, precision=t.precision, scale=t.scale)
    return parquet_thrift.SchemaElement(**fields, i32=True)


def _series(column: Column, values: list[Any], dictionary: bool) -> pd.Series:
    """One row group's values of a column in the pandas form write_column encodes for its element."""
    t = column.type
    if t.name in _PARQUET_NUMERIC:
        data: Any = pd.array(values, dtype=_PARQUET_NUMERIC[t.name][2])
    elif t.name == "timestamp":
        ns = pd.array(values, dtype="Int64").to_numpy(dtype="int64", na_value=_NAT)
        data = ns.view("datetime64[ns]")  # NaT (int64 min) is null; INT96 keeps the nanoseconds
    elif t.name == "decimal":
        width = _decimal_width(t.precision)
        data = np.array([None if v is None else v.to_bytes(width, "big", signed=True) for v in values],
                        dtype=object)
    elif dictionary and sum(len(v) for v in set(values) if v is not None) <= _DICTIONARY_LIMIT:
        data = pd.Categorical(values)
    else:
        data = np.array(values, dtype=object)
    return pd.Series(data, name=column.name, copy=False)


def parquet_file(schema: Schema, columns: list[list[Any]], groups: list[tuple[int, int]],
                  serializer: SerializerOptions) -> bytes:
    elements = [_schema_element(c) for c in schema.columns]
    # write_column encodes from converted_type; a FLBA decimal must be written as the raw bytes it is.
    chunk_elements = [
        _without_converted_type(e) if e.type == _PT.FIXED_LEN_BYTE_ARRAY else e for e in elements
    ]
    # Only signed numbers get statistics: fastparquet's byte-array and INT96 min/max use orderings
    # readers do not expect, and wrong statistics would make engines skip row groups that match.
    stats = [e.type in (_PT.INT32, _PT.INT64, _PT.FLOAT, _PT.DOUBLE) for e in elements]
    compression = None if serializer.compression == "UNCOMPRESSED" else serializer.compression
    page_version = 2 if serializer.writer_version == "V2" else 1
    out = io.BytesIO()
    out.write(MARKER)
    row_groups = []
    for start, end in groups:
        chunks = [
            write_column(out, _series(col, values[start:end], serializer.enable_dictionary_compression),
                         element, compression=compression, datapage_version=page_version, stats=stat)
            for col, values, element, stat in zip(schema.columns, columns, chunk_elements, stats, strict=True)
        ]
        row_groups.append(parquet_thrift.RowGroup(
            num_rows=end - start, columns=chunks,
            total_byte_size=sum(c.meta_data.total_uncompressed_size for c in chunks), i32list=[1]))
    root = parquet_thrift.SchemaElement(name="schema", num_children=len(elements), i32=True)
    footer = parquet_thrift.FileMetaData(
        num_rows=groups[-1][1], schema=[root, *elements], version=1, created_by=created_by,
        row_groups=row_groups, key_value_metadata=[], i32list=[1])
    out.write(struct.pack("<I", write_thrift(out, footer)))
    out.write(MARKER)
    return out.getvalue()


def _without_converted_type(element: Any) -> Any:
    return parquet_thrift.SchemaElement(name=element.name, type=element.type, type_length=element.type_length,
                                        repetition_type=element.repetition_type, i32=True)


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


def orc_file(schema: Schema, columns: list[list[Any]], serializer: SerializerOptions,
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
        writer.writerows(zip(*columns, strict=True))
    return out.getvalue()
