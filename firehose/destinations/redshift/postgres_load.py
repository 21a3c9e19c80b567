"""Delivery to Amazon Redshift by COPY from staged objects, or straight into PostgreSQL.

Firehose loads Redshift in three steps (spec: destinations.md §1), and so does this module:

1. Stage: the batch is written to the ``S3Configuration`` bucket (``stage``, S3 or a local
   directory) under its sealed key, so a retry overwrites the same object.
2. Manifest: a Redshift manifest naming that one object,
   ``{"entries": [{"url": "s3://<bucket>/<key>", "mandatory": true}]}``, is written to the same
   bucket at a key derived from the batch key (the Prefix of a Redshift destination has no
   expressions, so every batch key is ``<Prefix>YYYY/MM/dd/HH/<name>``)::

       batch     <Prefix>YYYY/MM/dd/HH/<stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid>
       manifest  <Prefix>manifests/YYYY/MM/dd/HH/<the same name>
       skipped   errors/manifests/YYYY/MM/dd/HH/<the same name>   (retry duration ran out)

3. Load, chosen by the scheme of ``ClusterJDBCURL``:

   * ``jdbc:redshift://host:port/db``: the COPY Firehose composes (``copy_statement``); the
     cluster reads the manifest and the object from S3 itself, CopyOptions pass verbatim.
   * ``jdbc:postgresql://host:port/db``: PostgreSQL cannot read s3://, so the daemon feeds the
     batch's own bytes to ``COPY <table> FROM STDIN``, translating the CopyOptions it can honour
     (``load_format``). ``validate`` refuses the others when the definition is created, rather
     than loading different data than Redshift would.

Exactly once. Each attempt runs in one transaction against the table

    firehose_loaded_batches (
        batch_key varchar(1024) PRIMARY KEY,  -- the staged object's key (S3 keys are ≤ 1024 bytes;
                                              -- Redshift's TEXT would be VARCHAR(256))
        loaded_at timestamptz NOT NULL        -- when the loading attempt ran, UTC
    )

created on first use in the first schema of the user's search_path: look the batch key up; if it
is there, an earlier attempt committed and only its acknowledgement was lost (crash, timeout), so
nothing is loaded; otherwise COPY, then insert the key, then commit, so the rows and the key
become visible together or not at all. Two concurrent loads of one key cannot both commit: in
PostgreSQL the second insert of the key fails on the primary key, in Redshift (whose keys are not
enforced) serializable isolation aborts one of them; the loser is retried and finds the key.

Every failure of an attempt (connection, SQL, data) is ``DestinationError(retriable=True)``
carrying the server's message: Firehose retries COPY, even into a missing table, until
``RetryOptions.DurationInSeconds`` runs out; then the pipeline calls ``expired``, which files the
manifest under errors/ for a manual load. Redshift COPYs (and CSV loads) of one destination run
one at a time, as Firehose's do, in the context's thread pool (psycopg is blocking) on one kept
connection. Text and JSON loads into PostgreSQL run side by side in worker processes, each
parsing its batch and streaming the rows in on its own kept connection; exactly-once holds per
batch key whatever the order.

TLS follows ``settings.http`` like every other destination. A Redshift cluster is reached with
``sslmode=verify-full`` against the system trust store (or ``http.ca_bundle``); only
``http.verify: false`` relaxes that, to ``prefer``. A ``jdbc:postgresql://`` server, typically a
database next to the daemon, uses ``prefer`` unless ``http.ca_bundle`` is set, which makes it
``verify-full`` against that bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg._copy_base import format_row_text  # the C row formatter write_row uses
from psycopg.adapt import Transformer

from firehose.definitions import CopyCommand, RedshiftDestinationConfiguration
from firehose.destinations.base import DELIVERED, DestinationContext, ObjectDestination, Outcome
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import FileRange, ObjectBatch, read_ranges

log = logging.getLogger("firehose.destinations.redshift")

CONNECT_TIMEOUT_SECONDS = 10
LOADED_BATCHES_DDL = ("CREATE TABLE IF NOT EXISTS firehose_loaded_batches "
                      "(batch_key varchar(1024) PRIMARY KEY, loaded_at timestamptz NOT NULL)")
_ALREADY_LOADED = "SELECT 1 FROM firehose_loaded_batches WHERE batch_key = %s"
_MARK_LOADED = "INSERT INTO firehose_loaded_batches (batch_key, loaded_at) VALUES (%s, %s)"
#: The target table's columns in order, and whether each is text (so an empty field is a value).
_COLUMNS = ("SELECT a.attname, t.typcategory = 'S', t.typname IN ('float4', 'float8') "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
            "ORDER BY a.attnum")

_JDBC_URL = re.compile(r"jdbc:(redshift|postgresql)://([^/:]+)(?::(\d{1,5}))?/([^/?;]+)")
_DEFAULT_PORTS = {"redshift": 5439, "postgresql": 5432}


# -- the cluster -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where ``ClusterJDBCURL`` points; ``dialect`` decides how batches are loaded."""

    dialect: Literal["redshift", "postgresql"]
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        kind = "Redshift cluster" if self.dialect == "redshift" else "PostgreSQL server"
        return f"{kind} {self.host}:{self.port}/{self.database}"


def parse_jdbc_url(url: str) -> ClusterAddress:
    """``jdbc:(redshift|postgresql)://host[:port]/db``; the port defaults to the dialect's own."""
    m = _JDBC_URL.fullmatch(url)
    if not m:
        raise ValueError(f"ClusterJDBCURL {url!r} is not jdbc:redshift://host:port/database "
                         "or jdbc:postgresql://host:port/database")
    dialect: Literal["redshift", "postgresql"] = "redshift" if m.group(1) == "redshift" else "postgresql"
    port = int(m.group(3)) if m.group(3) else _DEFAULT_PORTS[dialect]
    return ClusterAddress(dialect, m.group(2), port, m.group(4))


# -- manifests ---------------------------------------------------------------------


def manifest_key(prefix: str, batch_key: str) -> str:
    """``<Prefix>manifests/YYYY/MM/dd/HH/<name>`` for the batch at ``<Prefix>YYYY/MM/dd/HH/<name>``."""
    return f"{prefix}manifests/{batch_key.removeprefix(prefix)}"


def error_manifest_key(prefix: str, batch_key: str) -> str:
    """``errors/manifests/YYYY/MM/dd/HH/<name>``: where a batch that was never loaded is listed."""
    return f"errors/manifests/{batch_key.removeprefix(prefix)}"


def manifest(bucket: str, key: str) -> bytes:
    """A Redshift manifest for one object; ``mandatory`` makes COPY fail if the object is missing."""
    return json.dumps({"entries": [{"url": f"s3://{bucket}/{key}", "mandatory": True}]}).encode()


# -- the Redshift COPY -------------------------------------------------------------


def redshift_literal(value: str) -> str:
    """A string literal as Redshift's QUOTE_LITERAL writes it: quotes and backslashes doubled,
    since Redshift reads backslash escapes inside literals."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def copy_statement(config: RedshiftDestinationConfiguration, manifest_url: str) -> str:
    """The COPY Firehose runs: ``COPY <DataTableName> [(<DataTableColumns>)] FROM '<manifest>'
    CREDENTIALS 'aws_iam_role=<RoleARN>' MANIFEST <CopyOptions>;``.

    Table, columns and options are SQL written by the definition's owner and go in verbatim, as
    on AWS; only the two values the daemon supplies are quoted.
    """
    cmd = config.copy_command
    options = (cmd.copy_options or "").strip()
    return (f"COPY {cmd.data_table_name}{_column_clause(cmd)} FROM {redshift_literal(manifest_url)} "
            f"CREDENTIALS {redshift_literal('aws_iam_role=' + config.role_arn)} MANIFEST"
            f"{' ' + options if options else ''};")


def _column_clause(cmd: CopyCommand) -> str:
    return f" ({cmd.data_table_columns})" if cmd.data_table_columns else ""


# -- CopyOptions for the PostgreSQL load ----------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^'\\]|''|\\.)*')|(?P<word>[A-Za-z_]\w*)|(?P<number>\d+)"
                    r"|(?P<other>\S))", re.S)
_ESCAPE = re.compile(r"''|\\(.)", re.S)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "'": "'"}
#: Options without an argument, and options with one (its token kind); the rest are refused.
_FLAGS = frozenset({"CSV", "GZIP"})
_ARGUMENTS = {"DELIMITER": "string", "QUOTE": "string", "NULL": "string", "IGNOREHEADER": "number",
              "JSON": "string", "REGION": "string", "TIMEFORMAT": "string", "DATEFORMAT": "string"}
_DELIMITED_ONLY = ("DELIMITER", "QUOTE", "NULL", "IGNOREHEADER")
_OPTIONS = "CopyCommand.CopyOptions"
SUPPORTED_OPTIONS = ("DELIMITER 'c', CSV [QUOTE 'c'], NULL AS 's', IGNOREHEADER n, GZIP, "
                     "JSON 'auto' / 'auto ignorecase', REGION, TIMEFORMAT 'auto', DATEFORMAT 'auto'")

Token = tuple[str, str]


def _unquote(literal: str) -> str:
    """The value of a quoted CopyOptions argument: ``''`` is a quote; ``\\t``, ``\\n``, ``\\r``,
    ``\\\\`` and ``\\'`` are escapes; any other backslash stays (``'\\N'`` is backslash-N)."""
    return _ESCAPE.sub(lambda m: "'" if m.group(0) == "''" else _ESCAPES.get(m.group(1), m.group(0)),
                       literal[1:-1])


def _tokens(text: str) -> list[Token]:
    """CopyOptions as (kind, value) tokens: words upper-cased, quoted strings unquoted."""
    tokens: list[Token] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        value = m.group(kind)
        if kind == "other" and value == "'":
            raise ValueError(f"{_OPTIONS} has an unterminated quoted string: {text!r}")
        if kind == "word":
            value = value.upper()
        elif kind == "string":
            value = _unquote(value)
        tokens.append((kind, value))
    return tokens


@dataclass(frozen=True, slots=True)
class LoadFormat:
    """How the PostgreSQL load reads a staged object: the CopyOptions it honours.

    ``text`` is Redshift's default format (one record per line, fields split on ``delimiter``,
    backslashes are data); ``csv`` is PostgreSQL's CSV; ``json`` is Redshift's JSON 'auto'.
    """

    kind: Literal["text", "csv", "json"]
    delimiter: str = "|"
    quote: str = '"'
    null: str = "\\N"
    ignore_header: int = 0
    gzip: bool = False


def _skip_as(tokens: list[Token], i: int) -> int:
    return i + 1 if tokens[i:i + 1] == [("word", "AS")] else i


def _options(tokens: list[Token]) -> dict[str, str]:
    """{OPTION: argument} ('' for flags); ValueError for an option the PostgreSQL load cannot honour."""
    given: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        kind, word = tokens[i]
        i += 1
        if kind != "word":
            raise ValueError(f"{_OPTIONS}: unexpected {word!r}")
        if word == "FORMAT":  # FORMAT [AS] CSV | JSON '...': the format's own word follows
            i = _skip_as(tokens, i)
            continue
        if word in given:
            raise ValueError(f"{_OPTIONS}: {word} is given twice")
        if word in _FLAGS:
            given[word] = ""
            continue
        if word not in _ARGUMENTS:
            raise ValueError(f"{_OPTIONS}: {word} cannot be honoured when loading into PostgreSQL (the "
                             f"daemon reads the staged object itself); supported: {SUPPORTED_OPTIONS}")
        i = _skip_as(tokens, i)
        if i >= len(tokens) or tokens[i][0] != _ARGUMENTS[word]:
            wanted = "a quoted string" if _ARGUMENTS[word] == "string" else "a number"
            raise ValueError(f"{_OPTIONS}: {word} needs {wanted}")
        given[word] = tokens[i][1]
        i += 1
    return given


def load_format(copy_options: str | None) -> LoadFormat:
    """Translate CopyOptions for a PostgreSQL load; ValueError for anything it cannot honour.

    REGION is accepted and has no effect (the batch's bytes are at hand); TIMEFORMAT and
    DATEFORMAT are accepted only as 'auto', which PostgreSQL's own input parsing stands for.
    """
    given = _options(_tokens(copy_options or ""))
    for word in ("TIMEFORMAT", "DATEFORMAT"):
        if given.get(word, "auto").lower() != "auto":
            raise ValueError(f"{_OPTIONS}: only {word} 'auto' can be honoured when loading into "
                             f"PostgreSQL, not {given[word]!r}")
    gz = "GZIP" in given
    if "JSON" in given:
        if "CSV" in given:
            raise ValueError(f"{_OPTIONS}: CSV and JSON are two data formats; choose one")
        if given["JSON"].lower() not in ("auto", "auto ignorecase"):
            raise ValueError(f"{_OPTIONS}: JSON {given['JSON']!r} cannot be honoured when loading into "
                             "PostgreSQL; only JSON 'auto' and 'auto ignorecase' (no JSONPaths files)")
        delimited = [w for w in _DELIMITED_ONLY if w in given]
        if delimited:
            raise ValueError(f"{_OPTIONS}: {delimited[0]} applies to delimited text, not JSON")
        return LoadFormat("json", gzip=gz)
    csv = "CSV" in given
    if "QUOTE" in given and not csv:
        raise ValueError(f"{_OPTIONS}: QUOTE needs CSV")
    fmt = LoadFormat("csv" if csv else "text", delimiter=given.get("DELIMITER", "," if csv else "|"),
                     quote=given.get("QUOTE", '"'), null=given.get("NULL", "" if csv else "\\N"),
                     ignore_header=int(given.get("IGNOREHEADER", "0")), gzip=gz)
    for name, value in (("DELIMITER", fmt.delimiter), ("QUOTE", fmt.quote)):
        if len(value.encode()) != 1:
            raise ValueError(f"{_OPTIONS}: {name} must be a single-byte character, not {value!r}")
    if csv and fmt.delimiter == fmt.quote:
        raise ValueError(f"{_OPTIONS}: DELIMITER and QUOTE must differ")
    return fmt


def validate(config: RedshiftDestinationConfiguration) -> None:
    """Refuse, when a definition is created, what this destination could not load as Redshift would.

    Both modes: GZIP in CopyOptions must match a GZIP ``S3Configuration.CompressionFormat``, since
    COPY reads the staged objects as they are. PostgreSQL mode: every option must translate.
    """
    address = parse_jdbc_url(config.cluster_jdbc_url)
    options = config.copy_command.copy_options
    gzip_option = ("word", "GZIP") in _tokens(options or "")
    if config.s3_configuration.compression == "GZIP" and not gzip_option:
        raise ValueError(f"{_OPTIONS} must include GZIP: S3Configuration.CompressionFormat is GZIP, and "
                         "COPY reads the staged objects as they are")
    if gzip_option and config.s3_configuration.compression != "GZIP":
        raise ValueError(f"{_OPTIONS} has GZIP but S3Configuration.CompressionFormat is "
                         f"{config.s3_configuration.compression}: the staged objects are not compressed")
    if address.dialect == "postgresql":
        load_format(options)


# -- the PostgreSQL load --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    key: str  # case-folded, unquoted: what JSON object keys are matched against
    text: bool  # a text type, where an empty field is an empty string rather than NULL
    binary_float: bool = False  # real/double precision: a float's shortest repr loads the same value


def _identifier(name: str) -> str:
    """A column name as PostgreSQL resolves it: quoted names exactly, others in lower case."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name.lower()


def _columns(cur: psycopg.Cursor[Any], cmd: CopyCommand) -> list[_Column]:
    """The columns rows are built for: DataTableColumns, or else the table's own, from the catalog."""
    cur.execute(_COLUMNS, (cmd.data_table_name,))
    catalog: dict[str, tuple[bool, bool]] = {name: (text, real) for name, text, real in cur.fetchall()}
    listed = cmd.data_table_columns
    names = [_identifier(c) for c in listed.split(",")] if listed else list(catalog)
    # A name missing from the catalog is left to COPY, which names it in its error.
    return [_Column(name.casefold(), *catalog.get(name, (True, False))) for name in names]


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


def _text_rows(text: str, fmt: LoadFormat, columns: list[_Column]) -> Iterator[list[str | None]]:
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


def _json_rows(text: str, columns: list[_Column]) -> Iterator[list[str | None]]:
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


def _json_row(value: dict[str, object], columns: list[_Column]) -> list[str | None]:
    fields = {k.casefold(): v for k, v in value.items()}
    return [_json_field(fields.get(c.key)) for c in columns]


_MISSING = object()


def _fast_json_rows(data: bytes | bytearray, columns: list[_Column]) -> Iterator[Sequence[Any]]:
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
              columns: list[_Column]) -> list[Any]:
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


def load_csv(cur: psycopg.Cursor[Any], cmd: CopyCommand, fmt: LoadFormat, body: bytes) -> None:
    """Load a staged CSV object with ``COPY ... FROM STDIN``: PostgreSQL's own CSV parser reads it.

    (Text and JSON objects become rows first, in a worker process: see ``load_rows``.)
    """
    target = sql.SQL(cmd.data_table_name + _column_clause(cmd))
    data = _skip_lines(_gunzip(body) if fmt.gzip else body, fmt.ignore_header)
    query = sql.SQL("COPY {} FROM STDIN (FORMAT csv, DELIMITER {}, QUOTE {}, NULL {})").format(
        target, sql.Literal(fmt.delimiter), sql.Literal(fmt.quote), sql.Literal(fmt.null))
    with cur.copy(query) as copy:
        copy.write(data)


def _server_message(exc: psycopg.Error) -> str:
    """The server's own words (and, for COPY, the line and column it stopped at)."""
    primary = exc.diag.message_primary or str(exc).strip()
    return f"{primary} ({exc.diag.context})" if exc.diag.context else primary


def _load_once(conn: psycopg.Connection[Any], batch_key: str,
               load: Callable[[psycopg.Cursor[Any]], None]) -> bool:
    """Run ``load(cursor)`` unless ``batch_key`` is in firehose_loaded_batches, and record it, in one
    transaction. False when an earlier attempt had already loaded the batch."""
    with conn.transaction():
        cur = conn.cursor()
        cur.execute(LOADED_BATCHES_DDL)
        cur.execute(_ALREADY_LOADED, (batch_key,))
        if cur.fetchone():
            return False
        load(cur)
        cur.execute(_MARK_LOADED, (batch_key, datetime.now(UTC)))
    return True


#: Kept connections by connection parameters, in whichever process loads (a worker, or the
#: daemon itself when there are no workers). A list per key: loads may run side by side.
_SESSIONS: dict[str, list[psycopg.Connection[Any]]] = {}
#: Bytes of rendered rows handed to COPY at a time: PostgreSQL parses one piece while the next is made.
_COPY_CHUNK = 256 * 1024


@dataclass(frozen=True)
class RowLoad:
    """What a process needs to load a batch's rows itself (picklable: it crosses to a worker)."""

    connect: tuple[tuple[str, Any], ...]
    where: str
    cmd: CopyCommand
    fmt: LoadFormat
    columns: list[_Column]


def _take_session(connect: tuple[tuple[str, Any], ...], where: str) -> tuple[psycopg.Connection[Any], bool]:
    """A kept connection for these parameters (and True), or a new one."""
    pool = _SESSIONS.get(repr(connect))
    while pool:
        conn = pool.pop()
        if not conn.closed:
            return conn, True
    try:
        # Client-side parameter binding: plain SQL text, which every Redshift version accepts.
        return psycopg.connect(**dict(connect), cursor_factory=psycopg.ClientCursor), False
    except psycopg.Error as exc:
        raise DestinationError(f"cannot connect to {where}: {_server_message(exc)}") from exc


def _keep_session(connect: tuple[tuple[str, Any], ...], conn: psycopg.Connection[Any]) -> None:
    _SESSIONS.setdefault(repr(connect), []).append(conn)


def close_sessions(session_key: str) -> None:
    for conn in _SESSIONS.pop(session_key, []):
        conn.close()


def load_rows(load: RowLoad, batch_key: str, body: bytes | tuple[FileRange, ...]) -> tuple[bool, str]:
    """Parse a staged batch into rows and stream them into the table, exactly once per batch key.

    Runs in a worker process: the rows never travel back to the daemon, and PostgreSQL parses
    each piece of the COPY stream while the next is being made. ``body`` is the batch's bytes, or
    where they lie on disk (the batch's spooled records), read here rather than sent through a
    pipe. Returns (loaded, error): loaded is False when an earlier attempt had loaded the batch
    already; an error is the server's message, for the daemon to retry with (exceptions would
    have to survive pickling).
    """
    try:
        data: bytes | bytearray = body if isinstance(body, bytes) else _read_spooled(body)
        return _load_rows(load, batch_key, data), ""
    except DestinationError as exc:
        return False, exc.message


def _read_spooled(ranges: tuple[FileRange, ...]) -> bytearray:
    try:
        return read_ranges(ranges)
    except OSError as exc:
        raise DestinationError(f"reading the batch's records from the spool failed: {exc}") from exc


def _load_rows(load: RowLoad, batch_key: str, body: bytes | bytearray) -> bool:
    table = load.cmd.data_table_name
    conn, reused = _take_session(load.connect, load.where)
    try:
        loaded = _load_once(conn, batch_key, lambda cur: _stream_rows(cur, load, body))
    except psycopg.OperationalError as exc:
        conn.close()
        if not reused:
            raise DestinationError(f"COPY into {table} on {load.where} failed: {_server_message(exc)}") from exc
        return _load_rows(load, batch_key, body)  # the kept connection went stale: once more, anew
    except psycopg.Error as exc:
        conn.close()
        raise DestinationError(f"COPY into {table} on {load.where} failed: {_server_message(exc)}") from exc
    except BaseException:
        conn.close()
        raise
    _keep_session(load.connect, conn)
    return loaded


def _stream_rows(cur: psycopg.Cursor[Any], load: RowLoad, body: bytes | bytearray) -> None:
    """The batch's rows as a text-format COPY stream, rendered as psycopg's own row formatter
    (``Copy.write_row``) renders them. PostgreSQL's text format reads backslashes as escapes,
    which Redshift's does not, hence parsing here rather than passing the bytes through."""
    fmt = load.fmt
    data = _skip_lines(_gunzip(body) if fmt.gzip else body, fmt.ignore_header)
    target = sql.SQL(load.cmd.data_table_name + _column_clause(load.cmd))
    pieces = (_json_copy_text(data, load.columns) if fmt.kind == "json"
              else _formatted(_text_rows(_utf8(data), fmt, load.columns)))
    with cur.copy(sql.SQL("COPY {} FROM STDIN").format(target)) as copy:
        for piece in pieces:
            copy.write(piece)


def _formatted(rows: Iterable[Sequence[Any]]) -> Iterator[bytearray]:
    """Rows as COPY text by psycopg's row formatter, in pieces of about ``_COPY_CHUNK`` bytes:
    PostgreSQL parses one piece while the next is made."""
    transformer = Transformer()
    out = bytearray()
    for row in rows:
        format_row_text(row, transformer, out)
        if len(out) >= _COPY_CHUNK:
            yield out
            out = bytearray()
    if out:
        yield out


def _json_copy_text(data: bytes | bytearray, columns: list[_Column]) -> Iterator[bytes | bytearray]:
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
            yield from _formatted(_fast_json_rows(piece, columns))


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


# -- the destination ----------------------------------------------------------------


class RedshiftDestination(ObjectDestination):
    name = "redshift"
    #: PostgreSQL mode parses text and JSON batches into rows in worker processes (``load_rows``).
    worker_module = __name__

    def __init__(self, config: RedshiftDestinationConfiguration, ctx: DestinationContext,
                 stage: ObjectDestination) -> None:
        """``stage``: the ``S3Configuration``'s bucket, where batches and manifests are staged."""
        self.config = config
        self.retry_seconds = config.retry_seconds
        self.address = parse_jdbc_url(config.cluster_jdbc_url)
        postgres = self.address.dialect == "postgresql"
        self._format = load_format(config.copy_command.copy_options) if postgres else None
        self._ctx = ctx
        self._stage = stage
        self._bucket = config.s3_configuration.bucket
        self._prefix = config.s3_configuration.prefix or ""
        self._copy_lock = asyncio.Lock()
        #: The connection loads reuse (COPYs are serialised, so one is enough); dropped on any error.
        self._conn: psycopg.Connection[Any] | None = None
        self._columns: list[_Column] | None = None

    @property
    def uses_workers(self) -> bool:
        """PostgreSQL mode with text or JSON: batches become rows in worker processes."""
        return self._format is not None and self._format.kind != "csv"

    def describe(self) -> str:
        return f"{self.address}, table {self.config.copy_command.data_table_name}"

    async def check(self) -> None:
        try:
            await self._ctx.run(self._ping)
        except DestinationError as exc:
            raise DestinationUnavailable(exc.message) from exc

    async def deliver(self, batch: ObjectBatch) -> Outcome:
        await self._stage.deliver(batch)
        key = manifest_key(self._prefix, batch.key)
        await self._stage.deliver(self._manifest(batch, key))
        if self.uses_workers:
            await self._load_rows(batch)
        else:
            async with self._copy_lock:
                await self._ctx.run(self._load, batch, f"s3://{self._bucket}/{key}")
        return DELIVERED

    async def _load_rows(self, batch: ObjectBatch) -> None:
        """PostgreSQL mode, text or JSON: a worker process parses the batch and streams its rows in.

        Several batches load side by side, each on its worker's connection (exactly-once holds per
        batch key). The columns come from the catalog once and are kept; a failed load forgets
        them, so a table changed meanwhile is read again.
        """
        if self._columns is None:
            async with self._copy_lock:
                if self._columns is None:
                    self._columns = await self._ctx.run(self._read_columns)
        assert self._format is not None
        load = RowLoad(self._connect_parameters(), str(self.address), self.config.copy_command, self._format,
                       self._columns)
        # The worker reads the spooled records itself when the staged object is nothing else;
        # otherwise it is sent the body, joined off the event loop.
        body = batch.extents if batch.extents is not None else await self._ctx.run(batch.body)
        loaded, error = await self._ctx.run_process(load_rows, load, batch.key, body)
        if error:
            self._columns = None
            raise DestinationError(error)
        if not loaded:
            log.info("Batch was already loaded by an earlier attempt; not loading it again.",
                     extra={"stream": self._ctx.stream, "key": batch.key,
                            "table": self.config.copy_command.data_table_name})

    async def expired(self, batch: ObjectBatch, reason: str) -> None:
        """File the batch's manifest under errors/manifests/, for a manual COPY of what was skipped."""
        key = error_manifest_key(self._prefix, batch.key)
        await self._stage.deliver(self._manifest(batch, key))
        log.error("COPY retries ran out: the batch was not loaded; its manifest is filed for a manual load.",
                  extra={"stream": self._ctx.stream, "destination": self.describe(), "key": batch.key,
                         "manifest": f"s3://{self._bucket}/{key}", "reason": reason})

    def _manifest(self, batch: ObjectBatch, key: str) -> ObjectBatch:
        body = manifest(self._bucket, batch.key)
        return ObjectBatch(batch.stream, key, (body,), len(body), 1, batch.first_arrival_ms,
                           content_type="application/json")

    def _credentials(self) -> tuple[str, str | None]:
        """Username/Password of the definition, overridden by ``credentials[<ClusterJDBCURL>]``."""
        url = self.config.cluster_jdbc_url
        override = self._ctx.settings.credentials.get(url)
        user = override.username if override and override.username else self.config.username
        password = override.password if override and override.password else self.config.password
        if not user:
            raise DestinationError(f"no user name for {url}: set Username in the definition or "
                                   f"credentials[{url!r}].username in the settings", retriable=False)
        return user, password

    def _tls(self) -> dict[str, str]:
        """libpq's sslmode/sslrootcert for this cluster (see the module docstring)."""
        http = self._ctx.settings.http
        bundle = str(http.ca_bundle) if http.ca_bundle is not None else None
        if self.address.dialect == "redshift" and http.verify:
            return {"sslmode": "verify-full", "sslrootcert": bundle or "system"}
        if bundle is not None and http.verify:
            return {"sslmode": "verify-full", "sslrootcert": bundle}
        return {"sslmode": "prefer"}

    def _connect_parameters(self) -> tuple[tuple[str, Any], ...]:
        user, password = self._credentials()
        return tuple({"host": self.address.host, "port": self.address.port, "dbname": self.address.database,
                      "user": user, "password": password, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                      "application_name": "firehose", **self._tls()}.items())

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # Client-side parameter binding: plain SQL text, which every Redshift version accepts.
            return psycopg.connect(**dict(self._connect_parameters()), cursor_factory=psycopg.ClientCursor)
        except psycopg.Error as exc:
            raise DestinationError(f"cannot connect to {self.address}: {_server_message(exc)}") from exc

    def _ping(self) -> None:
        with self._connect() as conn:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                message = _server_message(exc)
                raise DestinationError(f"{self.address} did not answer SELECT 1: {message}") from exc

    def _session(self) -> tuple[psycopg.Connection[Any], bool]:
        """The kept connection (and True), or a new one."""
        reused, self._conn = self._conn, None
        if reused is not None and not reused.closed:
            return reused, True
        return self._connect(), False

    def _read_columns(self) -> list[_Column]:
        """The target's columns; also makes sure firehose_loaded_batches exists before loads run
        side by side (two concurrent CREATE TABLE IF NOT EXISTS can collide in PostgreSQL)."""
        connect = self._connect_parameters()
        conn, _ = _take_session(connect, str(self.address))
        try:
            with conn.transaction():
                cur = conn.cursor()
                columns = _columns(cur, self.config.copy_command)
                cur.execute(LOADED_BATCHES_DDL)
        except psycopg.Error as exc:
            conn.close()
            raise DestinationError(f"reading the columns of {self.config.copy_command.data_table_name} on "
                                   f"{self.address} failed: {_server_message(exc)}") from exc
        _keep_session(connect, conn)
        return columns

    def _load(self, batch: ObjectBatch, manifest_url: str) -> None:
        """Redshift's COPY from the manifest, or PostgreSQL's CSV load, on the kept connection."""
        table = self.config.copy_command.data_table_name
        conn, reused = self._session()
        try:
            loaded = _load_once(conn, batch.key, lambda cur: self._copy(cur, batch, manifest_url))
        except psycopg.OperationalError as exc:
            conn.close()
            self._columns = None
            if not reused:
                raise DestinationError(f"COPY into {table} on {self.address} failed: {_server_message(exc)}") from exc
            # The kept connection went stale (server restart, idle timeout): once more on a new one.
            return self._load(batch, manifest_url)
        except psycopg.Error as exc:
            conn.close()  # after an error the session state is unknown: the next attempt starts afresh
            self._columns = None
            raise DestinationError(f"COPY into {table} on {self.address} failed: {_server_message(exc)}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if not loaded:
            log.info("Batch was already loaded by an earlier attempt; not loading it again.",
                     extra={"stream": self._ctx.stream, "key": batch.key, "table": table})

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._ctx.run(conn.close)
        with contextlib.suppress(DestinationError):
            # Kept in this process (loads ran in threads); worker processes' sessions end with them.
            await self._ctx.run(close_sessions, repr(self._connect_parameters()))

    def _copy(self, cur: psycopg.Cursor[Any], batch: ObjectBatch, manifest_url: str) -> None:
        if self._format is None:
            cur.execute(copy_statement(self.config, manifest_url))
        else:
            load_csv(cur, self.config.copy_command, self._format, batch.body())
