"""Hive table schemas as Arrow schemas, and converted column values as Arrow tables.

The Parquet writer of format conversion builds its file from these tables, and any other writer
of Arrow data from records (a table format that takes Arrow batches) can reuse them: convert the
records with ``convert.to_arrow`` (the SerDe rules, record by record) or map a schema with
``arrow_schema``.

Type mapping (Hive → Arrow), chosen so that the Parquet file pyarrow writes has the physical and
logical types Hive's Parquet writer gives the same column (timestamps are INT96 by the writer's
option, not by the Arrow type):

=====================  ============================
string, varchar, char  string (Arrow has no length-bound text; the value is already cut/padded)
tinyint / smallint     int8 / int16 (Parquet INT32 annotated INT(8) / INT(16))
int / bigint           int32 / int64
float / double         float32 / float64
boolean                bool
binary                 binary
timestamp              timestamp[ns], no zone (the instant in UTC, as Hive's timestamp)
date                   date32
decimal(p,s)           decimal128(p,s) (Parquet FIXED_LEN_BYTE_ARRAY DECIMAL, as Hive writes it)
array<t>               list<t>
map<k,v>               map<k,v> (keys are never null)
struct<f:t,...>        struct<f:t,...> (field names as declared)
=====================  ============================

Every column and every nested value is nullable, as in Hive.

Values arrive in the form ``convert``'s coercions give them (``convert.py``, ``_Rules.arrow``):
int nanoseconds since the epoch for timestamps, int days since 1970-01-01 for dates, exact
``Decimal`` for decimals, UTF-8 ``bytes`` for binary, a tuple in field order for a struct, a dict
for a map, a list for an array, None for null at any level. pyarrow takes each of these as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from firehose.encoding.convert import HiveType, Schema

_PRIMITIVE: dict[str, pa.DataType] = {
    "string": pa.string(), "varchar": pa.string(), "char": pa.string(),
    "tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32(), "bigint": pa.int64(),
    "float": pa.float32(), "double": pa.float64(), "boolean": pa.bool_(), "binary": pa.binary(),
    "timestamp": pa.timestamp("ns"), "date": pa.date32(),
}


def arrow_type(t: HiveType) -> pa.DataType:
    """The Arrow type of one Hive type (see the module docstring), nested to any depth."""
    if t.name in _PRIMITIVE:
        return _PRIMITIVE[t.name]
    if t.name == "decimal":
        return pa.decimal128(t.precision, t.scale)
    if t.name == "array":
        return pa.list_(arrow_type(t.children[0]))
    if t.name == "map":
        return pa.map_(arrow_type(t.children[0]), arrow_type(t.children[1]))
    if t.name == "struct":
        return pa.struct([pa.field(name, arrow_type(child)) for name, child in zip(t.fields, t.children, strict=True)])
    raise ValueError(f"type {t} has no Arrow counterpart")


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a table schema: one nullable field per column, in order."""
    return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in schema.columns])


def table(schema: Schema, columns: Sequence[Sequence[Any]], arrow: pa.Schema | None = None) -> pa.Table:
    """Converted values, one list per column in schema order, as an Arrow table.

    Raises (pyarrow's ArrowInvalid / ArrowTypeError / OverflowError) only for values the coercions
    should have refused; ``convert`` treats that as the writer failing the batch.
    """
    arrow = arrow or arrow_schema(schema)
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, arrow, strict=True)]
    return pa.Table.from_arrays(arrays, schema=arrow)
