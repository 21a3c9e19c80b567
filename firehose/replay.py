"""``firehose replay``: send a deleted stream's retained records to a delivery stream.

A deleted stream's undelivered spool is kept under ``<state_dir>/deleted/`` for
``delete.retain_hours`` (``firehose.spool.retained``). ``firehose replay --list`` shows what is
kept; ``firehose replay NAME --to STREAM`` reads one of them from disk and sends its records with
PutRecordBatch over the public API (the same sender as ``firehose put``: batches of at most 500
records and 4 MiB, failed records retried with backoff), so the target can be any daemon or AWS
itself, and its own processing applies.

Resuming. After every batch that was accepted whole, the number of records sent so far is written
(atomically) next to the retained spool; a replay that stops (a refusal, Ctrl-C, a crash) starts
again there, so it sends again at most the batch in hand: at-least-once, like every delivery after
a crash. Once every record was accepted the retained spool is deleted. The retained files are only
read; a running daemon's live spool is never touched, so this may run next to it.

Exit status: 0 when every record was accepted, 1 when some were not, 2 when it could not start.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from argparse import Namespace
from pathlib import Path

from firehose.commands.connection import CommandError, Connection, connect
from firehose.commands.put import MAX_RECORD_BYTES, Batcher, Progress, Sender, Stopped, Summary
from firehose.errors import ConfigError
from firehose.keyring import Keyring
from firehose.settings import load_config
from firehose.spool import retained
from firehose.storage.sealing import KeyringLoader


def state_dir(args: Namespace) -> Path:
    """``--state-dir``, else the config file's ``state_dir``, else the daemon's default."""
    if args.state_dir:
        return Path(args.state_dir)
    return load_config(Path(args.config) if args.config else None).settings.state_dir


def keyring(args: Namespace) -> KeyringLoader:
    """The config's keyring, loaded when a retained spool turns out to be encrypted (it holds the keys)."""
    def load() -> Keyring:
        enc = load_config(Path(args.config) if args.config else None).settings.encryption
        return Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix)

    return load


def _listing(root: Path, as_json: bool) -> int:
    kept = retained.listing(root)
    if as_json:
        print(json.dumps([{"name": r.name, "stream": r.stream, "account": r.account, "deleted_ms": r.deleted_ms,
                           "records": r.records, "bytes": r.bytes, "replayed": r.replayed()} for r in kept]))
        return 0
    if not kept:
        print(f"No retained spools under {root}.")
        return 0
    print(f"{'NAME':<48} {'STREAM':<24} {'DELETED (UTC)':<20} {'RECORDS':>9} {'REPLAYED':>9}")
    for r in kept:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.deleted_ms / 1000))
        print(f"{r.name:<48} {r.stream:<24} {when:<20} {r.records:>9} {r.replayed():>9}")
    return 0


async def replay(kept: retained.Retained, connection: Connection, target: str, *, retry_seconds: float,
                 progress: Progress, keys: KeyringLoader | None = None) -> Summary:
    """Send ``kept``'s records after those already replayed to ``target``; the summary."""
    summary = Summary(target)
    sender = Sender(connection, target, summary, retry_seconds)
    done = kept.replayed()
    kept.record_progress(done, target)  # from now on expiry leaves it alone (see retained.expire)
    position = 0
    started = time.monotonic()

    async def send(batch: list[tuple[int, bytes]]) -> None:
        failed_before = summary.failed
        await sender.send(batch)
        if summary.failed != failed_before:
            raise Stopped("some records were not accepted")
        kept.record_progress(batch[-1][0], target)
        progress.update(summary, time.monotonic() - started, summary.bytes)

    batcher = Batcher(send)
    try:
        async with retained.opened(kept.path, keys) as stream:
            async for chunk in retained.undelivered(stream, processes=kept.processes):
                for record in chunk:
                    position += 1
                    if position <= done:
                        continue
                    summary.records += 1
                    summary.bytes += len(record)
                    if len(record) > MAX_RECORD_BYTES:
                        summary.fail(position, len(record), "the record is over 1,000 KiB: not sent")
                        continue
                    await batcher.add(position, record)
            await batcher.flush()
    except Stopped as exc:
        summary.stopped = str(exc)
    finally:
        summary.seconds = time.monotonic() - started
    return summary


def run(args: Namespace) -> int:
    """``firehose replay``: see the module docstring."""
    try:
        root = state_dir(args) / "deleted"
        if args.list or not args.name:
            return _listing(root, args.json)
        kept = retained.find(root, args.name)
        if kept is None:
            raise CommandError(f"no retained spool named {args.name!r} under {root} (see `firehose replay --list`)")
        if not args.to:
            raise CommandError("say which delivery stream receives the records: --to STREAM")
        connection = connect(args)
    except (CommandError, ValueError, OSError) as exc:
        print(f"firehose replay: {exc}", file=sys.stderr)
        return 2
    try:
        with Progress(args.to, kept.bytes) as progress:
            summary = asyncio.run(replay(kept, connection, args.to, retry_seconds=args.retry_seconds,
                                         keys=keyring(args), progress=progress))
    except ConfigError as exc:  # an encrypted spool whose key is not in the keyring
        print(f"firehose replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("firehose replay: interrupted; run it again to go on where it stopped", file=sys.stderr)
        return 130
    for failure in summary.failures:
        print(f"firehose replay: record {failure.record} ({failure.size} bytes) failed: {failure.error}",
              file=sys.stderr)
    if summary.ok:
        retained.remove(kept)
    print(json.dumps(summary.as_json()) if args.json else summary.line())
    return 0 if summary.ok else 1
