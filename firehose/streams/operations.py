"""The Kinesis_20131202.* operations: the AWS checks beyond the model, a call to the store, the answer.

Requests arrive as plain dicts from either wire form, already checked by the
front door against the AWS model (types, required members, lengths, patterns,
ranges, enums: ``firehose.frontdoor.shapes``): in JSON, blobs are base64
strings and timestamps epoch seconds; in CBOR, blobs are bytes and timestamps
already epoch seconds. Answers use bytes for blobs and epoch seconds for
timestamps, and each wire form encodes them its own way. Each operation acts
on the shard store of the caller's account.

What is left here are the checks AWS makes beyond the model, with its
exception types and wording (``InvalidArgumentException``,
``ResourceNotFoundException`` ...). PutRecords, the hot path, validates
itself: plain records take a short path, and anything else goes through the
model's validator, so the answers are the validator's either way. The table
at the end also says which resource each call acts on, for authorization.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
import pybase64

from firehose.clock import now_ms
from firehose.frontdoor.door import Caller, Operation
from firehose.frontdoor.shapes import ServiceShapes
from firehose.streams import (
    capacity,
    consumers,
    encryption,
    hashkeys,
    iterators,
    limits,
    monitoring,
    policies,
    shardids,
    subscriptions,
    tagging,
)
from firehose.streams.addressing import stream_name as _stream_name
from firehose.streams.errors import (
    ExpiredNextTokenException,
    InvalidArgumentException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from firehose.streams.store import ON_DEMAND_SHARDS, Shard, ShardStore, Stream

Request = dict[str, Any]
#: Validates the whole request against the model (the wire form's conventions bound in); raises its error.
Check = Callable[..., None]

#: The Kinesis API's request shapes. Records need a PartitionKey: the model made it optional for
#: on-demand streams that distribute records themselves (RecordDistributionStrategy AUTO), which the
#: sidecar does not offer.
SHAPES = ServiceShapes.load("kinesis", validation_error=ValidationException, overrides={
    "PutRecordInput": {"required": ["Data", "PartitionKey"]},
    "PutRecordsRequestEntry": {"required": ["Data", "PartitionKey"]},
})

_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_TOKEN_TTL_S = 300
_TOKEN_MAC_BYTES = 16
MAX_PUT_RECORDS = 500
MAX_PUT_RECORDS_BYTES = 5 * 1024 * 1024


def _blob(value: Any) -> bytes:
    """A blob the model check has passed: bytes from CBOR, base64 from JSON."""
    return value if isinstance(value, bytes) else pybase64.b64decode(value, validate=True)


def _timestamp_ms(value: Any) -> int:
    return int(round(value * 1000))


def _secs(ms: int) -> float:
    return ms / 1000


# -- control plane ------------------------------------------------------------------------


async def create_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    name = request["StreamName"]
    max_kib = request.get("MaxRecordSizeInKiB")
    mode, count = capacity.stream_mode(request)
    if count is None:
        count = ON_DEMAND_SHARDS
    tags = request.get("Tags") or {}
    store.check_tag_text(name, [*tags, *tags.values()], "add tags to")
    store.check_tag_count(name, len(tags))
    store.create_stream(name, count, mode=mode, tags=tags, max_record_kib=max_kib or 1024)
    return {}


async def delete_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    name = _stream_name(store, request)
    consumers.check_deletion(store, store.stream(name), request.get("EnforceConsumerDeletion"))
    store.delete_stream(name)
    return {}


def _shard_shape(stream: Stream, shard: Shard) -> dict[str, Any]:
    out: dict[str, Any] = {"ShardId": shard.shard_id}
    if shard.parent:
        out["ParentShardId"] = shard.parent
    if shard.adjacent_parent:
        out["AdjacentParentShardId"] = shard.adjacent_parent
    out["HashKeyRange"] = {"StartingHashKey": str(shard.start), "EndingHashKey": str(shard.end)}
    seq_range = {"StartingSequenceNumber": stream.starting_sequence(shard)}
    ending = stream.ending_sequence(shard)
    if ending is not None:
        seq_range["EndingSequenceNumber"] = ending
    out["SequenceNumberRange"] = seq_range
    return out


def _described_shards(stream: Stream) -> list[Shard]:
    """The shards a description shows: none while the stream is CREATING (AWS makes them as it becomes
    ACTIVE; kinesalite recorded ``Shards: []``), even though this store has made them already."""
    return [] if stream.status == "CREATING" else stream.shards


def _common(stream: Stream) -> dict[str, Any]:
    return {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "StreamStatus": stream.status,
        "StreamModeDetails": {"StreamMode": stream.mode},
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": _secs(stream.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": list(stream.shard_metrics)}],
        **encryption.describe(stream.encryption),
    }


async def describe_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    limit = request.get("Limit")
    start = request.get("ExclusiveStartShardId")
    stream = store.stream(_stream_name(store, request))
    limit = min(limit or 100, 100)
    shards = [s for s in _described_shards(stream) if start is None or s.shard_id > start]
    page = shards[:limit]
    description = _common(stream)
    description["Shards"] = [_shard_shape(stream, s) for s in page]
    description["HasMoreShards"] = len(shards) > limit
    return {"StreamDescription": description}


async def describe_stream_summary(store: ShardStore, request: Request) -> dict[str, Any]:
    stream = store.stream(_stream_name(store, request))
    summary = _common(stream)
    summary.update(OpenShardCount=sum(s.is_open for s in _described_shards(stream)),
                   ConsumerCount=len(stream.consumers),
                   MaxRecordSizeInKiB=stream.max_record_kib)
    return {"StreamDescriptionSummary": summary}


async def list_streams(store: ShardStore, request: Request) -> dict[str, Any]:
    limit = request.get("Limit") or 100
    start = request.get("ExclusiveStartStreamName")
    token = request.get("NextToken")
    if token is not None:
        start = _read_token(store, token, "ListStreams")["after"]
    names = sorted(n for n in store.streams if start is None or n > start)
    page = names[:limit]
    more = len(names) > limit
    # Today's AWS answers StreamSummaries (and NextToken) besides the StreamNames and HasMoreStreams that
    # older recordings (kinesalite's) show; clients of either era find what they read.
    out: dict[str, Any] = {
        "StreamNames": page,
        "HasMoreStreams": more,
        "StreamSummaries": [{"StreamName": s.name, "StreamARN": s.arn, "StreamStatus": s.status,
                             "StreamModeDetails": {"StreamMode": s.mode},
                             "StreamCreationTimestamp": _secs(s.created_ms)}
                            for s in (store.streams[n] for n in page)],
    }
    if more:
        out["NextToken"] = _make_token(store, {"op": "ListStreams", "after": page[-1]})
    return out


def _make_token(store: ShardStore, body: dict[str, Any]) -> str:
    """A paging token: what the next page starts after, signed with the store's key (like shard iterators),
    so a token the store did not issue, or another account's store issued, is refused."""
    payload = orjson.dumps({**body, "t": int(time.time())})
    return base64.urlsafe_b64encode(_token_mac(store, payload) + payload).decode()


def _token_mac(store: ShardStore, payload: bytes) -> bytes:
    return hmac.new(store.key, b"next-token:" + payload, hashlib.sha256).digest()[:_TOKEN_MAC_BYTES]


def _token_parts(token: str) -> tuple[bytes, bytes] | None:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (ValueError, UnicodeEncodeError):
        return None
    return raw[:_TOKEN_MAC_BYTES], raw[_TOKEN_MAC_BYTES:]


def _token_body(token: str) -> dict[str, Any] | None:
    """What a token says, NOT checking its signature (to name the resource for authorization)."""
    parts = _token_parts(token)
    try:
        body = orjson.loads(parts[1]) if parts else None
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _read_token(store: ShardStore, token: str, op: str) -> dict[str, Any]:
    parts = _token_parts(token)
    if parts is None or not hmac.compare_digest(parts[0], _token_mac(store, parts[1])):
        raise InvalidArgumentException(f"Invalid NextToken: {token[:64]}")
    body = orjson.loads(parts[1])
    if body.get("op") != op:
        raise InvalidArgumentException(f"Invalid NextToken: {token[:64]}")
    if time.time() - body["t"] > _TOKEN_TTL_S:
        raise ExpiredNextTokenException(f"The token {token[:64]} has expired; tokens are valid for "
                                        f"{_TOKEN_TTL_S} seconds.")
    return body


async def list_shards(store: ShardStore, request: Request) -> dict[str, Any]:
    token = request.get("NextToken")
    max_results = request.get("MaxResults") or 1000
    start = request.get("ExclusiveStartShardId")
    shard_filter = request.get("ShardFilter")
    if token is not None:
        if request.get("StreamName") is not None or request.get("StreamARN") is not None:
            raise InvalidArgumentException("NextToken and StreamName cannot be provided together.")
        body = _read_token(store, token, "ListShards")
        name, start, shard_filter = body["stream"], body["after"], body.get("filter")
        stream = store.streams.get(name)
        if stream is None or stream.created_ms != body["created"]:
            raise ResourceNotFoundException(f"Stream {name} under account {store.options.account_id} not found.")
    else:
        if request.get("StreamName") is None and request.get("StreamARN") is None:
            raise InvalidArgumentException("Either NextToken or StreamName should be provided.")
        stream = store.stream(_stream_name(store, request))
        if stream.status == "CREATING":
            raise ResourceInUseException(f"Stream {stream.name} under account {store.options.account_id} not "
                                         f"ACTIVE, instead in state {stream.status}")
    shards = _filter_shards(stream, shard_filter)
    if start is not None:
        shards = [s for s in shards if s.shard_id > start]
    page = shards[:max_results]
    out: dict[str, Any] = {"Shards": [_shard_shape(stream, s) for s in page]}
    if len(shards) > max_results:
        out["NextToken"] = _make_token(store, {"op": "ListShards", "stream": stream.name,
                                               "created": stream.created_ms, "after": page[-1].shard_id,
                                               "filter": shard_filter})
    return out


def _filter_shards(stream: Stream, shard_filter: Any) -> list[Shard]:
    shards = sorted(stream.shards, key=lambda s: s.index)
    if shard_filter is None:
        return shards
    kind = shard_filter["Type"]
    if kind == "AFTER_SHARD_ID":
        after = shard_filter.get("ShardId")
        if not after:
            raise InvalidArgumentException("ShardId is required for the AFTER_SHARD_ID shard filter.")
        return [s for s in shards if s.shard_id > after]
    if kind == "AT_LATEST":
        return [s for s in shards if s.is_open]
    if kind in ("AT_TRIM_HORIZON", "FROM_TRIM_HORIZON"):
        cutoff = stream.cutoff_ms()
        return [s for s in shards if s.closed_ms is None or s.closed_ms >= cutoff]
    if "Timestamp" not in shard_filter:
        raise InvalidArgumentException(f"Timestamp is required for the {kind} shard filter.")
    at = _timestamp_ms(shard_filter["Timestamp"])
    if kind == "AT_TIMESTAMP":
        return [s for s in shards if s.created_ms <= at and (s.closed_ms is None or s.closed_ms > at)]
    return [s for s in shards if s.closed_ms is None or s.closed_ms >= at]


async def _retention(store: ShardStore, request: Request, *, increase: bool) -> dict[str, Any]:
    store.set_retention(_stream_name(store, request), request["RetentionPeriodHours"], increase=increase)
    return {}


async def increase_retention(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _retention(store, request, increase=True)


async def decrease_retention(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _retention(store, request, increase=False)


async def split_shard(store: ShardStore, request: Request) -> dict[str, Any]:
    """NewStartingHashKey is digits by the model's pattern; one past 2^128 - 1 is outside every shard and is
    refused by the same rule as any key outside the shard (AWS's answer, as kinesalite recorded it)."""
    name = _stream_name(store, request)
    shard_id = store.shard_id_of(name, request["ShardToSplit"])
    store.split_shard(name, shard_id, int(request["NewStartingHashKey"]))
    return {}


async def merge_shards(store: ShardStore, request: Request) -> dict[str, Any]:
    name = _stream_name(store, request)
    first = store.shard_id_of(name, request["ShardToMerge"])
    store.merge_shards(name, first, store.shard_id_of(name, request["AdjacentShardToMerge"]))
    return {}


async def update_shard_count(store: ShardStore, request: Request) -> dict[str, Any]:
    target = request["TargetShardCount"]
    name = _stream_name(store, request)
    current = store.update_shard_count(name, target)
    stream = store.stream(name)
    return {"StreamName": name, "CurrentShardCount": current, "TargetShardCount": target, "StreamARN": stream.arn}


async def start_stream_encryption(store: ShardStore, request: Request) -> dict[str, Any]:
    encryption.start(store, _stream_name(store, request), request["EncryptionType"], request["KeyId"])
    return {}


async def stop_stream_encryption(store: ShardStore, request: Request) -> dict[str, Any]:
    encryption.stop(store, _stream_name(store, request), request["EncryptionType"], request["KeyId"])
    return {}


async def add_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    name = _stream_name(store, request)
    store.add_tags(name, request["Tags"])
    return {}


async def list_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    limit = request.get("Limit") or 50
    start = request.get("ExclusiveStartTagKey")
    stream = store.stream(_stream_name(store, request))
    keys = sorted(k for k in stream.tags if start is None or k > start)
    return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in keys[:limit]], "HasMoreTags": len(keys) > limit}


async def remove_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    store.remove_tags(_stream_name(store, request), request["TagKeys"])
    return {}


# -- data plane ----------------------------------------------------------------------------


def _record(stream: Stream, item: Request, member: str) -> tuple[bytes, bytes, int]:
    """(partition key bytes, data, hash key) of one record the model check has passed, or raise as AWS does."""
    blob = _blob(item["Data"])
    key = item["PartitionKey"]
    key_bytes = key.encode("utf-8")
    limit = stream.max_record_kib * 1024
    if len(blob) + len(key_bytes) > limit:
        # The model's own Data bound (10 MiB) is the validator's; this is the stream's MaxRecordSizeInKiB, in the
        # validator's form (``member`` is "" for PutRecord: the path is 'data', as AWS names it).
        value = (f"'java.nio.HeapByteBuffer[pos=0 lim={len(blob)} cap={len(blob)}]' "
                 if SHAPES.show_values else "")
        raise ValidationException(
            f"1 validation error detected: Value {value}at '{member}data' failed to satisfy constraint: Member must "
            f"have length less than or equal to {limit - len(key_bytes)}")
    explicit = item.get("ExplicitHashKey")
    if explicit is not None:
        hash_key = hashkeys.parse_hash_key(explicit)
        if hash_key is None:
            raise InvalidArgumentException(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was "
                f"{explicit}")
    else:
        hash_key = hashkeys.hash_key(key)
    return key_bytes, blob, hash_key


def _records(stream: Stream, items: list[Any], check: Check) -> list[tuple[bytes, bytes, int]]:
    """Every record of a PutRecords call, checked; the common shape takes a short path.

    This loop runs for every record the sidecar stores, so plain records (string data and key,
    no explicit hash key, within limits) skip the general checks; the first record that is not
    plain has the whole request checked against the model (``check``), and then goes through
    ``_record`` for AWS's exact wording of the checks beyond it.
    """
    out: list[tuple[bytes, bytes, int]] = []
    append = out.append
    limit = stream.max_record_kib * 1024
    b64decode, md5 = pybase64.b64decode, hashlib.md5
    checked = False
    for i, item in enumerate(items):
        if type(item) is dict and len(item) == 2:
            data, key = item.get("Data"), item.get("PartitionKey")
            if type(data) is str and type(key) is str and 0 < len(key) <= 256:
                try:
                    blob = b64decode(data, validate=True)
                except (binascii.Error, ValueError):
                    blob = None
                if blob is not None:
                    key_bytes = key.encode("utf-8")
                    if len(blob) + len(key_bytes) <= limit:
                        append((key_bytes, blob,
                                int.from_bytes(md5(key_bytes, usedforsecurity=False).digest(), "big")))
                        continue
        if not checked:
            check()
            checked = True
        append(_record(stream, item, f"records.{i + 1}.member."))
    return out


async def put_record(store: ShardStore, request: Request) -> dict[str, Any]:
    name = _stream_name(store, request)
    stream = store.stream(name, data_op=True)
    record = _record(stream, request, "")
    sealed = stream.keys.sealing is not None  # what put() seals with: it decides before its first await
    (result,) = await store.put(name, [record])
    size = len(record[0]) + len(record[1])
    if store.metrics is not None:
        stored = result.error_code is None
        store.metrics.stored(name, int(stored), size if stored else 0, int(not stored))
        if stored:
            store.metrics.put_record_bytes.labels(name).inc(size)
        if stream.shard_metrics:
            shard_id = result.shard_id or stream.route(record[2])
            store.metrics.stored_in_shards(name, stream.shard_metrics,
                                           {shard_id: (1, size, 0) if stored else (0, 0, 1)})
    if result.error_code is not None:
        raise ProvisionedThroughputExceededException(result.error_message or "Rate exceeded.")
    return {"ShardId": result.shard_id, "SequenceNumber": result.sequence_number,
            "EncryptionType": "KMS" if sealed else "NONE"}


async def put_records(store: ShardStore, request: Request, check: Check) -> dict[str, Any]:
    items = request.get("Records")
    name = request.get("StreamName")
    if not (type(items) is list and 0 < len(items) <= MAX_PUT_RECORDS and request.get("StreamARN") is None
            and type(name) is str and 0 < len(name) <= 128 and _NAME.fullmatch(name)):
        check()
    name = _stream_name(store, request)
    found = store.streams.get(name)
    if found is None or found.status in ("CREATING", "DELETING"):
        check()  # the model's errors come before the stream's absence
    stream = store.stream(name, data_op=True)
    records = _records(stream, items, check)  # type: ignore[arg-type]
    total = sum(len(k) + len(d) for k, d, _h in records)
    if total > MAX_PUT_RECORDS_BYTES:
        raise InvalidArgumentException(f"Records size exceeds {MAX_PUT_RECORDS_BYTES // (1024 * 1024)} MB limit")
    sealed = stream.keys.sealing is not None  # what put() seals with: it decides before its first await
    results = await store.put(name, records)
    failed = 0
    out: list[dict[str, Any]] = []
    for r in results:
        if r.error_code is None:
            out.append({"SequenceNumber": r.sequence_number, "ShardId": r.shard_id})
        else:
            failed += 1
            out.append({"ErrorCode": r.error_code, "ErrorMessage": r.error_message})
    m = store.metrics
    if m is not None:
        size = sum(len(k) + len(d) for (k, d, _h), r in zip(records, results, strict=True) if r.error_code is None)
        throttled = sum(r.error_code == "ProvisionedThroughputExceededException" for r in results)
        m.stored(name, len(results) - failed, size, throttled)
        m.put_records_records.labels(name).inc(len(results))
        m.put_records_successful.labels(name).inc(len(results) - failed)
        m.put_records_bytes.labels(name).inc(size)
        if failed:
            m.put_records_failed.labels(name).inc(failed)
            m.put_records_throttled.labels(name).inc(throttled)
        if stream.shard_metrics:
            m.stored_in_shards(name, stream.shard_metrics, _per_shard(stream, records, results))
    return {"FailedRecordCount": failed, "Records": out, "EncryptionType": "KMS" if sealed else "NONE"}


def _per_shard(stream: Stream, records: list[tuple[bytes, bytes, int]],
               results: list[Any]) -> dict[str, tuple[int, int, int]]:
    """Shard id → (records stored, bytes stored, records throttled), for shard-level metrics only."""
    out: dict[str, list[int]] = {}
    for (key, data, hash_key), r in zip(records, results, strict=True):
        shard_id = r.shard_id or stream.route(hash_key)
        figures = out.setdefault(shard_id, [0, 0, 0])
        if r.error_code is None:
            figures[0] += 1
            figures[1] += len(key) + len(data)
        elif r.error_code == "ProvisionedThroughputExceededException":
            figures[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


#: The start of AWS's answer to a ShardIteratorType and StartingSequenceNumber that do not go together.
_SEQUENCE_TYPES = ("Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or "
                   "(2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified")


async def get_shard_iterator(store: ShardStore, request: Request) -> dict[str, Any]:
    """AWS's order (kinesalite's recordings): the shard id, the stream and shard, then the type's members."""
    kind = request["ShardIteratorType"]
    start_seq = request.get("StartingSequenceNumber")
    name = _stream_name(store, request)
    shard_id = store.iterator_shard(name, request["ShardId"])
    timestamp_ms = None
    if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and start_seq is None:
        raise InvalidArgumentException(f"{_SEQUENCE_TYPES} {kind} and no StartingSequenceNumber.")
    if kind not in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and start_seq is not None:
        raise InvalidArgumentException(f"{_SEQUENCE_TYPES} {kind} and also a StartingSequenceNumber.")
    if kind == "AT_TIMESTAMP":
        if request.get("Timestamp") is None:
            raise InvalidArgumentException("Must specify timestampInMillis parameter for iterator of type "
                                           "AT_TIMESTAMP. Current request has no timestamp parameter.")
        timestamp_ms = _timestamp_ms(request["Timestamp"])
    elif request.get("Timestamp") is not None:
        raise InvalidArgumentException(f"Request specified timestampInMillis for {kind} type of ShardIterator, "
                                       "but it should not be specified.")
    token = store.iterator(name, shard_id, kind, sequence_number=start_seq, timestamp_ms=timestamp_ms)
    return {"ShardIterator": token}


def _iterator(request: Request) -> Any:
    """The ShardIterator, without the double quotes around it some clients send (AWS accepts them)."""
    token = request.get("ShardIterator")
    if isinstance(token, str) and len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def _enabled(store: ShardStore, name: str) -> list[str]:
    stream = store.streams.get(name)
    return stream.shard_metrics if stream is not None else []


#: A GetRecords record's EncryptionType: "KMS" for one stored encrypted; none for a plain one, as before.
_KMS = {"EncryptionType": "KMS"}
_PLAIN: dict[str, str] = {}


async def get_records(store: ShardStore, request: Request) -> dict[str, Any]:
    token = _iterator(request)
    arn = request.get("StreamARN")
    if arn is not None and iterators.stream_of(token) != arn.split(":", 5)[5].removeprefix(
            "stream/"):
        # The ARN chose the store (and the policy that authorized the call): the iterator must be of its stream.
        raise InvalidArgumentException("Invalid ShardIterator.")
    try:
        result = store.get_records(token, request.get("Limit") or 10000)
    except ProvisionedThroughputExceededException:
        if store.metrics is not None:
            it = iterators.parse(store.key, token)
            name = it.stream if it is not None else ""
            store.metrics.read_refused(name, shardids.name(it.shard_index) if it is not None else None,
                                       _enabled(store, name))
        raise
    if store.metrics is not None and result.shard_id is not None:
        last = result.records[-1].arrival_ms if result.records else None
        store.metrics.read(result.stream, result.shard_id, len(result.records),
                           sum(len(r.data) + len(r.partition_key) for r in result.records),
                           max(0, now_ms() - last) if last is not None else result.millis_behind,
                           _enabled(store, result.stream))
    out: dict[str, Any] = {
        "Records": [{"SequenceNumber": r.sequence_number, "ApproximateArrivalTimestamp": r.arrival_ms / 1000,
                     "Data": r.data, "PartitionKey": r.partition_key, **(_KMS if r.sealed else _PLAIN)}
                    for r in result.records],
        "MillisBehindLatest": result.millis_behind,
    }
    if result.next_iterator is not None:
        out["NextShardIterator"] = result.next_iterator
    if result.children is not None:
        out["ChildShards"] = [{"ShardId": c.shard_id, "ParentShards": c.parents,
                               "HashKeyRange": {"StartingHashKey": str(c.start), "EndingHashKey": str(c.end)}}
                              for c in result.children]
    return out


# -- what each call acts on, for authorization ----------------------------------------------


def _arn(caller: Caller, name: Any) -> str:
    return f"arn:aws:kinesis:{caller.region}:{caller.account_id}:stream/{name if isinstance(name, str) else ''}"


def stream_arn(request: Request, caller: Caller) -> str:
    """The stream a request names (by StreamARN, else StreamName)."""
    arn = request.get("StreamARN")
    return arn if isinstance(arn, str) and arn else _arn(caller, request.get("StreamName"))


def resource_arn(request: Request, caller: Caller) -> str:
    """The resource a tagging-by-ARN call names."""
    arn = request.get("ResourceARN")
    return arn if isinstance(arn, str) and arn else "*"


def iterator_stream_arn(request: Request, caller: Caller) -> str:
    """GetRecords names its stream by StreamARN (a cross-account read), or its iterator does (read without
    trusting it; the store verifies it)."""
    arn = request.get("StreamARN")
    if isinstance(arn, str) and arn:
        return arn
    token = _iterator(request)
    return _arn(caller, iterators.stream_of(token) if isinstance(token, str) else None)


def shards_stream_arn(request: Request, caller: Caller) -> str:
    """ListShards names its stream, or carries it in NextToken."""
    token = request.get("NextToken")
    if isinstance(token, str):
        body = _token_body(token)
        return _arn(caller, body.get("stream") if body else None)
    return stream_arn(request, caller)


OPERATIONS: dict[str, Operation] = {
    "CreateStream": Operation(create_stream, stream_arn),
    "DeleteStream": Operation(delete_stream, stream_arn),
    "DescribeStream": Operation(describe_stream, stream_arn),
    "DescribeStreamSummary": Operation(describe_stream_summary, stream_arn),
    "ListStreams": Operation(list_streams),
    "ListShards": Operation(list_shards, shards_stream_arn),
    "PutRecord": Operation(put_record, stream_arn),
    "PutRecords": Operation(put_records, stream_arn, self_validating=True),
    "GetShardIterator": Operation(get_shard_iterator, stream_arn),
    "GetRecords": Operation(get_records, iterator_stream_arn),
    "IncreaseStreamRetentionPeriod": Operation(increase_retention, stream_arn),
    "DecreaseStreamRetentionPeriod": Operation(decrease_retention, stream_arn),
    "SplitShard": Operation(split_shard, stream_arn),
    "MergeShards": Operation(merge_shards, stream_arn),
    "UpdateShardCount": Operation(update_shard_count, stream_arn),
    "AddTagsToStream": Operation(add_tags, stream_arn),
    "ListTagsForStream": Operation(list_tags, stream_arn),
    "RemoveTagsFromStream": Operation(remove_tags, stream_arn),
    "UpdateStreamMode": Operation(capacity.update_stream_mode, stream_arn),
    "UpdateMaxRecordSize": Operation(capacity.update_max_record_size, stream_arn),
    "DescribeLimits": Operation(limits.describe_limits),
    "EnableEnhancedMonitoring": Operation(monitoring.enable_enhanced_monitoring, stream_arn),
    "DisableEnhancedMonitoring": Operation(monitoring.disable_enhanced_monitoring, stream_arn),
    "TagResource": Operation(tagging.tag_resource, resource_arn),
    "UntagResource": Operation(tagging.untag_resource, resource_arn),
    "ListTagsForResource": Operation(tagging.list_tags_for_resource, resource_arn),
    "PutResourcePolicy": Operation(policies.put_resource_policy, policies.resource_arn, grantable=False),
    "GetResourcePolicy": Operation(policies.get_resource_policy, policies.resource_arn, grantable=False),
    "DeleteResourcePolicy": Operation(policies.delete_resource_policy, policies.resource_arn, grantable=False),
    "StartStreamEncryption": Operation(start_stream_encryption, stream_arn),
    "StopStreamEncryption": Operation(stop_stream_encryption, stream_arn),
    "RegisterStreamConsumer": Operation(consumers.register_stream_consumer, stream_arn),
    "DescribeStreamConsumer": Operation(consumers.describe_stream_consumer, consumers.consumer_resource),
    "ListStreamConsumers": Operation(consumers.list_stream_consumers, stream_arn),
    "DeregisterStreamConsumer": Operation(consumers.deregister_stream_consumer, consumers.consumer_resource),
    "SubscribeToShard": Operation(subscriptions.subscribe_to_shard, consumers.consumer_resource),
}
