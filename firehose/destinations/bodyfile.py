"""An object's body as a read-only, seekable file over its parts: what an HTTP client sends
without the body ever being joined into one buffer.

An object's parts are mostly views of the spool's mapped segments (``ObjectBatch.parts``). Joining
them made a fresh buffer of the object's size for every attempt (5 MiB by default), in the
destinations' threads; in an outage of ten streams those buffers came and went by the hundred and
glibc kept the freed memory (hundreds of MiB of resident memory that held nothing). Read as a file,
the body costs one client-sized block at a time (the client reads a block, sends it, reads the next).

Invariants: ``read`` returns the parts' bytes back to back from the current position, exactly as
``b"".join(parts)`` holds them; ``seek``/``tell`` work anywhere in the body (clients read the body
once for a checksum and once to sign it, seeking back each time, and rewind it to resend); the
parts are never written to; once closed, the file holds no reference to them (close it when the
call returns: clients keep failed requests, and their bodies, in reference cycles).
"""

from __future__ import annotations

import io
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate

__all__ = ["BodyFile", "body_pieces"]


class BodyFile(io.RawIOBase):
    """The parts as one file, read in place."""

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        super().__init__()
        self._views = [v for v in (memoryview(p).cast("B") for p in parts) if len(v)]
        #: Where each part starts in the body (the body's size last).
        self._starts = [0, *accumulate(len(v) for v in self._views)]
        self._size = self._starts[-1]
        self._pos = 0

    def close(self) -> None:
        """Let go of the parts: a client may keep the file (an exception's request, in a reference
        cycle) long after the call, and the parts are views that keep spool segments mapped."""
        self._views, self._starts, self._size = [], [0], 0
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative): one copy, of what is returned."""
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        chunks = list(self._slices(end))
        self._pos = max(self._pos, end)
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + len(out))
        n = 0
        for chunk in self._slices(end):
            out[n:n + len(chunk)] = chunk
            n += len(chunk)
        self._pos += n
        return n

    def _slices(self, end: int) -> Iterator[memoryview]:
        """Views of the body from the position up to ``end``."""
        if self.closed:
            raise ValueError("I/O operation on a closed body")
        pos = self._pos
        i = bisect_right(self._starts, pos) - 1
        while pos < end and i < len(self._views):
            start = self._starts[i]
            take = min(end, self._starts[i + 1]) - pos
            yield self._views[i][pos - start:pos - start + take]
            pos += take
            i += 1


def body_pieces(parts: Sequence[bytes | memoryview], size: int) -> Iterator[BodyFile]:
    """The body cut into consecutive files of ``size`` bytes (the last may be shorter; an empty body
    is one empty file), e.g. the parts of a multipart upload, each read in place as well."""
    piece: list[memoryview] = []
    room = size
    sent = False
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            take = view[:room]
            piece.append(take)
            room -= len(take)
            view = view[len(take):]
            if room == 0:
                yield BodyFile(piece)
                sent = True
                piece, room = [], size
    if piece or not sent:
        yield BodyFile(piece)
