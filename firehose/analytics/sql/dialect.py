"""The SQL dialect of Kinesis Data Analytics applications, read into a program of streams and pumps.

An application's code is ``CREATE [OR REPLACE] STREAM`` and ``CREATE [OR REPLACE] PUMP … AS INSERT INTO
… SELECT STREAM …`` statements. sqlglot's tokenizer reads every token of them (with line numbers), and
a token-level pass turns the streaming forms into standard SQL that sqlglot parses (into DuckDB's
dialect) before the engine (``engine.py``) runs it:

* ``SELECT STREAM`` → ``SELECT`` (sqlglot would otherwise read ``STREAM`` as a column);
* ``STEP(ts BY INTERVAL 'n' UNIT)`` → ``time_bucket(INTERVAL 'n' UNIT, ts, TIMESTAMP '1970-01-01')``
  (KDA's STEP is aligned to the epoch) and ``STEP(i BY n)`` → ``((i) // (n)) * (n)``;
* ``FLOOR(ts TO UNIT)`` → ``date_trunc('unit', ts)`` (on the parsed tree);
* ``WINDOWED BY STAGGER (PARTITION BY … RANGE INTERVAL …)`` is cut out and becomes the pump's stagger
  window (its partition expressions become the GROUP BY);
* ``TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM …), 'col', k, seconds))`` becomes a top-K pump;
* a window without ORDER BY (``WINDOW W AS (PARTITION BY k RANGE INTERVAL '1' MINUTE PRECEDING)``)
  is ordered by ``ROWTIME``, as KDA's windows are;
* KDA's functions DuckDB lacks are translated (``TSDIFF``, ``CHAR_TO_TIMESTAMP``,
  ``TIMESTAMP_TO_CHAR``, ``UNIX_TIMESTAMP``, ``TO_TIMESTAMP``, ``CURRENT_ROW_TIMESTAMP``,
  ``REGEX_REPLACE``).

What is not supported is refused with ``CodeError`` naming the construct and its line: statements other
than the two, stream-to-stream joins (``JOIN s OVER (RANGE …)``), ``RANDOM_CUT_FOREST``, ``HOTSPOTS`` and
the other machine-learning table functions, a GROUP BY without a ROWTIME window (its groups would never
close), and anything DuckDB cannot bind (an unknown function or column: checked by running every pump
over empty streams when the program is compiled).

Identifiers: unquoted names are folded to upper case, quoted names are exact; since DuckDB matches names
without regard to case, code whose streams or columns differ only by case is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from firehose.analytics.sqltypes import ROWTIME, Column, SqlTypeError, StreamSchema, parse_sql_type

#: AWS's limit on an application's code.
MAX_CODE_CHARS = 102_400
_DIALECT = sqlglot.Dialect.get_or_raise("duckdb")
_UNIT_MS = {"MILLISECOND": 1, "SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
_UNSUPPORTED_FUNCTIONS = ("RANDOM_CUT_FOREST", "RANDOM_CUT_FOREST_WITH_EXPLANATION", "HOTSPOTS",
                          "VARIABLE_COLUMN_LOG_PARSE", "W3C_LOG_PARSE", "REGEX_LOG_PARSE", "FAST_REGEX_LOG_PARSER",
                          "FIXED_COLUMN_LOG_PARSE", "SYS_LOG_PARSE", "SQL_LOG_PARSE", "MONOTONIC")


class CodeError(Exception):
    """Code this daemon cannot run; the message names the construct and its line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"{message} (line {line})" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Stagger:
    partition: tuple[exp.Expression, ...]
    range_ms: int


@dataclass(frozen=True)
class TopK:
    column: str
    k: int
    window_ms: int


@dataclass
class Pump:
    """One pump: ``INSERT INTO target SELECT …`` over ``source``, of one ``kind``:

    * ``continuous``: row by row (filters, projections, reference joins);
    * ``tumbling``: GROUP BY with a ROWTIME window of ``window_ms``, emitted when the window ends;
    * ``sliding``: window functions over the ``range_ms`` (or ``rows``) preceding each row;
    * ``stagger``: a window per partition key, opened by its first row, closed ``range_ms`` later;
    * ``topk``: the ``k`` most frequent values of a column per tumbling window.
    """

    name: str
    target: str
    columns: tuple[str, ...] | None
    source: str
    kind: str
    query: str
    line: int
    window_ms: int = 0
    range_ms: int = 0
    rows: int = 0
    partition: tuple[str, ...] = ()
    stagger: Stagger | None = None
    topk: TopK | None = None
    #: Positions of the query's result columns that go into the target (user-selected ROWTIMEs left out).
    output: tuple[int, ...] = ()
    references: tuple[str, ...] = ()


@dataclass
class Program:
    streams: dict[str, StreamSchema]
    inputs: tuple[str, ...]
    references: tuple[str, ...]
    pumps: tuple[Pump, ...]
    schemas: dict[str, StreamSchema] = field(default_factory=dict)  # every stream and table, inputs included


# -- tokens --------------------------------------------------------------------------------------------


def _tokens(code: str) -> list[Token]:
    try:
        return list(_DIALECT.tokenize(code))
    except sqlglot.errors.TokenError as exc:
        raise CodeError(f"The code cannot be read: {exc}") from None


def _raw(code: str, tok: Token) -> str:
    return code[tok.start:tok.end + 1]


def _name(code: str, tok: Token) -> str:
    """An identifier's name: exact when quoted, upper case when not."""
    raw = _raw(code, tok)
    if tok.token_type == TokenType.IDENTIFIER or raw.startswith('"'):
        return tok.text
    return tok.text.upper()


def _word(tok: Token) -> str:
    return tok.text.upper() if tok.token_type != TokenType.STRING else ""


def _statements(tokens: list[Token]) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            out.append([])
        else:
            out[-1].append(tok)
    return [s for s in out if s]


def _matching(tokens: list[Token], open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(tokens)):
        if tokens[i].token_type == TokenType.L_PAREN:
            depth += 1
        elif tokens[i].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return i
    raise CodeError("Unbalanced parentheses", tokens[open_at].line)


def _split_commas(tokens: list[Token]) -> list[list[Token]]:
    """The comma-separated parts of a parenthesised list's tokens (commas inside parentheses kept)."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.token_type == TokenType.COMMA and depth == 0:
            parts.append([])
            continue
        depth += tok.token_type == TokenType.L_PAREN
        depth -= tok.token_type == TokenType.R_PAREN
        parts[-1].append(tok)
    return parts


def _text(code: str, tokens: list[Token]) -> str:
    return " ".join(_raw(code, t) for t in tokens)


def _interval_ms(code: str, tokens: list[Token], line: int) -> int:
    """``INTERVAL 'n' UNIT`` → milliseconds."""
    if len(tokens) != 3 or _word(tokens[0]) != "INTERVAL" or tokens[1].token_type != TokenType.STRING:
        raise CodeError(f"Expected INTERVAL 'n' UNIT, found {_text(code, tokens)!r}", line)
    unit = _word(tokens[2]).rstrip("S") if _word(tokens[2]) != "MILLISECONDS" else "MILLISECOND"
    if unit not in _UNIT_MS:
        raise CodeError(f"Unsupported interval unit {tokens[2].text} (SECOND, MINUTE, HOUR or DAY)", line)
    try:
        return int(float(tokens[1].text) * _UNIT_MS[unit])
    except ValueError:
        raise CodeError(f"Unsupported interval {_text(code, tokens)}", line) from None


# -- statements ----------------------------------------------------------------------------------------


def _create_stream(code: str, stmt: list[Token]) -> StreamSchema:
    line = stmt[0].line
    at = 1
    if _word(stmt[at]) == "OR":
        at += 2
    name_tok = stmt[at + 1]
    name = _name(code, name_tok)
    open_at = at + 2
    if open_at >= len(stmt) or stmt[open_at].token_type != TokenType.L_PAREN:
        raise CodeError(f"CREATE STREAM {name} needs its columns in parentheses", line)
    close = _matching(stmt, open_at)
    if close != len(stmt) - 1:
        raise CodeError(f"Unexpected {_text(code, stmt[close + 1:])!r} after CREATE STREAM {name}", line)
    parts = _split_commas(stmt[open_at + 1:close])
    columns = []
    for part in parts:
        if len(part) < 2:
            raise CodeError(f"A column of {name} needs a name and a type", line)
        type_tokens = part[1:]
        words = [_word(t) for t in type_tokens]
        if words[-2:] == ["NOT", "NULL"]:
            type_tokens = type_tokens[:-2]
        try:
            sql_type = parse_sql_type(_text(code, type_tokens).replace(" ( ", "(").replace(" )", ")")
                                      .replace(" , ", ","))
        except SqlTypeError as exc:
            raise CodeError(f"Column {_name(code, part[0])} of {name}: {exc}", part[0].line) from None
        columns.append(Column(_name(code, part[0]), sql_type))
    _distinct_names([c.name for c in columns], f"columns of {name}", line)
    return StreamSchema(name, tuple(columns))


def _distinct_names(names: list[str], what: str, line: int | None) -> None:
    seen: dict[str, str] = {}
    for n in names:
        if n.upper() in seen:
            raise CodeError(f"The {what} {seen[n.upper()]!r} and {n!r} differ only by case (or are the same)", line)
        seen[n.upper()] = n


def compile_program(code: str, inputs: Any, references: Any = ()) -> Program:
    """The program ``code`` describes over the input streams and reference tables given (``StreamSchema``s,
    without ROWTIME); ``CodeError`` for anything this daemon cannot run."""
    from firehose.analytics.sql.engine import dry_run  # the engine checks that DuckDB binds every pump

    if len(code) > MAX_CODE_CHARS:
        raise CodeError(f"The application code is {len(code)} characters; at most {MAX_CODE_CHARS} are allowed")
    schemas: dict[str, StreamSchema] = {s.name: s for s in inputs}
    refs = {r.name: r for r in references}
    created: dict[str, StreamSchema] = {}
    pump_statements: list[tuple[str, list[Token]]] = []
    for stmt in _statements(_tokens(code)):
        words = [_word(t) for t in stmt[:4]]
        head = words[1:3] if words[1:3] != ["OR", "REPLACE"] else words[3:4]
        if words[0] == "CREATE" and head[:1] == ["STREAM"]:
            stream = _create_stream(code, stmt)
            if stream.name in schemas or stream.name in created:
                raise CodeError(f"Stream {stream.name} is created twice (or is an input stream)", stmt[0].line)
            created[stream.name] = stream
        elif words[0] == "CREATE" and head[:1] == ["PUMP"]:
            pump_statements.append((code, stmt))
        else:
            raise CodeError(f"Unsupported statement {' '.join(t.text for t in stmt[:3])!r}: an application's code "
                            "is CREATE STREAM and CREATE PUMP statements", stmt[0].line)
    everything = {**schemas, **created, **refs}
    _distinct_names(list(everything), "streams and tables", None)
    pumps = [_pump(c, stmt, everything, set(created), set(refs)) for c, stmt in pump_statements]
    _distinct_names([p.name for p in pumps], "pumps", None)
    ordered = _topological(pumps, set(schemas))
    program = Program(created, tuple(schemas), tuple(refs), tuple(ordered), everything)
    dry_run(program)
    return program


def _topological(pumps: list[Pump], inputs: set[str]) -> list[Pump]:
    ready = set(inputs)
    left = list(pumps)
    ordered: list[Pump] = []
    while left:
        progress = [p for p in left if p.source in ready]
        if not progress:
            p = left[0]
            raise CodeError(f"Pump {p.name} reads {p.source}, which no input or pump feeds (or a cycle)", p.line)
        for p in progress:
            ordered.append(p)
            left.remove(p)
            ready.add(p.target)
    return ordered


# -- pumps ---------------------------------------------------------------------------------------------


def _pump(code: str, stmt: list[Token], streams: dict[str, StreamSchema], created: set[str],
          refs: set[str]) -> Pump:
    line = stmt[0].line
    at = 3 if _word(stmt[1]) == "OR" else 1
    name = _name(code, stmt[at + 1])
    at += 2
    if [_word(t) for t in stmt[at:at + 3]] != ["AS", "INSERT", "INTO"]:
        raise CodeError(f"Pump {name}: expected AS INSERT INTO <stream> SELECT STREAM ...", line)
    target_tok = stmt[at + 3]
    target = _name(code, target_tok)
    if target not in created:
        raise CodeError(f"Pump {name} inserts into {target}, which no CREATE STREAM creates", line)
    at += 4
    columns = None
    if at < len(stmt) and stmt[at].token_type == TokenType.L_PAREN:
        close = _matching(stmt, at)
        columns = tuple(_name(code, t) for t in stmt[at + 1:close] if t.token_type != TokenType.COMMA)
        unknown = [c for c in columns if c not in {col.name for col in streams[target].columns}]
        if unknown:
            raise CodeError(f"Pump {name}: {target} has no column {unknown[0]}", line)
        at = close + 1
    select = stmt[at:]
    if not select or select[0].token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        raise CodeError(f"Pump {name}: expected SELECT STREAM after INSERT INTO {target}", line)
    pump = Pump(name, target, columns, "", "continuous", "", line)
    text = _rewrite_tokens(code, select, pump)
    if pump.topk is not None:
        return _finish_topk(pump, text, streams, refs)
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise CodeError(f"Pump {name}: the SELECT does not parse: {str(exc).splitlines()[0]}", line) from None
    if not isinstance(tree, exp.Select):
        raise CodeError(f"Pump {name}: only a SELECT (not a UNION or other set operation) is supported", line)
    return _analyse(pump, tree, streams, refs)


def _rewrite_tokens(code: str, tokens: list[Token], pump: Pump) -> str:
    """The token pass (STREAM, STEP, WINDOWED BY STAGGER, TOP_K_ITEMS_TUMBLING, JOIN … OVER): the SELECT's text."""
    out: list[Token] = []  # the tokens kept, for looking back
    text: list[str] = []
    i = 0
    while i < len(tokens):
        tok, word = tokens[i], _word(tokens[i])
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if word == "STREAM" and out and out[-1].token_type == TokenType.SELECT:
            i += 1
            continue
        if word in _UNSUPPORTED_FUNCTIONS:
            raise CodeError(f"Unsupported function {word}", tok.line)
        if word == "STEP" and nxt is not None and nxt.token_type == TokenType.L_PAREN:
            close = _matching(tokens, i + 1)
            inner = tokens[i + 2:close]
            by = [j for j, t in enumerate(inner) if _word(t) == "BY"]
            if not by:
                raise CodeError("STEP needs BY: STEP(ts BY INTERVAL 'n' UNIT)", tok.line)
            left, right = inner[:by[0]], inner[by[0] + 1:]
            left_text, right_text = _text(code, left), _text(code, right)
            if right and _word(right[0]) == "INTERVAL":
                _interval_ms(code, right, tok.line)  # checks it
                text.append(f"time_bucket({right_text}, {left_text}, TIMESTAMP '1970-01-01 00:00:00')")
            else:
                text.append(f"((({left_text}) // ({right_text})) * ({right_text}))")
            i = close + 1
            continue
        if word == "WINDOWED" and nxt is not None and _word(nxt) == "BY":
            if (i + 3 >= len(tokens) or _word(tokens[i + 2]) != "STAGGER"
                    or tokens[i + 3].token_type != TokenType.L_PAREN):
                raise CodeError("Expected WINDOWED BY STAGGER (PARTITION BY ... RANGE INTERVAL ...)", tok.line)
            close = _matching(tokens, i + 3)
            inner = tokens[i + 4:close]
            ranges = [j for j, t in enumerate(inner) if t.token_type == TokenType.RANGE]
            if not inner or inner[0].token_type != TokenType.PARTITION_BY or not ranges:
                raise CodeError("WINDOWED BY STAGGER needs (PARTITION BY ... RANGE INTERVAL ...)", tok.line)
            partition = _text(code, inner[1:ranges[0]])
            range_ms = _interval_ms(code, inner[ranges[0] + 1:], tok.line)
            try:
                keys = sqlglot.parse_one(f"SELECT {partition}", read="duckdb").expressions
            except sqlglot.errors.ParseError as exc:
                raise CodeError(f"WINDOWED BY STAGGER: {str(exc).splitlines()[0]}", tok.line) from None
            pump.kind = "stagger"
            pump.stagger = Stagger(tuple(keys), range_ms)
            i = close + 1
            continue
        if word == "OVER" and out and any(t.token_type == TokenType.JOIN for t in out[-4:]) \
                and nxt is not None and nxt.token_type == TokenType.L_PAREN:
            raise CodeError("Unsupported construct JOIN ... OVER (a stream-to-stream join over a window)", tok.line)
        if word == "TOP_K_ITEMS_TUMBLING":
            _topk(code, tokens, i, pump)
            return ""
        out.append(tok)
        text.append(_raw(code, tok))
        i += 1
    return " ".join(text)


def _topk(code: str, tokens: list[Token], at: int, pump: Pump) -> None:
    line = tokens[at].line
    if at + 1 >= len(tokens) or tokens[at + 1].token_type != TokenType.L_PAREN:
        raise CodeError("TOP_K_ITEMS_TUMBLING needs its arguments", line)
    close = _matching(tokens, at + 1)
    args = _split_commas(tokens[at + 2:close])
    if len(args) != 4 or not args[0] or _word(args[0][0]) != "CURSOR":
        raise CodeError("TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM ...), 'column', k, seconds) is the supported form",
                        line)
    cursor = args[0]
    inner = cursor[2:_matching(cursor, 1)]
    if len(args[1]) != 1 or args[1][0].token_type != TokenType.STRING:
        raise CodeError("TOP_K_ITEMS_TUMBLING: the column is a quoted name such as 'TICKER_SYMBOL'", line)
    try:
        k, seconds = int(args[2][0].text), int(args[3][0].text)
    except (ValueError, IndexError):
        raise CodeError("TOP_K_ITEMS_TUMBLING: k and the window size in seconds are numbers", line) from None
    if not 1 <= k <= 100_000 or not 1 <= seconds <= 3600:
        raise CodeError("TOP_K_ITEMS_TUMBLING: k must be 1-100000 and the window 1-3600 seconds", line)
    column = args[1][0].text
    pump.kind = "topk"
    pump.topk = TopK(column, k, seconds * 1000)
    pump.query = _text(code, [t for j, t in enumerate(inner)
                              if not (_word(t) == "STREAM" and j and inner[j - 1].token_type == TokenType.SELECT)])


def _finish_topk(pump: Pump, _outer: str, streams: dict[str, StreamSchema], refs: set[str]) -> Pump:
    try:
        tree = sqlglot.parse_one(pump.query, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise CodeError(f"Pump {pump.name}: the CURSOR's SELECT does not parse: {exc}", pump.line) from None
    assert pump.topk is not None
    source = _source(pump, tree, streams, refs)
    _add_rowtime(tree, {source})
    column = pump.topk.column
    pump.query = (f'SELECT "{column}", COUNT(*) AS ITEM_COUNT FROM ({tree.sql("duckdb")}) AS __cursor__ '
                  f'GROUP BY "{column}" ORDER BY ITEM_COUNT DESC, "{column}" LIMIT {pump.topk.k}')
    pump.window_ms = pump.topk.window_ms
    pump.source = source
    return pump


# -- the parsed SELECT -------------------------------------------------------------------------------


def _source(pump: Pump, tree: exp.Expression, streams: dict[str, StreamSchema], refs: set[str]) -> str:
    tables = [t for t in tree.find_all(exp.Table)]
    found: list[str] = []
    references: list[str] = []
    for table in tables:
        ident = table.this
        if not isinstance(ident, exp.Identifier):
            raise CodeError(f"Pump {pump.name}: unsupported FROM item {table.sql('duckdb')}", pump.line)
        name = ident.this if ident.quoted else ident.this.upper()
        if name in refs:
            references.append(name)
        elif name in streams:
            found.append(name)
        else:
            raise CodeError(f"Pump {pump.name} reads {name}, which is no stream or reference table", pump.line)
    if len(set(found)) != 1:
        raise CodeError(f"Pump {pump.name} must read exactly one in-application stream (joins with reference "
                        f"tables are supported), not {sorted(set(found)) or 'none'}", pump.line)
    pump.references = tuple(sorted(set(references)))
    return found[0]


def _mentions_rowtime(node: exp.Expression) -> bool:
    return any(c.name.upper() == ROWTIME for c in node.find_all(exp.Column))


def _translate(tree: exp.Expression, pump: Pump) -> exp.Expression:
    """FLOOR(x TO UNIT), KDA's functions, CURRENT_ROW_TIMESTAMP; windows ordered by ROWTIME."""

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Floor) and node.args.get("to") is not None:
            unit = node.args["to"].name.upper()
            if unit not in _UNIT_MS and unit not in ("MONTH", "YEAR"):
                raise CodeError(f"Unsupported FLOOR unit {unit}", pump.line)
            return exp.func("date_trunc", exp.Literal.string(unit.lower()), node.this)
        if isinstance(node, exp.Column) and not node.table and node.name.upper() == "CURRENT_ROW_TIMESTAMP":
            return exp.column(ROWTIME)
        if isinstance(node, exp.Anonymous):
            name = str(node.this).upper()
            args = node.expressions
            if name == "TSDIFF" and len(args) == 2:
                return exp.Sub(this=exp.func("epoch_ms", args[0]), expression=exp.func("epoch_ms", args[1]))
            if name == "CHAR_TO_TIMESTAMP" and len(args) == 2:
                return exp.func("strptime", args[1], _java_format(args[0], pump))
            if name == "TIMESTAMP_TO_CHAR" and len(args) == 2:
                return exp.func("strftime", args[1], _java_format(args[0], pump))
            if name == "UNIX_TIMESTAMP" and len(args) == 1:
                return exp.func("epoch_ms", args[0])
            if name == "REGEX_REPLACE" and len(args) >= 3:
                return exp.func("regexp_replace", args[0], args[1], args[2], exp.Literal.string("g"))
            if name in _UNSUPPORTED_FUNCTIONS:
                raise CodeError(f"Unsupported function {name}", pump.line)
        if isinstance(node, exp.Func) and node.sql_name().upper() == "TO_TIMESTAMP" \
                and isinstance(node.this, exp.Expression) and not node.args.get("format"):
            return exp.func("epoch_ms", node.this)
        return node

    tree = tree.transform(fix)
    for window in tree.find_all(exp.Window):
        spec = window.args.get("spec")
        if spec is None and not window.args.get("partition_by") and not window.args.get("order"):
            continue  # OVER W: a named window, defined in the WINDOW clause
        if not window.args.get("order"):
            window.set("order", exp.Order(expressions=[exp.Ordered(this=exp.column(ROWTIME))]))
        if spec is not None:
            _window_extent(spec, pump)
        if window.args.get("partition_by"):
            pump.partition = tuple(p.sql("duckdb") for p in window.args["partition_by"])
    return tree


_JAVA = [("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"), ("SSS", "%g"),
         ("a", "%p"), ("hh", "%I"), ("EEE", "%a"), ("MMM", "%b")]


def _java_format(node: exp.Expression, pump: Pump) -> exp.Expression:
    if not isinstance(node, exp.Literal) or not node.is_string:
        raise CodeError("The date format must be a string literal such as 'yyyy-MM-dd HH:mm:ss'", pump.line)
    text = node.this
    out, i = "", 0
    while i < len(text):
        for java, strf in _JAVA:
            if text.startswith(java, i):
                out += strf
                i += len(java)
                break
        else:
            out += text[i].replace("%", "%%").replace("'", "")
            i += 1
    return exp.Literal.string(out)


def _window_extent(spec: exp.WindowSpec, pump: Pump) -> None:
    kind = str(spec.args.get("kind") or "").upper()
    start = spec.args.get("start")
    if kind == "RANGE" and isinstance(start, exp.Interval):
        unit = start.unit.name.upper().rstrip("S") if start.unit else "SECOND"
        if unit not in _UNIT_MS:
            raise CodeError(f"Unsupported window unit {unit}", pump.line)
        pump.range_ms = max(pump.range_ms, int(float(start.this.name) * _UNIT_MS[unit]))
    elif kind == "ROWS" and isinstance(start, exp.Literal):
        pump.rows = max(pump.rows, int(start.this))
    elif kind in ("RANGE", "ROWS") and str(start).upper() == "UNBOUNDED":
        raise CodeError("Unsupported window: UNBOUNDED PRECEDING keeps a stream's every row", pump.line)


def _add_rowtime(tree: exp.Expression, streams: set[str]) -> None:
    """Every SELECT reading a stream (or a subquery that does) also selects ``__rowtime__``: the ROWTIME of
    the row it came from, so ROWTIME follows rows through projections and subqueries as KDA's does."""
    for select in list(tree.find_all(exp.Select))[::-1]:  # innermost first
        source = select.args.get("from_") or select.args.get("from")
        item = source.this if source is not None else None
        if isinstance(item, exp.Table):
            name = item.this.this if item.this.quoted else item.this.this.upper()
            if name in streams:
                qualifier = item.alias_or_name
                select.select(exp.alias_(exp.column(ROWTIME, table=exp.to_identifier(qualifier, quoted=True)),
                                         "__rowtime__"), copy=False)
        elif isinstance(item, exp.Subquery):
            select.select(exp.column("__rowtime__"), copy=False)


def _analyse(pump: Pump, tree: exp.Select, streams: dict[str, StreamSchema], refs: set[str]) -> Pump:
    pump.source = _source(pump, tree, streams, refs)
    if pump.kind == "stagger":
        assert pump.stagger is not None
        if tree.args.get("group") is not None:
            raise CodeError(f"Pump {pump.name}: WINDOWED BY STAGGER replaces GROUP BY; use one of them", pump.line)
        keys = [k.copy() for k in pump.stagger.partition] + [exp.column("__window_close__")]
        tree.set("group", exp.Group(expressions=keys))
        tree.select(exp.alias_(exp.column("__window_close__"), "__rowtime__"), copy=False)
    tree = _translate(tree, pump)  # type: ignore[assignment]
    group = tree.args.get("group")
    aggregates = [a for a in tree.expressions if a.find(exp.AggFunc) and not a.find(exp.Window)]
    if pump.kind == "stagger":
        assert pump.stagger is not None and group is not None
        pump.partition = tuple(g.sql("duckdb") for g in group.expressions[:-1])
        pump.range_ms = pump.stagger.range_ms
    elif group is not None or aggregates:
        windows = [g for g in (group.expressions if group else []) if _mentions_rowtime(g)]
        if not windows:
            raise CodeError(f"Pump {pump.name}: GROUP BY on a stream needs a ROWTIME window, such as "
                            "STEP(s.ROWTIME BY INTERVAL '60' SECOND) or FLOOR(s.ROWTIME TO MINUTE): "
                            "without one its groups never close", pump.line)
        window = windows[0]
        pump.window_ms = _bucket_ms(window, pump)
        pump.kind = "tumbling"
        end = exp.Add(this=window.copy(), expression=exp.Interval(
            this=exp.Literal.string(str(pump.window_ms)), unit=exp.var("MILLISECOND")))
        tree.select(exp.alias_(end, "__rowtime__"), copy=False)
    else:
        pump.kind = "sliding" if tree.find(exp.Window) else "continuous"
        _add_rowtime(tree, {pump.source})
        if pump.kind == "sliding" and not pump.range_ms and not pump.rows:
            raise CodeError(f"Pump {pump.name}: a window needs RANGE INTERVAL 'n' UNIT PRECEDING or ROWS n "
                            "PRECEDING", pump.line)
    pump.query = tree.sql("duckdb")
    return pump


def _bucket_ms(node: exp.Expression, pump: Pump) -> int:
    """The width of a ROWTIME window expression: time_bucket(INTERVAL …) or date_trunc('unit', …)."""
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "time_bucket" or \
            node.sql("duckdb").upper().startswith("TIME_BUCKET("):
        interval = node.find(exp.Interval)
        if interval is not None:
            unit = interval.unit.name.upper().rstrip("S") if interval.unit else "SECOND"
            return int(float(interval.this.name) * _UNIT_MS.get(unit, 0)) or _bad_window(pump)
    if isinstance(node, (exp.DateTrunc, exp.TimestampTrunc)) or node.sql("duckdb").upper().startswith("DATE_TRUNC("):
        text = node.sql("duckdb")
        match = re.search(r"'(\w+)'", text) or re.search(r"\b(SECOND|MINUTE|HOUR|DAY)\b", text.upper())
        if match and match.group(1).upper() in _UNIT_MS:
            return _UNIT_MS[match.group(1).upper()]
    return _bad_window(pump)


def _bad_window(pump: Pump) -> int:
    raise CodeError(f"Pump {pump.name}: the ROWTIME window must be STEP(ROWTIME BY INTERVAL 'n' UNIT) or "
                    "FLOOR(ROWTIME TO SECOND|MINUTE|HOUR|DAY)", pump.line)
