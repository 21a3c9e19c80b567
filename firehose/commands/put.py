"""``firehose put STREAM [FILE|-]``: the records of a file (or standard input) into a delivery stream.

Records. The input is cut after every delimiter (a newline unless ``--delimiter`` says otherwise)
and each record keeps its delimiter, as the Kinesis Agent sends a log line with its line end: a
destination that concatenates records (S3 and the other object destinations) then holds the input
byte for byte, and newline-delimited JSON stays one document per line. A last chunk without a
delimiter (a file that does not end with one) is sent as it is; an empty input sends nothing.

Batches. Records go out with PutRecordBatch in input order, in batches of at most
``--batch-records`` (500, the API's limit) records and 4 MiB of data. A record over 1,000 KiB (its
delimiter included), which the service would refuse, is never sent: it is reported as failed and
the input goes on; it is never held in memory whole either.

Retries. A batch is sent until every record is accepted. After a partial failure (``FailedPutCount``
> 0: ``ServiceUnavailableException`` and the like) only the failed records are sent again; a
throttled or failed call (throttling, a 5xx, a broken connection) is sent again whole; both back off
exponentially with full jitter (``firehose.retry``), for at most ``--retry-seconds`` from the
batch's first failure, after which the records still pending are reported as failed. Records the
service refuses as invalid are failed at once (retrying cannot fix them). An error retrying cannot
fix (a missing stream, access denied, no credentials) stops the command: the batch in hand is
failed and the rest of the input is not read.

Output. On a terminal, standard error shows a progress bar with records/s and bytes/s; nothing
is drawn when standard error is not a terminal. At the end one summary line goes to standard
output (``--json``: the summary as one JSON object), after a line on standard error for each of
the first failed records. The exit status is 0 only when every record read was accepted, 1
otherwise, 2 when the command could not start (bad arguments, no region, an unreadable file).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
import time
from argparse import Namespace
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from firehose.agent.sender import PERMANENT_CODES
from firehose.commands import units
from firehose.commands.connection import CommandError, Connection, connect, describe_error
from firehose.retry import Attempts, Backoff, Deadline

#: PutRecordBatch's limits: records per call, decoded bytes per call, and bytes per record.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1_000 * 1024
#: How much of the input is read at a time.
READ_BYTES = 1024 * 1024
#: Backoff between attempts at a batch: a tenth of a second at first, at most five.
BACKOFF = Backoff(0.1, 5.0)
#: Failed records named one per line on standard error (all are counted; JSON lists as many).
SHOWN_FAILURES = 20
#: Error codes of a whole call that waiting can fix; anything else stops the command.
_RETRIED_CALL_CODES = frozenset({"ServiceUnavailableException", "ThrottlingException", "LimitExceededException",
                                 "ProvisionedThroughputExceededException", "RequestTimeout", "InternalFailure",
                                 "InternalServerError", "ServiceUnavailable", "SlowDown"})
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def parse_delimiter(text: str) -> bytes:
    r"""``--delimiter``'s bytes: UTF-8, with ``\n``, ``\r``, ``\t``, ``\0``, ``\\`` and ``\xHH`` escapes."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
        out += ch.encode("utf-8")
        i += 1
    if not out:
        raise ValueError("the delimiter is empty")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Oversized:
    """A record over the limit, read and dropped: only its size (delimiter included) is kept."""

    size: int


def split_records(source: BinaryIO, delimiter: bytes, limit: int = MAX_RECORD_BYTES,
                  read_bytes: int = READ_BYTES) -> Iterator[bytes | Oversized]:
    """The records of ``source``, each ending with ``delimiter`` (but perhaps the last), in order.

    A record longer than ``limit`` comes out as ``Oversized``; at most ``limit`` bytes of one (and
    a block) are held at a time, so an input of one endless line cannot exhaust memory.
    """
    keep = len(delimiter) - 1  # the tail of dropped bytes that may begin a delimiter the next block ends
    pending = b""
    skipped = 0  # bytes of an over-limit record already dropped
    while block := source.read(read_bytes):
        parts = (pending + block).split(delimiter)
        pending = parts.pop()
        for part in parts:
            whole = skipped + len(part) + len(delimiter)
            skipped = 0
            yield Oversized(whole) if whole > limit else part + delimiter
        if skipped + len(pending) > limit:
            dropped = len(pending) - keep
            skipped += dropped
            pending = pending[dropped:]
    if skipped or pending:
        whole = skipped + len(pending)
        yield Oversized(whole) if whole > limit else pending


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that was not accepted: its number in the input (from 1), its size and why."""

    record: int
    size: int
    error: str


@dataclass
class Summary:
    """What a put did; ``ok`` only when every record read was accepted."""

    stream: str
    records: int = 0
    bytes: int = 0
    accepted: int = 0
    accepted_bytes: int = 0
    failed: int = 0
    #: Records sent more than once (after a partial failure or a failed call).
    resent: int = 0
    seconds: float = 0.0
    #: Why the command stopped before the end of its input, if it did.
    stopped: str | None = None
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped is None

    def fail(self, record: int, size: int, error: str) -> None:
        self.failed += 1
        if len(self.failures) < SHOWN_FAILURES:
            self.failures.append(Failure(record, size, error))

    def line(self) -> str:
        """The one-line summary a person reads."""
        text = (f"{self.stream}: {self.accepted:,} of {self.records:,} records accepted "
                f"({units.size(self.accepted_bytes)}) in {units.duration(self.seconds)}, "
                f"{units.rate(self.accepted, self.seconds):,.0f} records/s, "
                f"{units.size(units.rate(self.accepted_bytes, self.seconds))}/s; {self.failed:,} failed")
        if self.resent:
            text += f", {self.resent:,} resent"
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        return text

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["ok"] = self.ok
        return out


class Stopped(Exception):
    """An error retrying cannot fix: the put stops."""


class Progress:
    """The progress bar on standard error (records, records/s, bytes/s), or nothing off a terminal."""

    def __init__(self, stream: str, total_bytes: int | None) -> None:
        from rich.console import Console

        console = Console(stderr=True)
        self._bar: Any = None
        if not console.is_terminal:
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             TextColumn("{task.fields[records]:,} records"), DownloadColumn(binary_units=True),
                             TextColumn("{task.fields[record_rate]:,.0f} records/s"),
                             TextColumn("{task.fields[byte_rate]}/s"), TimeElapsedColumn(),
                             console=console, transient=True)
        self._task = self._bar.add_task(stream, total=total_bytes, records=0, record_rate=0.0, byte_rate="0 B")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, summary: Summary, seconds: float, read_bytes: int) -> None:
        """Show ``summary``'s accepted records after ``seconds``; ``read_bytes`` of the input done."""
        if self._bar is not None:
            self._bar.update(self._task, completed=read_bytes, records=summary.accepted,
                             record_rate=units.rate(summary.accepted, seconds),
                             byte_rate=units.size(units.rate(summary.accepted_bytes, seconds)))


class Sender:
    """Sends batches of numbered records to one stream until each is accepted or given up."""

    def __init__(self, connection: Connection, stream: str, summary: Summary, retry_seconds: float) -> None:
        self.client = connection.client
        self.stream = stream
        self.summary = summary
        self.deadline = Deadline(retry_seconds, since="first_failure")

    async def send(self, batch: list[tuple[int, bytes]]) -> None:
        """Send ``batch`` (record number, data) until every record is accepted, refused or out of time.

        Raises ``Stopped`` (with the batch's records failed) for an error retrying cannot fix.
        """
        pending = batch
        attempts = Attempts(BACKOFF)
        sent_before = False
        while pending:
            if sent_before:
                self.summary.resent += len(pending)
            sent_before = True
            try:
                codes = await asyncio.to_thread(self._put, [data for _, data in pending])
            except Exception as exc:
                reason = describe_error(exc)
                if not _retried(exc):
                    self._fail(pending, reason)
                    raise Stopped(reason) from exc
                codes = [reason] * len(pending)
            retry = []
            for (number, data), code in zip(pending, codes, strict=True):
                if code is None:
                    self.summary.accepted += 1
                    self.summary.accepted_bytes += len(data)
                elif code.partition(":")[0] in PERMANENT_CODES:
                    self.summary.fail(number, len(data), code)
                else:
                    retry.append((number, data, code))
            if not retry:
                return
            attempts.failed()
            if attempts.expired(self.deadline):
                for number, data, code in retry:
                    self.summary.fail(number, len(data), f"{code} (gave up after {attempts.failures} attempts)")
                return
            pending = [(number, data) for number, data, _ in retry]
            await attempts.wait()

    def _put(self, records: list[bytes]) -> list[str | None]:
        """One PutRecordBatch call; per record, None when accepted or ``Code: message``."""
        response = self.client.put_record_batch(DeliveryStreamName=self.stream,
                                                Records=[{"Data": data} for data in records])
        if not response.get("FailedPutCount"):
            return [None] * len(records)
        return [f"{r['ErrorCode']}: {r.get('ErrorMessage', '')}" if r.get("ErrorCode") else None
                for r in response["RequestResponses"]]

    def _fail(self, batch: list[tuple[int, bytes]], reason: str) -> None:
        for number, data in batch:
            self.summary.fail(number, len(data), reason)


def _retried(exc: Exception) -> bool:
    """Whether a failed call is worth sending again: throttling, a server error, a broken connection."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _RETRIED_CALL_CODES or status >= 500
    return isinstance(exc, HTTPClientError | BotoConnectionError)


class Batcher:
    """Numbered records gathered into PutRecordBatch calls: at most ``batch_records`` records and
    ``MAX_BATCH_BYTES`` of data each, in order; ``send`` gets each full batch (and the last one)."""

    def __init__(self, send: Callable[[list[tuple[int, bytes]]], Awaitable[None]],
                 batch_records: int = MAX_BATCH_RECORDS) -> None:
        self._send = send
        self._limit = batch_records
        self._batch: list[tuple[int, bytes]] = []
        self._bytes = 0

    async def add(self, number: int, record: bytes) -> None:
        if len(self._batch) >= self._limit or self._bytes + len(record) > MAX_BATCH_BYTES:
            await self.flush()
        self._batch.append((number, record))
        self._bytes += len(record)

    async def flush(self) -> None:
        batch, self._batch, self._bytes = self._batch, [], 0
        if batch:
            await self._send(batch)


async def put(connection: Connection, stream: str, source: BinaryIO, *, delimiter: bytes, batch_records: int,
              retry_seconds: float, progress: Progress) -> Summary:
    """Send every record of ``source`` to ``stream``; the summary of what was accepted and what failed."""
    summary = Summary(stream)
    sender = Sender(connection, stream, summary, retry_seconds)
    started = time.monotonic()
    read_bytes = 0

    async def send(batch: list[tuple[int, bytes]]) -> None:
        await sender.send(batch)
        progress.update(summary, time.monotonic() - started, read_bytes)

    batcher = Batcher(send, batch_records)
    try:
        for number, record in enumerate(split_records(source, delimiter), start=1):
            summary.records += 1
            if isinstance(record, Oversized):
                summary.bytes += record.size
                read_bytes += record.size
                summary.fail(number, record.size, f"the record is {record.size} bytes; the limit is "
                             f"{MAX_RECORD_BYTES} (1,000 KiB): not sent")
                continue
            await batcher.add(number, record)
            summary.bytes += len(record)
            read_bytes += len(record)
        await batcher.flush()
        progress.update(summary, time.monotonic() - started, read_bytes)
    except Stopped as exc:
        summary.stopped = str(exc)
    finally:
        summary.seconds = time.monotonic() - started
    return summary


def run(args: Namespace) -> int:
    """``firehose put``: 0 when every record was accepted, 1 when some were not, 2 when it could not start."""
    try:
        delimiter = parse_delimiter(args.delimiter)
        if not 1 <= args.batch_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"--batch-records is from 1 to {MAX_BATCH_RECORDS}, not {args.batch_records}")
        if args.retry_seconds < 0:
            raise ValueError(f"--retry-seconds is at least 0, not {args.retry_seconds}")
        connection = connect(args)
        source, total = _open(args.file)
    except (CommandError, ValueError, OSError) as exc:
        print(f"firehose put: {exc}", file=sys.stderr)
        return 2
    try:
        with source, Progress(args.stream, total) as progress:
            summary = asyncio.run(put(connection, args.stream, source, delimiter=delimiter,
                                      batch_records=args.batch_records, retry_seconds=args.retry_seconds,
                                      progress=progress))
    except KeyboardInterrupt:
        print("firehose put: interrupted", file=sys.stderr)
        return 130
    for failure in summary.failures:
        print(f"firehose put: record {failure.record} ({failure.size} bytes) failed: {failure.error}",
              file=sys.stderr)
    if summary.failed > len(summary.failures):
        print(f"firehose put: ... and {summary.failed - len(summary.failures)} more failed records", file=sys.stderr)
    print(json.dumps(summary.as_json()) if args.json else summary.line())
    return 0 if summary.ok else 1


def _open(name: str | None) -> tuple[BinaryIO, int | None]:
    """The input as a binary file and its size when known (None for standard input or a pipe)."""
    if name is None or name == "-":
        return open(sys.stdin.fileno(), "rb", closefd=False), None
    source = open(name, "rb")  # closed by run's with
    try:
        info = os.fstat(source.fileno())
        return source, info.st_size if stat.S_ISREG(info.st_mode) else None
    except OSError:
        source.close()
        raise
