"""ASGI plumbing shared by the Firehose API and the Kinesis API: reading a bounded body, answering.

Both are plain ASGI callables (one route that matters each); these two
helpers are all they have in common below the protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body passed the limit; the rest was not read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing it as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(send: Send, status: int, body: bytes, content_type: bytes, rid: str | None = None) -> None:
    """One complete response, with ``x-amzn-RequestId`` when there is a request id."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if rid:
        headers.append((b"x-amzn-requestid", rid.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
