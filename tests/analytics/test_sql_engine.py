"""The SQL dialect and the engine: AWS's example applications and each construct, with answers computed
here in plain Python from the generated rows (never by the engine)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pytest

from firehose.analytics.sql import CodeError, Engine, compile_program
from firehose.analytics.sqltypes import Column, StreamSchema, parse_sql_type
from tests.support.analytics import REFERENCE_JOIN_SQL, STAGGER_SQL, THROTTLED_ALERTS_SQL, TOP_K_SQL

SOURCE = "SOURCE_SQL_STREAM_001"
MINUTE = 60_000


def schema(name: str, columns: list[tuple[str, str]]) -> StreamSchema:
    return StreamSchema(name, tuple(Column(n, parse_sql_type(t)) for n, t in columns))


STOCKS = schema(SOURCE, [("TICKER_SYMBOL", "VARCHAR(4)"), ("SECTOR", "VARCHAR(16)"), ("CHANGE", "REAL"),
                         ("PRICE", "REAL")])
EVENTS = schema(SOURCE, [("EVENT_TIME", "TIMESTAMP"), ("TICKER", "VARCHAR(4)"), ("PRICE", "DOUBLE")])


def stamps(values: list[int]) -> pa.Array:
    return pa.array(values, pa.int64()).cast(pa.timestamp("ms"))


def rows(stream: StreamSchema, rowtime: int, data: list[dict[str, Any]]) -> pa.Table:
    n = len(data)
    columns: dict[str, Any] = {"ROWTIME": stamps([rowtime] * n), "APPROXIMATE_ARRIVAL_TIME": stamps([rowtime] * n)}
    for column in stream.columns:
        values = [d.get(column.name) for d in data]
        if column.type.name == "TIMESTAMP":
            columns[column.name] = stamps(values)
        else:
            columns[column.name] = pa.array(values, column.type.arrow)
    return pa.table(columns)


def ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def test_simple_alerts_pass_the_rows_over_one_percent_with_their_rowtime() -> None:
    code = """
    CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), sector VARCHAR(12),
                                                       change DOUBLE, price DOUBLE);
    CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
      SELECT STREAM ticker_symbol, sector, change, price
      FROM "SOURCE_SQL_STREAM_001"
      WHERE (ABS(Change / (Price - Change)) * 100) > 1;"""
    engine = Engine(compile_program(code, [STOCKS]))
    rng = random.Random(7)
    sent, expected = [], []
    for tick in range(1, 6):
        batch = [{"TICKER_SYMBOL": rng.choice(["AMZN", "WMT", "XOM"]), "SECTOR": "TECHNOLOGY-LONG-NAME",
                  "CHANGE": round(rng.uniform(-3, 3), 2), "PRICE": round(rng.uniform(20, 120), 2)} for _ in range(50)]
        sent.append(batch)
        for r in batch:
            change, price = float(pa.scalar(r["CHANGE"], pa.float32()).as_py()), float(
                pa.scalar(r["PRICE"], pa.float32()).as_py())
            if abs(change / (price - change)) * 100 > 1:
                expected.append((tick * 1000, r["TICKER_SYMBOL"], "TECHNOLOGY-L", change, price))
    got = []
    for tick, batch in enumerate(sent, 1):
        engine.push(SOURCE, rows(STOCKS, tick * 1000, batch))
        out = engine.advance(tick * 1000).get("DESTINATION_SQL_STREAM")
        got.extend((ms(r["ROWTIME"]), r["TICKER_SYMBOL"], r["SECTOR"], r["CHANGE"], r["PRICE"])
                   for r in (out.to_pylist() if out is not None else []))
    assert sorted(got) == sorted(expected) and len(expected) > 50


EVENT_TUMBLING = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (EVENT_TIME TIMESTAMP, TICKER VARCHAR(4), min_price REAL,
                                                   max_price REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND) AS EVENT_TIME, TICKER,
         MIN(PRICE) AS min_price, MAX(PRICE) AS max_price
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND),
           STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND);"""


def tumbling_input(seed: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """Ticks one second apart over five minutes; EVENT_TIME 5 s before ROWTIME (AWS's example's lag)."""
    rng = random.Random(seed)
    ticks = []
    for second in range(0, 300):
        rowtime = 1_700_000_000_000 + second * 1000 + 1
        ticks.append((rowtime, [{"EVENT_TIME": rowtime - 5000, "TICKER": rng.choice(["AMZN", "MSFT", "TBV"]),
                                 "PRICE": round(rng.uniform(10, 90), 2)} for _ in range(rng.randint(0, 8))]))
    return ticks


def expected_tumbling(ticks: list[tuple[int, list[dict[str, Any]]]]) -> set[tuple[int, int, str, float, float]]:
    groups: dict[tuple[int, int, str], list[float]] = defaultdict(list)
    for rowtime, batch in ticks:
        for r in batch:
            groups[(rowtime // MINUTE * MINUTE + MINUTE, r["EVENT_TIME"] // MINUTE * MINUTE, r["TICKER"])].append(
                r["PRICE"])
    return {(end, event, ticker, float(pa.scalar(min(p), pa.float32()).as_py()),
             float(pa.scalar(max(p), pa.float32()).as_py())) for (end, event, ticker), p in groups.items()}


def run(engine: Engine, ticks: list[tuple[int, list[dict[str, Any]]]], stream: StreamSchema, until: int,
        out: str = "DESTINATION_SQL_STREAM") -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for rowtime, batch in ticks:
        if batch:
            engine.push(SOURCE, rows(stream, rowtime, batch))
        emitted = engine.advance(rowtime).get(out)
        got.extend(emitted.to_pylist() if emitted is not None else [])
    emitted = engine.advance(until).get(out)
    return got + (emitted.to_pylist() if emitted is not None else [])


def as_tuples(got: list[dict[str, Any]]) -> set[tuple[int, int, str, float, float]]:
    return {(ms(r["ROWTIME"]), ms(r["EVENT_TIME"]), r["TICKER"], r["MIN_PRICE"], r["MAX_PRICE"]) for r in got}


def test_a_tumbling_window_on_event_time_emits_each_window_once_at_its_end() -> None:
    ticks = tumbling_input(11)
    engine = Engine(compile_program(EVENT_TUMBLING, [EVENTS]))
    got = run(engine, ticks, EVENTS, until=ticks[-1][0] + 2 * MINUTE)
    assert len(got) == len(as_tuples(got))  # no row twice
    assert as_tuples(got) == expected_tumbling(ticks)
    # Each row came out when its window ended, not before: the first minute's rows at the first tick past it.
    assert all(ms(r["ROWTIME"]) % MINUTE == 0 for r in got)


def test_snapshot_and_restore_mid_window_give_what_an_uninterrupted_run_gives() -> None:
    ticks = tumbling_input(12)
    program = compile_program(EVENT_TUMBLING, [EVENTS])
    whole = as_tuples(run(Engine(program), ticks, EVENTS, until=ticks[-1][0] + 2 * MINUTE))
    first = Engine(program)
    before = run(first, ticks[:130], EVENTS, until=ticks[129][0])  # stops mid-window (minute 2, 10 s in)
    second = Engine(compile_program(EVENT_TUMBLING, [EVENTS]))
    second.restore(first.snapshot())
    after = run(second, ticks[130:], EVENTS, until=ticks[-1][0] + 2 * MINUTE)
    assert len(before) + len(after) == len(whole)
    assert as_tuples(before) | as_tuples(after) == whole


def test_state_bytes_count_the_rows_an_open_window_holds_and_drop_when_it_closes() -> None:
    """What the runtime keeps under ``analytics.max_state_bytes``."""
    engine = Engine(compile_program(EVENT_TUMBLING, [EVENTS]))
    start = 1_700_000_040_000  # 20 s into a minute
    assert engine.state_bytes() == 0
    sizes = []
    for second in range(5):
        batch = [{"EVENT_TIME": start, "TICKER": "AMZN", "PRICE": 1.0 + i} for i in range(100)]
        engine.push(SOURCE, rows(EVENTS, start + second * 1000, batch))
        assert not engine.advance(start + second * 1000).get("DESTINATION_SQL_STREAM")
        sizes.append(engine.state_bytes())
    assert sizes[0] > 0 and sizes == sorted(sizes) and sizes[-1] >= 4 * sizes[0]
    assert engine.advance(start // MINUTE * MINUTE + MINUTE).get("DESTINATION_SQL_STREAM").num_rows == 1
    assert engine.state_bytes() == 0


def test_rows_for_a_window_already_emitted_go_to_the_error_stream_as_late() -> None:
    engine = Engine(compile_program(EVENT_TUMBLING, [EVENTS]))
    engine.push(SOURCE, rows(EVENTS, 1000, [{"EVENT_TIME": 0, "TICKER": "A", "PRICE": 1.0}]))
    assert engine.advance(MINUTE)["DESTINATION_SQL_STREAM"].num_rows == 1
    engine.push(SOURCE, rows(EVENTS, 30_000, [{"EVENT_TIME": 0, "TICKER": "A", "PRICE": 9.0}]))
    out = engine.advance(MINUTE + 1)
    [error] = out["error_stream"].to_pylist()
    assert error["ERROR_NAME"] == "Late_row" and error["PUMP_NAME"] == "STREAM_PUMP"
    assert bytes.fromhex(error["DATA_ROW"]).decode().count('"PRICE":9.0') == 1
    assert "DESTINATION_SQL_STREAM" not in out  # the emitted row never changes
    assert "DESTINATION_SQL_STREAM" not in engine.advance(3 * MINUTE)


def test_the_stagger_window_example_gives_awss_two_rows() -> None:
    code = STAGGER_SQL
    engine = Engine(compile_program(code, [EVENTS]))
    eleven = 11 * 3_600_000
    got: list[dict[str, Any]] = []
    for second in (20, 30, 45, 75):  # 11:00:20, 11:00:30, 11:00:45, 11:01:15; event time 5 s before
        t = eleven + second * 1000
        engine.push(SOURCE, rows(EVENTS, t, [{"EVENT_TIME": t - 5000, "TICKER": "X", "PRICE": 1.0}]))
        got.extend((engine.advance(t).get("DESTINATION_SQL_STREAM") or pa.table({})).to_pylist())
    assert got == []
    for second in (80, 135):  # the windows close at 11:01:20 and 11:02:15
        out = engine.advance(eleven + second * 1000)["DESTINATION_SQL_STREAM"].to_pylist()
        got.extend(out)
    assert [(ms(r["ROWTIME"]) - eleven, ms(r["EVENT_TIME"]) - eleven, r["TICKER_COUNT"]) for r in got] == [
        (80_000, 0, 3), (135_000, MINUTE, 1)]


def test_a_sliding_window_counts_the_preceding_minute_through_a_chain_of_streams() -> None:
    code = THROTTLED_ALERTS_SQL
    program = compile_program(code, [STOCKS])
    assert [p.kind for p in program.pumps] == ["continuous", "sliding"]
    engine = Engine(program)
    rng = random.Random(3)
    alerts: list[tuple[int, str]] = []
    got: list[tuple[int, str, int]] = []
    for second in range(0, 400, 7):
        t = second * 1000 + 1
        batch = [{"TICKER_SYMBOL": rng.choice("AB"), "SECTOR": "S", "CHANGE": rng.choice([0.0, 5.0]), "PRICE": 50.0}
                 for _ in range(rng.randint(0, 3))]
        alerts.extend((t, r["TICKER_SYMBOL"]) for r in batch if r["CHANGE"] == 5.0)
        if batch:
            engine.push(SOURCE, rows(STOCKS, t, batch))
        out = engine.advance(t).get("TRIGGER_COUNT_STREAM")
        got.extend((ms(r["ROWTIME"]), r["TICKER_SYMBOL"], r["TRIGGER_COUNT"]) for r in
                   (out.to_pylist() if out is not None else []))
    expected = [(t, k, sum(1 for t2, k2 in alerts if k2 == k and t - MINUTE <= t2 <= t)) for t, k in alerts]
    assert sorted(got) == sorted(expected) and len(expected) > 20


def test_top_k_items_per_tumbling_window() -> None:
    code = TOP_K_SQL
    engine = Engine(compile_program(code, [EVENTS]))
    rng = random.Random(5)
    counts: list[dict[str, int]] = [defaultdict(int), defaultdict(int)]
    got: list[dict[str, Any]] = []
    for second in range(0, 120, 3):
        batch = [{"EVENT_TIME": 0, "TICKER": rng.choice("AAAABBBCCD"), "PRICE": 1.0} for _ in range(5)]
        for r in batch:
            counts[second // 60][r["TICKER"]] += 1
        engine.push(SOURCE, rows(EVENTS, second * 1000 + 1, batch))
        out = engine.advance(second * 1000 + 1).get("DESTINATION_SQL_STREAM")
        got.extend(out.to_pylist() if out is not None else [])
    assert len(got) == 2  # the first window, emitted once the clock passed its end
    got.extend(engine.advance(2 * MINUTE)["DESTINATION_SQL_STREAM"].to_pylist())
    for window, window_rows in enumerate([got[:2], got[2:]]):
        top = sorted(counts[window].items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        assert [(r["ITEM"], r["ITEM_COUNT"], ms(r["ROWTIME"])) for r in window_rows] == [
            (k, float(n), (window + 1) * MINUTE) for k, n in top]


def test_a_left_join_with_reference_data() -> None:
    code = REFERENCE_JOIN_SQL
    reference = schema("CompanyName", [("Ticker", "VARCHAR(4)"), ("Company", "VARCHAR(20)")])
    engine = Engine(compile_program(code, [STOCKS], [reference]))
    engine.set_reference("CompanyName", pa.table({"Ticker": ["AMZN", "WMT"], "Company": ["Amazon", "Walmart"]}))
    engine.push(SOURCE, rows(STOCKS, 1000, [{"TICKER_SYMBOL": t, "SECTOR": "S", "CHANGE": 1.0, "PRICE": 2.0}
                                            for t in ("AMZN", "XOM", "WMT")]))
    out = engine.advance(1000)["DESTINATION_SQL_STREAM"].to_pylist()
    assert sorted((r["TICKER_SYMBOL"], r["Company"]) for r in out) == [
        ("AMZN", "Amazon"), ("WMT", "Walmart"), ("XOM", None)]


def test_a_row_the_sql_cannot_compute_goes_to_the_error_stream_alone() -> None:
    code = """
    CREATE OR REPLACE STREAM "D" (n INTEGER);
    CREATE OR REPLACE PUMP "P" AS INSERT INTO "D" SELECT STREAM CAST(sector AS INTEGER) FROM "SOURCE_SQL_STREAM_001";"""
    engine = Engine(compile_program(code, [STOCKS]))
    engine.push(SOURCE, rows(STOCKS, 1000, [{"SECTOR": s, "CHANGE": 0.0, "PRICE": 1.0} for s in ("1", "x", "3")]))
    out = engine.advance(1000)
    assert out["D"].column("N").to_pylist() == [1, 3]
    [error] = out["error_stream"].to_pylist()
    assert error["ERROR_NAME"] == "SQL_error" and error["PUMP_NAME"] == "P" and "x" in error["MESSAGE"]


@pytest.mark.parametrize(("code", "named", "line"), [
    ('CREATE STREAM "D" (a INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D"\n'
     'SELECT STREAM RANDOM_CUT_FOREST(price) FROM "SOURCE_SQL_STREAM_001";', "RANDOM_CUT_FOREST (line 3)", None),
    ('CREATE STREAM "D" (a INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D"\n'
     'SELECT STREAM no_such_function(price) FROM "SOURCE_SQL_STREAM_001";', "no_such_function", 2),
    ('CREATE STREAM "D" (a INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM COUNT(*)\n'
     'FROM "SOURCE_SQL_STREAM_001" GROUP BY ticker_symbol;', "needs a ROWTIME window", 2),
    ('CREATE STREAM "D" (a INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM a.price\n'
     'FROM "SOURCE_SQL_STREAM_001" AS a JOIN "OTHER" OVER (RANGE INTERVAL \'1\' MINUTE PRECEDING) AS b ON true;',
     "JOIN ... OVER", 3),
    ("DROP TABLE x;", "Unsupported statement 'DROP TABLE x'", 1),
    ('CREATE STREAM "D" (a INTEGER, "A" DOUBLE);', "differ only by case", 1),
    ('CREATE STREAM "D" (a INTEGER);\n\nCREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM price, change\n'
     'FROM "SOURCE_SQL_STREAM_001";', "selects 2 columns for D, which takes 1", 3),
    ('CREATE STREAM "D" (a INTEGER);\nCREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM price FROM "NOPE";',
     "NOPE, which is no stream", 2),
])
def test_code_the_engine_cannot_run_is_refused_with_the_construct_and_its_line(code: str, named: str,
                                                                              line: int | None) -> None:
    with pytest.raises(CodeError) as err:
        compile_program(code, [STOCKS])
    assert named in str(err.value)
    if line is not None:
        assert err.value.line == line and str(err.value).endswith(f"(line {line})")


def test_quoted_names_are_case_sensitive_and_unquoted_ones_fold_to_upper_case() -> None:
    code = 'CREATE STREAM "lower" (x DOUBLE);\nCREATE STREAM UPPERED (x DOUBLE);\n' \
           'CREATE PUMP p1 AS INSERT INTO "lower" SELECT STREAM price FROM "SOURCE_SQL_STREAM_001";\n' \
           'CREATE PUMP p2 AS INSERT INTO uppered SELECT STREAM price FROM "SOURCE_SQL_STREAM_001";'
    program = compile_program(code, [STOCKS])
    assert set(program.streams) == {"lower", "UPPERED"}
    with pytest.raises(CodeError, match="no CREATE STREAM creates"):
        compile_program(code.replace('INTO "lower"', 'INTO "LOWER"'), [STOCKS])
