"""The SQL processor: one ``SELECT`` over each buffer of records, instead of a Python transform.

Beyond AWS (whose API does not know it, so only a stream declared in the config file may use it)::

    ProcessingConfiguration:
      Enabled: true
      Processors:
        - Type: SQL
          Parameters:
            - {ParameterName: Query, ParameterValue: "SELECT user_id, upper(country) AS country, amount * 100 AS cents
                                                      FROM records WHERE amount > 0"}

``BufferSizeInMBs`` (0.2-3, default 1) and ``BufferIntervalInSeconds`` (0-900, default 60) say how many
records one run of the query sees, as they do for a Lambda processor (whose values win when the chain
has both).

What the query sees and what comes out:

* ``records`` is the buffer: one row per record, one column per top-level member of the JSON objects,
  typed by DuckDB's JSON inference over the whole buffer (``json_group_structure``): a member whose
  values disagree in type (a number here, a string there) is a ``JSON`` column, a member no record of
  the buffer has is not a column. Queries that must run on every buffer should therefore name only
  members every buffer has, or read optional ones through ``TRY``/``COALESCE`` over a member that is
  always there.
* Each result row becomes one record, a JSON object of the row's columns, newline handling as the other
  processors (AppendDelimiterToRecord adds one). Records the ``WHERE`` leaves out are dropped, as a
  transform's ``Dropped`` records are. Result records carry the buffer's oldest arrival time (for key
  prefixes and freshness): a row may come from many records (an aggregate, a join), so it has no one
  record's identity; dynamic partitioning after the SQL step reads the result rows.
* A record that is not a JSON object goes to the error output as ``processing-failed`` with the reason,
  and the others go on. A query that fails on a buffer (a member missing from it, a cast that fails)
  sends that buffer's records to the error output as ``processing-failed`` with DuckDB's message:
  nothing is lost and the stream goes on with the next buffer.

Where it runs: in the chain after a Lambda transform and before MetadataExtraction, in a worker thread
(DuckDB releases the GIL), never on the event loop that answers PutRecordBatch.

Safety: the statement must be one query (``SELECT`` or ``WITH … SELECT``, ``UNION`` …), checked with
sqlglot when the definition is read; and it runs in a DuckDB database opened with
``enable_external_access = false`` (no files, network, extensions or ``ATTACH``) and a locked
configuration, with a memory limit, so a config file's query cannot read or write anything but the
buffer it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The parameter that holds the query.
QUERY = "Query"
#: The table the query reads.
TABLE = "records"
#: What one buffer's query may use of memory (DuckDB spills nothing: external access is off).
MEMORY_LIMIT = "512MB"
_CONFIG = {"enable_external_access": False, "autoinstall_known_extensions": False,
           "autoload_known_extensions": False, "memory_limit": MEMORY_LIMIT, "threads": 2,
           "lock_configuration": True}


def check_query(query: str) -> str:
    """``query`` if it is one read-only query; ValueError naming what is wrong otherwise."""
    import sqlglot
    from sqlglot import exp

    text = (query or "").strip().rstrip(";").strip()
    if not text:
        raise ValueError("SQL processor: Query is required")
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"SQL processor: the Query does not parse: {exc}") from None
    if len(statements) != 1:
        raise ValueError(f"SQL processor: the Query must be one statement, not {len(statements)}")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise ValueError(f"SQL processor: the Query must be a SELECT, not {statement.key.upper()}")
    return text


@dataclass(frozen=True)
class SqlResult:
    """What a buffer became: the result records, and the records that failed with their reason."""

    records: list[bytes]
    failed: list[tuple[int, str]]


class SqlStep:
    """One stream's query, run over buffers. Thread-safe: each run opens its own in-memory database."""

    def __init__(self, query: str) -> None:
        self.query = check_query(query)

    def run(self, records: Sequence[bytes]) -> SqlResult:
        """The query over ``records``; raises ``ValueError`` (DuckDB's message) when it fails on the buffer."""
        import duckdb
        import orjson
        import pyarrow as pa

        lines: list[str] = []
        failed: list[tuple[int, str]] = []
        for i, data in enumerate(records):
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                failed.append((i, f"The record is not JSON: {exc}"))
                continue
            if not isinstance(doc, dict):
                failed.append((i, "The record is not a JSON object"))
                continue
            lines.append(bytes(data).decode("utf-8"))
        if not lines:
            return SqlResult([], failed)
        con = duckdb.connect(config=_CONFIG)
        try:
            con.register("firehose_lines", pa.table({"line": pa.array(lines, pa.string())}))
            structure = con.execute("SELECT json_group_structure(line::JSON) FROM firehose_lines").fetchone()
            assert structure is not None
            con.execute(f"CREATE TEMP TABLE {TABLE} AS SELECT unnest(json_transform(line, ?)) FROM firehose_lines",
                        [structure[0]])
            rows = con.execute(f"SELECT to_json(q)::VARCHAR FROM ({self.query}) AS q").fetchall()
        except duckdb.Error as exc:
            raise ValueError(str(exc).splitlines()[0][:1000]) from None
        finally:
            con.close()
        return SqlResult([_encode(row[0]) for row in rows], failed)


def _encode(text: Any) -> bytes:
    return text.encode() if isinstance(text, str) else b"null"
