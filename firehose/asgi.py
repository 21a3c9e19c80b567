"""ASGI plumbing shared by the Firehose API, the Kinesis API and the operator endpoints: types, answering.

Every app here is a plain ASGI callable (one route that matters each), so
reading a request's body is done where its limits are known (the front
door's ``body`` module) and this module only answers.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pybase64

#: A request's ASGI connection scope (type, method, path, headers, ...).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def amz_id_2() -> str:
    """The ``x-amz-id-2`` value AWS adds to every answer: base64 of 72 random bytes."""
    return pybase64.b64encode(os.urandom(72)).decode()


async def send_response(send: Send, status: int, body: bytes, content_type: bytes, rid: str | None = None, *,
                        close: bool = False, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """One complete response; with a request id, AWS's ``x-amzn-RequestId`` and ``x-amz-id-2`` headers.

    ``close`` asks the server to close the connection after the answer (used when the rest of a
    refused body was not read).
    """
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if rid:
        headers.append((b"x-amzn-requestid", rid.encode()))
        headers.append((b"x-amz-id-2", amz_id_2().encode()))
    if close:
        headers.append((b"connection", b"close"))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
