"""``firehose ls`` and ``firehose describe STREAM``: delivery streams as a table, a page, or JSON.

What every endpoint answers (ListDeliveryStreams, DescribeDeliveryStream): each stream's status,
source, destination (its type and bucket, URL or cluster), buffering hints and version. What only
this daemon knows comes from its ``/readyz`` (``connection.daemon_streams``) and appears under
``daemon`` when it answers: the bytes buffered for delivery (backlog), batches in flight, when a
batch was last delivered, consecutive failed attempts, the last error, and the newest document its
error output received (the console's first error record). Against AWS those are
left out, not shown as empty.

The JSON forms are one object per stream with the same keys as the table's columns, in snake case;
``ls --json`` prints a list of them, ``describe --json`` one.
"""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from firehose.commands import units
from firehose.commands.connection import CommandError, Connection, connect, daemon_streams, describe_error

#: The target of a destination, by the first of its description's fields that it has.
_TARGET_FIELDS = ("BucketARN", "ClusterEndpoint", "DomainARN", "CollectionEndpoint", "HECEndpoint",
                  "ClusterJDBCURL", "AccountUrl", "CatalogARN")
T = TypeVar("T")

#: The widest last error a table shows (``describe`` and JSON show it whole).
_ERROR_WIDTH = 60


def stream_names(client: Any) -> Iterator[str]:
    """Every delivery stream's name, all pages of ListDeliveryStreams."""
    start: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Limit": 100}
        if start:
            kwargs["ExclusiveStartDeliveryStreamName"] = start
        page = client.list_delivery_streams(**kwargs)
        names = page.get("DeliveryStreamNames", [])
        yield from names
        if not page.get("HasMoreDeliveryStreams") or not names:
            return
        start = names[-1]


def destination(description: dict[str, Any]) -> dict[str, Any]:
    """A destination description's type (``ExtendedS3``, ``HttpEndpoint``, ...), target and buffering.

    An ExtendedS3 stream also carries the plain ``S3DestinationDescription`` (as AWS answers); the
    more specific one wins, and a destination's own S3 backup configuration is not its target.
    """
    found = {k.removesuffix("DestinationDescription"): v for k, v in description.items()
             if k.endswith("DestinationDescription") and isinstance(v, dict)}
    kind = next((k for k in found if k != "S3"), "S3" if "S3" in found else None)
    if kind is None:
        return {"type": None, "target": None, "buffering": None}
    body = found[kind]
    target = next((body[f] for f in _TARGET_FIELDS if body.get(f)), None)
    if target is None and isinstance(body.get("EndpointConfiguration"), dict):
        target = body["EndpointConfiguration"].get("Url")
    if isinstance(target, str) and target.startswith("arn:aws:s3:::"):
        target = "s3://" + target.removeprefix("arn:aws:s3:::")
    hints = body.get("BufferingHints") or {}
    buffering = {"size_mb": hints.get("SizeInMBs"), "interval_seconds": hints.get("IntervalInSeconds")} \
        if hints else None
    return {"type": kind, "target": target, "buffering": buffering}


def summary(description: dict[str, Any], details: dict[str, dict[str, Any]] | None,
            now_ms: int | None = None) -> dict[str, Any]:
    """One stream as ``ls`` and ``describe`` show it, from DescribeDeliveryStream and /readyz's details."""
    destinations = description.get("Destinations") or [{}]
    source = description.get("Source") or {}
    out: dict[str, Any] = {
        "name": description["DeliveryStreamName"],
        "status": description.get("DeliveryStreamStatus"),
        "type": description.get("DeliveryStreamType"),
        "source": _source(source),
        "destination": destination(destinations[0]),
        "version": description.get("VersionId"),
        "arn": description.get("DeliveryStreamARN"),
        "created": _timestamp(description.get("CreateTimestamp")),
        "updated": _timestamp(description.get("LastUpdateTimestamp")),
    }
    failure = description.get("FailureDescription")
    if failure:
        out["failure"] = f"{failure.get('Type')}: {failure.get('Details')}"
    mine = _details_of(out["name"], out["arn"], details)
    if mine is not None:
        out["daemon"] = _daemon(mine, now_ms if now_ms is not None else int(time.time() * 1000))
    return out


def _source(source: dict[str, Any]) -> str | None:
    """The stream a Kinesis- or MSK-sourced delivery stream reads (its ARN), None for Direct PUT."""
    kinesis = source.get("KinesisStreamSourceDescription")
    if kinesis:
        return kinesis.get("KinesisStreamARN")
    msk = source.get("MSKSourceDescription")
    if msk:
        return f"{msk.get('MSKClusterARN')} {msk.get('TopicName')}"
    return None


def _timestamp(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value is not None else None)


def _details_of(name: str, arn: str | None, details: dict[str, dict[str, Any]] | None) -> dict[str, Any] | None:
    """/readyz's entry for a stream: by its name, or ``account/name`` for another account's stream."""
    if details is None:
        return None
    if name in details:
        return details[name]
    account = arn.split(":")[4] if arn and arn.count(":") >= 5 else None
    return details.get(f"{account}/{name}") if account else None


def _daemon(entry: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The daemon's figures for one stream, under names that say what they are."""
    last = entry.get("last_delivery_ms")
    return {
        "backlog_bytes": entry.get("buffered_bytes"),
        "inflight_batches": entry.get("inflight_batches"),
        "last_delivery_ms": last,
        "seconds_since_delivery": round(max(0, now_ms - last) / 1000, 3) if isinstance(last, int) else None,
        "consecutive_failures": entry.get("consecutive_failures"),
        "last_error": entry.get("last_error") or entry.get("error"),
        "last_error_record": entry.get("last_error_record"),
        "idle": entry.get("idle"),
        "delivers_to": entry.get("destination"),
    }


# -- rendering -------------------------------------------------------------------------------


def _buffering(dest: dict[str, Any]) -> str:
    b = dest.get("buffering")
    if not b:
        return "-"
    return f"{b.get('size_mb', '?')} MiB / {b.get('interval_seconds', '?')}s"


def _destination_text(dest: dict[str, Any]) -> str:
    return " ".join(str(p) for p in (dest.get("type"), dest.get("target")) if p) or "-"


def _ago(daemon: dict[str, Any]) -> str:
    seconds = daemon.get("seconds_since_delivery")
    return "never" if seconds is None else f"{units.duration(seconds)} ago"


def _error_record(daemon: dict[str, Any]) -> str:
    """The newest document the stream's error output received (what the console lists first)."""
    record = daemon.get("last_error_record")
    if not isinstance(record, dict):
        return "-"
    when = record.get("time_ms")
    at = datetime.fromtimestamp(when / 1000, tz=UTC).isoformat(timespec="seconds") if isinstance(when, int) else "?"
    text = f"{record.get('code') or '-'}: {record.get('message') or ''} ({record.get('error_output_type')}, {at})"
    return " ".join(text.split())  # one line (the message is bounded by the daemon)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line, whatever the error said
    return text if len(text) <= width else text[:width - 1] + "…"


def table(streams: list[dict[str, Any]]) -> str:
    """``ls``'s table: aligned columns, the daemon's only when it gave them for some stream."""
    headers = ["NAME", "STATUS", "DESTINATION", "BUFFERING", "VERSION"]
    with_daemon = any("daemon" in s for s in streams)
    if with_daemon:
        headers += ["BACKLOG", "IN FLIGHT", "LAST DELIVERY", "FAILURES", "LAST ERROR"]
    rows = []
    for s in streams:
        row = [s["name"], s["status"] or "-", _destination_text(s["destination"]), _buffering(s["destination"]),
               s["version"] or "-"]
        if with_daemon:
            d = s.get("daemon")
            row += ["-"] * 5 if d is None else [
                units.size(d["backlog_bytes"] or 0), str(d["inflight_batches"] or 0), _ago(d),
                str(d["consecutive_failures"] or 0), _clip(d["last_error"] or "-", _ERROR_WIDTH)]
        rows.append(row)
    return columns(headers, rows)


def columns(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; no trailing spaces."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in [headers, *rows])


def page(s: dict[str, Any]) -> str:
    """``describe``'s page: one ``field: value`` line each, aligned; the daemon's figures when there are any."""
    dest = s["destination"]
    fields = [("Name", s["name"]), ("ARN", s["arn"]), ("Status", s["status"]), ("Type", s["type"])]
    if s["source"]:
        fields.append(("Source", s["source"]))
    fields += [("Destination", dest.get("type")), ("Target", dest.get("target")), ("Buffering", _buffering(dest)),
               ("Version", s["version"]), ("Created", s["created"]), ("Updated", s["updated"])]
    if "failure" in s:
        fields.append(("Failure", s["failure"]))
    d = s.get("daemon")
    if d is not None:
        fields += [("Delivers to", d["delivers_to"]), ("Backlog", units.size(d["backlog_bytes"] or 0)),
                   ("In flight", f"{d['inflight_batches'] or 0} batches"), ("Last delivery", _ago(d)),
                   ("Failures", f"{d['consecutive_failures'] or 0} consecutive"),
                   ("Last error", d["last_error"] or "-"), ("Last error record", _error_record(d)),
                   ("Idle", "yes" if d["idle"] else "no")]
    width = max(len(k) for k, _ in fields) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v if v is not None else '-'}" for k, v in fields)


# -- the commands ----------------------------------------------------------------------------


def run_ls(args: Namespace) -> int:
    """``firehose ls``: every stream, as a table or a JSON list; 1 if the endpoint could not be read."""
    def gather(connection: Connection) -> list[dict[str, Any]]:
        details = daemon_streams(connection)
        return [summary(connection.client.describe_delivery_stream(DeliveryStreamName=name)
                        ["DeliveryStreamDescription"], details) for name in stream_names(connection.client)]

    return _run("ls", args, gather, lambda streams: table(streams) if streams else "No delivery streams.")


def run_describe(args: Namespace) -> int:
    """``firehose describe STREAM``: one stream as a page or a JSON object; 1 if it does not exist."""
    def gather(connection: Connection) -> dict[str, Any]:
        description = connection.client.describe_delivery_stream(DeliveryStreamName=args.stream)
        return summary(description["DeliveryStreamDescription"], daemon_streams(connection))

    return _run("describe", args, gather, page)


def _run(name: str, args: Namespace, gather: Callable[[Connection], T], render: Callable[[T], str]) -> int:
    """Connect, gather, print (JSON with ``--json``): 2 if it cannot connect, 1 if the endpoint refuses."""
    try:
        connection = connect(args)
    except CommandError as exc:
        print(f"firehose {name}: {exc}", file=sys.stderr)
        return 2
    try:
        result = gather(connection)
    except (BotoCoreError, ClientError) as exc:
        print(f"firehose {name}: {describe_error(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0
