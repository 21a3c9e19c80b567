"""The API listeners against real clients on loopback: TLS (boto3, the AWS CLI, httpx over HTTP/2, the
JavaScript SDK v3, mutual TLS, certificate reload), slow and idle clients, oversized heads, the
connection cap and a busy port, on the Firehose listener (uvicorn) and the Kinesis one (Hypercorn).

Slow-client deadlines are set to a couple of seconds here so that each scenario takes about that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import h2.config
import h2.connection
import httpx
import pytest
from botocore.config import Config as BotoConfig

from firehose import listeners
from firehose.settings import LimitsSettings, load_config
from tests.support.aws import CREDS
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess, RunningDaemon
from tests.support.jssdk import kinesis_client_script
from tests.support.pki import Authority, fingerprint
from tests.support.ports import free_port
from tests.support.signing import sign
from tests.support.waiting import wait_until

HEADER, BODY, IDLE = 2.0, 2.0, 2.0
#: How late after its deadline a connection may be closed: the watchdog's tick plus a loaded machine.
MARGIN = 1.5
SLOW_LIMITS = {"header_timeout_seconds": HEADER, "body_timeout_seconds": BODY, "idle_timeout_seconds": IDLE,
               "max_header_bytes": 8192}
JSON = "application/x-amz-json-1.1"


# -- fixtures -------------------------------------------------------------------------------------------


class Pki:
    """A CA for server certificates and another for client certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.authority = Authority(directory)
        self.ca = self.authority.cert
        self.cert, self.key = self.authority.issue("server")
        self.clients = Authority(directory, "client CA")
        self.client_cert, self.client_key = self.clients.issue("client", client=True)

    def context(self, *, client: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def daemon_config(directory: Path, **settings: Any) -> Path:
    """A daemon config with the Kinesis API enabled, both on free ports, and one delivery stream "s"."""
    directory.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "port": free_port(), "state_dir": str(directory / "state"), "log_level": "WARNING",
        "buckets": {"local": {"directory": str(directory / "out")}},
        "kinesis": {"enabled": True, "port": free_port()},
    }
    return write_config(directory / "firehose.yaml", {**base, **settings}, [local_stream("s", interval=60)])


def tls_settings(pki: Pki, *, client_ca: bool = False) -> dict[str, str]:
    tls = {"cert_file": str(pki.cert), "key_file": str(pki.key)}
    if client_ca:
        tls["client_ca_file"] = str(pki.clients.cert)
    return tls


class Ports:
    def __init__(self, firehose: int, kinesis: int) -> None:
        self.firehose, self.kinesis = firehose, kinesis

    def both(self) -> tuple[int, int]:
        return self.firehose, self.kinesis


@contextlib.contextmanager
def in_process(path: Path) -> Iterator[tuple[RunningDaemon, Ports]]:
    """A daemon in this process (its listeners can be reached), stopped on leaving."""
    d = RunningDaemon(load_config(path))
    try:
        assert d.daemon.sidecar is not None
        yield d, Ports(d.port, d.daemon.sidecar.port)
    finally:
        d.stop()


#: The TLS daemon requires signatures too: clients sign with this principal's keys, as on a network.
SIGNER = {"aws_access_key_id": "AKIATLSCLIENT0000001", "aws_secret_access_key": "tls-client-secret"}
SIGNED_AUTH = {"mode": "sigv4", "principals": [{
    "access_key_id": SIGNER["aws_access_key_id"], "secret": SIGNER["aws_secret_access_key"],
    "account_id": "123456789012", "name": "tls-client",
    "policies": [{"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": ["firehose:*", "kinesis:*"], "Resource": "*"}]}]}]}


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[RunningDaemon, Ports]]:
    path = daemon_config(tmp_path_factory.mktemp("tls"), tls=tls_settings(pki), auth=SIGNED_AUTH)
    with in_process(path) as running:
        yield running


@pytest.fixture(scope="module")
def slow_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Ports]]:
    """``firehose serve`` (its own process, so its memory can be measured) with short deadlines."""
    directory = tmp_path_factory.mktemp("slow")
    path = daemon_config(directory, limits=SLOW_LIMITS)
    settings = load_config(path).settings
    daemon = DaemonProcess(path, settings.port, directory / "daemon.log")
    try:
        daemon.start()
        yield daemon, Ports(settings.port, settings.kinesis.port)
    finally:
        daemon.stop()


def firehose(port: int, scheme: str = "http", **kwargs: Any) -> Any:
    config = BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=10)
    return boto3.client("firehose", endpoint_url=f"{scheme}://127.0.0.1:{port}", config=config,
                        **{**CREDS, **kwargs})


def kinesis(port: int, scheme: str = "http", **kwargs: Any) -> Any:
    config = BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=10)
    return boto3.client("kinesis", endpoint_url=f"{scheme}://127.0.0.1:{port}", config=config,
                        **{**CREDS, **kwargs})


# -- TLS ------------------------------------------------------------------------------------------------


def test_firehose_api_over_tls_with_boto3_and_the_aws_cli(tls_daemon: tuple[RunningDaemon, Ports], pki: Pki) -> None:
    _, ports = tls_daemon
    client = firehose(ports.firehose, "https", verify=str(pki.ca), **SIGNER)
    out = client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"%d\n" % i} for i in range(20)])
    assert out["FailedPutCount"] == 0
    assert "s" in client.list_delivery_streams()["DeliveryStreamNames"]

    aws = Path(sys.executable).parent / "aws"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": SIGNER["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": SIGNER["aws_secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    cli = subprocess.run([str(aws), "firehose", "list-delivery-streams", "--endpoint-url",
                          f"https://127.0.0.1:{ports.firehose}", "--ca-bundle", str(pki.ca), "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "s" in json.loads(cli.stdout)["DeliveryStreamNames"]


def test_kinesis_api_over_tls_with_boto3_and_http2(tls_daemon: tuple[RunningDaemon, Ports], pki: Pki) -> None:
    _, ports = tls_daemon
    client = kinesis(ports.kinesis, "https", verify=str(pki.ca), **SIGNER)
    client.create_stream(StreamName="tls", ShardCount=1)
    client.put_record(StreamName="tls", Data=b"over tls", PartitionKey="k")
    assert "tls" in client.list_streams()["StreamNames"]

    url, headers, body = sign(f"https://127.0.0.1:{ports.kinesis}/", "Kinesis_20131202.ListStreams", b"{}",
                              key=SIGNER["aws_access_key_id"], secret=SIGNER["aws_secret_access_key"],
                              service="kinesis")
    with httpx.Client(http1=False, http2=True, verify=pki.context()) as h:
        resp = h.post(url, content=body, headers=headers)
    assert resp.http_version == "HTTP/2" and resp.status_code == 200
    assert "tls" in resp.json()["StreamNames"]


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_javascript_sdk_v3_over_tls_negotiates_http2(tls_daemon: tuple[RunningDaemon, Ports], pki: Pki) -> None:
    """The JavaScript SDK v3's default Kinesis client (NodeHttp2Handler), trusting the private CA."""
    _, ports = tls_daemon
    script = kinesis_client_script()
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(pki.ca), "AWS_ACCESS_KEY_ID": SIGNER["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": SIGNER["aws_secret_access_key"]}
    out = subprocess.run(["node", str(script), f"https://127.0.0.1:{ports.kinesis}", "js-tls"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "handler": "NodeHttp2Handler", "failed": 0, "data": ["js-0", "js-1", "js-2"], "timestampIsDate": True}


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(tmp_path: Path, pki: Pki) -> None:
    path = daemon_config(tmp_path, tls=tls_settings(pki, client_ca=True))
    with in_process(path) as (_, ports):
        for port in ports.both():
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _tls_get(port, pki.context())
            assert _tls_get(port, pki.context(client=True)).startswith(b"HTTP/1.1 200")
            stranger = Authority(tmp_path, f"stranger {port}")
            wrong = pki.context()
            wrong.load_cert_chain(*stranger.issue(f"stranger-{port}", client=True))
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _tls_get(port, wrong)
        signed = boto3.client("firehose", endpoint_url=f"https://127.0.0.1:{ports.firehose}", verify=str(pki.ca),
                              config=BotoConfig(client_cert=(str(pki.client_cert), str(pki.client_key)),
                                                retries={"total_max_attempts": 1}), **CREDS)
        assert "s" in signed.list_delivery_streams()["DeliveryStreamNames"]


def test_a_stalled_tls_handshake_is_dropped_at_the_header_deadline(tmp_path: Path, pki: Pki) -> None:
    header = 1.0
    path = daemon_config(tmp_path, tls=tls_settings(pki), limits={"header_timeout_seconds": header})
    hello = bytes.fromhex("16030100f4010000f00303") + os.urandom(32)  # a ClientHello's first bytes, trickled

    async def stall(ports: Ports) -> list[tuple[float | None, bytes]]:
        return await asyncio.gather(*(_trickle(port, hello, interval=0.25, give_up=header + 3 * MARGIN)
                                      for port in ports.both()))

    with in_process(path) as (_, ports):
        for lasted, got in asyncio.run(stall(ports)):
            assert lasted is not None and header - 0.5 <= lasted <= header + MARGIN, lasted
            assert got == b""


def _tls_get(port: int, context: ssl.SSLContext) -> bytes:
    """GET /healthz on a new TLS connection; the start of the answer (ConnectionError if there is none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = tls.recv(4096)
    if not data:
        raise ConnectionResetError("closed without an answer")
    return data


def _peer(conn: http.client.HTTPSConnection) -> bytes:
    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)


def _get(conn: http.client.HTTPSConnection) -> int:
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _replace_certificate(pki: Pki, stem: str) -> bytes:
    """Issue a new server certificate and move it over the configured files (as a renewal would)."""
    cert, key = pki.authority.issue(stem)
    os.replace(key, pki.key.with_suffix(".key.new"))
    os.replace(cert, pki.cert.with_suffix(".pem.new"))
    os.replace(pki.key.with_suffix(".key.new"), pki.key)
    os.replace(pki.cert.with_suffix(".pem.new"), pki.cert)
    return fingerprint(pki.cert.read_bytes())


def reload_listeners(ports: tuple[int, ...]) -> None:
    """What SIGHUP does, for this daemon's listeners only (others may be running in this process)."""
    for listener in listeners.live_listeners():
        if listener.port in ports:
            listener.reload_tls()


def test_certificate_reload_keeps_open_connections_and_serves_the_new_certificate(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")
    first = fingerprint(pki.cert.read_bytes())
    with in_process(daemon_config(tmp_path / "d", tls=tls_settings(pki))) as (d, ports):
        opened = {port: http.client.HTTPSConnection("127.0.0.1", port, context=pki.context(), timeout=10)
                  for port in ports.both()}
        for conn in opened.values():
            assert _get(conn) == 200 and _peer(conn) == first
        second = _replace_certificate(pki, "renewed")
        assert second != first
        d.call(lambda: reload_listeners(ports.both()))
        for port, conn in opened.items():
            assert _get(conn) == 200 and _peer(conn) == first  # the open connection carries on
            fresh = http.client.HTTPSConnection("127.0.0.1", port, context=pki.context(), timeout=10)
            assert _get(fresh) == 200 and _peer(fresh) == second
            fresh.close()
            conn.close()


def test_sighup_reloads_the_kinesis_sidecars_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    port = free_port()
    config = write_config(tmp_path / "streams.yaml", {"log_level": "INFO", "tls": tls_settings(pki)}, [])
    log_path = tmp_path / "streams.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "firehose", "streams", "serve", "--config", str(config),
                                 "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(tmp_path / "k")],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def serving() -> bytes | None:
            assert proc.poll() is None, log_path.read_text()
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=pki.context(), timeout=5)
                assert _get(conn) == 200
                return _peer(conn)
            except OSError:
                return None

        assert wait_until(serving, timeout=30) == fingerprint(pki.cert.read_bytes())
        renewed = _replace_certificate(pki, "renewed")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: serving() == renewed, timeout=10)
        assert "Reloaded the TLS certificate." in log_path.read_text()
    finally:
        proc.terminate()
        proc.wait(15)


def test_sighup_reloads_the_daemons_certificate_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """``systemctl reload``: SIGHUP re-reads the certificate of every listener of ``firehose serve`` (the
    Firehose API and its in-process Kinesis API); the daemon neither stops nor drops what it accepted."""
    pki = Pki(tmp_path)
    path = daemon_config(tmp_path / "d", tls=tls_settings(pki), log_level="INFO")
    settings = load_config(path).settings
    daemon = DaemonProcess(path, settings.port, tmp_path / "daemon.log")
    daemon.endpoint = f"https://127.0.0.1:{settings.port}"
    try:
        with open(daemon.log_path, "ab") as log:
            daemon.proc = subprocess.Popen([sys.executable, "-m", "firehose", "serve", "--config", str(path)],
                                           stdout=log, stderr=log)

        def peer(port: int) -> bytes | None:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_path.read_text()
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=pki.context(), timeout=5)
                _get(conn)
                return _peer(conn)
            except OSError:
                return None

        original = fingerprint(pki.cert.read_bytes())
        assert wait_until(lambda: peer(settings.port), timeout=30) == original
        client = firehose(settings.port, "https", verify=str(pki.ca))
        assert client.put_record(DeliveryStreamName="s", Record={"Data": b"before\n"})["RecordId"]
        renewed = _replace_certificate(pki, "renewed")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: peer(settings.port) == renewed and peer(settings.kinesis.port) == renewed, timeout=10)
        assert client.put_record(DeliveryStreamName="s", Record={"Data": b"after\n"})["RecordId"]
        assert daemon.log_path.read_text().count("Reloaded the TLS certificate.") == 2  # both listeners
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


# -- slow and idle clients ----------------------------------------------------------------------------------


async def _trickle(port: int, head: bytes, *, interval: float, give_up: float) -> tuple[float | None, bytes]:
    """Send ``head`` a byte every ``interval`` seconds; (seconds until the server closed, what it sent)."""
    loop = asyncio.get_running_loop()
    # The clock starts before connecting: never later than the server's accept, where its deadline
    # starts (with a thousand connections opening at once, this coroutine may resume long after).
    start = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent, got = 0, b""
    try:
        while loop.time() - start < give_up:
            if sent < len(head):
                writer.write(head[sent:sent + 1])
                sent += 1
            try:
                data = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                continue
            if not data:
                return loop.time() - start, got
            got += data
    except (ConnectionError, OSError):
        return loop.time() - start, got
    finally:
        writer.close()
    return None, got


async def _slowloris(ports: tuple[int, ...], count: int) -> list[list[tuple[float | None, bytes]]]:
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    give_up = HEADER + 3 * MARGIN

    async def attack(port: int) -> list[tuple[float | None, bytes]]:
        return await asyncio.gather(*(_trickle(port, head, interval=0.5, give_up=give_up) for _ in range(count)))

    return await asyncio.gather(*(attack(port) for port in ports))


def test_slowloris_is_cut_off_at_the_header_deadline_while_clients_are_served(
        slow_daemon: tuple[DaemonProcess, Ports]) -> None:
    """500 connections on each listener trickle a request head a byte at a time (a single event loop
    drives them); each is closed once its head deadline passes, and SDK calls meanwhile succeed."""
    _, ports = slow_daemon
    results: dict[str, Any] = {}
    attack = threading.Thread(target=lambda: results.update(out=asyncio.run(_slowloris(ports.both(), 500))))
    attack.start()
    fh, kin = firehose(ports.firehose), kinesis(ports.kinesis)
    calls = 0
    try:
        time.sleep(0.5)
        while attack.is_alive():
            assert fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"during\n"}])["FailedPutCount"] == 0
            assert isinstance(kin.list_streams()["StreamNames"], list)
            calls += 1
            time.sleep(0.2)
    finally:
        attack.join(30)
    assert calls >= 3
    for port, outcomes in zip(ports.both(), results["out"], strict=True):
        lasted = [seconds for seconds, _ in outcomes]
        assert None not in lasted, f"port {port}: {lasted.count(None)} connections were never closed"
        assert HEADER - 0.5 <= min(lasted) and max(lasted) <= HEADER + MARGIN, (port, min(lasted), max(lasted))


async def _idle_after_one_request(port: int) -> float | None:
    """Seconds a keep-alive connection stays open after its one answered request."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        answered = loop.time()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), IDLE + 3 * MARGIN)
            except TimeoutError:
                return None
            if not data:
                return loop.time() - answered
    except ConnectionError:
        return loop.time() - answered
    finally:
        writer.close()


def _body_head(port: int, target: str) -> bytes:
    return (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {JSON}\r\nX-Amz-Target: {target}\r\n"
            "Content-Length: 1000\r\n\r\n").encode()


async def _slow_bodies_and_idle_connections(ports: Ports) -> dict[str, Any]:
    async def body(port: int, target: str) -> tuple[float | None, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_body_head(port, target))  # the head at once; then the body trickles
        return await _trickle_opened(reader, writer, b"{" + b" " * 999, give_up=BODY + 3 * MARGIN)

    out = await asyncio.gather(body(ports.firehose, "Firehose_20150804.ListDeliveryStreams"),
                               body(ports.kinesis, "Kinesis_20131202.ListStreams"),
                               _idle_after_one_request(ports.firehose), _idle_after_one_request(ports.kinesis))
    return {"body": out[:2], "idle": out[2:]}


async def _trickle_opened(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, *,
                          give_up: float) -> tuple[float | None, bytes]:
    loop = asyncio.get_running_loop()
    start, sent, got = loop.time(), 0, b""
    try:
        while loop.time() - start < give_up:
            writer.write(data[sent:sent + 1])
            sent += 1
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.25)
            except TimeoutError:
                continue
            if not chunk:
                return loop.time() - start, got
            got += chunk
    except (ConnectionError, OSError):
        return loop.time() - start, got
    finally:
        writer.close()
    return None, got


def test_a_trickled_body_is_cut_at_the_body_deadline_and_idle_connections_close(
        slow_daemon: tuple[DaemonProcess, Ports]) -> None:
    _, ports = slow_daemon
    out = asyncio.run(_slow_bodies_and_idle_connections(ports))
    for lasted, got in out["body"]:
        assert lasted is not None and BODY - 0.5 <= lasted <= BODY + MARGIN, lasted
        assert b"HTTP/1.1 2" not in got  # cut off, not answered
    for lasted in out["idle"]:
        assert lasted is not None and IDLE - 0.5 <= lasted <= IDLE + MARGIN, lasted


def test_a_client_that_stops_reading_its_answer_is_dropped(slow_daemon: tuple[DaemonProcess, Ports]) -> None:
    """A GetRecords answer of some 10 MB to a client that reads none of it: once writing to it has
    stalled for the body deadline, the connection is dropped (the answer is not held for ever)."""
    _, ports = slow_daemon
    client = kinesis(ports.kinesis)
    client.create_stream(StreamName="unread", ShardCount=1)
    for _ in range(2):
        client.put_records(StreamName="unread", Records=[{"Data": os.urandom(1024 * 1024 - 64), "PartitionKey": "k"}
                                                         for _ in range(4)])
    iterator = client.get_shard_iterator(StreamName="unread", ShardId="shardId-000000000000",
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    body = json.dumps({"ShardIterator": iterator}).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the answer backs up
        sock.connect(("127.0.0.1", ports.kinesis))
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + JSON.encode() +
                     b"\r\nX-Amz-Target: Kinesis_20131202.GetRecords\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(BODY + MARGIN)  # the answer is being written; nothing is read
        received, ended = 0, False
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
            ended = True
        except ConnectionResetError:
            ended = True
    assert ended and received < 8 * 1024 * 1024, received  # cut off, not delivered in full


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


async def _h2_scenarios(port: int) -> dict[str, float | None]:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0)  # and an empty SETTINGS frame

    async def scenario(first: bytes, then: list[bytes], every: float) -> float | None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        start = loop.time()
        try:
            while loop.time() - start < HEADER + BODY + 3 * MARGIN:
                if then:
                    writer.write(then.pop(0))
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), every)
                except TimeoutError:
                    continue
                if not chunk:
                    return loop.time() - start
        except (ConnectionError, OSError):
            return loop.time() - start
        finally:
            writer.close()
        return None

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "127.0.0.1"),
                          ("content-type", JSON), ("x-amz-target", "Kinesis_20131202.ListStreams")])
    opening = conn.data_to_send()
    drips = []
    for _ in range(40):
        conn.send_data(1, b" ")
        drips.append(conn.data_to_send())
    partial_frame = preface + _frame(0x1, 0x4, 1, b"\x82" * 20)[:12]  # a HEADERS frame cut short
    block = [_frame(0x9, 0, 1, b"\x82") for _ in range(40)]  # CONTINUATIONs that never end the block
    huge = [_frame(0x1, 0x0, 1, b"\x82" * 16000)] + [_frame(0x9, 0x0, 1, b"\x82" * 16000) for _ in range(8)]
    names = ("partial frame", "header block", "stream body", "oversized block")
    outcomes = await asyncio.gather(scenario(partial_frame, [], 0.25),
                                    scenario(preface + _frame(0x1, 0x1, 1, b"\x82"), block, 0.25),
                                    scenario(opening, drips, 0.25),
                                    scenario(preface, huge, 0.05))
    return dict(zip(names, outcomes, strict=True))


def test_http2_partial_frames_header_blocks_and_stream_bodies_have_deadlines(
        slow_daemon: tuple[DaemonProcess, Ports]) -> None:
    _, ports = slow_daemon
    out = asyncio.run(_h2_scenarios(ports.kinesis))
    assert out["partial frame"] is not None and HEADER - 0.5 <= out["partial frame"] <= HEADER + MARGIN, out
    assert out["header block"] is not None and HEADER - 0.5 <= out["header block"] <= HEADER + MARGIN, out
    assert out["stream body"] is not None and BODY - 0.5 <= out["stream body"] <= BODY + MARGIN, out
    assert out["oversized block"] is not None and out["oversized block"] < 1.0, out  # at once, not at a deadline


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _oversized_heads(port: int, count: int, size: int) -> list[bytes]:
    """``count`` connections at once, each sending a head of ``size`` bytes and holding on; what each got."""
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            with_timeout = asyncio.wait_for(reader.read(4096), HEADER + 3 * MARGIN)
            return await with_timeout
        except (ConnectionError, OSError):
            return b""
        finally:
            writer.close()

    return await asyncio.gather(*(one() for _ in range(count)))


def test_an_oversized_head_is_refused_and_never_buffered(slow_daemon: tuple[DaemonProcess, Ports]) -> None:
    daemon, ports = slow_daemon
    assert daemon.proc is not None
    for port in ports.both():
        got = asyncio.run(_oversized_heads(port, 1, 64 * 1024))[0]
        assert got == b"" or got.startswith(b"HTTP/1.1 431"), got
    before = _rss(daemon.proc.pid)
    for _ in range(3):
        for port in ports.both():
            for got in asyncio.run(_oversized_heads(port, 40, 2 * 1024 * 1024)):
                assert got == b"" or got.startswith(b"HTTP/1.1 431"), got[:100]
    assert _rss(daemon.proc.pid) - before < 24 * 1024 * 1024


# -- the connection cap ---------------------------------------------------------------------------------------


async def _idle_crowd(port: int, count: int, give_up: float) -> list[tuple[float | None, bytes]]:
    """``count`` connections that send nothing: when each was closed, and what it received."""
    loop = asyncio.get_running_loop()

    async def one() -> tuple[float | None, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = loop.time()
        try:
            got = await asyncio.wait_for(reader.read(65536), give_up)
            return loop.time() - start, got
        except TimeoutError:
            return None, b""
        except ConnectionError:
            return loop.time() - start, b""
        finally:
            writer.close()

    return await asyncio.gather(*(one() for _ in range(count)))


def test_the_connection_cap_keeps_others_waiting_and_answers_no_error(tmp_path: Path) -> None:
    """max_connections 20: of 50 silent connections 20 are taken at a time (the rest wait in the
    backlog, unanswered), each closed at its deadline; a client queued behind them is then served."""
    header = 1.0
    path = daemon_config(tmp_path, limits={"max_connections": 20, "header_timeout_seconds": header})
    settings = load_config(path).settings
    daemon = DaemonProcess(path, settings.port, tmp_path / "daemon.log")
    try:
        daemon.start()
        ports = Ports(settings.port, settings.kinesis.port)
        results: dict[str, Any] = {}

        async def crowds() -> list[list[tuple[float | None, bytes]]]:
            return await asyncio.gather(*(_idle_crowd(port, 50, 4 * header + 3 * MARGIN) for port in ports.both()))

        crowd = threading.Thread(target=lambda: results.update(out=asyncio.run(crowds())))
        crowd.start()
        time.sleep(0.3)
        served: dict[str, Any] = {}
        callers = [threading.Thread(target=lambda: served.update(fh=firehose(ports.firehose).list_delivery_streams())),
                   threading.Thread(target=lambda: served.update(k=kinesis(ports.kinesis).list_streams()))]
        for caller in callers:
            caller.start()
        for caller in callers + [crowd]:
            caller.join(30)
        assert "s" in served["fh"]["DeliveryStreamNames"] and isinstance(served["k"]["StreamNames"], list)
        for port, outcomes in zip(ports.both(), results["out"], strict=True):
            closed = sorted(seconds for seconds, _ in outcomes if seconds is not None)
            assert len(closed) == 50, (port, outcomes)
            assert all(got == b"" for _, got in outcomes)  # closed without a word: no 503
            first_wave = [s for s in closed if s < header + 0.6]
            assert 1 <= len(first_wave) <= 20, (port, closed)
            assert closed[-1] >= 2 * header  # the last ones were taken only after others had gone
    finally:
        daemon.stop()


# -- a busy port --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["serve"], ["streams", "serve"]], ids=["firehose", "kinesis"])
def test_a_busy_port_is_one_line_and_exit_status_2(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path / "c.yaml", {"state_dir": str(tmp_path / "state"), "log_level": "INFO"}, [])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "firehose", *command, "--config", str(config), "--host",
                              "127.0.0.1", "--port", str(port), "--state-dir", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(lines) == 1 and "already in use" in lines[0], text


# -- pieces ----------------------------------------------------------------------------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def _metrics_listener() -> tuple[bytes, float | None, str, int]:
    limits = LimitsSettings(header_timeout_seconds=1.0)
    running = await listeners.start_uvicorn(_hello, "127.0.0.1", 0, limits, name="metrics listener")
    try:
        port = running.listener.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await reader.readuntil(b"hello")
        writer.close()
        lasted, _ = await _trickle(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100, interval=0.25, give_up=4)
        try:
            await listeners.start_uvicorn(_hello, "127.0.0.1", port, limits, name="metrics listener")
            busy = ""
        except listeners.AddressInUse as exc:
            busy = str(exc)
        for _ in range(3):  # an Upgrade is answered as plain HTTP: the connection stays under the cap's count
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            await reader.readuntil(b"hello")
            writer.close()
        await asyncio.sleep(0.2)
        return answer, lasted, busy, running.listener.connections
    finally:
        await running.stop()


def test_start_uvicorn_serves_any_asgi_app_with_the_limits() -> None:
    answer, lasted, busy, left_open = asyncio.run(_metrics_listener())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
    assert lasted is not None and 0.5 <= lasted <= 1.0 + MARGIN
    assert "already in use" in busy and "metrics listener" in busy
    assert left_open == 0


def test_http2_frames_are_followed_without_buffering_payloads() -> None:
    frames = listeners.H2Frames(max_block=1000)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    frames.feed(preface[:10], 1.0)
    assert frames.partial_since == 1.0
    frames.feed(preface[10:] + _frame(0x4, 0, 0), 2.0)
    assert frames.partial_since is None and frames.bodies == {}
    frames.feed(_frame(0x1, 0x0, 1, b"x"), 3.0)  # HEADERS without END_HEADERS: a block is open
    assert frames.partial_since == 3.0
    frames.feed(_frame(0x9, 0x4, 1, b"y") + _frame(0x1, 0x5, 3, b"z"), 4.0)  # block ends; stream 3 has no body
    assert frames.partial_since is None and frames.bodies == {1: 4.0}
    big = _frame(0x0, 0x1, 1, b"d" * 100)
    frames.feed(big[:50], 5.0)
    assert frames.partial_since is None and frames.bodies == {1: 4.0}  # mid-DATA: the body's deadline applies
    frames.feed(big[50:], 6.0)
    assert frames.bodies == {}
    frames.feed(_frame(0x1, 0x4, 5) + _frame(0x3, 0, 5, b"\0\0\0\x08"), 7.0)  # a body, then RST_STREAM
    assert frames.bodies == {}
    frames.feed(_frame(0x1, 0x4, 7) + _frame(0x6, 0, 0, b"p" * 8)[:4], 8.0)
    assert frames.bodies == {7: 8.0} and frames.partial_since == 8.0
    frames.keep_only({})
    assert frames.bodies == {} and not frames.oversized
    frames.feed(_frame(0x6, 0, 0, b"p" * 8)[4:] + _frame(0x1, 0x0, 9, b"h" * 600) + _frame(0x9, 0x0, 9)[:9], 9.0)
    assert not frames.oversized
    frames.feed(_frame(0x9, 0x4, 9, b"c" * 500)[:9], 10.0)  # known from the frame header, before its payload
    assert frames.oversized


def test_connection_caps_are_lowered_to_keep_descriptors_free(caplog: pytest.LogCaptureFixture) -> None:
    budget = listeners._Descriptors()

    class Fake:
        def __init__(self, name: str, cap: int) -> None:
            self.name, self.limits, self.cap = name, LimitsSettings(max_connections=cap), cap

    budget.listeners = [Fake("a", 1024), Fake("b", 1024), Fake("c", 512)]  # type: ignore[list-item]
    budget.fit(4096)
    assert [lsn.cap for lsn in budget.listeners] == [1024, 1024, 512]
    with caplog.at_level("WARNING", logger="firehose.listeners"):
        budget.fit(1024 + 256)
        budget.fit(1024 + 256)
    caps = [lsn.cap for lsn in budget.listeners]
    assert sum(caps) <= 1024 and caps[0] == caps[1] and abs(caps[0] - 2 * caps[2]) <= 1
    assert len([r for r in caplog.records if "Lowered the connection caps" in r.getMessage()]) == 1
    budget.fit(256)  # a low limit (LimitNOFILE=256): half for connections, not one each
    caps = [lsn.cap for lsn in budget.listeners]
    assert sum(caps) <= 128 and min(caps) >= 25
    soft, hard = listeners.resource.getrlimit(listeners.resource.RLIMIT_NOFILE)
    assert listeners.raise_descriptor_limit() == soft == hard or hard == listeners.resource.RLIM_INFINITY
