"""Where this daemon stands among others: alone, or one node of a fleet behind a load balancer.

A fleet is N daemons with the same config file behind a load balancer (HAProxy in the docs and
tests), each with its own spool, all writing to the same buckets. Two things make that safe:

* **Object keys never collide between nodes.** Every batch's key ends in a UUID derived from the
  spool position that started it (``pipeline/naming.py``); the node's id takes part in that
  derivation, so two nodes whose spools happen to hold the same positions (same stream
  incarnation after a copied data directory, or a 1-in-2^32 incarnation clash) still name their
  batches differently. A batch keeps its key across retries and restarts because the key is
  fsynced in the batch's seal, so the exactly-once-object property holds per node.
* **One control plane: the shared config file.** Streams created over the API would exist on the
  one node that happened to get the call; in ``mode: fleet`` the API refuses calls that change
  streams (``firehose.api``), and streams come from the config file every node reads.

The default node id is stable per machine *and* per state directory (a hash of the machine id, the
host name and the state directory's absolute path), so a daemon keeps its id across restarts while
two daemons on one machine (with different state directories) get different ids.
"""

from __future__ import annotations

import functools
import hashlib
import re
import socket
from pathlib import Path

#: What a node id may be: it appears in logs, ``/readyz`` and the console.
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def machine_id() -> str:
    """The machine's id (systemd's), or "" where there is none (containers may lack one)."""
    for path in _MACHINE_ID_FILES:
        try:
            return path.read_text().strip()
        except OSError:
            continue
    return ""


@functools.lru_cache(maxsize=8)
def default_node_id(state_dir: Path) -> str:
    """``<host>-<8 hex>``: the host name (made safe, at most 40 characters) and a hash of the machine
    id, host name and absolute state directory. Stable across restarts, distinct per state directory."""
    host = socket.gethostname()
    digest = hashlib.sha256(f"{machine_id()}\0{host}\0{state_dir.resolve()}".encode()).hexdigest()[:8]
    safe_host = _UNSAFE.sub("-", host).strip("-._")[:40] or "node"
    return f"{safe_host}-{digest}"
