"""``firehose top``: the console's figures in a terminal, refreshed every second, like ``vector top``.

It reads the daemon's ``/metrics.json`` (signed like ``ls``'s ``/readyz``, so it works with
authentication on) and shows, per delivery stream, the rates between two reads (records and bytes
in and delivered, records sent to the error output) and the levels (data freshness, bytes
buffered), with the spool's use above the table. On a terminal the table is redrawn in place;
otherwise (or with ``--once``) each refresh prints one plain table.
"""

from __future__ import annotations

import sys
import time
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from firehose.commands import units
from firehose.commands.connection import CommandError, Connection, connect, daemon_json

#: Counters shown as rates (per second between two reads), by column; a name ending in ``_`` sums
#: every destination's series (``firehose_delivery_to_<x>_records_total``).
_RATES = {
    "in rec/s": ("firehose_incoming_records_total",),
    "in B/s": ("firehose_incoming_bytes_total",),
    "out rec/s": ("firehose_delivery_to_", "_records_total"),
    "out B/s": ("firehose_delivery_to_", "_bytes_total"),
    "errors/s": ("firehose_error_output_records_total",),
}


@dataclass(frozen=True)
class Reading:
    """One read of ``/metrics.json``: when, and each delivery stream's samples."""

    time_s: float
    streams: Mapping[str, Mapping[str, float]]
    daemon: Mapping[str, float]


def read(connection: Connection) -> Reading:
    doc = daemon_json(connection, "/metrics.json?history=0")
    if not isinstance(doc, dict) or not isinstance(doc.get("current"), dict):
        raise CommandError(f"{connection.endpoint_url} does not serve /metrics.json to these credentials "
                           "(top needs this daemon, and an operator's credentials when authentication is on)")
    current = doc["current"]
    return Reading(current.get("time_ms", time.time() * 1000) / 1000, current.get("delivery_streams", {}),
                   current.get("daemon", {}))


def total(samples: Mapping[str, float], name: tuple[str, ...]) -> float:
    """A counter's value; with a (prefix, suffix) name, the sum over every series that matches."""
    if len(name) == 1:
        return sum(v for k, v in samples.items() if k == name[0] or k.startswith(name[0] + "{"))
    prefix, suffix = name
    # (an HTTP endpoint's processed_records/bytes count attempts, not deliveries)
    return sum(v for k, v in samples.items() if k.startswith(prefix) and k.split("{")[0].endswith(suffix)
               and "_processed_" not in k)


def level(samples: Mapping[str, float], prefix: str, suffix: str) -> float | None:
    """The largest of a gauge's series (e.g. the freshness of a stream's destinations), or None."""
    values = [v for k, v in samples.items() if k.startswith(prefix) and k.split("{")[0].endswith(suffix)]
    return max(values) if values else None


def rows(before: Reading | None, now: Reading) -> list[dict[str, Any]]:
    """One row per stream: rates since ``before`` (none on the first read) and current levels."""
    out = []
    elapsed = (now.time_s - before.time_s) if before else 0.0
    for name in sorted(now.streams):
        samples = now.streams[name]
        row: dict[str, Any] = {"stream": name}
        for column, metric in _RATES.items():
            if before is None or elapsed <= 0:
                row[column] = None
            else:
                previous = before.streams.get(name, {})
                row[column] = max(0.0, total(samples, metric) - total(previous, metric)) / elapsed
        row["freshness"] = level(samples, "firehose_delivery_to_", "_data_freshness_seconds")
        row["buffered"] = samples.get("firehose_buffered_bytes")
        out.append(row)
    return out


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column.endswith("B/s"):
        return units.size(value) + "/s"
    if column == "buffered":
        return units.size(value)
    if column == "freshness":
        return units.duration(value)
    if isinstance(value, float):
        return f"{value:,.0f}"
    return str(value)


def table(before: Reading | None, now: Reading) -> Table:
    spool, limit = now.daemon.get("firehose_spool_bytes"), now.daemon.get("firehose_spool_limit_bytes")
    title = "firehose top"
    if spool is not None and limit:
        title += f"  spool {units.size(spool)} of {units.size(limit)} ({100 * spool / limit:.0f} %)"
    grid = Table(title=title, title_justify="left")
    columns = ["stream", *_RATES, "freshness", "buffered"]
    for column in columns:
        grid.add_column(column, justify="left" if column == "stream" else "right")
    for row in rows(before, now):
        grid.add_row(*(_cell(c, row[c]) for c in columns))
    return grid


def run(args: Namespace) -> int:
    """``firehose top``: 0 when stopped (Ctrl-C: 130), 2 if it cannot connect or read the figures."""
    try:
        return _show(connect(args), args)
    except CommandError as exc:
        print(f"firehose top: {exc}", file=sys.stderr)
        return 2


def _show(connection: Connection, args: Namespace) -> int:
    console = Console()
    before: Reading | None = None
    count = 0
    live = console.is_terminal and not args.once
    try:
        if live:
            with Live(console=console, auto_refresh=False) as screen:
                while args.iterations is None or count < args.iterations:
                    now = read(connection)
                    screen.update(table(before, now), refresh=True)
                    before, count = now, count + 1
                    time.sleep(args.interval)
        else:
            while True:  # a table per refresh, each with the rates since the read before it
                now = read(connection)
                if before is not None:
                    console.print(table(before, now))
                    count += 1
                before = now
                if (args.once and count) or (args.iterations is not None and count >= args.iterations):
                    break
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 130
    return 0
