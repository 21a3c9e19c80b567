"""Requests signed by botocore's own SigV4 signer, for tests that need to send (or spoil) them by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import httpx
import orjson
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

JSON = "application/x-amz-json-1.1"


class JsonQueryAuth(SigV4QueryAuth):
    """The query-string (presigned) form for a JSON service: botocore's presigner moves a body's members
    into the query string (as query-protocol services want); a JSON request keeps its body, which the
    signature covers."""

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        data, request.data = request.data, b""
        super()._modify_request_before_signing(request)
        request.data = data


def sign(url: str, target: str | None, body: bytes, *, key: str, secret: str, service: str = "firehose",
         region: str = "us-east-1", token: str | None = None, at: dt.datetime | None = None,
         content_type: str = JSON, method: str = "POST", presign_expires: int | None = None
         ) -> tuple[str, dict[str, str], bytes]:
    """(url, headers, body) of a request signed as boto3 signs it (``at``: the signing time)."""
    headers = {"Content-Type": content_type} if method == "POST" else {}
    if target:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    credentials = Credentials(key, secret, token)
    signer = (JsonQueryAuth(credentials, service, region, expires=presign_expires) if presign_expires is not None
              else SigV4Auth(credentials, service, region))
    when = at or dt.datetime.now(dt.UTC)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        signer.add_auth(request)
    prepared = request.prepare()
    # The client sets the length of what it sends (the query-string form signs no Content-Length).
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    return prepared.url, headers, body


def send(url: str, headers: dict[str, str], body: bytes, method: str = "POST") -> tuple[int, dict[str, Any]]:
    """Send a prepared request; (status, decoded JSON body)."""
    response = httpx.request(method, url, headers=headers, content=body, timeout=30)
    return response.status_code, orjson.loads(response.content) if response.content else {}


def call(endpoint: str, target: str, payload: dict[str, Any], **signing: Any) -> tuple[int, dict[str, Any]]:
    """Sign and send one awsJson call."""
    url, headers, body = sign(endpoint + "/", target, orjson.dumps(payload), **signing)
    return send(url, headers, body)
