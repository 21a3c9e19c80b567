"""SQL column types of Kinesis Data Analytics applications, as Arrow and DuckDB types.

Input schemas (``RecordColumns[].SqlType``), reference schemas and ``CREATE STREAM`` column
definitions all name types the same way (``VARCHAR(4)``, ``DECIMAL(10,2)``, ``TIMESTAMP`` ...);
this module is the only place those names are read and turned into the types rows carry (Arrow)
and the engine computes with (DuckDB), so an input column and the stream column it fills can never
disagree about what a type means.

Every in-application stream also has ``ROWTIME`` (the time a row entered the application, UTC,
millisecond precision, never decreasing) and input streams ``APPROXIMATE_ARRIVAL_TIME`` (the
source's arrival time); both are ``TIMESTAMP`` columns the engine adds, not part of a schema.
Timestamps are naive UTC ``timestamp[ms]`` throughout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads with the first application that runs, not with the daemon
    import pyarrow as pa

ROWTIME = "ROWTIME"
APPROXIMATE_ARRIVAL_TIME = "APPROXIMATE_ARRIVAL_TIME"
ERROR_STREAM = "error_stream"

#: Type name (upper case, synonyms folded) → (Arrow type, as ``pyarrow.<factory>(*args)``, DuckDB type name).
_SIMPLE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "TINYINT": ("int8", (), "TINYINT"),
    "SMALLINT": ("int16", (), "SMALLINT"),
    "INTEGER": ("int32", (), "INTEGER"),
    "BIGINT": ("int64", (), "BIGINT"),
    "REAL": ("float32", (), "REAL"),
    "DOUBLE": ("float64", (), "DOUBLE"),
    "BOOLEAN": ("bool_", (), "BOOLEAN"),
    "DATE": ("date32", (), "DATE"),
    "TIME": ("time32", ("ms",), "TIME"),
    "TIMESTAMP": ("timestamp", ("ms",), "TIMESTAMP"),
}


def timestamp_arrow() -> pa.DataType:
    """The Arrow type of every TIMESTAMP (ROWTIME included): naive UTC, milliseconds."""
    import pyarrow as pa

    return pa.timestamp("ms")
_SYNONYMS = {"INT": "INTEGER", "FLOAT": "DOUBLE", "DOUBLE PRECISION": "DOUBLE", "DEC": "DECIMAL",
             "NUMERIC": "DECIMAL", "CHARACTER": "CHAR", "CHARACTER VARYING": "VARCHAR", "BINARY": "VARBINARY"}
_FORM = re.compile(r"\s*([A-Za-z][A-Za-z ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*", re.ASCII)
#: Longest character/binary value a column may declare (a row is at most 512 KB).
MAX_LENGTH = 512 * 1024


class SqlTypeError(ValueError):
    """A type name this daemon does not know, or arguments it does not take; the message says which."""


@dataclass(frozen=True, slots=True)
class SqlType:
    """One column type. ``length`` for CHAR/VARCHAR/VARBINARY; ``precision``/``scale`` for DECIMAL."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    @property
    def arrow(self) -> pa.DataType:
        import pyarrow as pa

        if self.name in ("CHAR", "VARCHAR"):
            return pa.string()
        if self.name == "VARBINARY":
            return pa.binary()
        if self.name == "DECIMAL":
            return pa.decimal128(self.precision or 18, self.scale or 0)
        factory, args, _duck = _SIMPLE[self.name]
        return getattr(pa, factory)(*args)  # type: ignore[no-any-return]

    @property
    def duckdb(self) -> str:
        if self.name in ("CHAR", "VARCHAR"):
            return "VARCHAR"
        if self.name == "VARBINARY":
            return "BLOB"
        if self.name == "DECIMAL":
            return f"DECIMAL({self.precision or 18},{self.scale or 0})"
        return _SIMPLE[self.name][2]

    @property
    def is_character(self) -> bool:
        return self.name in ("CHAR", "VARCHAR")

    @property
    def is_numeric(self) -> bool:
        return self.name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "REAL", "DOUBLE", "DECIMAL")

    @property
    def is_temporal(self) -> bool:
        return self.name in ("DATE", "TIME", "TIMESTAMP")

    def __str__(self) -> str:
        if self.name == "DECIMAL" and self.precision is not None:
            return f"DECIMAL({self.precision},{self.scale or 0})"
        if self.length is not None:
            return f"{self.name}({self.length})"
        return self.name


def parse_sql_type(text: str) -> SqlType:
    """``VARCHAR(4)`` → ``SqlType("VARCHAR", length=4)``; raises ``SqlTypeError`` naming what is wrong."""
    match = _FORM.fullmatch(text or "")
    if match is None:
        raise SqlTypeError(f"Invalid SQL type: {text!r}")
    name = " ".join(match.group(1).upper().split())
    name = _SYNONYMS.get(name, name)
    first = int(match.group(2)) if match.group(2) is not None else None
    second = int(match.group(3)) if match.group(3) is not None else None
    if name in ("CHAR", "VARCHAR", "VARBINARY"):
        if second is not None:
            raise SqlTypeError(f"{name} takes one length, not two: {text!r}")
        length = first if first is not None else (1 if name == "CHAR" else None)
        if name != "CHAR" and length is None:
            raise SqlTypeError(f"{name} needs a length, as in {name}(64): {text!r}")
        if length is not None and not 1 <= length <= MAX_LENGTH:
            raise SqlTypeError(f"{name} length must be between 1 and {MAX_LENGTH}: {text!r}")
        return SqlType(name, length=length)
    if name == "DECIMAL":
        precision = first if first is not None else 18
        scale = second if second is not None else 0
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise SqlTypeError(f"DECIMAL precision must be 1-38 and scale 0-precision: {text!r}")
        return SqlType(name, precision=precision, scale=scale)
    if name not in _SIMPLE:
        raise SqlTypeError(f"Unsupported SQL type: {text!r}")
    if first is not None:
        raise SqlTypeError(f"{name} takes no length: {text!r}")
    return SqlType(name)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: SqlType


@dataclass(frozen=True, slots=True)
class StreamSchema:
    """The columns of an in-application stream or table, without ``ROWTIME`` (which every stream has)."""

    name: str
    columns: tuple[Column, ...]

    def arrow_schema(self, *, rowtime: bool = True, arrival: bool = False) -> pa.Schema:
        """Arrow schema of the stream's rows: ``ROWTIME`` first (when asked), then
        ``APPROXIMATE_ARRIVAL_TIME`` (input streams), then the columns in order."""
        import pyarrow as pa

        fields = [pa.field(ROWTIME, timestamp_arrow())] if rowtime else []
        if arrival:
            fields.append(pa.field(APPROXIMATE_ARRIVAL_TIME, timestamp_arrow()))
        fields.extend(pa.field(c.name, c.type.arrow) for c in self.columns)
        return pa.schema(fields)


#: The in-application error stream's columns (error-handling.md): what a row that could not be
#: mapped or computed becomes. DATA_ROW is the hex of the original record.
ERROR_STREAM_SCHEMA = StreamSchema(ERROR_STREAM, (
    Column("ERROR_TIME", SqlType("TIMESTAMP")),
    Column("ERROR_LEVEL", SqlType("VARCHAR", length=10)),
    Column("ERROR_NAME", SqlType("VARCHAR", length=32)),
    Column("MESSAGE", SqlType("VARCHAR", length=4096)),
    Column("DATA_ROWTIME", SqlType("TIMESTAMP")),
    Column("DATA_ROW", SqlType("VARCHAR", length=49152)),
    Column("PUMP_NAME", SqlType("VARCHAR", length=128)),
))
