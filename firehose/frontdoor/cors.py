"""CORS on both APIs, as AWS's JSON front door answers it (kinesis-fidelity.md §5.1, kinesalite's recordings).

Browsers call the APIs directly (the JavaScript SDK in a page), so:

* a preflight (``OPTIONS`` with ``Origin``) is answered 200 with an empty body,
  ``Access-Control-Allow-Origin: *``, ``Access-Control-Max-Age: 172800`` and
  the requested headers and method echoed back as allowed; it carries a
  request id but no ``x-amz-id-2`` and no content type (kinesalite's recording);
* every API answer to a request with ``Origin`` carries
  ``Access-Control-Allow-Origin: *`` and exposes AWS's response headers
  (request id, error type and message, ``Date``) to the page's script.

Nothing is checked against the origin: the API's authentication (SigV4) is
what protects it, as on AWS, and a page can only sign with keys it holds.
"""

from __future__ import annotations

from firehose.asgi import Scope, Send
from firehose.frontdoor import wire

MAX_AGE = b"172800"
EXPOSED = b"x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
#: Added to every API answer to a request that has an ``Origin``.
ANSWER_HEADERS = [(b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", EXPOSED)]


def has_origin(scope: Scope) -> bool:
    return any(k == b"origin" for k, _v in scope["headers"])


def is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and has_origin(scope)


async def preflight(scope: Scope, send: Send) -> None:
    """200, empty, allowing any origin and echoing what the browser asks to send."""
    headers = [(b"access-control-allow-origin", b"*"), (b"access-control-max-age", MAX_AGE),
               (b"content-length", b"0"), (b"x-amzn-requestid", wire.request_id().encode())]
    for key, value in scope["headers"]:
        if key == b"access-control-request-headers":
            headers.append((b"access-control-allow-headers", value))
        elif key == b"access-control-request-method":
            headers.append((b"access-control-allow-methods", value))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
