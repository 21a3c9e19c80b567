"""The Kinesis_20131202.* operations: validate a request as AWS does, call the store, shape the answer.

Requests arrive as plain dicts from either wire form: in JSON, blobs are
base64 strings and timestamps epoch seconds; in CBOR (``cbor.py``), blobs are
bytes and timestamps already epoch seconds. Answers use bytes for blobs and
epoch seconds for timestamps, and each wire form encodes them its own way.

Validation follows AWS's order and wording: shape constraints first, all of
them reported together as a ``ValidationException`` ("1 validation error
detected: Value ... at 'streamName' failed to satisfy constraint: ..."), then
the operation's own checks (``InvalidArgumentException``,
``ResourceNotFoundException`` ...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pybase64

from firehose.streams import hashkeys, sequence
from firehose.streams.errors import (
    ExpiredNextTokenException,
    InvalidArgumentException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from firehose.streams.store import ON_DEMAND_SHARDS, Shard, ShardStore, Stream

Request = dict[str, Any]
Handler = Callable[[ShardStore, Request], Awaitable[dict[str, Any]]]

_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_ARN = re.compile(r"arn:aws.*:kinesis:.*:\d{12}:stream/\S+")
_SHARD_ID = re.compile(r"[a-zA-Z0-9_.-]+")
_TOKEN_TTL_S = 300
_ITERATOR_TYPES = ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_FILTER_TYPES = ("AFTER_SHARD_ID", "AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST", "AT_TIMESTAMP",
                 "FROM_TIMESTAMP")
MAX_PUT_RECORDS = 500
MAX_PUT_RECORDS_BYTES = 5 * 1024 * 1024


class _Checks:
    """Collects shape violations so they are reported together, as AWS does."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.errors: list[str] = []

    def fail(self, value: Any, member: str, constraint: str) -> None:
        shown = "null" if value is None else f"'{value}'" if not isinstance(value, (int, float)) else str(value)
        self.errors.append(f"Value {shown} at '{member}' failed to satisfy constraint: {constraint}")

    def _member(self, name: str, required: bool) -> tuple[Any, str]:
        """The request's value of ``name`` and its member name in messages (``StreamName`` is
        ``streamName``); a missing required member is recorded as a violation."""
        value = self.request.get(name)
        member = name[:1].lower() + name[1:]
        if value is None and required:
            self.fail(None, member, "Member must not be null")
        return value, member

    def string(self, name: str, *, required: bool = False, min_len: int = 1, max_len: int | None = None,
               pattern: re.Pattern[str] | None = None, pattern_text: str = "") -> str | None:
        value, member = self._member(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise SerializationException(f"Unexpected value type for {name}: expected a string.")
        if len(value) < min_len:
            self.fail(value, member, f"Member must have length greater than or equal to {min_len}")
        elif max_len is not None and len(value) > max_len:
            self.fail(value, member, f"Member must have length less than or equal to {max_len}")
        elif pattern is not None and not pattern.fullmatch(value):
            self.fail(value, member, f"Member must satisfy regular expression pattern: {pattern_text}")
        return value

    def integer(self, name: str, *, required: bool = False, low: int | None = None,
                high: int | None = None) -> int | None:
        value, member = self._member(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SerializationException(f"Unexpected value type for {name}: expected an integer.")
        if low is not None and value < low:
            self.fail(value, member, f"Member must have value greater than or equal to {low}")
        elif high is not None and value > high:
            self.fail(value, member, f"Member must have value less than or equal to {high}")
        return value

    def done(self) -> None:
        if self.errors:
            n = len(self.errors)
            raise ValidationException(f"{n} validation error{'s' if n > 1 else ''} detected: "
                                      + "; ".join(self.errors))


def _stream_name(store: ShardStore, request: Request, checks: _Checks) -> str:
    """The stream a request names by StreamName or StreamARN (or both, if they agree)."""
    name = checks.string("StreamName", max_len=128, pattern=_NAME, pattern_text="[a-zA-Z0-9_.-]+")
    arn = checks.string("StreamARN", max_len=2048, pattern=_ARN,
                        pattern_text="arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+")
    if name is None and arn is None:
        checks.fail(None, "streamName", "Member must not be null")
    checks.done()
    if arn is not None:
        parts = arn.split(":", 5)
        from_arn = parts[5].removeprefix("stream/")
        if name is not None and name != from_arn:
            raise InvalidArgumentException(f"StreamARN {arn} and StreamName {name} name different streams.")
        if parts[3] != store.options.region or parts[4] != store.options.account_id:
            raise ResourceNotFoundException(f"Stream {from_arn} under account {parts[4]} not found.")
        return from_arn
    assert name is not None
    return name


def _blob(value: Any, member: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise SerializationException(f"Unexpected value type for {member}: expected base64 data.")
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(f"Base64 encoded data for {member} is invalid.") from None


def _timestamp_ms(value: Any, member: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                return int(float(value) * 1000)
            except ValueError:
                pass
        raise SerializationException(f"Unexpected value type for {member}: expected a timestamp.")
    return int(round(value * 1000))


def _secs(ms: int) -> float:
    return ms / 1000


# -- control plane ------------------------------------------------------------------------


async def create_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    name = checks.string("StreamName", required=True, max_len=128, pattern=_NAME, pattern_text="[a-zA-Z0-9_.-]+")
    count = checks.integer("ShardCount", low=1, high=100000)
    max_kib = checks.integer("MaxRecordSizeInKiB", low=1024, high=10240)
    checks.done()
    mode_details = request.get("StreamModeDetails") or {}
    mode = mode_details.get("StreamMode", "PROVISIONED") if isinstance(mode_details, dict) else None
    if mode not in ("PROVISIONED", "ON_DEMAND"):
        raise ValidationException(f"1 validation error detected: Value '{mode}' at 'streamModeDetails.streamMode' "
                                  "failed to satisfy constraint: Member must satisfy enum value set: "
                                  "[PROVISIONED, ON_DEMAND]")
    if count is None:
        if mode == "PROVISIONED":
            raise InvalidArgumentException("ShardCount is required for PROVISIONED streams.")
        count = ON_DEMAND_SHARDS
    tags = request.get("Tags") or {}
    _check_tags(tags)
    assert name is not None
    store.create_stream(name, count, mode=mode, tags=tags, max_record_kib=max_kib or 1024)
    return {}


def _check_tags(tags: Any) -> None:
    if not isinstance(tags, dict):
        raise SerializationException("Tags must be a map of tag keys to values.")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise InvalidArgumentException(f"Tag key {key!r} must be 1 to 128 characters.")
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidArgumentException(f"Tag value for {key!r} must be a string of at most 256 characters.")
    if len(tags) > 50:
        raise InvalidArgumentException("A stream cannot have more than 50 tags.")


async def delete_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    name = _stream_name(store, request, _Checks(request))
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


def _common(stream: Stream) -> dict[str, Any]:
    return {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "StreamStatus": stream.status,
        "StreamModeDetails": {"StreamMode": stream.mode},
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": _secs(stream.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }


async def describe_stream(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    limit = checks.integer("Limit", low=1, high=10000)
    start = checks.string("ExclusiveStartShardId", max_len=128, pattern=_SHARD_ID,
                          pattern_text="[a-zA-Z0-9_.-]+")
    name = _stream_name(store, request, checks)
    stream = store.stream(name)
    limit = min(limit or 100, 100)
    shards = [s for s in stream.shards if start is None or s.shard_id > start]
    page = shards[:limit]
    description = _common(stream)
    description["Shards"] = [_shard_shape(stream, s) for s in page]
    description["HasMoreShards"] = len(shards) > limit
    return {"StreamDescription": description}


async def describe_stream_summary(store: ShardStore, request: Request) -> dict[str, Any]:
    stream = store.stream(_stream_name(store, request, _Checks(request)))
    summary = _common(stream)
    summary.update(OpenShardCount=len(stream.open_shards()), ConsumerCount=0,
                   MaxRecordSizeInKiB=stream.max_record_kib)
    return {"StreamDescriptionSummary": summary}


async def list_streams(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    limit = checks.integer("Limit", low=1, high=10000) or 100
    start = checks.string("ExclusiveStartStreamName", max_len=128, pattern=_NAME, pattern_text="[a-zA-Z0-9_.-]+")
    token = checks.string("NextToken", max_len=1048576)
    checks.done()
    if token is not None:
        start = _read_token(token, "ListStreams")["after"]
    names = sorted(n for n in store.streams if start is None or n > start)
    page = names[:limit]
    more = len(names) > limit
    out: dict[str, Any] = {
        "StreamNames": page,
        "HasMoreStreams": more,
        "StreamSummaries": [{"StreamName": s.name, "StreamARN": s.arn, "StreamStatus": s.status,
                             "StreamModeDetails": {"StreamMode": s.mode},
                             "StreamCreationTimestamp": _secs(s.created_ms)}
                            for s in (store.streams[n] for n in page)],
    }
    if more:
        out["NextToken"] = _make_token({"op": "ListStreams", "after": page[-1]})
    return out


def _make_token(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({**body, "t": int(time.time())})).decode()


def _read_token(token: str, op: str) -> dict[str, Any]:
    try:
        body = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        assert isinstance(body, dict) and body.get("op") == op
    except (ValueError, AssertionError, orjson.JSONDecodeError):
        raise InvalidArgumentException(f"Invalid NextToken: {token[:64]}") from None
    if time.time() - body["t"] > _TOKEN_TTL_S:
        raise ExpiredNextTokenException(f"The token {token[:64]} has expired; tokens are valid for "
                                        f"{_TOKEN_TTL_S} seconds.")
    return body


async def list_shards(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    token = checks.string("NextToken", max_len=1048576)
    max_results = checks.integer("MaxResults", low=1, high=10000) or 1000
    start = checks.string("ExclusiveStartShardId", max_len=128, pattern=_SHARD_ID,
                          pattern_text="[a-zA-Z0-9_.-]+")
    checks.done()
    shard_filter = request.get("ShardFilter")
    if token is not None:
        if request.get("StreamName") is not None or request.get("StreamARN") is not None:
            raise InvalidArgumentException("NextToken and StreamName cannot be provided together.")
        body = _read_token(token, "ListShards")
        name, start, shard_filter = body["stream"], body["after"], body.get("filter")
        stream = store.streams.get(name)
        if stream is None or stream.created_ms != body["created"]:
            raise ResourceNotFoundException(f"Stream {name} under account {store.options.account_id} not found.")
    else:
        stream = store.stream(_stream_name(store, request, checks))
        if stream.status == "CREATING":
            raise ResourceInUseException(f"Stream {stream.name} under account {store.options.account_id} not "
                                         f"ACTIVE, instead in state {stream.status}")
    shards = _filter_shards(stream, shard_filter)
    if start is not None:
        shards = [s for s in shards if s.shard_id > start]
    page = shards[:max_results]
    out: dict[str, Any] = {"Shards": [_shard_shape(stream, s) for s in page]}
    if len(shards) > max_results:
        out["NextToken"] = _make_token({"op": "ListShards", "stream": stream.name, "created": stream.created_ms,
                                        "after": page[-1].shard_id, "filter": shard_filter})
    return out


def _filter_shards(stream: Stream, shard_filter: Any) -> list[Shard]:
    shards = sorted(stream.shards, key=lambda s: s.index)
    if shard_filter is None:
        return shards
    if not isinstance(shard_filter, dict) or shard_filter.get("Type") not in _FILTER_TYPES:
        raise ValidationException("1 validation error detected: Value at 'shardFilter.type' failed to satisfy "
                                  "constraint: Member must satisfy enum value set: [" + ", ".join(_FILTER_TYPES)
                                  + "]")
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
    at = _timestamp_ms(shard_filter["Timestamp"], "ShardFilter.Timestamp")
    if kind == "AT_TIMESTAMP":
        return [s for s in shards if s.created_ms <= at and (s.closed_ms is None or s.closed_ms > at)]
    return [s for s in shards if s.closed_ms is None or s.closed_ms >= at]


async def _retention(store: ShardStore, request: Request, *, increase: bool) -> dict[str, Any]:
    checks = _Checks(request)
    hours = checks.integer("RetentionPeriodHours", required=True, low=1, high=100000)
    name = _stream_name(store, request, checks)
    assert hours is not None
    store.set_retention(name, hours, increase=increase)
    return {}


async def increase_retention(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _retention(store, request, increase=True)


async def decrease_retention(store: ShardStore, request: Request) -> dict[str, Any]:
    return await _retention(store, request, increase=False)


async def split_shard(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    shard_id = checks.string("ShardToSplit", required=True, max_len=128, pattern=_SHARD_ID,
                             pattern_text="[a-zA-Z0-9_.-]+")
    new_start = checks.string("NewStartingHashKey", required=True, pattern=re.compile(r"0|([1-9]\d{0,38})"),
                              pattern_text="0|([1-9]\\d{0,38})")
    name = _stream_name(store, request, checks)
    key = hashkeys.parse_hash_key(new_start)
    if key is None:
        raise InvalidArgumentException(f"NewStartingHashKey {new_start} is outside the hash key range "
                                       f"[0, {hashkeys.MAX_HASH_KEY}].")
    assert shard_id is not None
    store.split_shard(name, shard_id, key)
    return {}


async def merge_shards(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    first = checks.string("ShardToMerge", required=True, max_len=128, pattern=_SHARD_ID,
                          pattern_text="[a-zA-Z0-9_.-]+")
    second = checks.string("AdjacentShardToMerge", required=True, max_len=128, pattern=_SHARD_ID,
                           pattern_text="[a-zA-Z0-9_.-]+")
    name = _stream_name(store, request, checks)
    assert first is not None and second is not None
    store.merge_shards(name, first, second)
    return {}


async def update_shard_count(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    target = checks.integer("TargetShardCount", required=True, low=1, high=10000)
    scaling = checks.string("ScalingType", required=True)
    if scaling is not None and scaling != "UNIFORM_SCALING":
        checks.fail(scaling, "scalingType", "Member must satisfy enum value set: [UNIFORM_SCALING]")
    name = _stream_name(store, request, checks)
    assert target is not None
    current = store.update_shard_count(name, target)
    stream = store.stream(name)
    return {"StreamName": name, "CurrentShardCount": current, "TargetShardCount": target, "StreamARN": stream.arn}


async def add_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    name = _stream_name(store, request, checks)
    tags = request.get("Tags")
    if not tags:
        raise ValidationException("1 validation error detected: Value null at 'tags' failed to satisfy constraint: "
                                  "Member must not be null")
    _check_tags(tags)
    store.add_tags(name, tags)
    return {}


async def list_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    limit = checks.integer("Limit", low=1, high=50) or 50
    start = checks.string("ExclusiveStartTagKey", max_len=128)
    stream = store.stream(_stream_name(store, request, checks))
    keys = sorted(k for k in stream.tags if start is None or k > start)
    return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in keys[:limit]], "HasMoreTags": len(keys) > limit}


async def remove_tags(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    keys = request.get("TagKeys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= 50:
        checks.fail(None if keys is None else keys, "tagKeys",
                    "Member must not be null" if keys is None else "Member must have length between 1 and 50")
    name = _stream_name(store, request, checks)
    store.remove_tags(name, keys)  # type: ignore[arg-type]
    return {}


# -- data plane ----------------------------------------------------------------------------


def _record(stream: Stream, item: Any, member: str) -> tuple[bytes, bytes, int]:
    """(partition key bytes, data, hash key) of one record, or raise as AWS does."""
    if not isinstance(item, dict):
        raise SerializationException(f"{member} must be an object.")
    data = item.get("Data")
    key = item.get("PartitionKey")
    checks = _Checks(item)
    if data is None:
        checks.fail(None, f"{member}.data", "Member must not be null")
    if key is None:
        checks.fail(None, f"{member}.partitionKey", "Member must not be null")
    elif not isinstance(key, str):
        raise SerializationException("Unexpected value type for PartitionKey: expected a string.")
    elif not 1 <= len(key) <= 256:
        checks.fail(key, f"{member}.partitionKey",
                    "Member must have length " + ("greater than or equal to 1" if not key
                                                  else "less than or equal to 256"))
    explicit = item.get("ExplicitHashKey")
    if explicit is not None and not (isinstance(explicit, str) and re.fullmatch(r"0|([1-9]\d{0,38})", explicit)):
        checks.fail(explicit, f"{member}.explicitHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})")
    checks.done()
    blob = _blob(data, "Data")
    key_bytes = key.encode("utf-8")  # type: ignore[union-attr]
    limit = stream.max_record_kib * 1024
    if len(blob) + len(key_bytes) > limit:
        raise ValidationException(
            f"1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim={len(blob)} cap={len(blob)}]' "
            f"at '{member}.data' failed to satisfy constraint: Member must have length less than or equal to "
            f"{limit - len(key_bytes)}")
    if explicit is not None:
        hash_key = hashkeys.parse_hash_key(explicit)
        if hash_key is None:
            raise InvalidArgumentException(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was "
                f"{explicit}")
    else:
        hash_key = hashkeys.hash_key(key)  # type: ignore[arg-type]
    return key_bytes, blob, hash_key


def _records(stream: Stream, items: list[Any]) -> list[tuple[bytes, bytes, int]]:
    """Every record of a PutRecords call, checked; the common shape takes a short path.

    This loop runs for every record the sidecar stores, so plain records (string data and key,
    no explicit hash key, within limits) skip the general checker; anything else, including
    every error, goes through ``_record`` for AWS's exact wording.
    """
    out: list[tuple[bytes, bytes, int]] = []
    append = out.append
    limit = stream.max_record_kib * 1024
    b64decode, md5 = pybase64.b64decode, hashlib.md5
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
        append(_record(stream, item, f"records.{i + 1}.member"))
    return out


async def put_record(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    name = _stream_name(store, request, checks)
    ordering = request.get("SequenceNumberForOrdering")
    if ordering is not None and not sequence.is_well_formed(ordering):
        raise ValidationException(f"1 validation error detected: Value '{ordering}' at 'sequenceNumberForOrdering' "
                                  "failed to satisfy constraint: Member must satisfy regular expression pattern: "
                                  "0|([1-9]\\d{0,128})")
    stream = store.stream(name, data_op=True)
    record = _record(stream, request, "")
    (result,) = await store.put(name, [record])
    if result.error_code is not None:
        raise ProvisionedThroughputExceededException(result.error_message or "Rate exceeded.")
    return {"ShardId": result.shard_id, "SequenceNumber": result.sequence_number, "EncryptionType": "NONE"}


async def put_records(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    items = request.get("Records")
    if items is None:
        checks.fail(None, "records", "Member must not be null")
    elif not isinstance(items, list):
        raise SerializationException("Records must be a list.")
    elif not 1 <= len(items) <= MAX_PUT_RECORDS:
        checks.fail(f"[{len(items)} records]", "records",
                    "Member must have length " + ("greater than or equal to 1" if not items
                                                  else f"less than or equal to {MAX_PUT_RECORDS}"))
    name = _stream_name(store, request, checks)
    stream = store.stream(name, data_op=True)
    records = _records(stream, items)  # type: ignore[arg-type]
    total = sum(len(k) + len(d) for k, d, _h in records)
    if total > MAX_PUT_RECORDS_BYTES:
        raise InvalidArgumentException(f"Records size exceeds {MAX_PUT_RECORDS_BYTES // (1024 * 1024)} MB limit")
    results = await store.put(name, records)
    failed = 0
    out: list[dict[str, Any]] = []
    for r in results:
        if r.error_code is None:
            out.append({"SequenceNumber": r.sequence_number, "ShardId": r.shard_id})
        else:
            failed += 1
            out.append({"ErrorCode": r.error_code, "ErrorMessage": r.error_message})
    return {"FailedRecordCount": failed, "Records": out, "EncryptionType": "NONE"}


async def get_shard_iterator(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    shard_id = checks.string("ShardId", required=True, max_len=128, pattern=_SHARD_ID,
                             pattern_text="[a-zA-Z0-9_.-]+")
    kind = checks.string("ShardIteratorType", required=True)
    if kind is not None and kind not in _ITERATOR_TYPES:
        checks.fail(kind, "shardIteratorType", "Member must satisfy enum value set: [" + ", ".join(_ITERATOR_TYPES)
                    + "]")
    start_seq = checks.string("StartingSequenceNumber", pattern=re.compile(r"0|([1-9]\d{0,128})"),
                              pattern_text="0|([1-9]\\d{0,128})")
    name = _stream_name(store, request, checks)
    assert shard_id is not None and kind is not None
    timestamp_ms = None
    if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and start_seq is None:
        raise InvalidArgumentException(f"Must specify StartingSequenceNumber for {kind} type of ShardIterator.")
    if kind not in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and start_seq is not None:
        raise InvalidArgumentException(f"Request specified StartingSequenceNumber for {kind} type of ShardIterator, "
                                       "but it should not be specified.")
    if kind == "AT_TIMESTAMP":
        if request.get("Timestamp") is None:
            raise InvalidArgumentException("Must specify timestampInMillis parameter for iterator of type "
                                           "AT_TIMESTAMP. Current request has no timestamp parameter.")
        timestamp_ms = _timestamp_ms(request["Timestamp"], "Timestamp")
    elif request.get("Timestamp") is not None:
        raise InvalidArgumentException(f"Request specified timestampInMillis for {kind} type of ShardIterator, "
                                       "but it should not be specified.")
    token = store.iterator(name, shard_id, kind, sequence_number=start_seq, timestamp_ms=timestamp_ms)
    return {"ShardIterator": token}


async def get_records(store: ShardStore, request: Request) -> dict[str, Any]:
    checks = _Checks(request)
    token = checks.string("ShardIterator", required=True, max_len=512)
    limit = checks.integer("Limit", low=1, high=10000)
    checks.done()
    assert token is not None
    result = store.get_records(token, limit or 10000)
    out: dict[str, Any] = {
        "Records": [{"SequenceNumber": r.sequence_number, "ApproximateArrivalTimestamp": r.arrival_ms / 1000,
                     "Data": r.data, "PartitionKey": r.partition_key} for r in result.records],
        "MillisBehindLatest": result.millis_behind,
    }
    if result.next_iterator is not None:
        out["NextShardIterator"] = result.next_iterator
    if result.children is not None:
        out["ChildShards"] = [{"ShardId": c.shard_id, "ParentShards": c.parents,
                               "HashKeyRange": {"StartingHashKey": str(c.start), "EndingHashKey": str(c.end)}}
                              for c in result.children]
    return out


OPERATIONS: dict[str, Handler] = {
    "CreateStream": create_stream,
    "DeleteStream": delete_stream,
    "DescribeStream": describe_stream,
    "DescribeStreamSummary": describe_stream_summary,
    "ListStreams": list_streams,
    "ListShards": list_shards,
    "PutRecord": put_record,
    "PutRecords": put_records,
    "GetShardIterator": get_shard_iterator,
    "GetRecords": get_records,
    "IncreaseStreamRetentionPeriod": increase_retention,
    "DecreaseStreamRetentionPeriod": decrease_retention,
    "SplitShard": split_shard,
    "MergeShards": merge_shards,
    "UpdateShardCount": update_shard_count,
    "AddTagsToStream": add_tags,
    "ListTagsForStream": list_tags,
    "RemoveTagsFromStream": remove_tags,
}
