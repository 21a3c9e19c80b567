"""The ``firehose`` command: argument parsing only; the work happens in ``daemon``.

    firehose serve [--config FILE] [--host H] [--port P] [--state-dir DIR]
    firehose validate CONFIG

Without ``--config``, ``serve`` reads ``$FIREHOSE_CONFIG``, else
``./config/firehose.yaml``, else ``/etc/firehose/firehose.yaml``, else runs on
built-in defaults with no declared streams. Flags override the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from firehose import __version__
from firehose.errors import ConfigError
from firehose.settings import Config, load_config
from firehose.telemetry import setup_logging

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
    serve.add_argument("--config", help="config file (YAML)")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=int, help="listen port (overrides the config)")
    serve.add_argument("--state-dir", help="spool and catalog directory (overrides the config)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")

    validate = sub.add_parser("validate", help="check a config file without starting anything")
    validate.add_argument("config", help="config file (YAML)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(Path(args.config))
    return _serve(args)


def _validate(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(s.delivery_stream_name for s in config.streams) or "none"
    print(f"ok: {path}: {len(config.streams)} delivery stream(s): {names}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    overrides = {"host": args.host, "port": args.port, "state_dir": args.state_dir, "log_level": args.log_level}
    path = _find_config(args.config)
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        setup_logging("INFO")
        log.error("Invalid configuration: %s", exc)
        return 2
    setup_logging(config.settings.log_level)
    if path is None:
        log.info("No config file found; running on built-in defaults with no declared streams.")
    return _run(config)


def _run(config: Config) -> int:
    from firehose.daemon import Daemon  # imported late: `validate` needs none of it

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop_factory = None
    try:
        daemon = Daemon(config)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(daemon.serve())
    except OSError as exc:
        log.error("Could not start: %s", exc)
        return 1
    return 0
