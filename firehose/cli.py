"""The ``firehose`` command: argument parsing only; the work happens in ``daemon``.

    firehose serve [--config FILE] [--host H] [--port P] [--state-dir DIR] [--transforms-dir DIR]
    firehose validate CONFIG
    firehose agent --config FILE [--state-dir DIR] [--log-level L]
    firehose decrypt FILE|s3://BUCKET/KEY [--out FILE] [--config FILE]
    firehose streams serve [--config FILE] [--host H] [--port P] [--state-dir DIR]
    firehose put STREAM [FILE|-] [--delimiter D] [--batch-records N] [--retry-seconds S] [--json] [ENDPOINT]
    firehose ls [--json] [ENDPOINT]
    firehose describe STREAM [--json] [ENDPOINT]
    firehose iceberg compact DATABASE.TABLE [--catalog ARN] [--config FILE]

ENDPOINT is ``[--endpoint-url URL] [--region R] [--profile P]``: those commands are clients of the
public Firehose API (``firehose.commands``), so they work against AWS as well as this daemon.

Without ``--config``, ``serve`` reads ``$FIREHOSE_CONFIG``, else
``./config/firehose.yaml``, else ``/etc/firehose/firehose.yaml``, else runs on
built-in defaults with no declared streams. Flags override the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from firehose import __version__
from firehose.commands import connection
from firehose.errors import ConfigError
from firehose.settings import Config, Settings, load_config
from firehose.telemetry import setup_logging, tune_gc

log = logging.getLogger("firehose")

DEFAULT_CONFIGS = (Path("config/firehose.yaml"), Path("/etc/firehose/firehose.yaml"))


def _find_config(given: str | None) -> Path | None:
    if given:
        return Path(given)
    env = os.environ.get("FIREHOSE_CONFIG")
    if env:
        return Path(env)
    return next((p for p in DEFAULT_CONFIGS if p.is_file()), None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firehose", description="A self-hosted Firehose-compatible delivery daemon.")
    parser.add_argument("--version", action="version", version=f"firehose {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the delivery daemon")
    _listener_arguments(serve, config="config file (YAML)", settings="the config",
                        state="spool and catalog directory (overrides the config)")
    serve.add_argument("--transforms-dir", help="where LambdaArn function:NAME finds NAME.py (default transforms/)")

    validate = sub.add_parser("validate", help="check a config file without starting anything")
    validate.add_argument("config", help="config file (YAML)")

    agent = sub.add_parser("agent", help="tail log files and send them to a delivery stream or Kinesis stream")
    agent.add_argument("--config", required=True, help="agent.json (Kinesis Agent keys) or the YAML form")
    agent.add_argument("--state-dir", help="where checkpoints are kept (default /var/lib/firehose-agent)")
    agent.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (overrides log.level)")

    decrypt = sub.add_parser("decrypt", help="decrypt an object the daemon encrypted (local file or s3://bucket/key)")
    decrypt.add_argument("source", help="a local file, or s3://bucket/key")
    decrypt.add_argument("--out", default="-", help="where to write the plaintext (default: standard output)")
    decrypt.add_argument("--config", help="config file whose encryption: keyring (and s3: settings) to use")
    streams = sub.add_parser("streams", help="the Kinesis Data Streams sidecar")
    streams_sub = streams.add_subparsers(dest="streams_command", required=True)
    streams_serve = streams_sub.add_parser("serve", help="serve the Kinesis API over the on-disk shard store")
    _listener_arguments(streams_serve, config="config file (YAML); its kinesis: section applies",
                        settings="kinesis.host / kinesis.port",
                        state="shard store directory (overrides kinesis.state_dir)")

    put = sub.add_parser("put", help="send the lines (or delimited records) of a file to a delivery stream")
    put.add_argument("stream", help="the delivery stream's name")
    put.add_argument("file", nargs="?", default="-", help="the input (default, or -: standard input)")
    put.add_argument("--delimiter", default="\\n",
                     help="what ends a record, kept as part of it; escapes \\n \\r \\t \\0 \\xHH (default \\n)")
    put.add_argument("--batch-records", type=int, default=500, help="records per PutRecordBatch, 1 to 500 (500)")
    put.add_argument("--retry-seconds", type=float, default=120.0,
                     help="how long a batch's failed records are retried before they count as failed (120)")
    put.add_argument("--json", action="store_true", help="print the summary as JSON")
    connection.add_arguments(put)

    ls = sub.add_parser("ls", help="list the delivery streams with their status, destination and backlog")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    connection.add_arguments(ls)

    describe = sub.add_parser("describe", help="one delivery stream's definition, status and backlog")
    describe.add_argument("stream", help="the delivery stream's name")
    describe.add_argument("--json", action="store_true", help="print a JSON object")
    connection.add_arguments(describe)

    top = sub.add_parser("top", help="each delivery stream's rates, freshness and backlog, refreshed every second")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (1)")
    top.add_argument("--once", action="store_true", help="print one table (rates need two reads: taken --interval "
                                                         "apart) and exit")
    top.add_argument("--iterations", type=int, help="stop after this many refreshes")
    connection.add_arguments(top)

    tap = sub.add_parser("tap", help="follow the records a delivery stream delivers, live")
    tap.add_argument("stream", help="the delivery stream's name")
    tap.add_argument("--errors", action="store_true", help="also the records sent to the error output")
    tap.add_argument("--sample", type=float, default=1.0, help="the share of records shown, 0 < RATE <= 1 (1)")
    tap.add_argument("--limit", type=int, help="stop after this many records")
    tap.add_argument("--json", action="store_true", help="print the daemon's JSON lines")
    connection.add_arguments(tap)

    replay = sub.add_parser("replay", help="send a deleted stream's retained records to a delivery stream")
    replay.add_argument("name", nargs="?", help="the retained spool (its name as --list shows it, or the deleted "
                                                "stream's name when only one is kept for it)")
    replay.add_argument("--to", help="the delivery stream that receives the records")
    replay.add_argument("--list", action="store_true", help="list the retained spools (the default without NAME)")
    replay.add_argument("--state-dir", help="the daemon's state directory (default: --config's, else the default)")
    replay.add_argument("--config", help="the daemon's config file, to find its state directory")
    replay.add_argument("--retry-seconds", type=float, default=120.0,
                        help="how long a batch's failed records are retried before the replay stops (120)")
    replay.add_argument("--json", action="store_true", help="print the listing or the summary as JSON")
    connection.add_arguments(replay)

    iceberg = sub.add_parser("iceberg", help="maintain the Iceberg tables the Iceberg destination writes")
    iceberg_sub = iceberg.add_subparsers(dest="iceberg_command", required=True)
    compact = iceberg_sub.add_parser("compact", help="rewrite a table's small data files into few large ones")
    compact.add_argument("table", help="DATABASE.TABLE")
    compact.add_argument("--catalog", help="the CatalogARN whose catalogs: entry to use (default: default)")
    compact.add_argument("--config", help="the daemon's config file (its catalogs: and state_dir)")
    compact.add_argument("--min-files", type=int, default=2, help="leave tables with fewer data files (2)")
    return parser


def _listener_arguments(parser: argparse.ArgumentParser, *, config: str, settings: str, state: str) -> None:
    """--config --host --port --state-dir --log-level, as every server command takes them."""
    parser.add_argument("--config", help=config)
    parser.add_argument("--host", help=f"listen address (overrides {settings})")
    parser.add_argument("--port", type=int, help=f"listen port (overrides {settings})")
    parser.add_argument("--state-dir", help=state)
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent":
        from firehose.agent.command import run

        return run(Path(args.config), args.state_dir, args.log_level)
    if args.command == "validate":
        return _validate(Path(args.config))
    if args.command == "decrypt":
        return _decrypt(args)
    if args.command == "streams":
        return _streams_serve(args)
    if args.command == "put":
        from firehose.commands.put import run as put

        return put(args)
    if args.command in ("ls", "describe"):
        from firehose.commands.streams import run_describe, run_ls

        return run_ls(args) if args.command == "ls" else run_describe(args)
    if args.command == "tap":
        from firehose.commands.tap import run as tap

        return tap(args)
    if args.command == "replay":
        from firehose.replay import run as replay

        return replay(args)
    if args.command == "iceberg":
        return _iceberg_compact(args)
    if args.command == "top":
        from firehose.commands.top import run as top

        return top(args)
    return _serve(args)


def _validate(path: Path) -> int:
    from firehose.pipeline.config import check_definition

    if _is_agent_config(path):
        return _validate_agent(path)
    try:
        config = load_config(path)
        _validate_access(config)
        for definition in config.streams:
            try:
                check_definition(definition, config.settings)
            except ValueError as exc:
                raise ConfigError(f"{path}: delivery stream {definition.delivery_stream_name!r}: {exc}") from exc
        _validate_kinesis_streams(config)
        if config.applications:
            from firehose.analytics.app import check_declared

            check_declared(config.applications, str(path))  # their shape and their SQL, as CreateApplication
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(s.delivery_stream_name for s in config.streams) or "none"
    applications = ""
    if config.applications:
        applications = f"; {len(config.applications)} SQL application(s): " + ", ".join(
            str(a.get("ApplicationName")) for a in config.applications)
    print(f"ok: {path}: {len(config.streams)} delivery stream(s): {names}{applications}")
    return 0


def _is_agent_config(path: Path) -> bool:
    """Whether ``path`` is the agent's config (``agent.json`` or its YAML form: it has ``flows``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "flows" in data


def _validate_agent(path: Path) -> int:
    """``firehose validate agent.json``: the agent's config, checked as ``firehose agent`` reads it."""
    from firehose.agent.config import load_agent_config

    try:
        config, ignored = load_agent_config(path)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    targets = ", ".join(sorted({f.delivery_stream or f.kinesis_stream or "?" for f in config.flows}))
    print(f"ok: {path}: an agent config (for `firehose agent`): {len(config.flows)} flow(s) to {targets}"
          + (f"; accepted but ignored: {', '.join(ignored)}" if ignored else ""))
    return 0


def _validate_access(config: Config) -> None:
    """Listeners beyond loopback need authentication; every principal's policies must parse."""
    from firehose.frontdoor.principals import Principals
    from firehose.settings import check_listener

    s = config.settings
    check_listener(s.host, s.auth, "The Firehose API")
    if s.kinesis.enabled:
        check_listener(s.kinesis.host or s.host, s.auth, "The Kinesis API")
    Principals(s.auth, s.account_id)


def _validate_kinesis_streams(config: Config) -> None:
    """Run the config's Kinesis stream declarations through CreateStream against a scratch store."""
    if not config.settings.kinesis.streams:
        return
    import tempfile

    from firehose.accounts import PerAccount, account_directory
    from firehose.streams.server import declare_streams, store_options
    from firehose.streams.store import ShardStore

    async def check(directory: str) -> None:
        home = config.settings.account_id
        stores = PerAccount(home, lambda account: ShardStore(account_directory(Path(directory), account, home),
                                                              store_options(config.settings, account)))
        try:
            await declare_streams(stores, config.settings, config.source)
        finally:
            for store in stores.values():
                await store.close()

    with tempfile.TemporaryDirectory(prefix="firehose-validate-") as directory:
        asyncio.run(check(directory))


def _iceberg_compact(args: argparse.Namespace) -> int:
    from firehose.destinations.iceberg.catalogs import catalog_settings, open_catalog
    from firehose.destinations.iceberg.compaction import compact

    database, dot, table = args.table.rpartition(".")
    if not dot or not database or not table:
        print("firehose iceberg compact: give the table as DATABASE.TABLE", file=sys.stderr)
        return 2
    try:
        settings = load_config(_find_config(args.config)).settings
        catalog = open_catalog(catalog_settings(settings, args.catalog))
        result = compact(catalog.load_table((database, table)), min_files=args.min_files)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"firehose iceberg compact: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # pyiceberg's own errors: no such table, a commit that lost a race
        print(f"firehose iceberg compact: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.table}: {result.files_before} data files -> {result.files_after} ({result.rows} rows)")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    """Write an encrypted object's plaintext; nothing unauthenticated is ever written to --out."""
    from firehose.encoding import encrypt

    try:
        settings = load_config(_find_config(args.config)).settings
        enc = settings.encryption
        keyring = encrypt.Keyring.load(directory=enc.keys_dir, env_prefix=enc.env_prefix)
    except (ConfigError, ValueError) as exc:
        print(f"firehose decrypt: {exc}", file=sys.stderr)
        return 2
    tmp = None if args.out == "-" else Path(args.out).with_name(Path(args.out).name + ".partial")
    try:
        with open(tmp, "wb") if tmp else contextlib.nullcontext(sys.stdout.buffer) as out:
            if args.source.startswith("s3://"):
                from firehose.destinations.s3 import make_client

                bucket, _, key = args.source[5:].partition("/")
                obj = make_client(settings.s3, settings.buckets.get(bucket)).get_object(Bucket=bucket, Key=key)
                encrypt.decrypt_object(obj["Body"], obj.get("Metadata", {}), out, keyring)
            else:
                with open(args.source, "rb") as source:
                    encrypt.decrypt_file(source, out, keyring)
    except (OSError, ValueError, KeyError) as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        print(f"firehose decrypt: {args.source}: {exc}", file=sys.stderr)
        return 1
    if tmp is not None:
        tmp.replace(args.out)
    return 0


def _serve(args: argparse.Namespace) -> int:
    overrides = {"host": args.host, "port": args.port, "state_dir": args.state_dir, "log_level": args.log_level,
                 "transforms_dir": args.transforms_dir}
    path = _find_config(args.config)
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        setup_logging("INFO")
        log.error("Invalid configuration: %s", exc)
        return 2
    setup_logging(config.settings.log_level, config.settings.log.format)
    if path is None:
        log.info("No config file found; running on built-in defaults with no declared streams.")
    return _run(config, lambda: load_config(path, overrides))


def _streams_serve(args: argparse.Namespace) -> int:
    """The Kinesis sidecar on its own; flags override the config's ``kinesis:`` section."""
    from firehose.streams import server

    path = _find_config(args.config)
    try:
        config = load_config(path, {"log_level": args.log_level})
    except ConfigError as exc:
        setup_logging("INFO")
        log.error("Invalid configuration: %s", exc)
        return 2
    settings = config.settings
    setup_logging(settings.log_level, settings.log.format)
    k = settings.kinesis
    host = args.host or k.host or settings.host
    port = args.port if args.port is not None else k.port
    directory = Path(args.state_dir) if args.state_dir else server.state_dir(settings)
    tune_gc()  # parsing a request of many small objects would otherwise spend most of its time in the collector
    def reread() -> Settings:
        return load_config(path, {"log_level": args.log_level}).settings

    return _run_until_stopped(lambda: server.run(settings, host=host, port=port, directory=directory,
                                                 source=config.source, reread=reread))


def _run_until_stopped(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a server's main coroutine on uvloop; exit 2 for a bad config or a busy port, 1 if it could not start."""
    from firehose.listeners import AddressInUse  # imported late, as the servers are

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except ConfigError as exc:
        log.error("Invalid configuration: %s", exc)
        return 2
    except AddressInUse as exc:
        log.error("%s", exc)  # one line naming the address and port
        return 2
    except OSError as exc:
        log.error("Could not start: %s", exc)
        return 1
    return 0


def _loop_factory() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return None


def _run(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Serve ``config``; ``reread`` loads it again the same way, for a reload (SIGHUP)."""
    from firehose.daemon import Daemon  # imported late: `validate` needs none of it
    from firehose.pipeline.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts

    def main() -> Coroutine[Any, Any, None]:
        daemon = Daemon(config, reread=reread)
        tune_gc()
        return daemon.serve()

    return _run_until_stopped(main)
