"""Runs a program (``dialect.py``) over micro-batches of Arrow rows with DuckDB.

The runtime pushes each tick's input rows (``push``) and then calls ``advance(now_ms)``: every pump runs,
in the order of the stream graph, over the rows its source stream got since the last call (an input's
pushed rows, or what an earlier pump wrote in this call), and ``advance`` answers the new rows of every
in-application stream, plus ``error_stream`` rows. Invariants:

* **ROWTIME only goes forward.** A push's rows may share a ROWTIME, and each later push's rows have a
  later one (the runtime stamps a tick's rows ``max(previous + 1 ms, now)``); ``now_ms`` never goes back.
* **A tumbling window's row is emitted once, when ``now_ms`` reaches the window's end, with the end as
  its ROWTIME, and never changes afterwards.** Its rows are buffered until then and the aggregate runs
  once over exactly them. A row that arrives for a window already emitted is not counted: it goes to
  ``error_stream`` as late (``Late_row``).
* **Sliding windows** keep the range (or the rows) the window looks back over; each new row's output
  is computed over the kept rows and the new ones, and only the new rows' outputs are emitted.
* **Stagger windows** open per partition key with the key's first row and close ``range`` later, each
  emitting one row per group with the close time as its ROWTIME.
* **Deterministic**: nothing here reads a clock; ``CURRENT_ROW_TIMESTAMP`` is the row's ROWTIME.
* A row the SQL cannot compute (a failed cast, say) becomes an ``error_stream`` row and the others go
  on: a continuous pump that fails on a batch runs again row by row to find the rows at fault; a window
  that fails is reported as one error row.
* ``snapshot``/``restore`` carry every buffered row and watermark, so a restart neither loses nor repeats
  a window's row (the runtime checkpoints them with the input positions).

DuckDB runs in process with external access off (no files or network: an application's SQL reads only
its streams and reference tables).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from firehose.analytics.sql.dialect import CodeError, Program, Pump
from firehose.analytics.sqltypes import (
    APPROXIMATE_ARRIVAL_TIME,
    ERROR_STREAM,
    ERROR_STREAM_SCHEMA,
    ROWTIME,
    StreamSchema,
    timestamp_arrow,
)

_CONFIG = {"enable_external_access": False, "autoinstall_known_extensions": False,
           "autoload_known_extensions": False, "threads": 2, "lock_configuration": True}
_CLOSE = "__window_close__"
_ROWTIME_OUT = "__rowtime__"


def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config=_CONFIG)


def _ms(array: Any) -> pa.Array:
    """Milliseconds since the epoch of a timestamp column."""
    return pc.cast(pc.cast(array, timestamp_arrow()), pa.int64())


def _stamp(ms: int) -> pa.Scalar:
    return pa.scalar(ms, pa.int64()).cast(timestamp_arrow())


def _source_schema(program: Program, pump: Pump) -> pa.Schema:
    stream = program.schemas[pump.source]
    schema = stream.arrow_schema(rowtime=True, arrival=pump.source in program.inputs)
    if pump.kind == "stagger":
        schema = schema.append(pa.field(_CLOSE, timestamp_arrow()))
    return schema


def _reference_schema(program: Program, name: str) -> pa.Schema:
    return program.schemas[name].arrow_schema(rowtime=False)


def _run(con: duckdb.DuckDBPyConnection, query: str, tables: dict[str, pa.Table]) -> pa.Table:
    for name, table in tables.items():
        con.register(name, table)
    try:
        return con.execute(query).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)


def _output_positions(pump: Pump, result: pa.Schema, target: StreamSchema) -> tuple[int, ...]:
    positions = tuple(i for i, f in enumerate(result) if f.name != _ROWTIME_OUT and f.name.upper() != ROWTIME)
    wanted = len(pump.columns) if pump.columns is not None else len(target.columns)
    if len(positions) != wanted:
        raise CodeError(f"Pump {pump.name} selects {len(positions)} columns for {target.name}, which takes "
                        f"{wanted}", pump.line)
    return positions


def dry_run(program: Program) -> None:
    """Run every pump over empty streams: DuckDB binds its SQL (functions, columns, types) and the number
    of columns it selects is checked against the stream it inserts into. ``CodeError`` otherwise."""
    con = _connect()
    try:
        for pump in program.pumps:
            tables = {pump.source: _source_schema(program, pump).empty_table()}
            tables.update({r: _reference_schema(program, r).empty_table() for r in pump.references})
            try:
                result = _run(con, pump.query, tables)
            except duckdb.Error as exc:
                raise CodeError(f"Pump {pump.name}: {_message(exc)}", pump.line) from None
            if pump.kind != "topk" and _ROWTIME_OUT not in result.column_names:
                raise CodeError(f"Pump {pump.name}: its rows have no ROWTIME", pump.line)
            pump.output = _output_positions(pump, result.schema, program.schemas[pump.target])
    finally:
        con.close()


def _message(exc: Exception) -> str:
    return str(exc).splitlines()[0][:2000]


class _State:
    """A pump's memory between calls."""

    def __init__(self) -> None:
        self.buffer: pa.Table | None = None
        self.emitted_until = 0  # tumbling/top-K: windows ending at or before this were emitted
        self.last_rowtime = -1  # sliding: the newest ROWTIME already answered for
        self.opens: dict[str, int] = {}  # stagger: partition key → its open window's close (ms)


class Engine:
    def __init__(self, program: Program) -> None:
        self.program = program
        self._con = _connect()
        self._pending: dict[str, list[pa.Table]] = {}
        self._references = {name: _reference_schema(program, name).empty_table() for name in program.references}
        self._states = {p.name: _State() for p in program.pumps}
        self._errors: list[pa.Table] = []

    # -- what the runtime calls ---------------------------------------------------------------------

    def set_reference(self, table: str, rows: pa.Table) -> None:
        schema = _reference_schema(self.program, table)
        self._references[table] = pa.Table.from_arrays(
            [rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
             for f in schema], schema=schema)

    def push(self, stream: str, rows: pa.Table) -> None:
        if rows.num_rows:
            self._pending.setdefault(stream, []).append(rows)

    def advance(self, now_ms: int) -> dict[str, pa.Table]:
        pending, self._pending = self._pending, {}
        written: dict[str, list[pa.Table]] = {}
        for pump in self.program.pumps:
            rows = self._concat(pending.get(pump.source, []), pump)
            out = self._pump(pump, rows, now_ms)
            if out is not None and out.num_rows:
                pending.setdefault(pump.target, []).append(out)
                written.setdefault(pump.target, []).append(out)
        answer = {name: pa.concat_tables(tables) for name, tables in written.items()}
        if self._errors:
            answer[ERROR_STREAM] = pa.concat_tables(self._errors)
            self._errors = []
        return answer

    def state_bytes(self) -> int:
        """Bytes of the rows the pumps hold between calls (open windows, sliding ranges); what the runtime
        keeps under ``analytics.max_state_bytes``."""
        return sum(state.buffer.nbytes for state in self._states.values() if state.buffer is not None)

    def snapshot(self) -> bytes:
        pumps = {}
        for name, state in self._states.items():
            pumps[name] = {"buffer": _ipc(state.buffer), "emitted_until": state.emitted_until,
                           "last_rowtime": state.last_rowtime, "opens": state.opens}
        return orjson.dumps({"version": 1, "pumps": pumps})

    def restore(self, data: bytes) -> None:
        saved = orjson.loads(data)
        for name, state in saved.get("pumps", {}).items():
            if name not in self._states:
                continue  # the code changed: a pump gone
            mine = self._states[name]
            mine.buffer = _from_ipc(state.get("buffer"))
            mine.emitted_until = int(state.get("emitted_until", 0))
            mine.last_rowtime = int(state.get("last_rowtime", -1))
            mine.opens = {str(k): int(v) for k, v in (state.get("opens") or {}).items()}

    # -- pumps -----------------------------------------------------------------------------------------

    def _concat(self, tables: list[pa.Table], pump: Pump) -> pa.Table | None:
        if not tables:
            return None
        schema = self.program.schemas[pump.source].arrow_schema(rowtime=True,
                                                                  arrival=pump.source in self.program.inputs)
        return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])

    def _tables(self, pump: Pump, rows: pa.Table) -> dict[str, pa.Table]:
        tables = {pump.source: rows}
        tables.update({r: self._references[r] for r in pump.references})
        return tables

    def _pump(self, pump: Pump, rows: pa.Table | None, now_ms: int) -> pa.Table | None:
        state = self._states[pump.name]
        if pump.kind == "continuous":
            return self._continuous(pump, rows) if rows is not None else None
        if pump.kind == "sliding":
            return self._sliding(pump, state, rows) if rows is not None else None
        if pump.kind == "stagger":
            return self._stagger(pump, state, rows, now_ms)
        return self._tumbling(pump, state, rows, now_ms)

    def _query(self, pump: Pump, rows: pa.Table) -> pa.Table:
        return _run(self._con, pump.query, self._tables(pump, rows))

    def _continuous(self, pump: Pump, rows: pa.Table) -> pa.Table | None:
        try:
            return self._to_target(pump, self._query(pump, rows))
        except duckdb.Error:
            pass
        outs = []
        for i in range(rows.num_rows):  # find the rows at fault; the others go on
            row = rows.slice(i, 1)
            try:
                outs.append(self._to_target(pump, self._query(pump, row)))
            except duckdb.Error as exc:
                self._error(pump, "SQL_error", _message(exc), row)
        return pa.concat_tables(outs) if outs else None

    def _sliding(self, pump: Pump, state: _State, rows: pa.Table) -> pa.Table | None:
        kept = state.buffer
        combined = pa.concat_tables([kept.cast(rows.schema), rows]) if kept is not None and kept.num_rows else rows
        try:
            result = self._query(pump, combined)
        except duckdb.Error as exc:
            self._error(pump, "SQL_error", _message(exc), rows)
            result = None
        if result is not None and result.num_rows:
            result = result.filter(pc.greater(_ms(result.column(_ROWTIME_OUT)), state.last_rowtime))
        newest = pc.max(_ms(rows.column(ROWTIME))).as_py()
        state.last_rowtime = max(state.last_rowtime, newest)
        state.buffer = self._retain(pump, combined, newest)
        return self._to_target(pump, result) if result is not None and result.num_rows else None

    def _retain(self, pump: Pump, rows: pa.Table, newest: int) -> pa.Table:
        """What a sliding window looks back over: the last ``range_ms`` and/or the last ``rows`` rows of each
        partition."""
        keep = rows
        if pump.range_ms:
            keep = rows.filter(pc.greater(_ms(rows.column(ROWTIME)), newest - pump.range_ms))
        if pump.rows:
            partition = ", ".join(pump.partition) or "NULL"
            by_range = keep
            keep = _run(self._con, f'SELECT * FROM "{pump.source}" QUALIFY row_number() OVER '
                                   f'(PARTITION BY {partition} ORDER BY ROWTIME DESC) <= {pump.rows} ORDER BY ROWTIME',
                        {pump.source: rows})
            if pump.range_ms and by_range.num_rows > keep.num_rows:
                keep = by_range
        return keep

    def _tumbling(self, pump: Pump, state: _State, rows: pa.Table | None, now_ms: int) -> pa.Table | None:
        if rows is not None:
            times = _ms(rows.column(ROWTIME))
            late = pc.less(times, state.emitted_until)
            if pc.any(late).as_py():
                self._error(pump, "Late_row", "The row arrived for a window already emitted "
                            f"(ROWTIME before {_iso(state.emitted_until)}); it is not counted.", rows.filter(late))
                rows = rows.filter(pc.invert(late))
            if rows.num_rows:
                state.buffer = rows if state.buffer is None else pa.concat_tables([state.buffer.cast(rows.schema),
                                                                                  rows])
        close_until = now_ms // pump.window_ms * pump.window_ms
        state.emitted_until = max(state.emitted_until, close_until)
        if state.buffer is None or not state.buffer.num_rows:
            return None
        times = _ms(state.buffer.column(ROWTIME))
        closing = pc.less(times, close_until)
        if not pc.any(closing).as_py():
            return None
        closed = state.buffer.filter(closing)
        state.buffer = state.buffer.filter(pc.invert(closing))
        if pump.kind == "topk":
            return self._top_k(pump, closed)
        try:
            return self._to_target(pump, self._query(pump, closed))
        except duckdb.Error as exc:
            self._error(pump, "SQL_error", _message(exc), closed)
            return None

    def _top_k(self, pump: Pump, closed: pa.Table) -> pa.Table | None:
        starts = pc.multiply(pc.divide(_ms(closed.column(ROWTIME)), pump.window_ms), pump.window_ms)
        outs = []
        for start in sorted(pc.unique(starts).to_pylist()):
            window = closed.filter(pc.equal(starts, start))
            try:
                result = self._query(pump, window)
            except duckdb.Error as exc:
                self._error(pump, "SQL_error", _message(exc), window)
                continue
            end = pa.array([start + pump.window_ms] * result.num_rows, pa.int64()).cast(timestamp_arrow())
            outs.append(self._to_target(pump, result.append_column(_ROWTIME_OUT, end)))
        return pa.concat_tables(outs) if outs else None

    def _stagger(self, pump: Pump, state: _State, rows: pa.Table | None, now_ms: int) -> pa.Table | None:
        if rows is not None:
            values = ", ".join(f"CAST({k} AS VARCHAR)" for k in pump.partition)
            keys = _run(self._con, f'SELECT CAST(list_value({values}) AS VARCHAR) AS k FROM "{pump.source}"',
                        {pump.source: rows}).column("k")
            closes = []
            for key, rowtime in zip(keys.to_pylist(), _ms(rows.column(ROWTIME)).to_pylist(), strict=True):
                close = state.opens.get(key)
                if close is None or rowtime >= close:
                    close = state.opens[key] = rowtime + pump.range_ms
                closes.append(close)
            rows = rows.append_column(_CLOSE, pa.array(closes, pa.int64()).cast(timestamp_arrow()))
            state.buffer = rows if state.buffer is None else pa.concat_tables([state.buffer.cast(rows.schema), rows])
        state.opens = {k: c for k, c in state.opens.items() if c > now_ms}
        if state.buffer is None or not state.buffer.num_rows:
            return None
        closing = pc.less_equal(_ms(state.buffer.column(_CLOSE)), now_ms)
        if not pc.any(closing).as_py():
            return None
        closed = state.buffer.filter(closing)
        state.buffer = state.buffer.filter(pc.invert(closing))
        try:
            return self._to_target(pump, self._query(pump, closed))
        except duckdb.Error as exc:
            self._error(pump, "SQL_error", _message(exc), closed)
            return None

    # -- rows out -----------------------------------------------------------------------------------------

    def _to_target(self, pump: Pump, result: pa.Table) -> pa.Table:
        """The query's result as rows of the pump's target stream: ROWTIME, then the target's columns (by
        position, or as the INSERT's column list names them), cast to their types; ordered by ROWTIME."""
        target = self.program.schemas[pump.target]
        schema = target.arrow_schema(rowtime=True)
        arrays: list[pa.Array] = [pc.cast(result.column(_ROWTIME_OUT), timestamp_arrow())]
        mapped = dict(zip(pump.columns if pump.columns is not None else [c.name for c in target.columns],
                          pump.output, strict=True))
        for column in target.columns:
            if column.name not in mapped:
                arrays.append(pa.nulls(result.num_rows, column.type.arrow))
                continue
            array = result.column(mapped[column.name])
            if column.type.is_character and not pa.types.is_string(array.type):
                array = pc.cast(array, pa.string())
            try:
                array = pc.cast(array, column.type.arrow)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                array = pc.cast(array, column.type.arrow, safe=False)
            if column.type.is_character and column.type.length is not None:
                array = pc.utf8_slice_codeunits(array, 0, column.type.length)
            arrays.append(array)
        table = pa.Table.from_arrays(arrays, schema=schema)
        return table.sort_by([(ROWTIME, "ascending")]) if table.num_rows > 1 else table

    def _error(self, pump: Pump, name: str, message: str, rows: pa.Table) -> None:
        data = [orjson.dumps(r, default=str).hex()[:49152]
                for r in rows.drop_columns([c for c in (APPROXIMATE_ARRIVAL_TIME, _CLOSE)
                                            if c in rows.column_names]).to_pylist()] if rows.num_rows <= 1000 \
            else [""] * rows.num_rows
        times = rows.column(ROWTIME)
        n = rows.num_rows
        self._errors.append(pa.Table.from_arrays([
            pc.cast(times, timestamp_arrow()), pc.cast(times, timestamp_arrow()), pa.array(["Error"] * n),
            pa.array([name] * n), pa.array([message[:4096]] * n), pc.cast(times, timestamp_arrow()),
            pa.array(data, pa.string()), pa.array([pump.name] * n)], schema=ERROR_STREAM_SCHEMA.arrow_schema()))


def _iso(ms: int) -> str:
    return str(_stamp(ms).as_py())


def _ipc(table: pa.Table | None) -> str | None:
    if table is None or not table.num_rows:
        return None
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue()).decode()


def _from_ipc(text: str | None) -> pa.Table | None:
    if not text:
        return None
    return pa.ipc.open_stream(io.BytesIO(base64.b64decode(text))).read_all()
