"""KinesisStreamAsSource delivery streams reading the daemon's own sidecar when it requires signatures.

The source's boto3 client signs with the standard AWS credential chain; here
its only credentials are a principal's keys in the environment (no config or
credentials file, no instance metadata). Proven here:

* ``kinesis:ListShards``, ``kinesis:GetShardIterator`` and ``kinesis:GetRecords``
  on the stream's ARN are all a source needs, and each of the three is
  needed: records put by another principal arrive exactly once, and a source
  whose principal lacks any one of them delivers nothing and shows the
  AccessDeniedException naming the missing action in the detailed ``/readyz``;
* with keys the sidecar refuses (a wrong secret, an unknown key, or no keys at
  all) nothing is delivered and ``/readyz`` names AWS's authentication error;
  restarted with the right keys the same daemon delivers every record once;
* with ``tls:`` on, the source reads its in-process sidecar over https,
  verifying the certificate against ``http.ca_bundle``, and delivers; without
  the CA bundle it refuses the certificate and delivers nothing;
* a source reads the stream of its ARN's account, never the stream of
  the same name in its keys' account, and ``/readyz`` keeps naming a read error while it lasts.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

from tests.support.daemon import RunningDaemon
from tests.support.delivered import delivered_records
from tests.support.kinesis_source import source_stream
from tests.support.pki import Authority
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REGION = "us-east-1"
ACCOUNT = "111122223333"
BEARER = "readiness-token"
READ_ACTIONS = ["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def _allow(actions: list[str] | str, resources: list[str] | str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


#: Kinesis streams whose source principal lacks one read action, by the action it lacks.
LACKING = {"kinesis:ListShards": "no-list", "kinesis:GetShardIterator": "no-iterator",
           "kinesis:GetRecords": "no-records"}

SOURCE: dict[str, Any] = {
    "name": "firehose-source", "access_key_id": "AKIAFIREHOSESOURCE01", "secret": "source-secret",
    "account_id": ACCOUNT, "policies": [
        _allow(READ_ACTIONS, [stream_arn(name) for name in ("clicks", "orders", "secure")]),
        *(_allow([a for a in READ_ACTIONS if a != lacking], stream_arn(name)) for lacking, name in LACKING.items())]}
PRODUCER: dict[str, Any] = {
    "name": "producer", "access_key_id": "AKIAPRODUCER00000001", "secret": "producer-secret", "account_id": ACCOUNT,
    "policies": [_allow("kinesis:PutRecords", f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/*")]}
AUTH: dict[str, Any] = {"mode": "sigv4", "principals": [SOURCE, PRODUCER], "bearer_tokens": [BEARER]}


def source_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str | None, secret: str | None) -> None:
    """The keys the daemon's source finds in its environment, and nothing else to find."""
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (("AWS_ACCESS_KEY_ID", key), ("AWS_SECRET_ACCESS_KEY", secret)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


def kinesis_settings(port: int, *streams: tuple[str, int]) -> dict[str, Any]:
    return {"enabled": True, "port": port, "source_poll_interval_seconds": 0.05,
            "streams": [{"StreamName": n, "ShardCount": c} for n, c in streams]}


def signed_source_stream(name: str, kinesis_stream: str) -> dict[str, Any]:
    body = source_stream(name, kinesis_stream)
    body["KinesisStreamSourceConfiguration"]["KinesisStreamARN"] = stream_arn(kinesis_stream)
    return body


def producer(endpoint: str, verify: str | None = None) -> Any:
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION, verify=verify,
                        aws_access_key_id=PRODUCER["access_key_id"], aws_secret_access_key=PRODUCER["secret"],
                        config=BotoConfig(retries={"max_attempts": 1}))


def put(client: Any, stream: str, lines: list[bytes]) -> None:
    for i in range(0, len(lines), 500):
        response = client.put_records(StreamName=stream, Records=[
            {"Data": line + b"\n", "PartitionKey": f"p{j % 37}"} for j, line in enumerate(lines[i:i + 500], i)])
        assert response["FailedRecordCount"] == 0


def readiness(endpoint: str, verify: ssl.SSLContext | bool = True) -> dict[str, Any]:
    response = httpx.get(f"{endpoint}/readyz", headers={"Authorization": f"Bearer {BEARER}"}, verify=verify)
    details: dict[str, Any] = response.json()
    return details


def source_error(endpoint: str, stream: str, verify: ssl.SSLContext | bool = True) -> str | None:
    error: str | None = readiness(endpoint, verify)["streams"][stream]["source"]["last_error"]
    return error


def wait_for_error(endpoint: str, stream: str, *needles: str, verify: ssl.SSLContext | bool = True) -> str:
    seen: list[str | None] = []

    def named() -> str | None:
        error = source_error(endpoint, stream, verify)
        seen.append(error)
        return error if error and all(n in error for n in needles) else None

    try:
        return str(wait_until(named, timeout=20, interval=0.05))
    except AssertionError:
        raise AssertionError(f"/readyz never named {needles} for {stream}; last errors seen: {seen[-3:]}") from None


def wait_delivered(daemon: RunningDaemon, out: Path, stream: str, sent: list[bytes], timeout: float = 30) -> None:
    """Wait until ``stream`` delivered as many records as were sent and is idle, then check each came once.

    A shard is read in order, so a record read twice was read before the last one of its shard; once
    the stream is idle, everything read has been delivered."""
    prefix = f"{stream}/"
    wait_until(lambda: len(delivered_records(out, prefix)) >= len(sent), timeout=timeout, interval=0.1)
    wait_until(lambda: daemon.idle(stream), timeout=timeout)
    counts = Counter(delivered_records(out, prefix))
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} records missing"
    assert max(counts.values()) == 1, f"{sum(n - 1 for n in counts.values())} records delivered twice"


def lines(tag: str, count: int) -> list[bytes]:
    return [f"{tag}-{i:05d}".encode() for i in range(count)]


# -- the read actions a source needs ---------------------------------------------------------------


def test_the_three_read_actions_are_enough_and_each_is_needed(start_daemon: Callable[..., RunningDaemon],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source_keys(monkeypatch, tmp_path, SOURCE["access_key_id"], SOURCE["secret"])
    port = free_port()
    streams = [signed_source_stream("from-clicks", "clicks"),
               *(signed_source_stream(f"from-{name}", name) for name in LACKING.values())]
    d = start_daemon(streams, auth=AUTH, kinesis=kinesis_settings(port, ("clicks", 2),
                                                                  *((name, 1) for name in LACKING.values())))
    kinesis = producer(f"http://127.0.0.1:{port}")
    sent = lines("click", 3000)
    put(kinesis, "clicks", sent)
    for name in LACKING.values():
        put(kinesis, name, lines(name, 50))
    out = tmp_path / "out"
    wait_delivered(d, out, "from-clicks", sent)
    assert source_error(d.endpoint, "from-clicks") is None
    for action, name in LACKING.items():
        operation = action.removeprefix("kinesis:")
        error = wait_for_error(d.endpoint, f"from-{name}", "AccessDeniedException", f"the {operation} operation")
        assert (f"User: arn:aws:iam::{ACCOUNT}:user/firehose-source is not authorized to perform: {action} on "
                f"resource: {stream_arn(name)} because no identity-based policy allows the {action} action") in error
    time.sleep(1.0)  # dozens of polls
    for name in LACKING.values():
        assert delivered_records(out, f"from-{name}/") == [], name
    # Without authentication the source's reads would have succeeded; the producer's key cannot read.
    with pytest.raises(kinesis.exceptions.ClientError) as exc:
        kinesis.list_shards(StreamName="clicks")
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"


# -- keys the sidecar refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "secret", "error", "message"), [
    (SOURCE["access_key_id"], "not-the-secret", "InvalidSignatureException",
     "The request signature we calculated does not match the signature you provided."),
    ("AKIANOBODY0000000000", "whatever", "UnrecognizedClientException",
     "The security token included in the request is invalid"),
    (None, None, "MissingAuthenticationTokenException", "Missing Authentication Token"),
], ids=["wrong-secret", "unknown-key", "no-keys"])
def test_refused_keys_deliver_nothing_until_the_right_keys_are_given(
        start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        key: str | None, secret: str | None, error: str, message: str) -> None:
    source_keys(monkeypatch, tmp_path, key, secret)
    port = free_port()
    state = tmp_path / "state"
    settings = kinesis_settings(port, ("orders", 2))
    d = start_daemon([signed_source_stream("from-orders", "orders")], state_dir=state, auth=AUTH, kinesis=settings)
    sent = lines("order", 1000)
    put(producer(f"http://127.0.0.1:{port}"), "orders", sent)
    named = wait_for_error(d.endpoint, "from-orders", error, "the ListShards operation")
    assert message in named
    time.sleep(1.0)
    assert delivered_records(tmp_path / "out", "from-orders/") == []
    d.stop()

    source_keys(monkeypatch, tmp_path, SOURCE["access_key_id"], SOURCE["secret"])
    d = start_daemon([signed_source_stream("from-orders", "orders")], state_dir=state, auth=AUTH, kinesis=settings)
    wait_delivered(d, tmp_path / "out", "from-orders", sent)
    assert source_error(d.endpoint, "from-orders") is None


# -- TLS --------------------------------------------------------------------------------------------------


def tls_daemon(start_daemon: Callable[..., RunningDaemon], tmp_path: Path, port: int, *,
               trust_the_ca: bool) -> tuple[RunningDaemon, Authority]:
    ca = Authority(tmp_path)
    cert, key = ca.issue("daemon")
    settings: dict[str, Any] = {"auth": AUTH, "kinesis": kinesis_settings(port, ("secure", 2)),
                                "tls": {"cert_file": str(cert), "key_file": str(key)}}
    if trust_the_ca:
        settings["http"] = {"ca_bundle": str(ca.cert)}
    return start_daemon([signed_source_stream("from-secure", "secure")], **settings), ca


def test_the_source_reads_its_sidecar_over_https_verified_by_the_ca_bundle(
        start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source_keys(monkeypatch, tmp_path, SOURCE["access_key_id"], SOURCE["secret"])
    port = free_port()
    d, ca = tls_daemon(start_daemon, tmp_path, port, trust_the_ca=True)
    trust = ssl.create_default_context(cafile=str(ca.cert))
    with pytest.raises(httpx.HTTPError):  # the sidecar speaks only TLS
        httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=5)
    sent = lines("secure", 2000)
    put(producer(f"https://127.0.0.1:{port}", verify=str(ca.cert)), "secure", sent)
    wait_delivered(d, tmp_path / "out", "from-secure", sent)
    endpoint = d.endpoint.replace("http://", "https://")
    details = readiness(endpoint, verify=trust)["streams"]["from-secure"]["source"]
    assert details["last_error"] is None and details["kinesis_stream"] == stream_arn("secure")


def test_without_the_ca_bundle_the_source_refuses_the_sidecars_certificate(
        start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source_keys(monkeypatch, tmp_path, SOURCE["access_key_id"], SOURCE["secret"])
    port = free_port()
    d, ca = tls_daemon(start_daemon, tmp_path, port, trust_the_ca=False)
    trust = ssl.create_default_context(cafile=str(ca.cert))
    put(producer(f"https://127.0.0.1:{port}", verify=str(ca.cert)), "secure", lines("secure", 100))
    endpoint = d.endpoint.replace("http://", "https://")
    wait_for_error(endpoint, "from-secure", "SSL", "CERTIFICATE_VERIFY_FAILED", verify=trust)
    time.sleep(1.0)
    assert delivered_records(tmp_path / "out", "from-secure/") == []


# -- the account in the stream's ARN -------------------------------------------------------------------------

OTHER_ACCOUNT = "444455556666"


def test_a_source_reads_the_stream_its_arn_names_not_the_same_name_in_its_keys_account(
        start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The source's keys belong to another account than the stream its ARN names: as on AWS, the read is
    refused (no resource-based policy lets that account read it); it must never read that account's stream
    of the same name into this delivery stream instead."""
    foreign: dict[str, Any] = {"name": "foreign-source", "access_key_id": "AKIAFOREIGNSOURCE001",
                               "secret": "foreign-secret", "account_id": OTHER_ACCOUNT,
                               "policies": [_allow(["kinesis:*"], "*")]}
    home_producer = {**PRODUCER, "name": "home-producer"}
    auth = {"mode": "sigv4", "principals": [home_producer, foreign], "bearer_tokens": [BEARER]}
    source_keys(monkeypatch, tmp_path, foreign["access_key_id"], foreign["secret"])
    port = free_port()
    kinesis = kinesis_settings(port, ("shared", 1))
    kinesis["streams"].append({"StreamName": "shared", "ShardCount": 1, "AccountId": OTHER_ACCOUNT})
    d = start_daemon([signed_source_stream("from-shared", "shared")], auth=auth, kinesis=kinesis)
    endpoint = f"http://127.0.0.1:{port}"
    put(producer(endpoint), "shared", lines("home", 100))
    theirs = boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=foreign["access_key_id"], aws_secret_access_key=foreign["secret"])
    put(theirs, "shared", lines("other-account", 100))
    time.sleep(2.0)
    delivered = delivered_records(tmp_path / "out", "from-shared/")
    assert not [line for line in delivered if line.startswith(b"other-account")], (
        f"{len(delivered)} records of account {OTHER_ACCOUNT}'s stream were delivered by a delivery stream "
        f"reading {stream_arn('shared')}")
    error = wait_for_error(d.endpoint, "from-shared", "AccessDeniedException")
    assert stream_arn("shared") in error


def test_readyz_keeps_naming_a_read_error_while_it_lasts(start_daemon: Callable[..., RunningDaemon],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import firehose.sources.lineage

    monkeypatch.setattr(firehose.sources.lineage, "LIST_INTERVAL_S", 0.2)  # list shards often (AWS: 10 s)
    source_keys(monkeypatch, tmp_path, SOURCE["access_key_id"], SOURCE["secret"])
    port = free_port()
    d = start_daemon([signed_source_stream("from-no-records", "no-records")], auth=AUTH,
                     kinesis=kinesis_settings(port, ("no-records", 1)))
    put(producer(f"http://127.0.0.1:{port}"), "no-records", lines("unread", 10))
    wait_for_error(d.endpoint, "from-no-records", "AccessDeniedException", "kinesis:GetRecords")
    seen = []
    for _ in range(40):
        seen.append(source_error(d.endpoint, "from-no-records"))
        time.sleep(0.05)
    assert delivered_records(tmp_path / "out", "from-no-records/") == []
    assert None not in seen, f"/readyz showed no error {seen.count(None)} times in {len(seen)} while nothing was read"
