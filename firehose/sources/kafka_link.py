"""The link between the daemon and a Kafka source's reader process: frames over one socket pair.

A Kafka source reads its topic in a process of its own (``kafka_reader``): taking every message out
of confluent-kafka costs a few hundred nanoseconds of Python per record, and in the daemon's process
that work held the interpreter lock the event loop, the spool's writer and the deliverers need,
which set the source's pace. The reader sends each entry it gathers over this link; the daemon makes
it durable in the stream's spool and answers; only then does the reader count it spooled (and may
commit its offsets to the group).

A frame is ``kind`` (1 byte), the length of an orjson ``meta`` object and the length of the binary
``data`` after it (4 bytes each, little-endian), then the two. Kinds:

* ``ENTRY`` (reader → daemon): ``data`` is the entry's payload parts back to back, ``meta["parts"]``
  their lengths, ``meta["entry"]`` its number. The daemon answers them in order.
* ``DONE`` (daemon → reader): entry ``meta["entry"]`` is durable (``meta["ok"]``) or was given up (``ok``
  false, ``meta["error"]``); with the stream's status as in ``STATUS``.
* ``STATUS`` (daemon → reader): ``backlog`` (the stream's spooled, undelivered bytes) and ``lambda``
  (whether the stream has a Lambda step now), about ten times a second.
* ``STATE`` (reader → daemon): what ``/readyz`` shows (assigned partitions, paused, last error,
  committed offsets) and the records, bytes and oversize records spooled since the last one.
* ``LOG`` (reader → daemon): a log record, logged by the daemon under the same logger.
* ``STOP`` (daemon → reader): write what is read, commit, leave the group and exit.

Either end seeing the other's end close stops: the reader then exits at once (what it read and the
daemon never answered is read again, from the spool's checkpoint, by whoever reads next).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

import orjson

ENTRY, DONE, STATUS, STATE, LOG, STOP = 1, 2, 3, 4, 5, 6
_HEAD = struct.Struct("<BII")
#: The largest ``meta`` a frame may carry: a bound on what one end allocates for the other's claim.
MAX_META = 16 * 1024 * 1024
#: The largest ``data``: one entry (a reader gathers at most ``MAX_ENTRY_BYTES`` of records, plus their
#: arrival times and lengths; a record over the size limit, up to 10 MiB, as an error document).
MAX_DATA = 256 * 1024 * 1024


class LinkClosed(ConnectionError):
    """The other end closed the link (or sent what no end of it sends)."""


class Link:
    """One end of the socket pair: whole frames out (any thread, under a lock) and in (one thread)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        #: Reused for every ``data`` received (one entry is in flight at a time): no fresh pages per entry.
        self._buffer = bytearray()

    def send(self, kind: int, meta: Any, parts: Sequence[bytes | bytearray | memoryview] = ()) -> None:
        body = orjson.dumps(meta, default=str)  # what JSON has no type for (a log's extras) as text
        size = sum(len(p) for p in parts)
        buffers: list[Any] = [_HEAD.pack(kind, len(body), size), body, *parts]
        with self._send_lock:
            while buffers:
                sent = self.sock.sendmsg(buffers)
                while buffers and sent >= len(buffers[0]):
                    sent -= len(buffers[0])
                    buffers.pop(0)
                if sent:
                    buffers[0] = memoryview(buffers[0])[sent:]

    def receive(self) -> tuple[int, Any, memoryview]:
        """The next frame: (kind, meta, data). ``data`` is valid until the next ``receive``."""
        head = self._exactly(bytearray(_HEAD.size))
        kind, meta_size, data_size = _HEAD.unpack(head)
        if meta_size > MAX_META or data_size > MAX_DATA:
            raise LinkClosed(f"a frame claims {meta_size} + {data_size} bytes")
        meta = orjson.loads(self._exactly(bytearray(meta_size))) if meta_size else None
        if len(self._buffer) < data_size:
            self._buffer = bytearray(data_size)
        data = memoryview(self._buffer)[:data_size]
        self._exactly(data)
        return kind, meta, data

    def _exactly(self, into: bytearray | memoryview) -> bytearray | memoryview:
        view = memoryview(into)
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if not n:
                raise LinkClosed("the other end closed the link")
            got += n
        return into

    def close(self) -> None:
        self.sock.close()


def split(data: memoryview, lengths: Sequence[int]) -> list[memoryview]:
    """``data`` cut into parts of ``lengths``."""
    parts, at = [], 0
    for n in lengths:
        parts.append(data[at:at + n])
        at += n
    return parts


#: Attributes every ``LogRecord`` has: what is not one of them was given as ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ForwardingHandler(logging.Handler):
    """In the reader: every log record goes over the link, to be logged by the daemon."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
            if record.exc_info:
                extra["exception"] = logging.Formatter().formatException(record.exc_info)
            meta = {"logger": record.name, "level": record.levelno, "message": record.getMessage(), "extra": extra}
            self.link.send(LOG, meta)
        except Exception:  # the link is gone: the daemon is stopping or dead, and the reader with it
            pass


def relog(meta: dict[str, Any]) -> None:
    """In the daemon: log a record the reader forwarded, as the reader's logger would have."""
    logging.getLogger(str(meta.get("logger", "firehose.sources"))).log(
        int(meta.get("level", logging.INFO)), str(meta.get("message", "")), extra=meta.get("extra") or {})
