"""The Redshift destination: staging, manifests, the composed COPY, and exactly-once loads into a real
PostgreSQL server (the ``jdbc:postgresql://`` mode), started once per session with initdb/pg_ctl
(``tests/support/servers.py``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from firehose.definitions import RedshiftDestinationConfiguration
from firehose.destinations.base import DestinationContext
from firehose.destinations.local import LocalDirectoryDestination
from firehose.destinations.redshift import (
    LoadFormat,
    RedshiftDestination,
    copy_statement,
    load_format,
    validate,
)
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import ObjectBatch
from firehose.settings import Settings
from tests.support.ports import free_port
from tests.support.servers import PostgresServer
from tests.support.waiting import wait_until

ROLE = "arn:aws:iam::123456789012:role/firehose"
NAME = "orders-1-2024-01-02-03-04-05-0b4e7a0e-5b1c-4c55-9d51-8e3c2f0a1b2c"
KEY = f"events/2024/01/02/03/{NAME}"
MANIFEST_KEY = f"events/manifests/2024/01/02/03/{NAME}"
ERROR_MANIFEST_KEY = f"errors/manifests/2024/01/02/03/{NAME}"
MANIFEST = f'{{"entries": [{{"url": "s3://stage-bucket/{KEY}", "mandatory": true}}]}}'


# -- the session's PostgreSQL server (tests/support/servers.py) ------------------------------------

Postgres = PostgresServer


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    return postgres_server


@pytest.fixture
def db(postgres: Postgres) -> Iterator[psycopg.Connection[Any]]:
    """The warehouse database, emptied for each test."""
    with postgres.connect() as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        yield conn


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


# -- helpers ---------------------------------------------------------------------


def definition(url: str, *, table: str = "events", columns: str | None = None, options: str | None = None,
               compression: str = "UNCOMPRESSED",
               password: str = "not-the-password") -> RedshiftDestinationConfiguration:
    copy: dict[str, str] = {"DataTableName": table}
    if columns is not None:
        copy["DataTableColumns"] = columns
    if options is not None:
        copy["CopyOptions"] = options
    return RedshiftDestinationConfiguration.model_validate({
        "RoleARN": ROLE, "ClusterJDBCURL": url, "CopyCommand": copy,
        "Username": "firehose", "Password": password,
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::stage-bucket", "Prefix": "events/",
                            "CompressionFormat": compression},
        "RetryOptions": {"DurationInSeconds": 600},
    })


def destination(config: RedshiftDestinationConfiguration, stage_dir: Path, executor: ThreadPoolExecutor,
                password: str | None = None, **settings: Any) -> RedshiftDestination:
    """A destination staging into ``stage_dir``; ``password`` goes in the settings' credentials."""
    credentials = {config.cluster_jdbc_url: {"password": password}} if password else {}
    ctx = DestinationContext(stream="orders", settings=Settings(credentials=credentials, **settings),
                             executor=executor)
    return RedshiftDestination(config, ctx, stage=LocalDirectoryDestination(stage_dir, ctx))


def batch(body: bytes, *, gzipped: bool = False) -> ObjectBatch:
    return ObjectBatch("orders", KEY, (body,), len(body), 2, 1704164645000,
                       content_encoding="gzip" if gzipped else None)


def deliver(dest: RedshiftDestination, body: bytes, *, gzipped: bool = False) -> None:
    outcome = asyncio.run(dest.deliver(batch(body, gzipped=gzipped)))
    assert outcome.delivered_all


def rows(db: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return db.execute(query).fetchall()


# -- the PostgreSQL load ---------------------------------------------------------------


def test_csv_with_delimiter_header_and_null_string_loads_exactly_the_records(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int, name text, note text)")
    config = definition(postgres.url(), options="CSV DELIMITER AS ';' IGNOREHEADER 1 NULL AS 'NA'")
    deliver(destination(config, tmp_path, executor, postgres.password),
            b'id;name;note\n1;"semi;colon";NA\n2;"two\nlines";""\n')
    assert rows(db, "SELECT * FROM events ORDER BY id") == [(1, "semi;colon", None), (2, "two\nlines", "")]


def test_delimited_text_keeps_backslashes_and_reads_empty_fields_as_redshift_does(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (path text, n int, note varchar(20))")
    config = definition(postgres.url(), options="DELIMITER '|'")
    deliver(destination(config, tmp_path, executor, postgres.password), b"c:\\temp\\x|1|\n\\N||plain\n")
    assert rows(db, "SELECT * FROM events ORDER BY n NULLS LAST") == [
        ("c:\\temp\\x", 1, ""), (None, None, "plain")]


def test_json_auto_maps_keys_case_insensitively_to_the_listed_columns(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (user_id text, amount numeric, ok boolean, meta text, "
               "loaded timestamptz DEFAULT now())")
    config = definition(postgres.url(), columns="user_id, amount, ok, meta", options="FORMAT AS JSON 'auto'")
    body = (b'{"User_ID": "a", "AMOUNT": 1.50, "ok": true, "meta": {"tags": [1, "x"]}, "ignored": 7}'
            b'{"user_id": "b"}\n {"USER_ID": "c", "amount": 12345678901234567890.25, "Ok": false}\n')
    deliver(destination(config, tmp_path, executor, postgres.password), body)
    loaded = rows(db, "SELECT user_id, amount::text, ok, meta, loaded IS NOT NULL "
                      "FROM events ORDER BY user_id")
    assert loaded == [("a", "1.50", True, '{"tags":[1,"x"]}', True), ("b", None, None, None, True),
                      ("c", "12345678901234567890.25", False, None, True)]


def test_gzip_staged_json_is_staged_compressed_and_loaded_into_the_catalog_columns(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int, \"Label\" text)")
    config = definition(postgres.url(), options="JSON 'auto ignorecase' GZIP", compression="GZIP")
    body = gzip.compress(b'{"ID": 1, "label": "one"}\n{"id": 2, "LABEL": "two"}\n')
    deliver(destination(config, tmp_path, executor, postgres.password), body, gzipped=True)
    assert (tmp_path / KEY).read_bytes() == body
    assert rows(db, 'SELECT id, "Label" FROM events ORDER BY id') == [(1, "one"), (2, "two")]


def test_the_staged_object_and_its_manifest_land_at_the_expected_keys(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int)")
    deliver(destination(definition(postgres.url()), tmp_path, executor, postgres.password), b"1\n2\n")
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [KEY, MANIFEST_KEY]
    assert (tmp_path / KEY).read_bytes() == b"1\n2\n"
    assert (tmp_path / MANIFEST_KEY).read_text() == MANIFEST
    assert json.loads(MANIFEST) == {"entries": [{"url": f"s3://stage-bucket/{KEY}", "mandatory": True}]}


def test_a_batch_delivered_twice_is_loaded_once(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int)")
    config = definition(postgres.url())
    deliver(destination(config, tmp_path, executor, postgres.password), b"1\n2\n")
    # A retry after a lost acknowledgement, or a replay after a restart (a new destination object).
    deliver(destination(config, tmp_path, executor, postgres.password), b"1\n2\n")
    assert rows(db, "SELECT id FROM events ORDER BY id") == [(1,), (2,)]
    assert rows(db, "SELECT batch_key, loaded_at IS NOT NULL FROM firehose_loaded_batches") == [(KEY, True)]


@pytest.mark.parametrize("options", [None, "CSV"], ids=["rows", "csv"])
def test_loads_reuse_one_connection_and_survive_it_being_dropped(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor,
    options: str | None
) -> None:
    """Both ways of loading (rows in a worker, a CSV load in a thread) keep one connection, and
    replace it when it went stale."""
    db.execute("CREATE TABLE events (id int)")
    dest = destination(definition(postgres.url(), options=options), tmp_path, executor, postgres.password)
    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = 'firehose'"

    async def load(*bodies: bytes) -> None:
        for i, body in enumerate(bodies):
            await dest.deliver(replace(batch(body), key=f"{KEY}-{i}-{body[:1].decode()}"))

    asyncio.run(load(b"1\n", b"2\n"))
    [(pid,)] = rows(db, sessions)
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))  # an idle timeout or a server restart
    asyncio.run(load(b"3\n"))
    assert rows(db, "SELECT id FROM events ORDER BY id") == [(1,), (2,), (3,)]
    assert rows(db, sessions) != [(pid,)]
    asyncio.run(dest.aclose())
    wait_until(lambda: rows(db, sessions) == [])


def test_row_loads_run_side_by_side_and_each_batch_lands_once(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int, name text)")
    dest = destination(definition(postgres.url(), options="JSON 'auto'"), tmp_path, executor, postgres.password)
    bodies = [b"".join(b'{"id": %d, "name": "n%d"}\n' % (b * 1000 + i, i) for i in range(500)) for b in range(6)]

    async def load_all() -> None:
        await asyncio.gather(*(dest.deliver(replace(batch(body), key=f"{KEY}-{i}")) for i, body in enumerate(bodies)))
        # one of them again, as a retry after a lost acknowledgement would: not loaded twice
        await dest.deliver(replace(batch(bodies[3]), key=f"{KEY}-3"))
        await dest.aclose()

    asyncio.run(load_all())
    assert rows(db, "SELECT count(*), count(DISTINCT id) FROM events") == [(3000, 3000)]
    assert rows(db, "SELECT count(*) FROM firehose_loaded_batches") == [(6,)]


def test_a_missing_table_is_retried_with_the_server_message_and_loads_once_created(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    dest = destination(definition(postgres.url()), tmp_path, executor, postgres.password)
    with pytest.raises(DestinationError) as failed:
        deliver(dest, b"1\n")
    assert failed.value.retriable
    assert 'relation "events" does not exist' in failed.value.message
    db.execute("CREATE TABLE events (id int)")
    deliver(dest, b"1\n")
    assert rows(db, "SELECT id FROM events") == [(1,)]


def test_bad_data_fails_the_whole_attempt_and_records_nothing(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int)")
    dest = destination(definition(postgres.url(), options="CSV"), tmp_path, executor, postgres.password)
    with pytest.raises(DestinationError) as failed:
        deliver(dest, b"1\nx\n")
    assert failed.value.retriable
    assert 'invalid input syntax for type integer: "x"' in failed.value.message
    assert "line 2" in failed.value.message
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]
    assert rows(db, "SELECT to_regclass('firehose_loaded_batches') IS NULL") == [(True,)]


def test_a_server_that_is_down_is_a_retriable_error(
    postgres: Postgres, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    dest = destination(definition(postgres.url(port=free_port())), tmp_path, executor, postgres.password)
    with pytest.raises(DestinationError) as failed:
        deliver(dest, b"1\n")
    assert failed.value.retriable
    assert "cannot connect to PostgreSQL server 127.0.0.1" in failed.value.message
    assert "refused" in failed.value.message
    assert (tmp_path / KEY).exists()  # staged before the load; a retry overwrites it


def test_settings_credentials_override_the_definition_password(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    db.execute("CREATE TABLE events (id int)")
    config = definition(postgres.url(), password="wrong-password")
    with pytest.raises(DestinationError, match="password authentication failed"):
        deliver(destination(config, tmp_path, executor), b"1\n")
    deliver(destination(config, tmp_path, executor, password=postgres.password), b"1\n")
    assert rows(db, "SELECT id FROM events") == [(1,)]


def test_redshift_mode_runs_the_composed_copy(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """PostgreSQL has no COPY ... CREDENTIALS ... MANIFEST: its syntax error shows the statement ran.

    The test server has no TLS, which a Redshift URL requires unless verification is turned off."""
    db.execute("CREATE TABLE events (id int)")
    config = definition(postgres.url("redshift"), options="JSON 'auto'")
    with pytest.raises(DestinationError, match="SSL"):
        deliver(destination(config, tmp_path, executor, postgres.password), b'{"id": 1}')
    dest = destination(config, tmp_path, executor, postgres.password, http={"verify": False})
    assert dest.describe() == f"Redshift cluster 127.0.0.1:{postgres.port}/warehouse, table events"
    with pytest.raises(DestinationError) as failed:
        deliver(dest, b'{"id": 1}')
    assert failed.value.retriable
    assert 'syntax error at or near "CREDENTIALS"' in failed.value.message
    assert rows(db, "SELECT to_regclass('firehose_loaded_batches') IS NULL") == [(True,)]


def test_expired_files_the_manifest_under_errors_with_the_reason_logged(
    postgres: Postgres, tmp_path: Path, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    dest = destination(definition(postgres.url()), tmp_path, executor)
    with caplog.at_level(logging.ERROR, logger="firehose.destinations.redshift"):
        asyncio.run(dest.expired(batch(b"1\n"), 'relation "events" does not exist'))
    assert (tmp_path / ERROR_MANIFEST_KEY).read_text() == MANIFEST
    [record] = caplog.records
    assert record.__dict__["reason"] == 'relation "events" does not exist'
    assert record.__dict__["manifest"] == f"s3://stage-bucket/{ERROR_MANIFEST_KEY}"


def test_check_passes_when_the_server_answers_and_fails_clearly_when_it_does_not(
    postgres: Postgres, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    asyncio.run(destination(definition(postgres.url()), tmp_path, executor, postgres.password).check())
    down = destination(definition(postgres.url(port=free_port())), tmp_path, executor, postgres.password)
    with pytest.raises(DestinationUnavailable, match="cannot connect to PostgreSQL server 127.0.0.1"):
        asyncio.run(down.check())


# -- the Redshift COPY, without a cluster -------------------------------------------------

MANIFEST_URL = f"s3://stage-bucket/{MANIFEST_KEY}"


@pytest.mark.parametrize(("table", "columns", "options", "expected"), [
    ("events", None, None,
     f"COPY events FROM '{MANIFEST_URL}' CREDENTIALS 'aws_iam_role={ROLE}' MANIFEST;"),
    ("public.events", "id,name,ts", "JSON 'auto' GZIP",
     f"COPY public.events (id,name,ts) FROM '{MANIFEST_URL}' CREDENTIALS 'aws_iam_role={ROLE}' MANIFEST "
     "JSON 'auto' GZIP;"),
    ("events", "a, b", "  delimiter '|' REGION 'us-west-2' TIMEFORMAT 'auto'\n",
     f"COPY events (a, b) FROM '{MANIFEST_URL}' CREDENTIALS 'aws_iam_role={ROLE}' MANIFEST "
     "delimiter '|' REGION 'us-west-2' TIMEFORMAT 'auto';"),
])
def test_copy_statement_is_the_command_firehose_composes(
    table: str, columns: str | None, options: str | None, expected: str
) -> None:
    config = definition("jdbc:redshift://cluster.abc.us-east-1.redshift.amazonaws.com:5439/dev", table=table,
                        columns=columns, options=options)
    assert copy_statement(config, MANIFEST_URL) == expected


def test_copy_statement_quotes_the_values_it_supplies() -> None:
    config = definition("jdbc:redshift://cluster.example:5439/dev")
    assert copy_statement(config, "s3://b/it's\\here") == (
        f"COPY events FROM 's3://b/it''s\\\\here' CREDENTIALS 'aws_iam_role={ROLE}' MANIFEST;")


# -- CopyOptions: translation and validation ------------------------------------------------


@pytest.mark.parametrize(("options", "expected"), [
    (None, LoadFormat("text")),
    ("DELIMITER AS '\\t' NULL AS '\\N' IGNOREHEADER AS 2", LoadFormat("text", "\t", '"', "\\N", 2)),
    ("csv quote as '''' delimiter ';' gzip", LoadFormat("csv", ";", "'", "", 0, True)),
    ("FORMAT AS CSV NULL 'null' REGION 'eu-west-1' TIMEFORMAT 'auto' DATEFORMAT AS 'AUTO'",
     LoadFormat("csv", ",", '"', "null")),
    ("FORMAT JSON 'auto ignorecase' GZIP", LoadFormat("json", gzip=True)),
])
def test_load_format_translates_copy_options(options: str | None, expected: LoadFormat) -> None:
    assert load_format(options) == expected


@pytest.mark.parametrize(("options", "message"), [
    ("FIXEDWIDTH 'a:1,b:2'", "FIXEDWIDTH cannot be honoured when loading into PostgreSQL"),
    ("FORMAT AS PARQUET", "PARQUET cannot be honoured"),
    ("BZIP2", "BZIP2 cannot be honoured"),
    ("CSV MAXERROR 10", "MAXERROR cannot be honoured"),
    ("DELIMITER '|' ESCAPE", "ESCAPE cannot be honoured"),
    ("JSON 's3://bucket/jsonpaths.json'", "only JSON 'auto' and 'auto ignorecase'"),
    ("JSON 'auto' CSV", "CSV and JSON are two data formats"),
    ("JSON 'auto' IGNOREHEADER 1", "IGNOREHEADER applies to delimited text, not JSON"),
    ("QUOTE '\"'", "QUOTE needs CSV"),
    ("DELIMITER '||'", "DELIMITER must be a single-byte character"),
    ("CSV DELIMITER '\"'", "DELIMITER and QUOTE must differ"),
    ("TIMEFORMAT 'epochsecs'", "only TIMEFORMAT 'auto'"),
    ("IGNOREHEADER 'one'", "IGNOREHEADER needs a number"),
    ("DELIMITER '|' DELIMITER ','", "DELIMITER is given twice"),
    ("DELIMITER '|", "unterminated quoted string"),
    ("CSV;", "unexpected ';'"),
])
def test_validate_refuses_options_a_postgresql_load_cannot_honour(options: str, message: str) -> None:
    with pytest.raises(ValueError, match="CopyCommand.CopyOptions") as refused:
        validate(definition("jdbc:postgresql://db.internal:5432/warehouse", options=options))
    assert message in str(refused.value)


def test_validate_passes_redshift_options_through_but_checks_gzip_both_ways() -> None:
    validate(definition("jdbc:redshift://c.example:5439/dev",
                        options="FIXEDWIDTH 'a:1' MAXERROR 5 ACCEPTINVCHARS"))
    validate(definition("jdbc:redshift://c.example:5439/dev", options="JSON 'auto' gzip", compression="GZIP"))
    for url in ("jdbc:redshift://c.example:5439/dev", "jdbc:postgresql://db.internal/warehouse"):
        with pytest.raises(ValueError, match="must include GZIP: S3Configuration.CompressionFormat is GZIP"):
            validate(definition(url, options="JSON 'auto'", compression="GZIP"))
        with pytest.raises(ValueError, match="has GZIP but S3Configuration.CompressionFormat is UNCOMP"):
            validate(definition(url, options="JSON 'auto' GZIP"))


def test_the_fast_json_reader_builds_the_rows_the_exact_reader_builds() -> None:
    """One object per line goes through orjson; anything it cannot render exactly takes the exact path."""
    from firehose.destinations.redshift.postgres_load import Column, _fast_json_rows, _json_rows

    columns = [Column("id", False), Column("price", False), Column("ratio", False, binary_float=True),
               Column("label", True), Column("meta", True), Column("ok", False)]
    body = (b'{"id": 1, "price": 1.50, "ratio": 0.25, "label": "a", "meta": {"k": [1, "x"]}, "ok": true}\n'
            b'{"ID": 2, "Label": "case", "RATIO": 1e-3}\n'
            b'\n'
            b'{"id": 123456789012345678901234567890, "label": null}\n'
            b'{"id": 4}{"id": 5, "price": 7}\n'
            b'  {"id": 6, "extra": "ignored", "ratio": 3.0}  \n'
            b'{"ok": null, "meta": null, "label": "p", "ratio": 2.5, "price": null, "id": 7}\n'
            b'{"ok": null, "meta": null, "label": "p", "ratio": 2.5, "price": 2.5, "id": 8}\n')
    def text(rows: list[list[Any]]) -> list[list[str | None]]:
        """As COPY receives them: write_row renders ints and floats as their text."""
        return [[None if v is None else v if isinstance(v, str) else repr(v) for v in r] for r in rows]

    assert text(list(_fast_json_rows(body, columns))) == list(_json_rows(body.decode(), columns))
    rows = text(list(_fast_json_rows(body, columns)))
    assert rows[0] == ["1", "1.50", "0.25", "a", '{"k":[1,"x"]}', "true"]
    assert [r[0] for r in rows] == ["1", "2", "123456789012345678901234567890", "4", "5", "6", "7", "8"]
    assert rows[-2] == ["7", None, "2.5", "p", None, None]


def test_the_column_renderer_writes_what_psycopg_formats_row_by_row(
    monkeypatch: pytest.MonkeyPatch, db: psycopg.Connection[Any]
) -> None:
    """Pieces of plain lines are rendered a column at a time; any piece with something the fast
    renderer does not handle exactly (a backslash, a missing or differently spelled key, a bool,
    an object, a float for a non-float column, a line that is not one object) is formatted row by
    row. Either way the COPY text is the one psycopg's row formatter makes."""
    from firehose.destinations.redshift import postgres_load
    from firehose.destinations.redshift.postgres_load import Column, _fast_json_rows, _formatted, _json_copy_text

    monkeypatch.setattr(postgres_load, "_COPY_CHUNK", 64)  # a piece every line or two
    columns = [Column("id", False), Column("name", True), Column("ratio", False, binary_float=True)]
    plain = [b'{"id": %d, "name": "n%d", "ratio": %s}' % (i, i, v)
             for i, v in enumerate([b"0.5", b"1", b"null", b"1e16", b"-0.0", b"2.5e-7", b"123456789012345678901"])]
    plain.append(b'{"id": 20, "name": 7, "ratio": 0.25}')  # a number for a text column: its text
    odd = [b'{"id": 1, "name": "back\\\\slash\\ttab", "ratio": 1.5}', b'{"id": 2, "ratio": 1.5}',
           b'{"ID": 3, "name": "x", "ratio": 1.5}', b'{"id": true, "name": "x", "ratio": 1.5}',
           b'{"id": 5, "name": {"k": [1]}, "ratio": 1.5}', b'{"id": 6.50, "name": "x", "ratio": 1.5}',
           b'', b'{"id": 8, "name": "x", "ratio": 1.5}{"id": 9, "name": "y", "ratio": 2}',
           b'{"id": 10, "name": "caf\xc3\xa9 \xe2\x82\xac", "ratio": null}\r',
           b'{"id": null, "name": null, "ratio": 3}']
    for lines in (plain, odd, plain + odd + plain, odd[::-1] + plain[::-1]):
        data = b"\n".join(lines) + b"\n"
        expected = b"".join(_formatted(_fast_json_rows(data, columns), db))
        assert b"".join(_json_copy_text(data, columns, db)) == expected
    with pytest.raises(DestinationError, match="JSON 'auto' loads JSON objects, found a JSON list"):
        b"".join(_json_copy_text(b"\n".join([*plain, b"[1, 2]"]), columns, db))
    # The plain lines really take the column path: it renders them the same in one piece, too.
    monkeypatch.setattr(postgres_load, "_COPY_CHUNK", 1 << 20)
    data = b"\n".join(plain) + b"\n"
    exact = postgres_load._EXACT_TYPES
    by_rows = b"".join(_formatted(_fast_json_rows(data, columns), db))
    assert postgres_load._columnar(data, lambda d: (d["id"], d["name"], d["ratio"]), [exact, exact, exact | {float}]) \
        == by_rows


def test_a_batch_of_spooled_records_is_read_from_the_spool_files(
    postgres: Postgres, db: psycopg.Connection[Any], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """The loading worker reads the batch where its extents say; a file gone from under it is a
    retriable error that says so."""
    from firehose.records import FileRange

    db.execute("CREATE TABLE events (id int, name text)")
    dest = destination(definition(postgres.url(), options="JSON 'auto'"), tmp_path / "stage", executor,
                       postgres.password)
    body = b'{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n'
    segment = tmp_path / "segment"
    segment.write_bytes(b"header" + body + b"trailer")
    first = body.index(b"\n") + 1
    spooled = replace(batch(body), extents=(FileRange(str(segment), 6, first),
                                            FileRange(str(segment), 6 + first, len(body) - first)))
    assert asyncio.run(dest.deliver(spooled)).delivered_all
    assert rows(db, "SELECT id, name FROM events ORDER BY id") == [(1, "a"), (2, "b")]
    gone = replace(spooled, key=f"{KEY}-2", extents=(FileRange(str(tmp_path / "dropped"), 0, len(body)),))
    with pytest.raises(DestinationError, match="reading the batch's records from the spool failed") as failed:
        asyncio.run(dest.deliver(gone))
    assert failed.value.retriable
