"""The last error documents of a stream, kept in memory for the console and ``firehose describe``.

Fed where error documents are confirmed written to the error output (the
deliverer, for processing, partitioning and conversion failures; the
``ErrorOutput``, for what a record destination gave up on), so it shows what
the error output holds, newest first. Bounded on every side: at most
``failures.RECENT`` entries per stream, each a summary whose message and data
preview are capped in bytes, so a stream failing a million records costs the
same few tens of KiB as one failing one.

The summary is JSON for the page and is built to be shown as text: the raw data
is decoded for display only when it is printable UTF-8 (else a base64 prefix is
given), never interpreted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
import pybase64

from firehose import failures
from firehose.clock import now_ms

#: Characters of an error message kept (AWS messages are short; a destination's body may not be).
MESSAGE_CHARS = 1024
#: Bytes of a record's data previewed (as text when printable, else as base64).
DATA_BYTES = 1024
_LAYOUT = frozenset("\t\n\r")


def preview(raw: bytes) -> dict[str, Any]:
    """What the console shows of a record's data: ``{"bytes", "truncated", "text" | "base64"}``.

    ``text`` when the first ``DATA_BYTES`` bytes are printable UTF-8 (tabs and newlines allowed;
    a character cut at the limit is left out), otherwise ``base64`` of those bytes.
    """
    head = raw[:DATA_BYTES]
    shown: dict[str, Any] = {"bytes": len(raw), "truncated": len(raw) > len(head)}
    text = _printable(head, cut=len(raw) > len(head))
    if text is None:
        shown["base64"] = pybase64.b64encode(head).decode()
    else:
        shown["text"] = text
    return shown


def _printable(head: bytes, *, cut: bool) -> str | None:
    # A multi-byte character cut by the limit is dropped (up to 3 bytes), not taken for binary.
    for trim in range(4 if cut else 1):
        try:
            text = head[:len(head) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text if all(c.isprintable() or c in _LAYOUT for c in text) else None
    return None


def summary(doc: bytes | memoryview, error_output_type: str, key: str) -> dict[str, Any]:
    """One error document as the console lists it (bounded in size whatever the document holds)."""
    try:
        parsed = orjson.loads(doc)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        return {"time_ms": now_ms(), "error_output_type": error_output_type, "key": key, "code": "Unreadable",
                "message": "The error document is not a JSON object.", "data": preview(bytes(doc))}
    try:
        raw = pybase64.b64decode(parsed.get("rawData") or "", validate=True)
    except ValueError:
        raw = str(parsed.get("rawData")).encode()
    message = str(parsed.get("errorMessage", parsed.get("lastErrorMessage")) or "")
    return {
        "time_ms": _int(parsed.get("attemptEndingTimestamp")) or now_ms(),
        "error_output_type": error_output_type,
        "key": key,
        "code": str(parsed.get("errorCode", parsed.get("lastErrorCode")) or ""),
        "message": message[:MESSAGE_CHARS] + ("…" if len(message) > MESSAGE_CHARS else ""),
        "attempts": _int(parsed.get("attemptsMade")),
        "arrival_ms": _int(parsed.get("arrivalTimestamp")),
        "data": preview(raw),
    }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RecentErrors:
    """The newest ``failures.RECENT`` error documents of one stream (a ring; oldest dropped first)."""

    def __init__(self, size: int = failures.RECENT) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, error_output_type: str, key: str, documents: Iterable[bytes | memoryview]) -> None:
        """Documents just written under ``key``, in the order written (only the last ones are parsed)."""
        docs = list(documents)[-(self._ring.maxlen or 0):]
        self._ring.extend(summary(d, error_output_type, key) for d in docs)

    def newest_first(self) -> list[dict[str, Any]]:
        return list(reversed(self._ring))

    def newest(self) -> dict[str, Any] | None:
        return self._ring[-1] if self._ring else None
