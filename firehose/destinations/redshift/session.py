"""Connections to the cluster: kept between loads, and a stale one replaced, written once.

Loads run in the daemon's thread pool (Redshift's COPY, PostgreSQL's CSV load, reading a table's
columns) and in worker processes (text and JSON rows), so each process keeps its own connections,
by ``Endpoint``, in a list: loads may run side by side, each on a connection of its own, and one
that is done leaves its connection for the next.

``run`` is how work gets a connection, and it holds the rules:

* A connection is kept again only when its work succeeded: after any error its session state is
  unknown (an aborted transaction, a COPY half sent), so it is closed and the next attempt starts
  afresh.
* A kept connection may have gone stale meanwhile (a server restart, an idle timeout): work that
  fails on one with an ``OperationalError`` runs once more, on the next kept connection or a new
  one. On a new connection the failure is the attempt's.
* A database error becomes a retriable ``DestinationError`` carrying the server's own message; a
  login the server refused has the code ``Redshift.AuthenticationFailed`` (Firehose's), so a
  destination whose password comes from a secret can read the secret again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from firehose.errors import DestinationError

T = TypeVar("T")

#: Firehose's errorCode for a user name and password the cluster refused.
AUTHENTICATION_FAILED = "Redshift.AuthenticationFailed"
#: SQLSTATEs of a refused login: invalid_password, invalid_authorization_specification.
_LOGIN_REFUSED = frozenset({"28P01", "28000"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server to connect to: libpq's connection parameters, and what messages call it.

    Picklable and hashable: it crosses to worker processes, which keep their connections by it.
    """

    parameters: tuple[tuple[str, Any], ...]
    where: str


#: Kept connections, in whichever process loads (a worker, or the daemon itself).
_KEPT: dict[Endpoint, list[psycopg.Connection[Any]]] = {}


def server_message(exc: psycopg.Error) -> str:
    """The server's own words (and, for COPY, the line and column it stopped at)."""
    primary = exc.diag.message_primary or str(exc).strip()
    return f"{primary} ({exc.diag.context})" if exc.diag.context else primary


def connect(endpoint: Endpoint) -> psycopg.Connection[Any]:
    """A new connection, not kept (a retriable ``DestinationError`` when there is none)."""
    try:
        # Client-side parameter binding: plain SQL text, which every Redshift version accepts.
        return psycopg.connect(**dict(endpoint.parameters), cursor_factory=psycopg.ClientCursor)
    except psycopg.Error as exc:
        message = server_message(exc)
        refused = exc.sqlstate in _LOGIN_REFUSED or "authentication failed" in message
        raise DestinationError(f"cannot connect to {endpoint.where}: {message}",
                               code=AUTHENTICATION_FAILED if refused else "") from exc


def run(endpoint: Endpoint, work: Callable[[psycopg.Connection[Any]], T], failed: str) -> T:
    """``work(connection)`` on a kept connection or a new one, by the rules above; a database error
    raises ``DestinationError("<failed>: <the server's message>")``."""
    while True:
        conn, kept = _take(endpoint)
        try:
            result = work(conn)
        except psycopg.OperationalError as exc:
            conn.close()
            if kept:
                continue  # the kept connection went stale: once more, on another
            raise DestinationError(f"{failed}: {server_message(exc)}") from exc
        except psycopg.Error as exc:
            conn.close()
            raise DestinationError(f"{failed}: {server_message(exc)}") from exc
        except BaseException:
            conn.close()
            raise
        _KEPT.setdefault(endpoint, []).append(conn)
        return result


def close(endpoint: Endpoint) -> None:
    """Close the connections this process keeps for ``endpoint`` (one in use is kept again or
    closed when its work ends)."""
    for conn in _KEPT.pop(endpoint, []):
        conn.close()


def _take(endpoint: Endpoint) -> tuple[psycopg.Connection[Any], bool]:
    """A kept connection (and True), or a new one. Safe in threads: a pop either takes one or finds none."""
    kept = _KEPT.get(endpoint, [])
    while True:
        try:
            conn = kept.pop()
        except IndexError:
            return connect(endpoint), False
        if not conn.closed:
            return conn, True
