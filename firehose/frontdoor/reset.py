"""The reset endpoint for test suites (``testing.reset_endpoint``): moto's and LocalStack's paths.

Suites written for moto's or LocalStack's server mode reset the emulator
between tests with one request; with the setting on, the API listeners answer
the same requests the same way:

* ``POST /moto-api/reset`` → 200 ``{"status": "ok"}`` (moto 5's
  ``reset_response``); another method → 400 ``{"Error": "Need to POST to reset
  Moto"}`` as moto answers.
* ``POST /_localstack/state/reset`` → every service; ``POST
  /_localstack/state/<service>/reset`` → one service (``kinesis``,
  ``firehose``; another service holds nothing here, and, as LocalStack does
  for a service it does not run, the answer is 200 all the same). LocalStack's
  route returns nothing, which its router sends as 200 with an empty body;
  another method → 405.

What a reset drops is the owner's business (``Reset``): the daemon drops its
delivery streams and, when the Kinesis sidecar runs inside it, the sidecar's
streams; a stand-alone sidecar drops its streams. The paths are not routes at
all while the setting is off (the listener's 404 for unknown paths), and the
setting is refused on a listener that is not loopback
(``settings.check_reset_endpoint``): nothing here authenticates the caller.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Literal

from firehose.asgi import Receive, Scope, Send, send_response

#: What to drop: every stream, or only one API's.
Service = Literal["all", "kinesis", "firehose"]
Reset = Callable[[Service], Awaitable[None]]

MOTO = "/moto-api/reset"
LOCALSTACK = "/_localstack/state/reset"
_LOCALSTACK_SERVICE = re.compile(r"/_localstack/state/([a-z0-9-]+)/reset")
_JSON = b"application/json"


async def _nothing(_service: Service) -> None:
    return None


class ResetRoutes:
    """The reset paths of one listener; ``action`` may be replaced by whoever owns more state (the daemon
    replaces the sidecar's own when the sidecar runs inside it)."""

    def __init__(self, enabled: bool, action: Reset | None = None,
                 permits: Callable[[Scope], bool] | None = None) -> None:
        """``permits`` says whether a caller may reset (the operator endpoints' rule: with
        authentication on, a signed request or a bearer token); anyone when not given."""
        self.enabled = enabled
        self.action: Reset = action or _nothing
        self.permits = permits or (lambda _scope: True)

    def handles(self, scope: Scope) -> bool:
        if not self.enabled:
            return False
        path = scope["path"]
        return path in (MOTO, LOCALSTACK) or _LOCALSTACK_SERVICE.fullmatch(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, post = scope["path"], scope["method"] == "POST"
        if not self.permits(scope):
            await send_response(send, 401, b'{"__type": "MissingAuthenticationTokenException", "message": '
                                b'"A reset needs a signed request or a bearer token (auth.bearer_tokens)."}', _JSON,
                                extra=[(b"www-authenticate", b'Bearer realm="firehose"')])
            return
        if path == MOTO:
            if not post:
                await send_response(send, 400, b'{"Error": "Need to POST to reset Moto"}', _JSON)
                return
            await self.action("all")
            await send_response(send, 200, b'{"status": "ok"}', _JSON)
            return
        if not post:
            await send_response(send, 405, b'{"message": "Method Not Allowed: POST to reset."}', _JSON,
                                extra=[(b"allow", b"POST")])
            return
        match = _LOCALSTACK_SERVICE.fullmatch(path)
        service = match.group(1) if match else "all"
        if service in ("all", "kinesis", "firehose"):
            await self.action(service)  # type: ignore[arg-type]
        await send_response(send, 200, b"", _JSON)
