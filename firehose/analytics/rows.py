"""Records ⇄ rows: how a SQL application's records become the rows of its input streams, and its rows records.

**In** (``map_records``): an ``InputSchema`` (or a reference's ``ReferenceSchema``) says how a record holds
rows and how each column is found in a row:

* ``JSON``: ``RecordRowPath`` is ``$`` (the record is one row) or a path to an array whose elements are
  the rows (``$.events[0:]``, ``$.events[*]``); each column's ``Mapping`` is a path from the row
  (``$.TICKER``, ``$.a.b``, ``$.a[0]``, ``$['odd name']``). A record may also hold several JSON documents
  one after another (what a preprocessor may return): each is read.
* ``CSV``: one row per ``RecordRowDelimiter``-separated line, fields split by ``RecordColumnDelimiter``
  (double quotes quote a field when the delimiter is one character), columns in order: a row with fewer
  fields than columns has NULLs in the rest.

Each value is coerced to its column's SQL type the way Kinesis Data Analytics does (sch-mapping.md):
JSON null (or a missing element) is NULL for every type; JSON booleans are 1/0 for numeric columns,
``true``/``false`` for character columns and an error for date/time columns; numbers and numeric strings
fit numeric columns (a fraction into an integer column is an error, as is a value out of the type's range);
character values longer than the column's length are truncated (our reading of the guide's "truncated to
the length" for booleans, applied to every value); objects and arrays mapped to a character column are
their JSON text; date/time columns take ISO-8601 text (``2018-06-13T14:11:05.766``, a space for ``T``
too) or epoch milliseconds as a number. A row that does not fit becomes one ``error_stream`` row
naming the column and the value (DATA_ROW: the hex of the whole record) and never fails the others.

Speed: with ``$`` as the row path and top-level mappings (the common case), the whole batch is read by
Arrow's JSON reader against the columns' types in one call (multi-threaded C++), and only a batch it
refuses (a value of another type, a record that is not one JSON object on one line) takes the exact path
record by record.

**Out** (``serialize_rows``): one record per row, a JSON object (the columns, ``ROWTIME`` included, as keys;
timestamps as ``yyyy-MM-dd HH:mm:ss.SSS``) or a CSV line, each ending with a newline so the objects a
delivery stream writes are newline-delimited (our choice: AWS leaves delimiting to the consumer).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from firehose.analytics.discovery import discover_schema
from firehose.analytics.reference import load_reference
from firehose.analytics.sqltypes import (
    ERROR_STREAM_SCHEMA,
    ROWTIME,
    Column,
    SqlType,
    SqlTypeError,
    StreamSchema,
    parse_sql_type,
)

__all__ = ["Mapped", "discover_schema", "load_reference", "map_records", "schema_of", "serialize_rows",
           "compile_path", "parse_rows"]

_EPOCH = dt.datetime(1970, 1, 1)
#: Records per attempt of the fast path after a batch as a whole was refused by it.
_CHUNK = 4096
_INT_RANGES = {"TINYINT": 8, "SMALLINT": 16, "INTEGER": 32, "BIGINT": 64}


@dataclass(frozen=True, slots=True)
class Mapped:
    """The rows of a batch of records, and an ``error_stream`` row for each row or record that did not fit."""

    rows: pa.Table
    errors: pa.Table


class _Unfit(ValueError):
    """A value that does not fit its column; the message names both."""


# -- schemas and paths --------------------------------------------------------------------------------


def schema_of(input_schema: dict[str, Any], name: str) -> StreamSchema:
    """The columns an ``InputSchema``/``ReferenceSchema`` declares, as the stream (or table) ``name``."""
    columns = []
    for i, column in enumerate(input_schema.get("RecordColumns") or []):
        col_name = column.get("Name") or ""
        try:
            columns.append(Column(col_name, parse_sql_type(column.get("SqlType") or "")))
        except SqlTypeError as exc:
            raise ValueError(f"RecordColumns[{i}] ({col_name!r}): {exc}") from exc
    if not columns:
        raise ValueError("RecordColumns must name at least one column")
    return StreamSchema(name, tuple(columns))


_STEP = re.compile(r"""\.([^.\[\]]+)|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*(-?\d+)\s*\]"""
                   r"""|\[\s*(\*|\d*\s*:\s*\d*)\s*\]""")

#: One step of a path: a member name, an index, or ``None`` for "every element" (``[*]``, ``[0:]``).
Step = str | int | None


def compile_path(path: str) -> tuple[Step, ...]:
    """``$.a['b c'][0].d`` → ``("a", "b c", 0, "d")``; ``[*]``/``[0:]`` → ``None``. ValueError when it is
    not a path of that form (the message quotes it)."""
    text = (path or "").strip()
    if not text.startswith("$"):
        raise ValueError(f"a JSON path starts with $: {path!r}")
    steps: list[Step] = []
    at = 1
    while at < len(text):
        match = _STEP.match(text, at)
        if match is None:
            raise ValueError(f"not a JSON path this daemon reads: {path!r}")
        name, single, double, index, every = match.groups()
        if name is not None:
            steps.append(name)
        elif single is not None or double is not None:
            steps.append(single if single is not None else double)  # type: ignore[arg-type]
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(None)
        at = match.end()
    return tuple(steps)


def _follow(value: Any, steps: Sequence[Step]) -> Any:
    for step in steps:
        if isinstance(step, str):
            value = value.get(step) if isinstance(value, dict) else None
        elif isinstance(step, int):
            value = value[step] if isinstance(value, list) and -len(value) <= step < len(value) else None
        else:
            return value if isinstance(value, list) else None
        if value is None:
            return None
    return value


def _rows_of(doc: Any, row_steps: Sequence[Step]) -> list[Any]:
    """The rows a document holds under ``RecordRowPath``."""
    if not row_steps:
        return [doc]
    if None in row_steps:
        cut = row_steps.index(None)
        found = _follow(doc, row_steps[:cut])
        if not isinstance(found, list):
            return []
        rest = row_steps[cut + 1:]
        return [r for element in found for r in _rows_of(element, rest)] if rest else list(found)
    found = _follow(doc, row_steps)
    return found if isinstance(found, list) else ([] if found is None else [found])


def _documents(data: bytes) -> list[Any]:
    """The JSON documents a record holds: one, or several one after another (whitespace between)."""
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError:
        pass
    docs = []
    for line in bytes(data).splitlines():
        if line.strip():
            docs.append(orjson.loads(line))  # raises: not JSON
    if not docs:
        raise ValueError("the record is empty")
    return docs


# -- coercion -------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


def _integer(value: Any, bits: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise _Unfit(f"{value!r} has a fraction")
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise _Unfit(f"{value!r} is not an integer") from None
    else:
        raise _Unfit(f"{_short(value)} is not a number")
    if not -(1 << (bits - 1)) <= number < (1 << (bits - 1)):
        raise _Unfit(f"{number} is out of range")
    return number


def _real(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Unfit(f"{value!r} is not a number") from None
    raise _Unfit(f"{_short(value)} is not a number")


def _decimal(value: Any, sql: SqlType) -> decimal.Decimal:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float, str)):
        raise _Unfit(f"{_short(value)} is not a number")
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise _Unfit(f"{value!r} is not a number") from None
    scale, precision = sql.scale or 0, sql.precision or 18
    number = number.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
    if len(number.as_tuple().digits) > precision and number != 0:
        raise _Unfit(f"{value!r} does not fit DECIMAL({precision},{scale})")
    return number


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, bool):
        raise _Unfit(f"{value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        return _EPOCH + dt.timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _Unfit(f"{value!r} is not a timestamp (ISO-8601 or epoch milliseconds)") from None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)  # millisecond precision
    raise _Unfit(f"{_short(value)} is not a timestamp")


def _date(value: Any) -> dt.date:
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    return _timestamp(value).date()


def _time(value: Any) -> dt.time:
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            raise _Unfit(f"{value!r} is not a time (HH:mm:ss[.SSS])") from None
    raise _Unfit(f"{_short(value)} is not a time")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Unfit(f"{_short(value)} is not a boolean")


def coerce(value: Any, sql: SqlType) -> Any:
    """``value`` (from JSON, or a CSV field's text) as the Python value of ``sql``'s Arrow type; ``_Unfit``
    (a ValueError) with the reason when it does not fit."""
    if value is None:
        return None
    name = sql.name
    if name in ("CHAR", "VARCHAR"):
        text = _text(value)
        return text[:sql.length] if sql.length is not None else text
    if name in _INT_RANGES:
        return _integer(value, _INT_RANGES[name])
    if name in ("REAL", "DOUBLE"):
        return _real(value)
    if name == "DECIMAL":
        return _decimal(value, sql)
    if name == "BOOLEAN":
        return _boolean(value)
    if name == "TIMESTAMP":
        return _timestamp(value)
    if name == "DATE":
        return _date(value)
    if name == "TIME":
        return _time(value)
    if name == "VARBINARY":
        raw = value.encode() if isinstance(value, str) else _text(value).encode()
        return raw[:sql.length] if sql.length is not None else raw
    raise _Unfit(f"no coercion to {sql}")


def _short(value: Any) -> str:
    text = _text(value)
    return repr(text if len(text) <= 64 else text[:61] + "...")


# -- mapping -------------------------------------------------------------------------------------------


class _Batch:
    """Rows and error rows as they are found, then made into tables."""

    def __init__(self, stream: StreamSchema) -> None:
        self.stream = stream
        self.columns: list[list[Any]] = [[] for _ in stream.columns]
        self.rowtimes: list[int] = []
        self.arrivals: list[int] = []
        self.errors: list[dict[str, Any]] = []

    def add(self, values: Sequence[Any], rowtime: int, arrival: int) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.rowtimes.append(rowtime)
        self.arrivals.append(arrival)

    def fail(self, data: bytes, rowtime: int, name: str, message: str) -> None:
        self.errors.append({ROWTIME: rowtime, "ERROR_TIME": rowtime, "ERROR_LEVEL": "Error", "ERROR_NAME": name,
                            "MESSAGE": message[:4096], "DATA_ROWTIME": rowtime, "DATA_ROW": bytes(data).hex()[:49152],
                            "PUMP_NAME": None})

    def tables(self, *, arrival: bool) -> Mapped:
        schema = self.stream.arrow_schema(rowtime=True, arrival=arrival)
        arrays = [pa.array(self.rowtimes, pa.int64()).cast(schema.field(0).type)]
        if arrival:
            arrays.append(pa.array(self.arrivals, pa.int64()).cast(schema.field(1).type))
        for column, values in zip(self.stream.columns, self.columns, strict=True):
            arrays.append(pa.array(values, column.type.arrow))
        return Mapped(pa.Table.from_arrays(arrays, schema=schema),
                      pa.Table.from_pylist(self.errors, schema=ERROR_STREAM_SCHEMA.arrow_schema()))


def parse_rows(data: bytes, input_schema: dict[str, Any]) -> list[list[Any]]:
    """The raw values of every row ``data`` holds (before coercion), in column order; ValueError when the
    record cannot be read at all."""
    record_format = input_schema.get("RecordFormat") or {}
    columns = input_schema.get("RecordColumns") or []
    mapping = record_format.get("MappingParameters") or {}
    if record_format.get("RecordFormatType") == "CSV":
        params = mapping.get("CSVMappingParameters") or {}
        text = bytes(data).decode("utf-8")
        rows = []
        for fields in _csv_rows(text, params.get("RecordRowDelimiter") or "\n",
                                params.get("RecordColumnDelimiter") or ","):
            rows.append([(fields[i] if i < len(fields) and fields[i] != "" else None) for i in range(len(columns))])
        return rows
    row_path = compile_path((mapping.get("JSONMappingParameters") or {}).get("RecordRowPath") or "$")
    paths = [compile_path(c.get("Mapping") or f"$.{c.get('Name')}") for c in columns]
    return [[_follow(row, p) for p in paths] for doc in _documents(data) for row in _rows_of(doc, row_path)]


def _csv_rows(text: str, row_delimiter: str, column_delimiter: str) -> Iterable[list[str]]:
    row_delimiter = row_delimiter.replace("\\n", "\n").replace("\\r", "\r").replace("\\t", "\t")
    column_delimiter = column_delimiter.replace("\\t", "\t")
    lines = [line for line in text.split(row_delimiter) if line.strip("\r")]
    if len(column_delimiter) == 1:
        yield from csv.reader((line.rstrip("\r") for line in lines), delimiter=column_delimiter)
    else:
        for line in lines:
            yield line.rstrip("\r").split(column_delimiter)


def _exact(records: Sequence[bytes], input_schema: dict[str, Any], stream: StreamSchema,
           rowtimes: Sequence[int], arrivals: Sequence[int], batch: _Batch) -> None:
    types = [c.type for c in stream.columns]
    names = [c.name for c in stream.columns]
    for data, rowtime, arrival in zip(records, rowtimes, arrivals, strict=True):
        try:
            rows = parse_rows(data, input_schema)
        except (ValueError, UnicodeDecodeError) as exc:
            batch.fail(data, rowtime, "Record_parse_error", f"The record could not be read: {exc}")
            continue
        for raw in rows:
            values = []
            try:
                for name, sql, value in zip(names, types, raw, strict=True):
                    try:
                        values.append(coerce(value, sql))
                    except (_Unfit, ArithmeticError, OverflowError) as exc:
                        raise _Unfit(f"Column {name} ({sql}): {exc}") from None
            except _Unfit as exc:
                batch.fail(data, rowtime, "Type_conversion_error", str(exc))
                continue
            batch.add(values, rowtime, arrival)


def _fast(records: Sequence[bytes], input_schema: dict[str, Any], stream: StreamSchema,
          rowtimes: Sequence[int], arrivals: Sequence[int]) -> pa.Table | None:
    """The rows of a batch of one-line JSON objects with top-level mappings, read by Arrow in one call;
    None when the batch does not qualify or Arrow refuses it (the exact path then reads it)."""
    record_format = input_schema.get("RecordFormat") or {}
    if record_format.get("RecordFormatType", "JSON") != "JSON":
        return None
    row_path = ((record_format.get("MappingParameters") or {}).get("JSONMappingParameters") or {}).get(
        "RecordRowPath") or "$"
    if row_path.strip() != "$":
        return None
    fields: list[str] = []
    for column, spec in zip(stream.columns, input_schema.get("RecordColumns") or [], strict=True):
        steps = compile_path(spec.get("Mapping") or f"$.{column.name}")
        if len(steps) != 1 or not isinstance(steps[0], str) or column.type.name in ("DECIMAL", "BOOLEAN", "TIME",
                                                                                       "VARBINARY", "DATE"):
            return None
        fields.append(steps[0])
    if len(set(fields)) != len(fields):
        return None
    buffer = b"\n".join(records)
    if buffer.count(b"\n") != len(records) - 1:
        return None  # a record spans lines: one record would not be one row
    schema = pa.schema([pa.field(f, c.type.arrow) for f, c in zip(fields, stream.columns, strict=True)])
    try:
        table = pa_json.read_json(io.BytesIO(buffer), read_options=pa_json.ReadOptions(block_size=1 << 24),
                                  parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                                                     unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(records):
        return None
    arrays: list[pa.Array] = [pa.array(rowtimes, pa.int64()).cast(pa.timestamp("ms")),
                              pa.array(arrivals, pa.int64()).cast(pa.timestamp("ms"))]
    for field, column in zip(fields, stream.columns, strict=True):
        array = table.column(field).combine_chunks()
        if column.type.is_character and column.type.length is not None and len(array):
            longest = pc.max(pc.utf8_length(array)).as_py()
            if longest is not None and longest > column.type.length:
                array = pc.utf8_slice_codeunits(array, 0, column.type.length)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=stream.arrow_schema(rowtime=True, arrival=True))


def map_records(records: Sequence[bytes], schema: dict[str, Any], *, rowtimes: Sequence[int],
                arrivals: Sequence[int]) -> Mapped:
    """The rows ``records`` hold under the input schema ``schema``; ``rowtimes``/``arrivals`` are each record's
    ROWTIME and APPROXIMATE_ARRIVAL_TIME in epoch milliseconds (a record's rows share them)."""
    stream = schema_of(schema, "input")
    fast = _fast(records, schema, stream, rowtimes, arrivals) if records else None
    if fast is not None:
        return Mapped(fast, ERROR_STREAM_SCHEMA.arrow_schema().empty_table())
    if len(records) > _CHUNK:  # a few bad records: only their chunks take the exact path
        parts = [map_records(records[i:i + _CHUNK], schema, rowtimes=rowtimes[i:i + _CHUNK],
                             arrivals=arrivals[i:i + _CHUNK]) for i in range(0, len(records), _CHUNK)]
        return Mapped(pa.concat_tables([p.rows for p in parts]), pa.concat_tables([p.errors for p in parts]))
    batch = _Batch(stream)
    _exact(records, schema, stream, rowtimes, arrivals, batch)
    return batch.tables(arrival=True)


def map_table(records: Sequence[bytes], schema: dict[str, Any], name: str) -> tuple[pa.Table, int]:
    """The rows of a reference object (no ROWTIME) and how many rows or records were skipped."""
    stream = schema_of(schema, name)
    zeros = [0] * len(records)
    batch = _Batch(stream)
    _exact(records, schema, stream, zeros, zeros, batch)
    mapped = batch.tables(arrival=False)
    return mapped.rows.drop_columns([ROWTIME]), mapped.errors.num_rows


# -- out -------------------------------------------------------------------------------------------------


def _display(table: pa.Table) -> pa.Table:
    """Timestamps as ``yyyy-MM-dd HH:mm:ss.SSS`` text, decimals as doubles (for JSON and CSV)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            # %S of a millisecond timestamp carries its fraction: 14:11:05.766
            column = pc.strftime(column.cast(pa.timestamp("ms")), format="%Y-%m-%d %H:%M:%S")
        elif pa.types.is_decimal(field.type):
            column = column.cast(pa.float64())
        elif pa.types.is_date(field.type) or pa.types.is_time(field.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def serialize_rows(rows: pa.Table, record_format: str) -> list[bytes]:
    """One record per row: a JSON object or a CSV line (``DestinationSchema.RecordFormatType``), each ending
    with a newline."""
    if rows.num_rows == 0:
        return []
    shown = _display(rows)
    if record_format == "CSV":
        out = []
        for row in zip(*(c.to_pylist() for c in shown.columns), strict=True):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerow(
                ["" if v is None else ("true" if v is True else "false" if v is False else v) for v in row])
            out.append(buffer.getvalue().encode())
        return out
    return [orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in shown.to_pylist()]
