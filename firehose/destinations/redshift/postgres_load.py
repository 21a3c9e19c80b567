"""The PostgreSQL load: a ``jdbc:postgresql://`` URL loads a staged batch's own bytes.

PostgreSQL cannot read s3://, so the daemon feeds the batch to ``COPY <table> FROM STDIN``,
reading it as Redshift's COPY would with the CopyOptions it can honour (``copy_command``):

* CSV goes straight to PostgreSQL's CSV parser (``load_csv``), in the daemon's thread pool.
* Text and JSON become rows first, in a worker process (``load_rows``): Redshift's text format
  keeps backslashes as data, which PostgreSQL's would read as escapes, and JSON 'auto' matches
  keys to columns. The worker renders the rows as COPY text and streams them in on its own kept
  connection, several batches side by side.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.copy import Copy, Writer

from firehose.definitions import CopyCommand
from firehose.destinations.redshift import loaded_batches, session
from firehose.destinations.redshift.copy_command import LoadFormat, copy_target
from firehose.errors import DestinationError
from firehose.records import FileRange, read_ranges

#: The target table's columns in order, and whether each is text (so an empty field is a value).
_COLUMNS = ("SELECT a.attname, t.typcategory = 'S', t.typname IN ('float4', 'float8') "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
            "ORDER BY a.attnum")
#: Bytes of rendered rows handed to COPY at a time: PostgreSQL parses one piece while the next is made.
_COPY_CHUNK = 256 * 1024


# -- the target's columns -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # case-folded, unquoted: what JSON object keys are matched against
    text: bool  # a text type, where an empty field is an empty string rather than NULL
    binary_float: bool = False  # real/double precision: a float's shortest repr loads the same value


def _identifier(name: str) -> str:
    """A column name as PostgreSQL resolves it: quoted names exactly, others in lower case."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name.lower()


def _columns(cur: psycopg.Cursor[Any], cmd: CopyCommand) -> list[Column]:
    """The columns rows are built for: DataTableColumns, or else the table's own, from the catalog."""
    cur.execute(_COLUMNS, (cmd.data_table_name,))
    catalog: dict[str, tuple[bool, bool]] = {name: (text, real) for name, text, real in cur.fetchall()}
    listed = cmd.data_table_columns
    names = [_identifier(c) for c in listed.split(",")] if listed else list(catalog)
    # A name missing from the catalog is left to COPY, which names it in its error.
    return [Column(name.casefold(), *catalog.get(name, (True, False))) for name in names]


def read_columns(endpoint: session.Endpoint, cmd: CopyCommand) -> list[Column]:
    """The target's columns; also makes sure firehose_loaded_batches exists before loads run
    side by side (two concurrent CREATE TABLE IF NOT EXISTS can collide in PostgreSQL)."""
    def read(conn: psycopg.Connection[Any]) -> list[Column]:
        with conn.transaction():
            cur = conn.cursor()
            columns = _columns(cur, cmd)
            cur.execute(loaded_batches.CREATE_TABLE)
        return columns

    return session.run(endpoint, read, f"reading the columns of {cmd.data_table_name} on {endpoint.where} failed")


# -- the staged object, read as Redshift reads it ---------------------------------------


def _gunzip(data: bytes | bytearray) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DestinationError(f"the staged object is not valid gzip: {exc}") from exc


def _utf8(data: bytes | bytearray) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DestinationError(f"the staged object is not UTF-8 text: {exc}") from exc


def _skip_lines(data: bytes | bytearray, n: int) -> bytes | bytearray:
    """IGNOREHEADER: drop the first ``n`` lines."""
    parts = data.split(b"\n", n)
    return parts[n] if len(parts) > n else b""


def _text_rows(text: str, fmt: LoadFormat, columns: list[Column]) -> Iterator[list[str | None]]:
    """Redshift's default text format: a record per line, fields split on the delimiter, no escapes.

    The NULL AS string loads NULL, and so does an empty field of a non-text column (Redshift
    loads empty CHAR/VARCHAR fields as empty strings and other empty fields as NULL).
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        fields = line.split(fmt.delimiter)
        yield [None if f == fmt.null or (f == "" and i < len(columns) and not columns[i].text) else f
               for i, f in enumerate(fields)]


def _json_field(value: object) -> str | None:
    """A JSON value as COPY input: scalars as text (numbers exactly as written), objects and arrays
    as their JSON text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=float)
    return str(value)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _json_rows(text: str, columns: list[Column]) -> Iterator[list[str | None]]:
    """JSON 'auto': JSON objects back to back (or on lines); keys match columns case-insensitively,
    keys without a column are ignored and columns without a key load NULL."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    pos = _skip_space(text, 0)
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DestinationError(f"JSON 'auto': the staged object is not JSON objects: {exc}") from exc
        if not isinstance(value, dict):
            raise DestinationError(f"JSON 'auto' loads JSON objects, found a JSON {type(value).__name__}")
        yield _json_row(value, columns)
        pos = _skip_space(text, pos)


def _json_row(value: dict[str, object], columns: list[Column]) -> list[str | None]:
    fields = {k.casefold(): v for k, v in value.items()}
    return [_json_field(fields.get(c.key)) for c in columns]


_MISSING = object()


def _fast_json_rows(data: bytes | bytearray, columns: list[Column]) -> Iterator[Sequence[Any]]:
    """``_json_rows`` for the common case, one object per line, parsed by orjson (ten times faster).

    A line orjson cannot read as one object (objects back to back, an integer over 64 bits, bad
    JSON), or whose value for a column is a float (whose text only the exact parser keeps: "1.50"
    stays "1.50"), goes through ``_json_rows``, so the rows are the same either way, except that a
    key spelled exactly like the column wins over one that differs only in case.
    """
    keys = [(c.key, c.binary_float) for c in columns]
    names = [c.key for c in columns]
    pick = itemgetter(*names) if len(names) > 1 else (lambda doc: (doc[names[0]],))
    # Whether write_row renders a row's values exactly as the exact reader would, by the values'
    # types: str, int and None anywhere, float only where the column is real/double precision.
    # Rows of one batch mostly share their types, so the verdict is remembered per type tuple.
    plain = {str, int, type(None)}
    verdicts: dict[tuple[type, ...], bool] = {}

    def renders_exactly(types: tuple[type, ...]) -> bool:
        return all(t in plain or (t is float and bf) for t, (_, bf) in zip(types, keys, strict=True))

    loads = orjson.loads
    for line in data.split(b"\n"):
        try:
            doc = loads(line)
        except orjson.JSONDecodeError:
            if line.strip():
                yield from _json_rows(_utf8(line), columns)
            continue
        if type(doc) is not dict:
            yield from _json_rows(_utf8(line), columns)
            continue
        try:
            values = pick(doc)
        except KeyError:
            values = None
        if values is not None:
            types = tuple(map(type, values))
            verdict = verdicts.get(types)
            if verdict is None:
                verdict = verdicts[types] = renders_exactly(types)
            if verdict:
                yield values
                continue
        yield _slow_row(doc, line, keys, columns)


def _slow_row(doc: dict[str, Any], line: bytes | bytearray, keys: list[tuple[str, bool]],
              columns: list[Column]) -> list[Any]:
    """One parsed line whose keys or values need more than the fast path gives them."""
    row: list[Any] = []
    folded: dict[str, object] | None = None
    for key, binary_float in keys:
        v = doc.get(key, _MISSING)
        if v is _MISSING:  # no key of exactly this name: match it case-insensitively
            if folded is None:
                folded = {k.casefold(): x for k, x in doc.items()}
            v = folded.get(key)
        t = type(v)
        if t is str or t is int or v is None:
            row.append(v)
        elif t is bool:
            row.append("true" if v else "false")
        elif t is dict or t is list:
            row.append(orjson.dumps(v).decode())
        elif t is float and binary_float:
            row.append(v)
        else:  # a float for a numeric or text column: only the exact parser keeps its text as written
            return _json_row(json.loads(line, parse_float=Decimal), columns)
    return row


# -- loading -------------------------------------------------------------------------------


def load_csv(cur: psycopg.Cursor[Any], cmd: CopyCommand, fmt: LoadFormat, body: bytes) -> None:
    """Load a staged CSV object with ``COPY ... FROM STDIN``: PostgreSQL's own CSV parser reads it.

    (Text and JSON objects become rows first, in a worker process: see ``load_rows``.)
    """
    target = sql.SQL(copy_target(cmd))
    data = _skip_lines(_gunzip(body) if fmt.gzip else body, fmt.ignore_header)
    query = sql.SQL("COPY {} FROM STDIN (FORMAT csv, DELIMITER {}, QUOTE {}, NULL {})").format(
        target, sql.Literal(fmt.delimiter), sql.Literal(fmt.quote), sql.Literal(fmt.null))
    with cur.copy(query) as copy:
        copy.write(data)


@dataclass(frozen=True)
class RowLoad:
    """What a process needs to load a batch's rows itself (picklable: it crosses to a worker)."""

    endpoint: session.Endpoint
    cmd: CopyCommand
    fmt: LoadFormat
    columns: list[Column]


def load_rows(load: RowLoad, batch_key: str, body: bytes | tuple[FileRange, ...]) -> tuple[bool, str, str]:
    """Parse a staged batch into rows and stream them into the table, exactly once per batch key.

    Runs in a worker process: the rows never travel back to the daemon, and PostgreSQL parses
    each piece of the COPY stream while the next is being made. ``body`` is the batch's bytes, or
    where they lie on disk (the batch's spooled records), read here rather than sent through a
    pipe. Returns (loaded, error, code): loaded is False when an earlier attempt had loaded the
    batch already; an error is the server's message and its errorCode, for the daemon to retry
    with (exceptions would have to survive pickling).
    """
    try:
        data: bytes | bytearray = body if isinstance(body, bytes) else _read_spooled(body)
        return _load_rows(load, batch_key, data), "", ""
    except DestinationError as exc:
        return False, exc.message, exc.code


def _read_spooled(ranges: tuple[FileRange, ...]) -> bytearray:
    try:
        return read_ranges(ranges)
    except OSError as exc:
        raise DestinationError(f"reading the batch's records from the spool failed: {exc}") from exc


def _load_rows(load: RowLoad, batch_key: str, body: bytes | bytearray) -> bool:
    def stream(cur: psycopg.Cursor[Any]) -> None:
        _stream_rows(cur, load, body)

    return session.run(load.endpoint, lambda conn: loaded_batches.load_once(conn, batch_key, stream),
                       f"COPY into {load.cmd.data_table_name} on {load.endpoint.where} failed")


def _stream_rows(cur: psycopg.Cursor[Any], load: RowLoad, body: bytes | bytearray) -> None:
    """The batch's rows as a text-format COPY stream, rendered as psycopg's own row formatter
    (``Copy.write_row``) renders them. PostgreSQL's text format reads backslashes as escapes,
    which Redshift's does not, hence parsing here rather than passing the bytes through."""
    fmt = load.fmt
    data = _skip_lines(_gunzip(body) if fmt.gzip else body, fmt.ignore_header)
    target = sql.SQL(copy_target(load.cmd))
    conn = cur.connection
    pieces = (_json_copy_text(data, load.columns, conn) if fmt.kind == "json"
              else _formatted(_text_rows(_utf8(data), fmt, load.columns), conn))
    with cur.copy(sql.SQL("COPY {} FROM STDIN").format(target)) as copy:
        for piece in pieces:
            copy.write(piece)


class _Rendered(Writer):
    """Where a ``Copy`` that only formats writes: into memory, for the caller to send on."""

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: Buffer) -> None:
        self.out += data


def _formatted(rows: Iterable[Sequence[Any]], conn: psycopg.Connection[Any]) -> Iterator[bytearray]:
    """Rows as COPY text by psycopg's row formatter, in pieces of about ``_COPY_CHUNK`` bytes:
    PostgreSQL parses one piece while the next is made.

    The formatter is a ``Copy`` of its own, on a fresh cursor of ``conn`` (for its adapters and
    encoding), that writes to memory rather than to the server: psycopg's public way of
    formatting COPY data without sending it. It does no I/O, so it may run while ``conn`` is
    in the middle of the COPY the pieces go to.
    """
    rendered = _Rendered()
    with Copy(conn.cursor(), binary=False, writer=rendered) as formatter:
        for row in rows:
            formatter.write_row(row)
            if len(rendered.out) >= _COPY_CHUNK:
                yield rendered.out
                rendered.out = bytearray()
    if rendered.out:
        yield rendered.out


def _json_copy_text(data: bytes | bytearray, columns: list[Column],
                    conn: psycopg.Connection[Any]) -> Iterator[bytes | bytearray]:
    """JSON 'auto' lines as COPY text, a piece of about ``_COPY_CHUNK`` bytes of input at a time.

    A piece is rendered column by column (``_columnar``) when it can be, else row by row."""
    names = [c.key for c in columns]
    pick = itemgetter(*names) if len(names) > 1 else (lambda doc: (doc[names[0]],))
    allowed = [_EXACT_TYPES | {float} if c.binary_float else _EXACT_TYPES for c in columns]
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos + _COPY_CHUNK)
        end = len(data) if end < 0 else end + 1
        piece = data[pos:end]
        pos = end
        text = _columnar(piece, pick, allowed)
        if text is not None:
            yield text
        else:
            yield from _formatted(_fast_json_rows(piece, columns), conn)


#: Value types the text format renders the same whatever the column (floats only where the column
#: is real/double precision: elsewhere only the exact parser keeps their text as written).
_EXACT_TYPES: frozenset[type] = frozenset({str, int, type(None)})
_NULL_TEXT = {None: "\\N"}


def _columnar(piece: bytes | bytearray, pick: Callable[[Any], tuple[Any, ...]],
              allowed: list[frozenset[type]]) -> bytes | None:
    """Lines of one JSON object each as COPY text, built a column at a time by C-level ``map``
    and ``join`` (no Python code runs per row): a third of the cost of formatting row by row.

    Only for the plain case, else None and the caller formats the rows one by one: every line an
    object with a key spelled exactly like each column, every value of a type ``allowed`` for its
    column, and no backslash anywhere in the input. JSON strings cannot hold a raw control
    character, so without a backslash no value holds anything the text format escapes (tab,
    newline, backslash, ...); ints and floats are written as their ``repr`` (which is their
    ``str``), as psycopg's formatter writes them.
    """
    if b"\\" in piece:
        return None
    lines = piece.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    try:
        docs = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    if not docs or set(map(type, docs)) != {dict}:
        return None
    try:
        rows = list(map(pick, docs))
    except KeyError:
        return None
    rendered: list[Iterable[str]] = []
    for values, types_allowed in zip(zip(*rows, strict=True), allowed, strict=True):
        types = set(map(type, values))
        if not types <= types_allowed:
            return None
        if types == {str}:
            rendered.append(values)
            continue
        # Numbers' repr is their str, and the faster call; a column that also has strings needs str.
        text = map(str if str in types else repr, values)
        # str(None) would be "None": NULL is \N, every other value its text.
        rendered.append(map(_NULL_TEXT.get, values, text) if type(None) in types else text)
    return ("\n".join(map("\t".join, zip(*rendered, strict=True))) + "\n").encode()
