"""The AWS SDK for JavaScript v3's Kinesis client, for tests that talk to the listeners as Node.js does.

It is installed once with npm into a cache directory outside the work tree; the scripts in ``js/`` are
what the tests run with it: ``kinesis_client.mjs`` (arguments: endpoint, stream name) puts and gets
records, ``kinesis_subscribe.mjs`` (endpoint, consumer ARN, shard id, records) reads through
SubscribeToShard.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

JS_SDK = "@aws-sdk/client-kinesis@3"
SCRIPT = Path(__file__).resolve().parent / "js" / "kinesis_client.mjs"


def js_sdk_dir() -> Path:
    """The directory whose ``node_modules`` holds the SDK (``FIREHOSE_TEST_NODE_DIR``, or a cache)."""
    root = Path(os.environ.get("FIREHOSE_TEST_NODE_DIR", Path.home() / ".cache" / "firehose-tests" / "js-sdk"))
    if not (root / "node_modules" / "@aws-sdk" / "client-kinesis").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", JS_SDK], check=True,
                       capture_output=True, timeout=300)
    return root


def js_script(name: str) -> Path:
    """A script of ``js/``, copied next to the SDK's ``node_modules`` so that its import resolves."""
    script = js_sdk_dir() / name
    shutil.copy(SCRIPT.parent / name, script)
    return script


def kinesis_client_script() -> Path:
    """``kinesis_client.mjs`` (see ``js_script``)."""
    return js_script(SCRIPT.name)
