"""How a request names a shard: ``shardId-000000000005``, and the shorter forms AWS also accepts.

A shard's id is ``shardId-`` and its index, zero-padded to 12 digits. AWS reads the id a
request gives by its index, not its spelling (kinesalite recorded it: ``shardId-5``, ``5``,
``anything-005`` all name ``shardId-000000000005``): the part after the first ``-`` (the whole
text when there is none, or nothing after it) must be decimal digits of at most 2^31 - 1.
Anything else names no shard ("Could not find shard <text> ..."); an index the stream does not
have is answered with the canonical id ("Shard shardId-000000000005 ... does not exist").
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
#: The largest index a shard id may spell (Java's Integer.MAX_VALUE).
MAX_INDEX = 2**31 - 1


def name(index: int) -> str:
    """The canonical id of the shard with ``index``."""
    return f"shardId-{index:012d}"


def resolve(text: str) -> str | None:
    """The canonical id ``text`` names, or None when it names no shard at all."""
    parts = text.split("-")
    index = parts[1] if len(parts) > 1 and parts[1] else text
    if not _DIGITS.fullmatch(index) or int(index) > MAX_INDEX:
        return None
    return name(int(index))
