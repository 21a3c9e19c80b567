"""Hostile input against both API listeners, as separate processes on loopback: ``firehose serve`` (the Firehose
API and the HTTP endpoint receiver, uvicorn) and ``firehose streams serve`` (the Kinesis API, Hypercorn, JSON and
CBOR), both with SigV4 authentication on, as any listener others can reach must run.

What the tests prove:

* Fuzzing (hypothesis, derandomized): arbitrary JSON and CBOR values, bodies of the right shape with members of
  the wrong type, requests built from the AWS models and then broken, random and truncated bytes, every
  X-Amz-Target, content types, gzip/deflate bodies valid and corrupt, junk signatures. No answer is a 5xx; every
  answer is the ``{"__type", "message"}`` envelope in the request's wire form with a request id and no
  traceback; the server then still serves boto3.
* Size: bodies past the limit (50 MB, with a length or chunked) are answered 413 without being held; the
  receiver refuses bodies past its 64 MiB.
* Compression: a 1 MB gzip (or deflate) body that would inflate to 1 GiB is refused after inflating at most
  the cap, off the event loop (``/healthz`` keeps answering), memory bounded; a body inflating 500 times is
  refused by ``limits.max_decompression_ratio`` while one inflating 100 times is accepted.
* Nesting: 10,000 and 1,000,000 levels of JSON or CBOR are a SerializationException; 100 levels inside a
  member the model does not know are refused by ``limits.max_json_depth``, 60 are not.
* Memory: a body of empty objects up to the API's limit stays within what the front door charges it (size x
  ``body.JSON_GROWTH``); twenty clients sending 8 MiB at once wait for ``limits.max_request_memory`` and all
  get answers; so do 48 clients sending 16 MiB chunked to the Kinesis API.
* The probes of the original report, each by name.

Each defect these tests found when they were written has its own test: a forged NextToken, CBOR value
sharing, a false Content-Length beside chunked, silent uploads holding the budget, requests outgrowing their
charge, and parsing that stalled the event loop.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import string
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import httpx
import orjson
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firehose.api.http_receiver import _GROWTH as RECEIVER_GROWTH
from firehose.api.operations import OPERATIONS as FIREHOSE_OPERATIONS
from firehose.frontdoor.body import CBOR_GROWTH, JSON_GROWTH
from firehose.streams.operations import OPERATIONS as KINESIS_OPERATIONS
from tests.support.aws import ROLE
from tests.support.hostile import (
    ACCOUNT,
    CBOR,
    FUZZ_DELIVERY_STREAM,
    FUZZ_KINESIS_STREAM,
    JSON,
    MAX_REQUEST_MEMORY,
    MIB,
    RECEIVER_KEY,
    REGION,
    TARGET_DELIVERY_STREAM,
    TARGET_KINESIS_STREAM,
    Api,
    Heartbeat,
    Memory,
    ModelRequests,
    at_ratio,
    cbor_array_of_empty_maps,
    cbor_map_holding,
    cbor_values,
    check_answer,
    check_receiver_answer,
    chunked,
    deflate_bomb,
    dump_cbor,
    dump_json,
    gzip,
    gzip_bomb,
    header_text,
    json_array_of_empty_objects,
    json_values,
    nested_cbor_arrays,
    nested_cbor_maps,
    nested_json_arrays,
    nested_json_objects,
    post,
    raw_post,
    sign,
    start_firehose,
    start_kinesis,
    wire_type,
)
from tests.support.waiting import wait_until

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))
RECEIVER = "/http-endpoint/"
RECEIVER_HEADERS = {"X-Amz-Firehose-Access-Key": RECEIVER_KEY}


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def firehose_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api = start_firehose(tmp_path_factory.mktemp("firehose"))
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def kinesis_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api = start_kinesis(tmp_path_factory.mktemp("kinesis"))
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(params=["firehose", "kinesis"])
def api(request: pytest.FixtureRequest) -> Api:
    return request.getfixturevalue(f"{request.param}_api")  # type: ignore[no-any-return]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[[str], Api]]:
    """A server of its own, for tests that leave one stalled or holding memory; killed by its pid after."""
    started: list[Api] = []

    def start(name: str) -> Api:
        made = start_firehose(tmp_path / name) if name == "firehose" else start_kinesis(tmp_path / name)
        started.append(made)
        return made

    yield start
    for made in started:
        if made.alive():
            made.process.kill()


def control_target(api: Api) -> str:
    """A read-only call that takes no required member."""
    return api.target("ListDeliveryStreams" if api.service == "firehose" else "ListStreams")


def data_target(api: Api) -> str:
    """The self-validating hot path (its nesting is left to the parsers' own limits)."""
    return api.target("PutRecordBatch" if api.service == "firehose" else "PutRecords")


def records_body(api: Api, datas: list[str]) -> dict[str, Any]:
    """A PutRecordBatch / PutRecords body for base64 ``datas`` to the target stream."""
    if api.service == "firehose":
        return {"DeliveryStreamName": TARGET_DELIVERY_STREAM, "Records": [{"Data": d} for d in datas]}
    return {"StreamName": TARGET_KINESIS_STREAM, "Records": [{"Data": d, "PartitionKey": "p"} for d in datas]}


def _outcome(response: httpx.Response, body: dict[str, Any]) -> str:
    return str(response.status_code) + (f" {body['__type']}" if response.status_code >= 300 else "")


def error_type(response: httpx.Response, *, cbor_request: bool = False) -> str:
    body = check_answer(response, cbor_request=cbor_request)
    assert response.status_code >= 400, body
    return str(body["__type"])


# -- fuzzing: request generators --------------------------------------------------------------------

_REMOTE_DESTINATIONS = re.compile(
    r"Redshift|Elasticsearch|Amazonopensearchservice|AmazonOpenSearchServerless|Splunk|HttpEndpoint|Snowflake"
    r"|Iceberg|MSK|DatabaseSource")


def firehose_model() -> ModelRequests:
    """Firehose requests; destinations that would reach beyond this machine (a database, a search cluster,
    an HTTP endpoint) are left out, so a fuzzed CreateDeliveryStream can only name S3, which points at a
    closed loopback port."""
    anchors = {
        "DeliveryStreamName": [FUZZ_DELIVERY_STREAM, "fuzz-new"],
        "RoleARN": [ROLE],
        "BucketARN": ["arn:aws:s3:::local", "arn:aws:s3:::elsewhere"],
        "CurrentDeliveryStreamVersionId": ["1", "2"],
        "DestinationId": ["destinationId-000000000001"],
        "KinesisStreamARN": [f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{FUZZ_KINESIS_STREAM}"],
    }
    return ModelRequests("firehose", anchors, drop_members=lambda _op, member: bool(
        _REMOTE_DESTINATIONS.match(member)))


def _reset_kinesis_streams(api: Api) -> None:
    """Undo what earlier fuzzing did: only the target stream and a fresh two-shard fuzz stream remain."""
    client = api.client()
    for name in client.list_streams(Limit=1000)["StreamNames"]:
        if name != TARGET_KINESIS_STREAM:
            client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    wait_until(lambda: client.list_streams()["StreamNames"] == [TARGET_KINESIS_STREAM])
    client.create_stream(StreamName=FUZZ_KINESIS_STREAM, ShardCount=2)
    wait_until(lambda: client.describe_stream_summary(StreamName=FUZZ_KINESIS_STREAM)[
        "StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")


def kinesis_model(api: Api) -> ModelRequests:
    _reset_kinesis_streams(api)
    client = api.client()
    shards = [s["ShardId"] for s in client.list_shards(StreamName=FUZZ_KINESIS_STREAM)["Shards"]]
    iterator = client.get_shard_iterator(StreamName=FUZZ_KINESIS_STREAM, ShardId=shards[0],
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{FUZZ_KINESIS_STREAM}"
    anchors = {
        "StreamName": [FUZZ_KINESIS_STREAM, "fuzz-k2"],
        "StreamARN": [arn],
        "ResourceARN": [arn],
        "ShardId": shards,
        "ShardToSplit": shards,
        "ShardToMerge": shards,
        "AdjacentShardToMerge": shards,
        "ExclusiveStartShardId": shards,
        "NewStartingHashKey": ["1", str(2**127), str(2**128)],
        "ExplicitHashKey": ["0", str(2**128 - 1), str(2**128)],
        "ShardIterator": [iterator, iterator[:-4] + "AAAA"],
        "PartitionKey": ["p"],
    }
    return ModelRequests("kinesis", anchors)


def _model(api: Api) -> ModelRequests:
    return firehose_model() if api.service == "firehose" else kinesis_model(api)


def _operations(api: Api, model: ModelRequests) -> list[str]:
    """The operations the server implements, and two of the model's that it does not."""
    implemented = set(FIREHOSE_OPERATIONS if api.service == "firehose" else KINESIS_OPERATIONS)
    return sorted(implemented) + sorted(set(model.operations) - implemented)[:2]


def _targets(api: Api, model: ModelRequests) -> st.SearchStrategy[str | None]:
    """Every operation of the model, and targets that are not quite one."""
    other = "Kinesis_20131202" if api.service == "firehose" else "Firehose_20150804"
    ops = st.sampled_from(model.operations)
    implemented = st.sampled_from(_operations(api, model)).map(api.target)
    return st.one_of(
        implemented, implemented, implemented, implemented,
        ops.map(api.target),
        ops.map(lambda op: f"{other}.{op}"),
        ops.map(lambda op: f"{api.prefix}.{op.lower()}"),
        st.sampled_from([api.prefix, api.prefix + ".", "." + "ListStreams", "", f"{api.prefix}..Put",
                         f"{api.prefix}.ListStreams.Extra", f"{api.prefix}.__init__", f"{api.prefix}.get"]),
        header_text,
        st.none(),
    )


def _wild_members(model: ModelRequests, operations: list[str]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(operation, an object with the operation's member names holding arbitrary values)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        op = draw(st.sampled_from(operations))
        shape = (model.model["operations"][op].get("input") or {}).get("shape")
        names = sorted(model.shapes[shape].get("members", {})) if shape else []
        return op, draw(st.dictionaries(st.sampled_from(names or ["X"]), json_values, max_size=max(len(names), 1)))

    return build()


def _fuzz_body(api: Api, model: ModelRequests) -> st.SearchStrategy[tuple[str, str, bytes]]:
    """(operation, content type, body): what a body can be."""
    operations = _operations(api, model)
    ops = st.sampled_from(operations)
    requests = model.requests(operations, cbor=False, wild=json_values)

    def truncated(pair: tuple[tuple[str, Any], float]) -> tuple[str, str, bytes]:
        (op, body), cut = pair
        raw = dump_json(body)
        return op, JSON, raw[:int(len(raw) * cut)]

    kinds = [
        st.tuples(ops, st.just(JSON), json_values.map(dump_json)),
        _wild_members(model, operations).map(lambda p: (p[0], JSON, dump_json(p[1]))),
        requests.map(lambda p: (p[0], JSON, dump_json(p[1]))),
        st.tuples(requests, st.floats(0, 1)).map(truncated),
        st.tuples(ops, st.sampled_from([JSON, CBOR]), st.binary(max_size=300)),
    ]
    if api.cbor:
        cbor_requests = model.requests(operations, cbor=True, wild=cbor_values)
        kinds += [
            st.tuples(ops, st.just(CBOR), cbor_values.map(dump_cbor)),
            st.tuples(ops, st.just(CBOR),
                      st.dictionaries(st.text(max_size=12) | st.sampled_from(["StreamName", "Records", "Limit"]),
                                      cbor_values, max_size=5).map(dump_cbor)),
            cbor_requests.map(lambda p: (p[0], CBOR, dump_cbor(p[1]))),
            st.tuples(cbor_requests, st.floats(0, 1)).map(
                lambda pair: (pair[0][0], CBOR, dump_cbor(pair[0][1])[:int(len(dump_cbor(pair[0][1])) * pair[1])])),
        ]
    return st.one_of(*kinds)


def _content_types(api: Api) -> st.SearchStrategy[str | None]:
    """Mostly the API's own content types, then near misses and junk."""
    native = st.sampled_from([JSON, CBOR] if api.cbor else [JSON])
    return st.one_of(
        native, native, native, native,
        st.sampled_from([JSON, "application/json", CBOR, "application/x-amz-json-1.0", "text/plain", "",
                         "application/x-amz-json-1.1; charset=utf-8", "APPLICATION/X-AMZ-CBOR-1.1",
                         "application/x-amz-json-1.1;", "multipart/form-data; boundary=x", "application/cbor",
                         "application/x-www-form-urlencoded"]),
        header_text, st.none())


_ENCODINGS = st.one_of(
    st.sampled_from([None, None, "gzip", "deflate", "x-gzip", "identity", "GZIP", "Gzip", "br", "compress",
                     "gzip, deflate", "gzip, gzip", "zstd"]),
    header_text)


def _encode(body: bytes, encoding: str | None, how: str) -> bytes:
    """``body`` compressed as ``encoding`` says (or as it would be), then perhaps broken."""
    name = (encoding or "").strip().lower()
    if name in ("gzip", "x-gzip"):
        packed = gzip(body)
    elif name == "deflate":
        packed = gzip(body)[10:-8] if how == "raw-deflate" else zlib.compress(body)
    else:
        packed = body
    if how == "plain":
        return body
    if how == "truncated":
        return packed[: max(0, len(packed) // 2)]
    if how == "corrupt" and len(packed) > 12:
        middle = len(packed) // 2
        return packed[:middle] + bytes([packed[middle] ^ 0xFF]) + packed[middle + 1:]
    if how == "trailing-junk":
        return packed + b"junk"
    return packed


_JUNK_AUTH = st.one_of(
    header_text,
    header_text.map(lambda s: ("AWS4-HMAC-SHA256 " + s).strip()),
    st.sampled_from([
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=",
        "AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=, Signature=",
        f"AWS4-HMAC-SHA256 Credential=AKIDHOSTILETESTS0001/20200101/{REGION}/kinesis/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f/g, SignedHeaders=host;;;, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=AKIDHOSTILETESTS0001/99999999/x/y/aws4_request,SignedHeaders=*,Signature=1",
        "Bearer x", "Basic Zm9vOmJhcg==", "AWS AKID:sig", "AWS4-HMAC-SHA256 " + "Credential=" * 50,
        "AWS4-HMAC-SHA256 Credential=AKIDHOSTILETESTS0001/20200101/us-east-1/firehose/aws4_request, "
        "SignedHeaders=" + ";".join(["x"] * 300) + ", Signature=00",
    ]))


_QUERY_PARAMS = st.sampled_from(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders",
                                  "X-Amz-Date", "X-Amz-Expires", "X-Amz-Security-Token", "Action", "x"])
#: Query strings a presigned request would carry, in pieces and with junk values (percent escapes included).
_QUERIES = st.one_of(
    st.none(), st.none(),
    st.lists(st.tuples(_QUERY_PARAMS, st.one_of(header_text, st.sampled_from(
        ["AWS4-HMAC-SHA256", "%ZZ", "%", "%00", "a%2Fb%2F", "host", "99999999T999999Z", "-1", "1" * 40,
         "AKIDHOSTILETESTS0001/20200101/us-east-1/kinesis/aws4_request"]))), min_size=1, max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
    header_text)


def _auth_headers(how: str, junk: str) -> dict[str, str]:
    """What a request signed (or not) as ``how`` says gets on top of its signature."""
    if how == "junk-authorization":
        return {"Authorization": junk}
    if how == "junk-date":
        return {"X-Amz-Date": junk}
    if how == "junk-token":
        return {"X-Amz-Security-Token": junk}
    if how == "junk-content-sha256":
        return {"X-Amz-Content-Sha256": junk}
    if how == "unsigned-payload":
        return {"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}
    return {}


# -- fuzzing ------------------------------------------------------------------------------------------


def test_fuzzed_bodies_never_break_the_front_door(api: Api) -> None:
    model = _model(api)

    @settings(FUZZ, max_examples=300)
    @given(_fuzz_body(api, model), st.sampled_from([True, True, True, False]))
    def run(case: tuple[str, str, bytes], signed: bool) -> None:
        op, ctype, body = case
        r = post(api, body, target=api.target(op), content_type=ctype, signed=signed, client=client)
        seen[_outcome(r, check_answer(r, cbor_request=api.cbor and ctype == CBOR))] += 1

    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        run()
    print(f"{api.name} fuzzed bodies: {dict(seen.most_common())}")
    api.assert_serving()


def test_requests_built_from_the_aws_model_never_break_an_operation(api: Api) -> None:
    model = _model(api)
    operations = _operations(api, model)
    wire_forms = [False, True] if api.cbor else [False]
    requests = st.sampled_from(wire_forms).flatmap(
        lambda cbor: model.requests(operations, cbor=cbor, wild=cbor_values if cbor else json_values).map(
            lambda pair: (cbor, pair)))

    @settings(FUZZ, max_examples=300)
    @given(requests)
    def run(case: tuple[bool, tuple[str, Any]]) -> None:
        cbor, (op, body) = case
        raw = dump_cbor(body) if cbor else dump_json(body)
        r = post(api, raw, target=api.target(op), content_type=CBOR if cbor else JSON, client=client)
        seen[_outcome(r, check_answer(r, cbor_request=cbor))] += 1

    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        run()
    print(f"{api.name} model requests: {dict(seen.most_common())}")
    # The requests get past the front door: many run their operation, many more meet each kind of refusal.
    assert seen["200"] >= 10 and seen["400 SerializationException"] >= 10, seen
    assert sum(n for k, n in seen.items() if "Validation" in k or "InvalidArgument" in k) >= 20, seen
    api.assert_serving()


def test_fuzzed_headers_never_break_the_front_door(api: Api) -> None:
    model = _model(api)
    bodies: st.SearchStrategy[Any] = st.one_of(
        st.just({}), model.requests(_operations(api, model), cbor=False, wild=json_values).map(lambda pair: pair[1]))
    auth = st.sampled_from(["signed", "signed", "unsigned", "junk-authorization", "junk-date", "junk-token",
                            "junk-content-sha256", "unsigned-payload"])
    compression = st.sampled_from(["packed", "packed", "plain", "truncated", "corrupt", "trailing-junk",
                                   "raw-deflate"])

    @settings(FUZZ, max_examples=250)
    @given(_targets(api, model), _content_types(api), _ENCODINGS, bodies, compression, auth, _JUNK_AUTH, _QUERIES)
    def run(target: str | None, ctype: str | None, encoding: str | None, body: dict[str, Any], how: str,
            who: str, junk: str, query: str | None) -> None:
        cbor_request = api.cbor and wire_type(ctype) == CBOR
        raw = _encode(dump_cbor(body) if cbor_request else dump_json(body), encoding, how)
        headers: dict[str, str] = {}
        if ctype is not None:
            headers["Content-Type"] = ctype
        if target is not None:
            headers["X-Amz-Target"] = target
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        url = api.url if query is None else str(httpx.URL(api.url + "?" + query))
        if who == "signed" or (who.startswith("junk-") and who != "junk-authorization"):
            headers = sign(url, api.service, raw, headers)
        headers.update(_auth_headers(who, junk))
        r = client.post(url, content=raw, headers=headers, timeout=60)
        seen[_outcome(r, check_answer(r, cbor_request=cbor_request))] += 1

    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        run()
    print(f"{api.name} fuzzed headers: {dict(seen.most_common())}")
    api.assert_serving()


def _mutated_authorization(authorization: str, part: int, where: str, junk: str) -> str:
    """A real Authorization header with one of its parts (algorithm, Credential, SignedHeaders, Signature) or
    one piece of the credential scope replaced by ``junk``."""
    algorithm, _, rest = authorization.partition(" ")
    params = [p.strip() for p in rest.split(",")]
    if part == 0:
        return f"{junk} {rest}".strip()
    name, _, value = params[(part - 1) % len(params)].partition("=")
    if where == "scope" and name == "Credential":
        pieces = value.split("/")
        pieces[len(junk) % len(pieces)] = junk
        value = "/".join(pieces)
    elif where == "drop":
        params.pop((part - 1) % len(params))
        return f"{algorithm} {', '.join(params)}"
    else:
        value = junk
    params[(part - 1) % len(params)] = f"{name}={value}"
    return f"{algorithm} {', '.join(params)}"


def test_junk_signatures_never_break_authentication(api: Api) -> None:
    """A valid request whose signature is junk, half-junk, or a real one with one part broken."""
    what = st.sampled_from(["mutated", "mutated", "mutated", "junk", "query", "date", "token", "both-forms"])

    @settings(FUZZ, max_examples=200)
    @given(what, st.integers(0, 3), st.sampled_from(["value", "scope", "drop"]), _JUNK_AUTH, header_text, _QUERIES)
    def run(kind: str, part: int, where: str, junk_auth: str, junk: str, query: str | None) -> None:
        body = b"{}"
        if kind == "both-forms":  # a signed header and the presigned form's algorithm parameter
            query = "X-Amz-Algorithm=AWS4-HMAC-SHA256" + (f"&{query}" if query else "")
        url = api.url if kind not in ("query", "both-forms") or query is None else str(httpx.URL(api.url + "?" + query))
        headers = sign(url, api.service, body, {"Content-Type": JSON, "X-Amz-Target": control_target(api)})
        if kind == "mutated":
            headers["Authorization"] = _mutated_authorization(headers["Authorization"], part, where, junk)
        elif kind == "junk":
            headers["Authorization"] = junk_auth
        elif kind == "query":
            del headers["Authorization"]
        elif kind == "date":
            headers["X-Amz-Date"] = junk
        elif kind == "token":
            headers["X-Amz-Security-Token"] = junk
        r = client.post(url, content=body, headers=headers, timeout=60)
        seen[_outcome(r, check_answer(r))] += 1
        if r.status_code == 200:  # only an empty security token (as good as none) leaves the signature valid
            assert kind == "token" and junk == "", (kind, part, where, junk, headers, query)

    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        run()
    print(f"{api.name} junk signatures: {dict(seen.most_common())}")
    api.assert_serving()


def test_fuzzed_deliveries_never_break_the_http_endpoint_receiver(firehose_api: Api) -> None:
    records = st.lists(st.binary(max_size=64), min_size=1, max_size=5).map(
        lambda rs: [{"data": base64.b64encode(r).decode()} for r in rs])
    deliveries = st.one_of(
        st.fixed_dictionaries({"requestId": st.text(min_size=1, max_size=40), "timestamp": st.integers(0, 2**42),
                               "records": records}),
        st.dictionaries(st.sampled_from(["requestId", "timestamp", "records", "data"]), json_values, max_size=4),
        st.fixed_dictionaries({"requestId": st.text(max_size=8), "records": st.lists(
            st.dictionaries(st.sampled_from(["data", "Data"]), json_values, max_size=2), max_size=4)}),
        json_values,
    )
    cut = st.tuples(deliveries.map(dump_json), st.floats(0, 1)).map(lambda p: p[0][:int(len(p[0]) * p[1])])
    bodies = st.one_of(deliveries.map(dump_json), st.binary(max_size=300), cut)
    names = st.one_of(st.sampled_from([FUZZ_DELIVERY_STREAM, "missing", "", "a/b", "%2e%2e", "..", "fuzz-new"]),
                      st.text(string.ascii_letters + string.digits + "-_.~%", max_size=30))
    keys = st.one_of(st.just(RECEIVER_KEY), st.none(), header_text)
    encodings = st.sampled_from([None, None, "gzip", "gzip", "deflate", "identity", "br", "GZIP"])
    compression = st.sampled_from(["packed", "packed", "plain", "truncated", "corrupt", "trailing-junk"])
    good = st.tuples(st.just(FUZZ_DELIVERY_STREAM), deliveries.map(dump_json), st.just(RECEIVER_KEY),
                     st.sampled_from([None, "gzip"]), st.just("packed"), st.none() | header_text, st.just(False))
    hostile = st.tuples(names, bodies, keys, encodings, compression, st.none() | header_text, st.booleans())

    @settings(FUZZ, max_examples=200)
    @given(st.one_of(good, hostile, hostile))
    def run(case: tuple[str, bytes, str | None, str | None, str, str | None, bool]) -> None:
        name, body, key, encoding, how, request_id, junk_auth = case
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-Amz-Firehose-Access-Key"] = key
        if request_id is not None:
            headers["X-Amz-Firehose-Request-Id"] = request_id
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        if junk_auth:
            headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=x/y/z, SignedHeaders=host, Signature=0"
        raw = _encode(body, encoding, how)
        r = client.post(firehose_api.endpoint + RECEIVER + name, content=raw, headers=headers, timeout=60)
        if not r.request.url.path.startswith(RECEIVER):
            check_answer(r)  # ".." took the client elsewhere: whatever answers there answers in its own form
        else:
            answer = check_receiver_answer(r)
            seen[f"{r.status_code} {answer.get('errorMessage', '')[:40]}"] += 1

    seen: Counter[str] = Counter()
    with httpx.Client() as client:
        run()
        print(f"receiver fuzzed deliveries: {dict(seen.most_common())}")
        assert len(seen) >= 5, seen  # the fuzzer reached many different answers, not one refusal
        for i in range(5):  # and deliveries that follow the protocol are still accepted after it (by the stream
            # no fuzzer touches: an earlier fuzzer of this module may have deleted the fuzz anchor)
            good = dump_json({"requestId": f"after-fuzz-{i}", "timestamp": 1,
                              "records": [{"data": base64.b64encode(b"ok").decode()}]})
            r = client.post(firehose_api.endpoint + RECEIVER + TARGET_DELIVERY_STREAM, content=good,
                            headers={"Content-Type": "application/json", **RECEIVER_HEADERS}, timeout=60)
            assert r.status_code == 200, r.text
    firehose_api.assert_serving()


# -- the probes of the original report -----------------------------------------------------------------


@pytest.mark.parametrize("wire", ["json", "cbor"])
@pytest.mark.parametrize("tag_keys", [[{}], [[1]], [1, None]], ids=["object", "list", "number-and-null"])
def test_remove_tags_from_stream_with_tag_keys_that_are_not_strings_is_refused(kinesis_api: Api, wire: str,
                                                                               tag_keys: list[Any]) -> None:
    client = kinesis_api.client()
    client.add_tags_to_stream(StreamName=TARGET_KINESIS_STREAM, Tags={"keep": "1", "1": "one"})
    body = {"StreamName": TARGET_KINESIS_STREAM, "TagKeys": tag_keys}
    cbor = wire == "cbor"
    r = post(kinesis_api, dump_cbor(body) if cbor else dump_json(body),
             target=kinesis_api.target("RemoveTagsFromStream"), content_type=CBOR if cbor else JSON)
    assert r.status_code == 400
    assert error_type(r, cbor_request=cbor) in ("ValidationException", "SerializationException")
    tags = {t["Key"]: t["Value"] for t in client.list_tags_for_stream(StreamName=TARGET_KINESIS_STREAM)["Tags"]}
    assert tags == {"keep": "1", "1": "one"}


@pytest.mark.parametrize("timestamp", [b"1e308", b"-1e308", b"1e400", b"9.3e15"])
def test_get_shard_iterator_at_timestamp_1e308_is_refused(kinesis_api: Api, timestamp: bytes) -> None:
    raw = (b'{"StreamName":"' + TARGET_KINESIS_STREAM.encode() + b'","ShardId":"shardId-000000000000",'
           b'"ShardIteratorType":"AT_TIMESTAMP","Timestamp":' + timestamp + b"}")
    r = post(kinesis_api, raw, target=kinesis_api.target("GetShardIterator"))
    assert r.status_code == 400
    assert error_type(r) in ("SerializationException", "InvalidArgumentException")


@pytest.mark.parametrize("value", [1e308, float("inf"), float("nan"), cbor2.CBORTag(1, 1e308), cbor2.CBORTag(1, 2**70)],
                         ids=["1e308", "inf", "nan", "tag1-1e308", "tag1-2^70"])
def test_get_shard_iterator_at_timestamp_out_of_range_in_cbor_is_refused(kinesis_api: Api, value: Any) -> None:
    body = {"StreamName": TARGET_KINESIS_STREAM, "ShardId": "shardId-000000000000",
            "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": value}
    r = post(kinesis_api, dump_cbor(body), target=kinesis_api.target("GetShardIterator"), content_type=CBOR)
    assert r.status_code == 400
    assert error_type(r, cbor_request=True) in ("SerializationException", "InvalidArgumentException")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_kinesis_body_over_16_mib_is_answered_413_not_cut(kinesis_api: Api, framing: str) -> None:
    body = b"{" + b" " * (16 * MIB) + b"}"
    with httpx.Client() as client:
        r = post(kinesis_api, body if framing == "content-length" else chunked(body),
                 target=control_target(kinesis_api), signed=False, client=client)
        assert r.status_code == 413
        assert error_type(r) == "SerializationException"
        # The connection is still usable for the next call.
        assert post(kinesis_api, b"{}", target=control_target(kinesis_api), client=client).status_code == 200


def test_a_kinesis_body_over_16_mib_over_h2c_is_answered_413(kinesis_api: Api) -> None:
    body = b"{" + b" " * (16 * MIB) + b"}"
    with httpx.Client(http1=False, http2=True) as client:
        r = post(kinesis_api, body, target=control_target(kinesis_api), signed=False, client=client)
        assert r.http_version == "HTTP/2"
        assert r.status_code == 413
        assert error_type(r) == "SerializationException"
        assert post(kinesis_api, b"{}", target=control_target(kinesis_api), client=client).status_code == 200


def test_put_records_from_boto3_over_16_mib_gets_the_413_not_a_connection_error(kinesis_api: Api) -> None:
    records = [{"Data": bytes([i]) * (1024 * 1024 - 8), "PartitionKey": "p"} for i in range(13)]
    with pytest.raises(ClientError) as caught:
        kinesis_api.client().put_records(StreamName=TARGET_KINESIS_STREAM, Records=records)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert caught.value.response["Error"]["Code"] == "SerializationException"


def _next_token(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({**body, "t": int(time.time())})).decode()


@pytest.mark.parametrize("operation, token", [
    ("ListStreams", {"op": "ListStreams"}),
    ("ListStreams", {"op": "ListStreams", "after": 1}),
    ("ListShards", {"op": "ListShards"}),
    ("ListShards", {"op": "ListShards", "stream": [1], "after": "x", "created": 1}),
    ("ListShards", {"op": "ListShards", "stream": TARGET_KINESIS_STREAM, "after": "x", "created": None, "filter": 1}),
], ids=["streams-no-after", "streams-after-number", "shards-no-members", "shards-stream-list", "shards-filter"])
def test_a_forged_next_token_is_refused_not_a_500(kinesis_api: Api, operation: str, token: dict[str, Any]) -> None:
    if token.get("created", 1) is None:  # the stream's own creation time, so the token passes that check
        summary = kinesis_api.client().describe_stream_summary(StreamName=TARGET_KINESIS_STREAM)
        token = {**token, "created": int(summary["StreamDescriptionSummary"]["StreamCreationTimestamp"].timestamp()
                                          * 1000 + 0.5)}
    r = post(kinesis_api, dump_json({"NextToken": _next_token(token)}), target=kinesis_api.target(operation))
    assert error_type(r) in ("InvalidArgumentException", "ExpiredNextTokenException", "ResourceNotFoundException")


# -- oversized bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_50_mb_body_is_refused_with_413_and_never_held(api: Api, framing: str) -> None:
    body = b"{" + b" " * (50_000_000 - 2) + b"}"
    with httpx.Client() as client, Memory(api.pid) as memory:
        r = post(api, body if framing == "content-length" else chunked(body), target=control_target(api),
                 signed=False, client=client, timeout=120)
        assert r.status_code == 413, r.text
        assert error_type(r) == "SerializationException"
        assert str(api.max_body) in r.json()["message"]
        # The rest was drained, not left to reset the connection: the same connection serves the next call.
        check_answer(post(api, b"{}", target=control_target(api), client=client))
    # With a length nothing is read; chunked, at most the limit is, then dropped.
    print(f"{api.name} 50 MB {framing}: {memory}")
    assert memory.growth < api.max_body + 16 * MIB, memory
    api.assert_serving()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_the_receivers_64_mib_is_refused_with_413_and_never_held(firehose_api: Api, framing: str) -> None:
    body = b"{" + b" " * (80_000_000 - 2) + b"}"
    with Memory(firehose_api.pid) as memory:
        r = post(firehose_api, body if framing == "content-length" else chunked(body), content_type="application/json",
                 signed=False, headers=RECEIVER_HEADERS, path=RECEIVER + TARGET_DELIVERY_STREAM, timeout=120)
    assert r.status_code == 413
    assert "exceeds 67108864 bytes" in check_receiver_answer(r)["errorMessage"]
    print(f"receiver 80 MB {framing}: {memory}")
    assert memory.growth < 64 * MIB + 16 * MIB, memory
    firehose_api.assert_serving()


def test_a_50_mb_delivery_within_the_receivers_limit_is_read_once_and_refused(firehose_api: Api) -> None:
    """50 MB is within the 64 MiB a Firehose may send, so it is read and parsed, then refused: memory stays a
    small multiple of the body (it is held as read, joined, and parsed: three times; see the charge test below)."""
    body = b'{"requestId":"r","junk":"' + b"a" * (50_000_000 - 40) + b'","records":[]}'
    with Memory(firehose_api.pid) as memory:
        r = post(firehose_api, body, content_type="application/json", signed=False, headers=RECEIVER_HEADERS,
                 path=RECEIVER + TARGET_DELIVERY_STREAM, timeout=120)
    assert r.status_code == 400
    check_receiver_answer(r)
    print(f"receiver 50 MB delivery: {memory}")
    assert memory.growth < 4 * len(body), memory


# -- compression ----------------------------------------------------------------------------------------


def _bomb_target(where: str, request: pytest.FixtureRequest) -> tuple[Api, str | None, str, dict[str, str]]:
    """(server, X-Amz-Target, path, headers) of a bomb's destination."""
    if where == "receiver":
        api: Api = request.getfixturevalue("firehose_api")
        return api, None, RECEIVER + TARGET_DELIVERY_STREAM, RECEIVER_HEADERS
    api = request.getfixturevalue(f"{where}_api")
    return api, control_target(api), "/", {}


@pytest.mark.parametrize("where, encoding", [("firehose", "gzip"), ("kinesis", "gzip"), ("kinesis", "deflate"),
                                             ("receiver", "gzip")])
def test_a_1_gib_compression_bomb_is_refused_with_bounded_memory_while_others_are_served(
        where: str, encoding: str, request: pytest.FixtureRequest) -> None:
    api, target, path, headers = _bomb_target(where, request)
    bomb = gzip_bomb() if encoding == "gzip" else deflate_bomb()
    assert len(bomb) < 1_100_000
    with Heartbeat(api.endpoint) as heartbeat, Memory(api.pid) as memory:
        answers = [post(api, bomb, target=target, encoding=encoding, signed=False, path=path, headers=headers,
                        content_type="application/json" if where == "receiver" else JSON) for _ in range(3)]
    for r in answers:
        assert r.status_code == 400, r.text
        if where == "receiver":
            assert "inflates to more than 67108864 bytes" in check_receiver_answer(r)["errorMessage"]
        else:
            assert error_type(r) == "SerializationException"
            assert "inflates to more than" in r.json()["message"]
    print(f"{where} {encoding} bomb: {memory}; /healthz worst {heartbeat.worst:.3f}s over {heartbeat.polls} polls")
    assert memory.growth < 200 * MIB, memory
    assert not heartbeat.failures
    assert heartbeat.worst < 1.0
    api.assert_serving()


def _ratio_body(where: str, api: Api) -> Callable[[str], bytes]:
    """A valid body of about 3 MB of zeros (as base64) and one record of ``noise``."""
    zeros = "A" * 1_000_000
    if where == "receiver":
        return lambda noise: dump_json({"requestId": "ratio", "timestamp": 0,
                                        "records": [{"data": d} for d in (zeros, zeros, zeros, noise)]})
    return lambda noise: dump_json(records_body(api, [zeros, zeros, zeros, noise]))


@pytest.mark.parametrize("where", ["firehose", "kinesis", "receiver"])
def test_a_body_inflating_500_times_is_refused_by_the_ratio_cap_and_100_times_is_accepted(
        where: str, request: pytest.FixtureRequest) -> None:
    api, _target, path, headers = _bomb_target(where, request)
    target = None if where == "receiver" else data_target(api)
    ctype = "application/json" if where == "receiver" else JSON
    make = _ratio_body(where, api)
    plain, packed = at_ratio(make, 500)
    assert 450 < len(plain) / len(packed) < 550 and len(plain) < 8 * MIB
    r = post(api, packed, target=target, encoding="gzip", path=path, headers=headers, content_type=ctype)
    assert r.status_code == 400
    message = check_receiver_answer(r)["errorMessage"] if where == "receiver" else check_answer(r)["message"]
    assert "inflates to more than 200 times its size" in message
    plain, packed = at_ratio(make, 100)
    assert 90 < len(plain) / len(packed) < 110
    r = post(api, packed, target=target, encoding="gzip", path=path, headers=headers, content_type=ctype)
    assert r.status_code == 200, r.text
    if where == "receiver":
        check_receiver_answer(r)
    else:
        answer = check_answer(r)
        assert answer.get("FailedPutCount", answer.get("FailedRecordCount")) == 0


# -- nesting --------------------------------------------------------------------------------------------

_DEEP_JSON = {
    "arrays-10k": lambda: nested_json_arrays(10_000),
    "objects-10k": lambda: nested_json_objects(10_000),
    "arrays-1m": lambda: nested_json_arrays(1_000_000),
    "objects-1m": lambda: nested_json_objects(1_000_000),
}
_DEEP_CBOR = {
    "arrays-10k": lambda: nested_cbor_arrays(10_000),
    "maps-10k": lambda: nested_cbor_maps(10_000),
    "arrays-1m": lambda: nested_cbor_arrays(1_000_000),
    "maps-1m": lambda: nested_cbor_maps(1_000_000),
}


@pytest.mark.parametrize("place", ["top-level", "member"])
@pytest.mark.parametrize("kind", sorted(_DEEP_JSON))
@pytest.mark.parametrize("operation", ["control", "data"])
def test_json_nested_10000_deep_is_a_serialization_exception(api: Api, place: str, kind: str, operation: str) -> None:
    deep = _DEEP_JSON[kind]()
    body = deep if place == "top-level" else b'{"Nested":' + deep + b"}"
    target = control_target(api) if operation == "control" else data_target(api)
    r = post(api, body, target=target)
    assert r.status_code == 400
    assert error_type(r) == "SerializationException"
    assert api.alive()


@pytest.mark.parametrize("place", ["top-level", "member"])
@pytest.mark.parametrize("kind", sorted(_DEEP_CBOR))
@pytest.mark.parametrize("operation", ["control", "data"])
def test_cbor_nested_10000_deep_is_a_serialization_exception(kinesis_api: Api, place: str, kind: str,
                                                            operation: str) -> None:
    deep = _DEEP_CBOR[kind]()
    body = deep if place == "top-level" else cbor_map_holding(b"Nested", deep)
    target = control_target(kinesis_api) if operation == "control" else data_target(kinesis_api)
    r = post(kinesis_api, body, target=target, content_type=CBOR)
    assert r.status_code == 400
    assert error_type(r, cbor_request=True) == "SerializationException"
    assert kinesis_api.alive()


@pytest.mark.parametrize("wire", ["json", "cbor"])
def test_nesting_past_max_json_depth_in_an_unknown_member_is_refused(api: Api, wire: str) -> None:
    if wire == "cbor" and not api.cbor:
        pytest.skip("the Firehose API speaks JSON only")
    cbor = wire == "cbor"

    def body(depth: int) -> bytes:
        """The object itself is level 1; ``depth - 1`` arrays nest inside its unknown member."""
        if cbor:
            return cbor_map_holding(b"Unknown", nested_cbor_arrays(depth - 1))
        return b'{"Unknown":' + nested_json_arrays(depth - 1) + b"}"

    r = post(api, body(100), target=control_target(api), content_type=CBOR if cbor else JSON)
    assert r.status_code == 400
    assert error_type(r, cbor_request=cbor) == "SerializationException"
    assert "more than 64 deep" in check_answer(r, cbor_request=cbor)["message"]
    r = post(api, body(60), target=control_target(api), content_type=CBOR if cbor else JSON)
    assert r.status_code == 200, r.content
    check_answer(r, cbor_request=cbor)


def test_cbor_shared_values_cannot_stall_the_nesting_check(fresh: Callable[[str], Api]) -> None:
    api = fresh("kinesis")
    value: list[Any] = []
    for _ in range(40):
        value = [value, value]
    body = cbor2.dumps({"Shared": value}, value_sharing=True)
    assert len(body) < 300
    answer: httpx.Response | None = None
    with Heartbeat(api.endpoint, timeout=3) as heartbeat:
        try:
            answer = post(api, body, target=control_target(api), content_type=CBOR, signed=False, timeout=5)
        except httpx.TimeoutException:
            pass
    print(f"shared CBOR: answer {answer and answer.status_code}; /healthz worst {heartbeat.worst:.1f}s, "
          f"failures {heartbeat.failures[:2]}")
    assert answer is not None and answer.status_code == 400
    assert heartbeat.worst < 1.0 and not heartbeat.failures


# -- memory amplification -------------------------------------------------------------------------------


def test_64_mib_of_empty_objects_to_the_receiver_is_refused_with_bounded_memory(firehose_api: Api) -> None:
    body = json_array_of_empty_objects(64 * MIB)
    with Memory(firehose_api.pid) as memory:
        r = post(firehose_api, body, content_type="application/json", signed=False, headers=RECEIVER_HEADERS,
                 path=RECEIVER + TARGET_DELIVERY_STREAM, timeout=120)
    assert r.status_code == 413
    assert "more JSON structure" in check_receiver_answer(r)["errorMessage"]
    print(f"receiver 64 MiB of {{}}: {memory}")
    # Refused before parsing: the body as read plus its joined copy, and some slack.
    assert memory.growth < 2 * 64 * MIB + 32 * MIB, memory
    firehose_api.assert_serving()


def test_a_body_of_empty_objects_is_refused_within_the_memory_it_is_charged(api: Api) -> None:
    """``[{},{},...]`` up to the API's limit: each 3 bytes parse to a 64-byte dict and a list slot before the
    list is refused; the front door charges the request its size times ``body.JSON_GROWTH``. The bound is that
    charge plus 32 MiB for what any request costs besides its body (buffers, the answer, the allocator's rounding)."""
    body = json_array_of_empty_objects(api.max_body)
    with Memory(api.pid) as memory:
        r = post(api, body, target=control_target(api), signed=False, timeout=120)
    assert r.status_code == 400
    assert error_type(r) == "SerializationException"
    charge = JSON_GROWTH * len(body)
    print(f"{api.name} {len(body)} bytes of [{{}},...]: {memory}; charged {charge // MIB} MiB")
    assert memory.growth < charge + 32 * MIB, memory
    api.assert_serving()


def test_twenty_clients_sending_8_mib_at_once_wait_for_the_memory_budget(firehose_api: Api) -> None:
    """Each ``[{},...]`` body of 8 MiB - 1 byte is charged more than the whole parsing pool (three quarters of
    the 256 MiB budget here), so they are parsed one at a time: memory stays within the budget, and every
    client gets its answer."""
    body = json_array_of_empty_objects(8 * MIB - 1)
    answers: list[httpx.Response | BaseException] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            r = post(firehose_api, body, target=control_target(firehose_api), signed=False, timeout=240)
        except BaseException as exc:  # reported below
            r = exc  # type: ignore[assignment]
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=send) for _ in range(20)]
    started = time.monotonic()
    with Memory(firehose_api.pid) as memory:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    elapsed = time.monotonic() - started
    print(f"20 x 8 MiB of [{{}},...]: {memory}; {elapsed:.1f}s")
    assert len(answers) == 20
    for r in answers:
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 400 and error_type(r) == "SerializationException"
    assert memory.growth < MAX_REQUEST_MEMORY + 64 * MIB, memory
    firehose_api.assert_serving()


@pytest.mark.parametrize("head", ["chunked", "chunked-with-a-false-content-length"])
def test_the_memory_budget_holds_for_concurrent_kinesis_uploads(kinesis_api: Api, head: str) -> None:
    """48 clients send 16 MiB each, chunked: a few are read at a time (the reading pool holds four) and one is
    parsed at a time, so memory stays within ``limits.max_request_memory``, whatever the head claims."""
    body = b'{"x":"' + b"a" * (16 * MIB - 16) + b'"}'
    headers = {"Content-Type": JSON, "X-Amz-Target": control_target(kinesis_api), "Transfer-Encoding": "chunked"}
    if head == "chunked-with-a-false-content-length":
        headers["Content-Length"] = "10"
    statuses: list[int] = []

    def send() -> None:
        statuses.append(raw_post(kinesis_api, body, headers)[0])

    threads = [threading.Thread(target=send) for _ in range(48)]
    with Memory(kinesis_api.pid) as memory:
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
    print(f"48 x 16 MiB to Kinesis, {head}: {memory}; statuses {Counter(statuses)}")
    assert statuses == [400] * 48  # read, parsed, and refused as unsigned
    assert memory.growth < MAX_REQUEST_MEMORY, memory
    kinesis_api.assert_serving()


def test_the_firehose_listener_refuses_a_false_content_length_beside_chunked(firehose_api: Api) -> None:
    status, _ = raw_post(firehose_api, b"{}", {"Content-Type": JSON, "X-Amz-Target": control_target(firehose_api),
                                               "Content-Length": "10", "Transfer-Encoding": "chunked"})
    assert status == 400
    firehose_api.assert_serving()


def _stall_sockets(api: Api, count: int, target: str) -> list[socket.socket]:
    """``count`` requests that announce a chunked body and then send nothing."""
    port = int(api.endpoint.rsplit(":", 1)[1])
    out = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {JSON}\r\nX-Amz-Target: {target}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        out.append(s)
    return out


def test_a_silent_upload_does_not_starve_other_clients_of_the_memory_budget(api: Api) -> None:
    stalled = _stall_sockets(api, 1, control_target(api))
    try:
        time.sleep(0.5)
        started = time.monotonic()
        try:
            r: httpx.Response | None = post(api, b"{}", target=control_target(api), timeout=5)
        except httpx.TimeoutException:
            r = None
        print(f"{api.name}: a call behind one silent upload: {r and r.status_code} after "
              f"{time.monotonic() - started:.1f}s")
        assert r is not None and r.status_code == 200
    finally:
        for s in stalled:
            s.close()
    api.assert_serving()


_OVER_CHARGE = {
    # name: (server, target or receiver path, content type, body builder, charge in bytes)
    "firehose-json-objects-in-a-member": ("firehose", "ListDeliveryStreams", JSON,
                                          lambda: b'{"x":' + json_array_of_empty_objects(8 * MIB - 6) + b"}",
                                          JSON_GROWTH),
    "kinesis-json-objects-in-a-member": ("kinesis", "ListStreams", JSON,
                                         lambda: b'{"x":' + json_array_of_empty_objects(16 * MIB - 6) + b"}",
                                         JSON_GROWTH),
    "kinesis-cbor-maps-in-a-member": ("kinesis", "ListStreams", CBOR,
                                      lambda: cbor_map_holding(b"x", cbor_array_of_empty_maps(4 * MIB - 12)),
                                      CBOR_GROWTH),
    "receiver-ascii-string": (
        "firehose", None, "application/json",
        lambda: b'{"requestId":"r","junk":"' + b"a" * (64 * MIB - 48) + b'","records":[]}', RECEIVER_GROWTH),
    "receiver-string-with-one-astral-character": (
        "firehose", None, "application/json",
        lambda: b'{"requestId":"r","junk":"' + b"a" * (64 * MIB - 48) + "\U0001f600".encode() + b'","records":[]}',
        RECEIVER_GROWTH),
}


@pytest.mark.parametrize("case", sorted(_OVER_CHARGE))
def test_a_request_stays_within_the_memory_it_is_charged(fresh: Callable[[str], Api], case: str) -> None:
    server, operation, ctype, build, growth = _OVER_CHARGE[case]
    api = fresh(server)
    body = build()
    charge = len(body) * growth  # what the front door charges the parsing pool for it
    with Memory(api.pid) as memory:
        if operation is None:
            r = post(api, body, content_type=ctype, signed=False, headers=RECEIVER_HEADERS,
                     path=RECEIVER + TARGET_DELIVERY_STREAM, timeout=240)
        else:
            r = post(api, body, target=api.target(operation), content_type=ctype, signed=False, timeout=240)
    print(f"{case}: {len(body) // MIB} MiB body, status {r.status_code}; {memory}; charged {charge // MIB} MiB")
    assert r.status_code < 500
    assert memory.growth < charge + 32 * MIB, memory  # the slack of the test above


@pytest.mark.parametrize("server", ["firehose", "kinesis"])
def test_a_parse_heavy_body_does_not_stall_other_clients(fresh: Callable[[str], Api], server: str) -> None:
    api = fresh(server)
    body = b'{"x":' + json_array_of_empty_objects(api.max_body - 6) + b"}"
    with Heartbeat(api.endpoint) as heartbeat:
        r = post(api, body, target=control_target(api), signed=False, timeout=240)
    print(f"{server}: {len(body) // MIB} MiB of {{}} in a member: {r.status_code}; /healthz worst "
          f"{heartbeat.worst:.2f}s over {heartbeat.polls} polls")
    assert r.status_code < 500
    # Work that takes a body's size in CPU belongs off the loop (as inflating and the receiver's parse are):
    # /healthz is a constant answer and should not wait for a body it has nothing to do with.
    assert heartbeat.worst < 0.5


def test_a_hundred_uploads_that_stop_short_hold_bounded_memory_and_are_dropped(tmp_path: Path) -> None:
    """The probe of the original report: 100 clients each announce 8 MiB and stop one byte short. Before, they
    held 964 MB for as long as they liked. Now a body's length is reserved from the reading pool when its first
    bytes arrive (a quarter of ``limits.max_request_memory``, so at most a handful of these at a time; the rest
    are not read on), the listener drops each at ``limits.body_timeout_seconds``, and a boto3 client is served."""
    api = start_firehose(tmp_path / "stalled", body_timeout_seconds=3)
    try:
        port = int(api.endpoint.rsplit(":", 1)[1])
        head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {JSON}\r\n"
                f"X-Amz-Target: {api.target('ListDeliveryStreams')}\r\nContent-Length: {8 * MIB}\r\n\r\n").encode()
        part = b" " * (1024 * 1024)
        sockets: list[socket.socket] = []
        with Memory(api.pid) as memory:
            for _ in range(100):
                s = socket.create_connection(("127.0.0.1", port))
                s.setblocking(False)
                s.send(head)
                with contextlib.suppress(BlockingIOError):
                    s.send(part)  # as much of 1 MiB as the socket takes; then the client goes quiet
                sockets.append(s)
            started = time.monotonic()
            api.assert_serving()  # waits its turn for the reading pool at most until the stalled ones are dropped
            served = time.monotonic() - started

            def all_dropped() -> bool:
                for s in sockets:
                    try:
                        if s.recv(65536) == b"":
                            continue
                    except BlockingIOError:
                        return False
                    except OSError:
                        continue
                return True

            wait_until(all_dropped, timeout=30, interval=0.25)
        print(f"100 stalled 8 MiB uploads: {memory}; a boto3 client served after {served:.1f}s")
        assert memory.growth < MAX_REQUEST_MEMORY // 4 + 100 * MIB, memory
        assert served < 3 + 5  # at most the body deadline: the stalled ones cannot keep their places
        for s in sockets:
            s.close()
        api.assert_serving()
    finally:
        api.stop()
