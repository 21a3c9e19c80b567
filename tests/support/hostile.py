"""Hostile clients for the front door tests.

* ``Api``: a server under test (``firehose serve`` or ``firehose streams serve``, each its own process),
  configured as a hostile client meets it: SigV4 authentication on (what any listener reachable by
  others must run), one principal allowed everything, a delivery stream / Kinesis stream for the tests,
  every AWS endpoint the daemon could call pointed at a closed loopback port.
* ``post``: a raw ``POST`` with any headers and body, signed with SigV4 or not.
* ``check_answer``: what every answer must be: below 500, the error envelope in the request's wire form,
  a request id, no traceback.
* ``Memory`` and ``Heartbeat``: a server's resident memory from ``/proc`` (peak included), and how long
  ``/healthz`` takes to answer while something else is going on.
* Bodies: gzip/deflate bombs, bodies that inflate at a chosen ratio, deep nesting, and hypothesis
  strategies for bodies, headers and whole requests (``ModelRequests`` builds them from the AWS service
  models botocore ships, then breaks some of them).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import cbor2
import httpx
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.loaders import Loader
from hypothesis import strategies as st

from firehose.frontdoor.shapes import java_regex
from tests.support.config import local_stream, write_config
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.process import ChildProcess
from tests.support.streams import StreamsServer
from tests.support.waiting import wait_until

REGION = "us-east-1"
ACCOUNT = "123456789012"
ACCESS_KEY = "AKIDHOSTILETESTS0001"
SECRET_KEY = "hostile-tests-secret"
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
RECEIVER_KEY = "hostile-receiver-key"
#: The request memory budget of both servers: one 8 MiB JSON request's parse charge takes all its parsing pool.
MAX_REQUEST_MEMORY = 256 * 1024 * 1024
MIB = 1024 * 1024

JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"

#: Streams the fuzzers may touch (and delete); the other tests use TARGET_* only.
FUZZ_DELIVERY_STREAM = "fuzz-anchor"
FUZZ_KINESIS_STREAM = "fuzz-k"
TARGET_DELIVERY_STREAM = "hostile-target"
TARGET_KINESIS_STREAM = "hostile-k"

_PRINCIPAL = {
    "access_key_id": ACCESS_KEY,
    "secret": SECRET_KEY,
    "account_id": ACCOUNT,
    "policies": [{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}],
}


def _common_settings() -> dict[str, Any]:
    return {
        "log_level": "WARNING",
        "region": REGION,
        "account_id": ACCOUNT,
        "auth": {"mode": "sigv4", "principals": [_PRINCIPAL]},
        "limits": {"max_request_memory": MAX_REQUEST_MEMORY},
    }


# -- the servers -------------------------------------------------------------------------------


@dataclass
class Api:
    """One API under test, served by its own process."""

    name: str
    endpoint: str
    process: ChildProcess
    prefix: str
    service: str
    cbor: bool
    max_body: int
    log_path: Path

    @property
    def url(self) -> str:
        return self.endpoint + "/"

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def target(self, operation: str) -> str:
        return f"{self.prefix}.{operation}"

    def client(self) -> Any:
        config = BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
        return boto3.client(self.service, endpoint_url=self.endpoint, region_name=REGION, config=config,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def alive(self) -> bool:
        assert self.process.proc is not None
        return self.process.proc.poll() is None

    def assert_serving(self) -> None:
        """The process is up, /healthz answers and a valid boto3 call (a read and a write) succeeds."""
        assert self.alive(), f"{self.name} server exited: {self.log_path.read_text()[-3000:]}"
        assert httpx.get(f"{self.endpoint}/healthz", timeout=10).status_code == 200
        client = self.client()
        if self.service == "firehose":
            described = client.describe_delivery_stream(DeliveryStreamName=TARGET_DELIVERY_STREAM)
            assert described["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
            assert client.put_record(DeliveryStreamName=TARGET_DELIVERY_STREAM,
                                     Record={"Data": b"still serving\n"})["RecordId"]
        else:
            summary = client.describe_stream_summary(StreamName=TARGET_KINESIS_STREAM)
            assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
            assert client.put_record(StreamName=TARGET_KINESIS_STREAM, Data=b"still serving",
                                     PartitionKey="p")["SequenceNumber"]

    def stop(self) -> None:
        self.process.stop()


def start_firehose(directory: Path, **limits: Any) -> Api:
    """``firehose serve`` with two delivery streams writing to a local directory.

    Streams created through the API stay CREATING for an hour (so the fuzzers never get records into
    one), and S3, Kinesis sources and HTTP destinations all point at a closed loopback port.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "transforms").mkdir(exist_ok=True)
    closed = f"http://127.0.0.1:{free_port()}"
    settings = _common_settings()
    settings["limits"] = {**settings["limits"], **limits}
    settings.update({
        "port": free_port(),
        "state_dir": str(directory / "state"),
        "buckets": {"local": {"directory": str(directory / "out")}},
        "transforms_dir": str(directory / "transforms"),
        "create_delay_seconds": 3600,
        "s3": {"endpoint_url": closed, "max_attempts": 1, "connect_timeout_seconds": 1},
        "http": {"allowed_endpoints": [closed + "/*"]},
        "kinesis": {"source_endpoint_url": closed},
        "http_endpoint_receiver": {"access_keys": [RECEIVER_KEY]},
    })
    streams = [local_stream(TARGET_DELIVERY_STREAM, interval=60), local_stream(FUZZ_DELIVERY_STREAM, interval=60)]
    path = write_config(directory / "firehose.yaml", settings, streams)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_ENDPOINT_URL": closed, "AWS_EC2_METADATA_DISABLED": "true"}
    daemon = DaemonProcess(path, settings["port"], directory / "daemon.log", env)
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    return Api("firehose", daemon.endpoint, daemon, "Firehose_20150804", "firehose", False, 8 * MIB,
               daemon.log_path)


def start_kinesis(directory: Path, **limits: Any) -> Api:
    """``firehose streams serve`` with two streams (at most 20 shards in all, so fuzzed creates stay small)."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = _common_settings()
    settings["limits"] = {**settings["limits"], **limits}
    settings["kinesis"] = {"shard_limit": 20, "streams": [
        {"StreamName": TARGET_KINESIS_STREAM, "ShardCount": 1},
        {"StreamName": FUZZ_KINESIS_STREAM, "ShardCount": 2},
    ]}
    path = write_config(directory / "kinesis.yaml", settings, [])
    server = StreamsServer(directory / "state", directory / "server.log", path)
    return Api("kinesis", server.endpoint, server, "Kinesis_20131202", "kinesis", True, 16 * MIB, server.log_path)


# -- requests and answers ----------------------------------------------------------------------


def sign(url: str, service: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` plus SigV4's X-Amz-Date and Authorization for a POST of ``body`` to ``url``."""
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(CREDENTIALS, service, REGION).add_auth(request)
    return {k: v for k, v in request.headers.items()}


def post(api: Api, body: bytes | Iterator[bytes], *, target: str | None = None, content_type: str | None = JSON,
         encoding: str | None = None, signed: bool = True, headers: Mapping[str, str] | None = None,
         path: str = "/", client: httpx.Client | None = None, timeout: float = 60) -> httpx.Response:
    """A raw POST: ``target`` is the X-Amz-Target value, ``None`` leaves a header out. An iterator body
    is sent chunked (no Content-Length) and never signed."""
    h: dict[str, str] = {}
    if content_type is not None:
        h["Content-Type"] = content_type
    if target is not None:
        h["X-Amz-Target"] = target
    if encoding is not None:
        h["Content-Encoding"] = encoding
    h.update(headers or {})
    url = api.endpoint + path
    if signed and isinstance(body, bytes):
        h = sign(url, api.service, body, h)
    if client is not None:
        return client.post(url, content=body, headers=h, timeout=timeout)
    with httpx.Client() as fresh:
        return fresh.post(url, content=body, headers=h, timeout=timeout)


def chunked(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """``body`` as a generator, which httpx sends with Transfer-Encoding: chunked."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def raw_post(api: Api, body: bytes, head: Mapping[str, str], *, chunk: int = 256 * 1024, timeout: float = 120
             ) -> tuple[int, bytes]:
    """A POST / written on a socket, for heads no HTTP client library would send (``head`` is sent as
    given; ``Transfer-Encoding: chunked`` in it frames the body in ``chunk``-sized chunks). Returns the
    status and the answer's body."""
    port = int(api.endpoint.rsplit(":", 1)[1])
    chunked_body = any(k.lower() == "transfer-encoding" for k in head)
    lines = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for i in range(0, len(body), chunk):
                piece = body[i:i + chunk]
                s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked_body else piece)
            if chunked_body:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered (and closed) before the body was all sent: the answer is still there to read
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer.partition(b"\r\n\r\n")[2]


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def wire_type(content_type: str | None) -> str:
    """The content type as the front door reads it."""
    return (content_type or "").split(";", 1)[0].strip().lower()


XML_NO_OPERATION = (b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be "
                    b"authorized</Message>\n</AccessDeniedException>\n")


def check_answer(response: httpx.Response, *, cbor_request: bool = False) -> dict[str, Any]:
    """Every answer of ``POST /``: below 500, in the request's wire form (CBOR for a CBOR request to the
    Kinesis API, JSON otherwise), with AWS's request id headers, an error as ``{"__type", "message"}``,
    and no Python traceback anywhere. Returns the decoded body."""
    what = f"{response.status_code} {response.content[:500]!r}"
    assert response.status_code < 500, what
    raw = response.content
    assert b"Traceback" not in raw and b'File "' not in raw, what
    assert response.headers.get("x-amzn-requestid"), what
    assert response.headers.get("x-amz-id-2"), what
    ctype = response.headers.get("content-type")
    if ctype is None and raw.startswith(b"<"):  # a request AWS cannot route (method, content type): XML, untyped
        assert (response.status_code, raw) in ((404, b"<UnknownOperationException/>\n"), (403, XML_NO_OPERATION)), what
        return {"__type": "UnknownOperationException" if response.status_code == 404 else "AccessDeniedException",
                "message": ""}
    assert ctype == (CBOR if cbor_request else JSON), f"{ctype}: {what}"
    if response.status_code == 200 and not raw:  # an operation without output: AWS's empty answer
        return {}
    body = load_cbor(raw) if cbor_request else orjson.loads(raw)
    assert isinstance(body, dict), what
    if response.status_code >= 300:
        assert isinstance(body.get("__type"), str) and body["__type"], what
        # every refusal says why, except AWS's bare refusal of an empty body (its __type alone)
        bare = body["__type"] in ("SerializationException", "UnknownOperationException") and len(body) == 1
        assert bare or isinstance(body.get("message"), str), what
    return body


def load_cbor(raw: bytes) -> Any:
    """A CBOR answer; tag 1 (timestamps, in milliseconds as AWS writes them) is left a number."""
    return cbor2.CBORDecoder(io.BytesIO(raw), semantic_decoders={1: lambda value, _immutable: value}).decode()


def check_receiver_answer(response: httpx.Response) -> dict[str, Any]:
    """Every answer of ``POST /http-endpoint/<stream>``: below 500, the receiver's JSON (``requestId``,
    ``timestamp``, ``errorMessage`` when refused), no traceback."""
    what = f"{response.status_code} {response.content[:500]!r}"
    assert response.status_code < 500, what
    assert b"Traceback" not in response.content and b'File "' not in response.content, what
    assert response.headers.get("content-type") == "application/json", what
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("requestId"), str), what
    assert isinstance(body.get("timestamp"), int), what
    if response.status_code != 200:
        assert isinstance(body.get("errorMessage"), str) and body["errorMessage"], what
    return body


# -- memory and liveness -----------------------------------------------------------------------


class Memory:
    """A process's resident memory, from /proc/<pid>/status. ``with Memory(pid) as m:`` resets the peak
    (VmHWM) on entry, so ``m.growth`` is how far the peak rose above the resident size at entry."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0

    def read(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def __enter__(self) -> Memory:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        self.before = self.read()["VmRSS"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = self.read()["VmHWM"]

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.before)

    def __str__(self) -> str:
        return (f"RSS {self.before / MIB:.0f} MiB before, peak {self.peak / MIB:.0f} MiB, "
                f"growth {self.growth / MIB:.0f} MiB")


class Heartbeat:
    """Polls ``/healthz`` in a thread; ``worst`` is the longest any poll took to be answered."""

    def __init__(self, endpoint: str, interval: float = 0.05, timeout: float = 30) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self.timeout = timeout
        self.worst = 0.0
        self.polls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get(f"{self.endpoint}/healthz").status_code
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.worst = max(self.worst, time.monotonic() - started)
                self.polls += 1
                self._stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        wait_until(lambda: self.polls > 0, timeout=10, interval=0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


# -- bodies -------------------------------------------------------------------------------------


@functools.cache
def _raw_deflate_bomb(inflated: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``{`` + spaces + ``}`` (valid JSON once inflated) ``inflated`` bytes long,
    with its CRC-32 and Adler-32."""
    chunk = b" " * MIB
    parts = [b"{"] + [chunk] * ((inflated - 2) // MIB) + [b" " * ((inflated - 2) % MIB), b"}"]
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_RLE)
    out, crc, adler = [], 0, 1
    for part in parts:
        out.append(deflater.compress(part))
        crc, adler = zlib.crc32(part, crc), zlib.adler32(part, adler)
    out.append(deflater.flush())
    return b"".join(out), crc, adler


def gzip_bomb(inflated: int = 1024 * MIB) -> bytes:
    """About 1 MB of gzip per GiB it inflates to."""
    raw, crc, _ = _raw_deflate_bomb(inflated)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", crc, inflated & 0xFFFFFFFF)


def deflate_bomb(inflated: int = 1024 * MIB) -> bytes:
    """The same as a zlib stream (HTTP's ``deflate``)."""
    raw, _, adler = _raw_deflate_bomb(inflated)
    return b"\x78\x01" + raw + struct.pack(">I", adler)


def gzip(data: bytes, level: int = 9) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def at_ratio(make: Callable[[str], bytes], ratio: float) -> tuple[bytes, bytes]:
    """(plain, gzipped) where ``make(noise)`` builds the plain body around ``noise`` (random base64 text
    that does not compress) and the gzipped body is about ``ratio`` times smaller than the plain one."""
    rng = random.Random(ratio)
    low, high = 0, 4 * MIB
    best: tuple[bytes, bytes] | None = None
    for _ in range(30):
        n = (low + high) // 2 // 4 * 4
        noise = base64.b64encode(rng.randbytes(n * 3 // 4)).decode()
        plain = make(noise)
        packed = gzip(plain)
        got = len(plain) / len(packed)
        best = (plain, packed)
        if abs(got - ratio) / ratio < 0.05:
            break
        if got > ratio:
            low = n
        else:
            high = n
    assert best is not None
    return best


def nested_json_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_json_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_cbor_arrays(depth: int) -> bytes:
    """[[[ ... 0 ... ]]] as CBOR: one byte per level."""
    return b"\x81" * depth + b"\x00"


def nested_cbor_maps(depth: int) -> bytes:
    """{"a": {"a": ... 0 ...}} as CBOR: three bytes per level."""
    return b"\xa1\x61a" * depth + b"\x00"


def cbor_map_holding(member: bytes, value: bytes) -> bytes:
    """A one-member CBOR map, ``member`` (a short ASCII name) → the already encoded ``value``."""
    assert len(member) < 24
    return b"\xa1" + bytes([0x60 + len(member)]) + member + value


def cbor_array_of_empty_maps(count: int) -> bytes:
    return b"\x9b" + count.to_bytes(8, "big") + b"\xa0" * count


def json_array_of_empty_objects(size: int) -> bytes:
    """``[{},{},...]`` of exactly ``size`` bytes (at least 4)."""
    count = (size - 1) // 3
    body = b"[" + b"{}," * (count - 1) + b"{}"
    return body + b" " * (size - len(body) - 1) + b"]"


# -- hypothesis strategies ----------------------------------------------------------------------

#: Header values httpx and the HTTP parsers accept: printable ASCII, no space at either end.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=24))


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)


json_values = st.recursive(json_scalars, _json_containers, max_leaves=12)


def _cbor_tagged(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    tags = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 21, 22, 23, 24, 25, 28, 29, 30, 32, 35, 36, 37, 100, 256, 258,
                            260, 261, 1004, 55799]) | st.integers(min_value=0, max_value=2**64 - 1)
    return st.builds(cbor2.CBORTag, tags, children)


cbor_scalars = (json_scalars | st.binary(max_size=24) | st.integers(min_value=-(2**200), max_value=2**200)
                | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, cbor2.undefined, 2**64, -(2**64) - 1])
                | st.builds(cbor2.CBORSimpleValue, st.integers(0, 19) | st.integers(32, 255)))


def _cbor_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text(max_size=10) | st.integers(min_value=-(2**64), max_value=2**64) | st.binary(max_size=6)
    return (st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
            | _cbor_tagged(children))


cbor_values = st.recursive(cbor_scalars | _cbor_tagged(cbor_scalars), _cbor_containers, max_leaves=12)


def dump_json(value: Any) -> bytes:
    """JSON as a careless client writes it: big integers as digits, NaN and Infinity as bare words."""
    return json.dumps(value, allow_nan=True).encode()


def dump_cbor(value: Any) -> bytes:
    return cbor2.dumps(value)


class _Blob:
    """A blob value the generator drew: base64 text in JSON, bytes in CBOR."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Timestamp:
    """A timestamp value (epoch seconds): a number in JSON, tag 1 holding milliseconds in CBOR."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def _to_wire(value: Any, cbor: bool) -> Any:
    if isinstance(value, dict):
        return {k: _to_wire(v, cbor) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v, cbor) for v in value]
    if isinstance(value, _Blob):
        return value.data if cbor else base64.b64encode(value.data).decode()
    if isinstance(value, _Timestamp):
        if cbor and math.isfinite(value.seconds) and abs(value.seconds) < 1e15:
            return cbor2.CBORTag(1, int(value.seconds * 1000))
        return value.seconds
    return value


class ModelRequests:
    """Requests built from an AWS service model (botocore's), most of them valid or nearly so.

    Members take values of their shape's type within its constraints (enum values, pattern matches,
    lengths, ranges) or just outside them, and the names the server knows (``anchors``: an existing
    stream, shard, ARN ...) often enough that operations run to their end. ``requests()`` then breaks
    some: a member replaced by an arbitrary value, a member dropped, an unknown member added.
    """

    MAX_DEPTH = 6

    def __init__(self, service: str, anchors: Mapping[str, Sequence[Any]], *,
                 drop_members: Callable[[str, str], bool] = lambda _op, _member: False) -> None:
        self.model = Loader().load_service_model(service, "service-2")
        self.shapes: dict[str, Any] = self.model["shapes"]
        self.anchors = anchors
        self.drop_members = drop_members
        self._cache: dict[tuple[str, str, int, bool], st.SearchStrategy[Any]] = {}

    @property
    def operations(self) -> list[str]:
        return sorted(self.model["operations"])

    def input(self, operation: str, *, clean: bool = False) -> st.SearchStrategy[dict[str, Any]]:
        """Bodies of ``operation``; ``clean`` ones have every scalar within its constraints."""
        shape = (self.model["operations"][operation].get("input") or {}).get("shape")
        if shape is None:
            return st.just({})
        members = {k: v for k, v in self.shapes[shape].get("members", {}).items()
                   if not self.drop_members(operation, k)}
        required = [m for m in self.shapes[shape].get("required", []) if m in members]
        return st.fixed_dictionaries(
            {m: self._shape(members[m]["shape"], m, 1, clean) for m in required},
            optional={m: self._shape(ref["shape"], m, 1, clean) for m, ref in members.items() if m not in required},
        )

    def _shape(self, name: str, member: str, depth: int, clean: bool) -> st.SearchStrategy[Any]:
        key = (name, member, depth, clean)
        if key not in self._cache:
            self._cache[key] = st.deferred(lambda: self._build(name, member, depth, clean))
        return self._cache[key]

    def _build(self, name: str, member: str, depth: int, clean: bool) -> st.SearchStrategy[Any]:
        shape = self.shapes[name]
        kind = shape["type"]
        anchored = [st.sampled_from(list(self.anchors[member]))] * 4 if member in self.anchors else []
        if kind == "structure":
            if depth > self.MAX_DEPTH:
                return st.just({})
            members = shape.get("members", {})
            required = [m for m in shape.get("required", []) if m in members]
            return st.fixed_dictionaries(
                {m: self._shape(members[m]["shape"], m, depth + 1, clean) for m in required},
                optional={m: self._shape(ref["shape"], m, depth + 1, clean) for m, ref in members.items()
                          if m not in required})
        if kind == "list":
            if depth > self.MAX_DEPTH:
                return st.just([])
            low = shape.get("min", 0)
            return st.lists(self._shape(shape["member"]["shape"], member, depth + 1, clean),
                            min_size=min(low, 3), max_size=min(max(low, 3), shape.get("max", 3)))
        if kind == "map":
            if depth > self.MAX_DEPTH:
                return st.just({})
            return st.dictionaries(self._shape(shape["key"]["shape"], member + ".key", depth + 1, clean),
                                   self._shape(shape["value"]["shape"], member, depth + 1, clean), max_size=3)
        # Scalars: three draws in four within the shape's constraints (all of them when clean), the rest
        # anything of the type.
        if kind == "string":
            valid, other = self._strings(shape)
            return st.one_of(*anchored, valid) if clean else st.one_of(*anchored, valid, valid, valid, other)
        if kind in ("integer", "long"):
            bits = 32 if kind == "integer" else 64
            low, high = shape.get("min", -(2 ** (bits - 1))), shape.get("max", 2 ** (bits - 1) - 1)
            in_range = st.integers(min_value=max(low, min(0, high)), max_value=min(high, max(low, 0) + 100))
            if clean:
                return st.one_of(*anchored, in_range)
            return st.one_of(
                *anchored, in_range, in_range, in_range,
                st.sampled_from([low - 1, high + 1, 0, -1, 2**31, 2**63, 2**64, -(2**63) - 1])
                | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e20, max_value=1e20))
        if kind in ("double", "float"):
            return st.one_of(*anchored, st.floats(allow_nan=False, allow_infinity=False), st.integers(-1000, 1000))
        if kind == "boolean":
            return st.booleans()
        if kind == "timestamp":
            now = time.time()
            if clean:
                return st.builds(_Timestamp, st.floats(min_value=now - 86400, max_value=now))
            return st.builds(_Timestamp, st.one_of(
                st.floats(min_value=now - 86400, max_value=now), st.floats(min_value=now - 86400, max_value=now),
                st.sampled_from([now, now - 3600, 0.0, -1.0, 1e308, -1e308, 9.2e15, 1e13, now + 86400]),
                st.floats(allow_nan=False, allow_infinity=False)))
        if kind == "blob":
            low, high = shape.get("min", 0), min(shape.get("max", 64), 64)
            valid_blob = st.builds(_Blob, st.binary(min_size=max(low, 1), max_size=high))
            if clean:
                return st.one_of(*anchored, valid_blob)
            return st.one_of(*anchored, valid_blob, valid_blob, valid_blob,
                             st.builds(_Blob, st.binary(max_size=high)))
        return json_values

    def _strings(self, shape: dict[str, Any]) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
        """(strings within the shape's enum, pattern and length; strings of any kind)."""
        low, high = shape.get("min", 0), shape.get("max", 64)
        other = st.text(max_size=min(high + 2, 40))
        if shape.get("enum"):
            return st.sampled_from(shape["enum"]), other
        if shape.get("pattern"):
            matching = st.from_regex(java_regex(shape["pattern"]), fullmatch=True)
        else:
            matching = st.text(min_size=min(low, 40), max_size=min(high, 40))
        return matching.filter(lambda s: low <= len(s.encode("utf-16-le")) // 2 <= high), other

    def requests(self, operations: Sequence[str], *, cbor: bool,
                 wild: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
        """(operation, body ready for the wire form), half of them broken on purpose."""

        @st.composite
        def build(draw: st.DrawFn) -> tuple[str, Any]:
            operation = draw(st.sampled_from(list(operations)))
            body = _to_wire(draw(self.input(operation, clean=draw(st.booleans()))), cbor)
            how = draw(st.sampled_from(["keep", "keep", "keep", "replace", "drop", "extra"]))
            slots = list(_slots(body))
            if how == "replace" and slots:
                container, key = draw(st.sampled_from(slots))
                container[key] = draw(wild)
            elif how == "drop" and slots:
                container, key = draw(st.sampled_from(slots))
                container.pop(key)
            elif how == "extra":
                body[draw(st.text(max_size=12))] = draw(wild)
            return operation, body

        return build()


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every member and element in ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield value, k
            yield from _slots(v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield value, i
            yield from _slots(v)
