"""The Firehose endpoint a command talks to: a boto3 client from the usual options, and the daemon's details.

The endpoint, region and credentials follow boto3's standard chain (environment, shared config
and credentials files, instance roles): ``--endpoint-url`` wins, then ``AWS_ENDPOINT_URL_FIREHOSE``
or ``AWS_ENDPOINT_URL`` and a profile's ``endpoint_url``, else AWS's own endpoint for the region. A
region is required only for AWS: with an endpoint given and none configured, ``us-east-1`` is
used (the daemon serves any region). botocore's own retries are off: a command retries what
failed itself, with ``firehose.retry``.

``daemon_streams`` reads the per-stream details of ``GET /readyz``, which only this daemon serves;
against AWS (or a daemon that does not let this caller see them) it returns None and the
commands leave those figures out.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from argparse import ArgumentParser, Namespace
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: The region used when an endpoint is given and nothing configures one.
DEFAULT_REGION = "us-east-1"
#: Hosts of AWS's own endpoints, which serve no /readyz.
_AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
#: Seconds to wait for /readyz: the figures it gives are extras, never worth a stall.
_READYZ_TIMEOUT = 3.0


class CommandError(Exception):
    """A command cannot run as asked (no region, no credentials, a missing stream); its message says why."""


@dataclass(frozen=True)
class Connection:
    """A boto3 Firehose client and the session and region it was made from (for signing /readyz)."""

    client: Any
    session: Any
    region: str

    @property
    def endpoint_url(self) -> str:
        return str(self.client.meta.endpoint_url)


def add_arguments(parser: ArgumentParser) -> None:
    """--endpoint-url --region --profile, as every command that talks to an endpoint takes them."""
    parser.add_argument("--endpoint-url", help="the Firehose endpoint, e.g. http://127.0.0.1:4573 "
                        "(default: AWS_ENDPOINT_URL_FIREHOSE, AWS_ENDPOINT_URL, the profile's, else AWS's own)")
    parser.add_argument("--region", help="AWS region (default: the standard chain; us-east-1 with an endpoint)")
    parser.add_argument("--profile", help="a named profile of the shared AWS config and credentials files")


def connect(args: Namespace) -> Connection:
    """A client for ``args``' endpoint, region and profile; ``CommandError`` if boto3 cannot make one."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    try:
        session = boto3.Session(profile_name=args.profile)
    except ProfileNotFound as exc:
        raise CommandError(str(exc)) from exc
    endpoint_given = bool(args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_FIREHOSE")
                          or os.environ.get("AWS_ENDPOINT_URL"))
    region = args.region or session.region_name or (DEFAULT_REGION if endpoint_given else None)
    if not region:
        raise CommandError("no AWS region: pass --region, set AWS_REGION, or give --endpoint-url for a daemon")
    config = BotoConfig(retries={"total_max_attempts": 1}, parameter_validation=False,
                        user_agent_extra="firehose-cli")
    try:
        client = session.client("firehose", region_name=region, endpoint_url=args.endpoint_url, config=config)
    except (BotoCoreError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return Connection(client, session, region)


def describe_error(exc: Exception) -> str:
    """A boto3 error as one line: the service's error code and message, or botocore's own text."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, NoCredentialsError):
        return (f"{exc} (configure credentials as for the AWS CLI; against a daemon with auth mode none any "
                "non-empty AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY do)")
    return f"{type(exc).__name__}: {exc}"


def daemon_streams(connection: Connection) -> dict[str, dict[str, Any]] | None:
    """``/readyz``'s per-stream details, keyed as it names streams; None when the endpoint gives none.

    The request is signed with the connection's credentials (when there are any), so a daemon
    with authentication on shows the details to a principal it knows, as it does for metrics.
    Any failure (AWS, a timeout, a minimal answer) is None: the details are optional extras.
    """
    doc = daemon_json(connection, "/readyz")
    streams = doc.get("streams") if isinstance(doc, dict) else None
    return streams if isinstance(streams, dict) else None


def daemon_json(connection: Connection, path: str) -> Any:
    """A signed ``GET path`` of this daemon's operator JSON (``/readyz``, ``/metrics.json``); None when
    the endpoint is AWS, does not answer, or answers something that is not JSON."""
    opened = daemon_request(connection, path)
    if opened is None:
        return None
    request, context = opened
    try:
        with urllib.request.urlopen(request, timeout=_READYZ_TIMEOUT, context=context) as response:
            body = response.read()
    except urllib.error.HTTPError as err:  # 503 while starting, stopping or with the spool full: details still come
        body = err.read()
    except (OSError, ValueError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def daemon_request(connection: Connection,
                   path: str) -> tuple[urllib.request.Request, ssl.SSLContext | None] | None:
    """A signed ``GET path`` for this daemon's operator endpoints and the TLS context to open it with;
    None when the endpoint is AWS's (which has no such paths)."""
    url = connection.endpoint_url.rstrip("/") + path
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "").endswith(_AWS_HOSTS):
        return None
    context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE")) if parts.scheme == "https" \
        else None
    return urllib.request.Request(url, headers=_signed_headers(connection, url)), context


def _signed_headers(connection: Connection, url: str) -> dict[str, str]:
    """SigV4 headers for ``GET url`` as the ``firehose`` service; none without credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = connection.session.get_credentials()
    if credentials is None:
        return {}
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(credentials.get_frozen_credentials(), "firehose", connection.region).add_auth(request)
    return dict(request.headers.items())
