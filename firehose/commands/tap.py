"""``firehose tap STREAM``: the records a delivery stream delivers, live, like ``vector tap``.

It follows the daemon's ``/tap`` operator endpoint (signed like ``ls``'s ``/readyz``), which
streams each record as the destination got it, after the processing chain, so a user sees what
a transform does to real data; ``--errors`` adds the records sent to the error output, and
``--sample RATE`` keeps that share of them. Each record's data is printed as it is (a newline
added when it has none); ``--json`` prints the daemon's JSON lines instead (``stream``, ``kind``:
``delivered`` or ``error``, ``data`` or ``base64``). A record the daemon had to skip because this
reader fell behind is reported on standard error.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from argparse import Namespace
from urllib.parse import urlencode

from firehose.commands.connection import CommandError, connect, daemon_request


def run(args: Namespace) -> int:
    """0 after ``--limit`` records or when the daemon ends the stream (Ctrl-C: 130); 2 if it cannot follow."""
    if not 0 < args.sample <= 1:
        print("firehose tap: --sample must be more than 0 and at most 1", file=sys.stderr)
        return 2
    try:
        connection = connect(args)
    except CommandError as exc:
        print(f"firehose tap: {exc}", file=sys.stderr)
        return 2
    query = urlencode({"stream": args.stream, "errors": int(args.errors), "sample": args.sample})
    opened = daemon_request(connection, f"/tap?{query}")
    if opened is None:
        print("firehose tap: the endpoint is not this daemon (AWS has no tap)", file=sys.stderr)
        return 2
    request, context = opened
    shown = 0
    try:
        with urllib.request.urlopen(request, context=context) as response:
            for raw in response:
                if not raw.strip():
                    continue  # a heartbeat
                line = json.loads(raw)
                if "dropped" in line:
                    print(f"firehose tap: {line['dropped']} records skipped (this reader fell behind)",
                          file=sys.stderr)
                    continue
                _show(line, as_json=args.json, raw=raw)
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    break
    except urllib.error.HTTPError as exc:
        print(f"firehose tap: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"firehose tap: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _show(line: dict[str, str], *, as_json: bool, raw: bytes) -> None:
    if as_json:
        sys.stdout.write(raw.decode())
    else:
        text = line.get("data", "") if "data" in line else f"(base64) {line.get('base64', '')}\n"
        prefix = "error: " if line.get("kind") == "error" else ""
        sys.stdout.write(prefix + text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()
