"""JSON records → an Arrow table in a table's schema, and Arrow schemas inferred from JSON.

Kept apart from the rest of the destination so it can later share a records→Arrow conversion with
format conversion (``firehose/encoding``). Two paths, same rules:

* fast: every record of a batch, one per line, read by pyarrow's C++ JSON reader against the
  table's schema; used when it reads exactly one row per record;
* slow (something did not fit): each record read alone, so the records that do not fit are named
  one by one with the reason, and the rest still go to the table.

Type rules (spec: iceberg.md §4): JSON types must match the column (a string is not a number; an
integer fits a double column; a fraction does not fit a long); a key the table has no column for
is ignored, unless schema evolution is on (``new_fields``); a required column that a record lacks
rejects it. Timestamps are integers of microseconds since the epoch, as AWS documents (not
ISO strings, whose units AWS does not guess either); dates are ``YYYY-MM-DD`` strings.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

#: errorCodes of records that do not fit (spec: iceberg.md §6; the first is AWS's own).
MISSING_COLUMN = "Iceberg.MissingColumnWithinRecord"
TYPE_MISMATCH = "Iceberg.TypeMismatch"
NOT_JSON = "Iceberg.InvalidRecord"


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rows:
    """The records that fit, as a table in the target schema, and those that did not."""

    table: pa.Table
    #: Record index of each row of ``table``.
    indexes: tuple[int, ...]
    rejected: tuple[Rejected, ...]


def _read_type(t: pa.DataType) -> pa.DataType:
    """How the JSON reader reads a column of type ``t`` (then cast to ``t``)."""
    if pa.types.is_timestamp(t):
        return pa.int64()  # microseconds since the epoch, as AWS sends them
    if pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_read_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_read_type(t.value_type)))
    return t


def _read_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _read_type(f.type), nullable=True) for f in schema])


def _read(data: bytes, read_schema: pa.Schema, ignore_unknown: bool, *, one: bool = False) -> pa.Table:
    """``data`` read as JSON lines. A batch is read in 1 MiB blocks, on the calling thread: the daemon
    reads several batches at once on its own threads, and the reader's thread pool only added CPU (a
    fifth more per batch, measured); a record spread over several lines fails the batch (the slow path
    then reads it alone: ``one``)."""
    opts = pj.ParseOptions(explicit_schema=read_schema, newlines_in_values=one,
                           unexpected_field_behavior="ignore" if ignore_unknown else "error")
    block = max(1 << 16, len(data) + 1) if one else 1 << 20
    return pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=block, use_threads=False),
                        parse_options=opts)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The read columns in the table's types (timestamps from microseconds, dates from strings)."""
    columns = []
    for f in schema:
        col = table.column(f.name)
        if col.type != f.type:
            if pa.types.is_timestamp(f.type):
                col = pc.cast(col, pa.timestamp("us", tz=f.type.tz))
            col = pc.cast(col, f.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _nulls_in_required(table: pa.Table, schema: pa.Schema, required: Sequence[str]) -> list[int]:
    bad: set[int] = set()
    for name in required:
        mask = pc.is_null(table.column(name))
        if pc.any(mask).as_py():
            bad.update(pc.indices_nonzero(mask).to_pylist())
    return sorted(bad)


def to_rows(records: Sequence[bytes | memoryview], schema: pa.Schema, *, required: Sequence[str] = (),
            ignore_unknown: bool = True) -> Rows:
    """``records`` (JSON objects) as a table in ``schema``; ``required``: columns a record must have.

    With ``ignore_unknown`` False a key ``schema`` lacks rejects the record (the caller evolves the
    schema first: ``new_fields``)."""
    read_schema = _read_schema(schema)
    arrow_schema = pa.schema([f.with_nullable(True) for f in schema])
    try:
        table = _read(b"\n".join(records), read_schema, ignore_unknown)  # join takes memoryviews too
        if table.num_rows == len(records):
            table = _cast(table, arrow_schema)
            bad = _nulls_in_required(table, schema, required)
            if not bad:
                return Rows(_in(table, schema), tuple(range(len(records))), ())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    return _one_by_one(records, schema, read_schema, arrow_schema, required, ignore_unknown)


def _one_by_one(records: Sequence[bytes | memoryview], schema: pa.Schema, read_schema: pa.Schema,
                arrow_schema: pa.Schema, required: Sequence[str], ignore_unknown: bool) -> Rows:
    tables: list[pa.Table] = []
    indexes: list[int] = []
    rejected: list[Rejected] = []
    for i, record in enumerate(records):
        try:
            table = _read(bytes(record), read_schema, ignore_unknown, one=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            rejected.append(_explain(i, record, schema, str(exc)))
            continue
        if table.num_rows != 1:
            rejected.append(Rejected(i, NOT_JSON, "the record is not one JSON object"))
            continue
        try:
            table = _cast(table, arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            rejected.append(Rejected(i, TYPE_MISMATCH, f"a value does not fit its column's type: {exc}"))
            continue
        missing = [n for n in required if table.column(n)[0].as_py() is None]
        if missing:
            rejected.append(Rejected(i, MISSING_COLUMN, f"the record has no value for the required column(s) "
                                                        f"{', '.join(missing)}"))
            continue
        tables.append(table)
        indexes.append(i)
    table = pa.concat_tables(tables) if tables else arrow_schema.empty_table()
    return Rows(_in(table, schema), tuple(indexes), tuple(rejected))


def _in(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with ``schema``'s nullability (required columns were checked for nulls)."""
    return pa.Table.from_arrays(table.columns, schema=schema)


def _explain(index: int, record: bytes | memoryview, schema: pa.Schema, error: str) -> Rejected:
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        return Rejected(index, NOT_JSON, f"the record is not JSON: {exc}")
    if not isinstance(value, dict):
        return Rejected(index, NOT_JSON, f"the record is a JSON {type(value).__name__}, not an object")
    unknown = sorted(set(value) - set(schema.names))
    if "unexpected field" in error and unknown:
        return Rejected(index, MISSING_COLUMN, f"the table has no column for {', '.join(unknown)}")
    return Rejected(index, TYPE_MISMATCH, f"a value does not fit its column's type: {error}")


# -- inferring a schema (table creation, schema evolution) ----------------------------------------


def infer_type(value: object) -> pa.DataType | None:
    """The Arrow type of a JSON value (our choice, spec: iceberg.md §9.4); None for null/empty."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, dict):
        fields = [pa.field(k, t) for k, v in value.items() if (t := infer_type(v)) is not None]
        return pa.struct(fields) if fields else None
    if isinstance(value, list):
        for item in value:
            t = infer_type(item)
            if t is not None:
                return pa.list_(t)
    return None


def new_fields(records: Sequence[bytes | memoryview], known: set[str]) -> pa.Schema:
    """Top-level keys of the records that are not in ``known``, with types inferred from the first
    non-null value of each (in record order). Records that are not JSON objects are skipped here:
    reading them rejects them later."""
    found: dict[str, pa.DataType] = {}
    for record in records:
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(value, dict):
            continue
        for key, v in value.items():
            if key in known or key in found:
                continue
            t = infer_type(v)
            if t is not None:
                found[key] = t
    return pa.schema([pa.field(k, t) for k, t in found.items()])
