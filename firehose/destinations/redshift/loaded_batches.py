"""Exactly once, in either load mode: the ``firehose_loaded_batches`` table.

    firehose_loaded_batches (
        batch_key varchar(1024) PRIMARY KEY,  -- the staged object's key (S3 keys are ≤ 1024 bytes;
                                              -- Redshift's TEXT would be VARCHAR(256))
        loaded_at timestamptz NOT NULL        -- when the loading attempt ran, UTC
    )

created on first use in the first schema of the user's search_path. Each attempt runs in one
transaction (``load_once``): look the batch key up; if it is there, an earlier attempt committed
and only its acknowledgement was lost (crash, timeout), so nothing is loaded; otherwise load, then
insert the key, then commit, so the rows and the key become visible together or not at all. Two
concurrent loads of one key cannot both commit: in PostgreSQL the second insert of the key fails
on the primary key, in Redshift (whose keys are not enforced) serializable isolation aborts one of
them; the loser is retried and finds the key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

CREATE_TABLE = ("CREATE TABLE IF NOT EXISTS firehose_loaded_batches "
                "(batch_key varchar(1024) PRIMARY KEY, loaded_at timestamptz NOT NULL)")
_ALREADY_LOADED = "SELECT 1 FROM firehose_loaded_batches WHERE batch_key = %s"
_MARK_LOADED = "INSERT INTO firehose_loaded_batches (batch_key, loaded_at) VALUES (%s, %s)"


def load_once(conn: psycopg.Connection[Any], batch_key: str,
              load: Callable[[psycopg.Cursor[Any]], None]) -> bool:
    """Run ``load(cursor)`` unless ``batch_key`` is in firehose_loaded_batches, and record it, in one
    transaction. False when an earlier attempt had already loaded the batch."""
    with conn.transaction():
        cur = conn.cursor()
        cur.execute(CREATE_TABLE)
        cur.execute(_ALREADY_LOADED, (batch_key,))
        if cur.fetchone():
            return False
        load(cur)
        cur.execute(_MARK_LOADED, (batch_key, datetime.now(UTC)))
    return True
