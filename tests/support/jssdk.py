"""The AWS SDK for JavaScript v3's Kinesis client, for tests that talk to the listeners as Node.js does.

It is installed once with npm into a cache directory outside the work tree; ``js/kinesis_client.mjs``
is the script the tests run with it (arguments: endpoint, stream name).
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


def kinesis_client_script() -> Path:
    """``kinesis_client.mjs``, copied next to the SDK's ``node_modules`` so that its import resolves."""
    script = js_sdk_dir() / SCRIPT.name
    shutil.copy(SCRIPT, script)
    return script
