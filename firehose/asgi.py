"""ASGI plumbing shared by the Firehose API, the Kinesis API and the operator endpoints: types, answering.

Every app here is a plain ASGI callable (one route that matters each), so
reading a request's body is done where its limits are known (the front
door's ``body`` module) and this module only answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pybase64

#: A request's ASGI connection scope (type, method, path, headers, ...).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def amz_id_2() -> str:
    """The ``x-amz-id-2`` value AWS adds to every answer: base64 of 72 random bytes."""
    return pybase64.b64encode(os.urandom(72)).decode()


async def send_response(send: Send, status: int, body: bytes, content_type: bytes | None, rid: str | None = None,
                        *, close: bool = False, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """One complete response; with a request id, AWS's ``x-amzn-RequestId`` and ``x-amz-id-2`` headers.
    ``content_type`` None sends none (AWS's XML refusals carry no Content-Type).

    ``close`` asks the server to close the connection after the answer (used when the rest of a
    refused body was not read).
    """
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.insert(0, (b"content-type", content_type))
    if rid:
        headers.append((b"x-amzn-requestid", rid.encode()))
        headers.append((b"x-amz-id-2", amz_id_2().encode()))
    if close:
        headers.append((b"connection", b"close"))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class Streamed:
    """An answer sent while it is produced (an event stream): status 200, ``content_type``, then each
    chunk as soon as ``chunks`` yields it. The next chunk is asked for only once the server has taken
    the last (``send`` returns when HTTP flow control lets it), so a slow client holds the producer
    back instead of making it buffer."""

    content_type: bytes
    chunks: AsyncIterator[bytes]


async def send_streamed(send: Send, receive: Receive, answer: Streamed, rid: str) -> None:
    """``answer`` without a length (HTTP/1.1: chunked; HTTP/2: DATA frames), ended when ``chunks`` ends.

    The client going away (``http.disconnect``, or ``send`` failing) stops the producer at once,
    wherever it waits; either way the producer is closed (``aclose``) before this returns, even one
    that never produced a chunk (a generator that was never started runs no ``finally`` then: a
    producer holding something must release it in ``aclose`` itself, as ``subscriptions.py`` does).
    """
    headers = [(b"content-type", answer.content_type), (b"x-amzn-requestid", rid.encode()),
               (b"x-amz-id-2", amz_id_2().encode())]

    async def pump() -> None:
        async for chunk in answer.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks: list[asyncio.Future[None]] = []
    try:  # from the first send on: a client gone before the first chunk still gets the producer closed
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(disconnected())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        aclose = getattr(answer.chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
