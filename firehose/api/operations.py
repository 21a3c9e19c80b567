"""One coroutine per Firehose operation, and the ``OPERATIONS`` table keyed by AWS name.

Operations take the decoded JSON body and return the response body. They know
nothing about HTTP; errors are raised as ``FirehoseError`` subclasses.

PutRecordBatch is the hot path and is written by hand: it validates the
call-level limits, decodes every record's base64 with a SIMD decoder, rejects
bad records *one by one* (a record with bad base64, no data, or over 1,000 KiB
gets its own ``ErrorCode`` while the others are accepted), hands the good ones
to the spool as one entry, and answers only when that entry is fsynced.
Per-record rejection goes beyond AWS, which refuses the whole call for some of
these; a client that resends failed entries then loses nothing but the bad
record. Call-level problems (no records, over 500, over 4 MiB in total,
unknown stream) still fail the whole call, as on AWS.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybase64
from pydantic import ValidationError

from firehose.api import shapes
from firehose.awsjson import epoch_seconds, validation_message
from firehose.catalog import DESTINATION_ID, Catalog, StreamState
from firehose.definitions import DeliveryStreamDefinition, Shape
from firehose.errors import (
    InvalidArgumentException,
    ResourceNotFoundException,
    SerializationException,
)
from firehose.settings import Settings
from firehose.spool import Spool, StreamSpool
from firehose.telemetry import Metrics

Body = dict[str, Any]
M = TypeVar("M", bound=Shape)


@dataclass
class Services:
    """What the operations need, handed in by the daemon."""

    catalog: Catalog
    spool: Spool
    stream_spool: Callable[[StreamState], StreamSpool]
    metrics: Metrics
    settings: Settings

    def arn(self, name: str) -> str:
        return f"arn:aws:firehose:{self.settings.region}:{self.settings.account_id}:deliverystream/{name}"


def _parse(model: type[M], body: Body) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidArgumentException(validation_message(exc)) from exc


def _missing(member: str) -> InvalidArgumentException:
    return InvalidArgumentException(
        f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: "
        "Member must not be null")


def _stream_name(body: Body) -> str:
    name = body.get("DeliveryStreamName")
    if not isinstance(name, str):
        if name is None:
            raise _missing("deliveryStreamName")
        raise SerializationException("DeliveryStreamName must be a string")
    if not 1 <= len(name) <= 64 or not shapes.STREAM_NAME_RE.match(name):
        raise InvalidArgumentException(
            f"1 validation error detected: Value '{name[:100]}' at 'deliveryStreamName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ "
            "and have length between 1 and 64")
    return name


def _writable(svc: Services, name: str) -> StreamState:
    state = svc.catalog.find(name)
    if state is None:
        raise ResourceNotFoundException(f"Firehose {name} under account {svc.settings.account_id} not found.")
    status = state.status
    if status != "ACTIVE":
        raise ResourceNotFoundException(f"Firehose {name} is {status}, not ACTIVE; retry when it is ACTIVE.")
    if state.definition.delivery_stream_type != "DirectPut":
        raise InvalidArgumentException(
            f"This operation is not permitted on KinesisStreamAsSource delivery stream type for {name}.")
    return state


def _decode(record: Any, index: int) -> bytes | str:
    """The record's bytes, or the reason it is refused."""
    data = record.get("Data") if isinstance(record, dict) else None
    if not isinstance(data, str):
        return f"Record {index}: Data is required and must be a base64 string."
    try:
        raw = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return f"Record {index}: Data is not valid base64."
    if not raw:
        return f"Record {index}: Data must not be empty."
    if len(raw) > shapes.MAX_RECORD_BYTES:
        return f"Record {index}: Data is {len(raw)} bytes decoded; the limit is {shapes.MAX_RECORD_BYTES}."
    return raw


def _decode_all(records: list[Any]) -> tuple[list[bytes], list[int | str] | None]:
    """Decode a batch: (good records, per-record slots or None when all are good).

    The common case, every record valid, runs as one comprehension; only a
    batch with a bad record pays for the record-by-record path that says which
    one and why.
    """
    try:
        good = [pybase64.b64decode(r["Data"], validate=True) for r in records]
        if min(map(len, good)) > 0 and max(map(len, good)) <= shapes.MAX_RECORD_BYTES:
            return good, None
    except (binascii.Error, ValueError, TypeError, KeyError):
        pass
    good = []
    slots: list[int | str] = []  # per input record: index in the spool entry, or the error message
    for i, record in enumerate(records):
        raw = _decode(record, i)
        if isinstance(raw, str):
            slots.append(raw)
        else:
            slots.append(len(good))
            good.append(raw)
    return good, slots


#: Record ids are <incarnation><entry seq, 16 hex><index in the entry, 4 hex>.
_ID_SUFFIXES = [f"{i:04x}" for i in range(shapes.MAX_BATCH_RECORDS)]


async def _accept(svc: Services, state: StreamState, records: list[bytes], arrival_ms: int, total: int) -> str:
    """Spool the records durably; returns the record-id prefix of their entry.

    Record ids are unique across the stream's life: incarnation (new per
    create), entry sequence number, index in the entry.
    """
    seq = await svc.spool.append(svc.stream_spool(state), records, arrival_ms, total)
    svc.metrics.incoming_records.labels(state.name).inc(len(records))
    svc.metrics.incoming_bytes.labels(state.name).inc(total)
    return f"{state.incarnation}{seq:016x}"


async def put_record_batch(svc: Services, body: Body) -> Body:
    arrival_ms = int(time.time() * 1000)
    name = _stream_name(body)
    records = body.get("Records")
    if not isinstance(records, list):
        raise _missing("records")
    n = len(records)
    if n == 0 or n > shapes.MAX_BATCH_RECORDS:
        raise InvalidArgumentException(
            f"1 validation error detected: Value '{n}' records at 'records' failed to satisfy constraint: "
            f"Member must have length between 1 and {shapes.MAX_BATCH_RECORDS}")
    state = _writable(svc, name)
    good, slots = _decode_all(records)
    total = sum(map(len, good))
    if total > shapes.MAX_BATCH_BYTES:
        raise InvalidArgumentException(
            f"Records total {total} bytes decoded; PutRecordBatch accepts at most {shapes.MAX_BATCH_BYTES} "
            "bytes per call.")
    base = await _accept(svc, state, good, arrival_ms, total) if good else ""
    failed = n - len(good)
    if failed:
        svc.metrics.failed_records.labels(name, "InvalidArgumentException").inc(failed)
    if slots is None:  # every record accepted, in order
        responses = [{"RecordId": base + suffix} for suffix in _ID_SUFFIXES[:n]]
    else:
        responses = [
            {"RecordId": base + _ID_SUFFIXES[slot]} if isinstance(slot, int)
            else {"ErrorCode": "InvalidArgumentException", "ErrorMessage": slot}
            for slot in slots
        ]
    return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}


async def put_record(svc: Services, body: Body) -> Body:
    arrival_ms = int(time.time() * 1000)
    name = _stream_name(body)
    record = body.get("Record")
    if not isinstance(record, dict):
        raise _missing("record")
    state = _writable(svc, name)
    raw = _decode(record, 0)
    if isinstance(raw, str):
        raise InvalidArgumentException(raw.removeprefix("Record 0: "))
    base = await _accept(svc, state, [raw], arrival_ms, len(raw))
    return {"RecordId": base + _ID_SUFFIXES[0], "Encrypted": False}


# -- control plane ---------------------------------------------------------------


async def create_delivery_stream(svc: Services, body: Body) -> Body:
    definition = _parse(DeliveryStreamDefinition, body)
    state = svc.catalog.create(definition, origin="api")
    return {"DeliveryStreamARN": svc.arn(state.name)}


async def delete_delivery_stream(svc: Services, body: Body) -> Body:
    req = _parse(shapes.DeleteDeliveryStreamInput, body)
    svc.catalog.delete(req.delivery_stream_name)
    return {}


async def describe_delivery_stream(svc: Services, body: Body) -> Body:
    req = _parse(shapes.DescribeDeliveryStreamInput, body)
    state = svc.catalog.get(req.delivery_stream_name)
    return {"DeliveryStreamDescription": describe(svc, state)}


def describe(svc: Services, state: StreamState) -> Body:
    return {
        "DeliveryStreamName": state.name,
        "DeliveryStreamARN": svc.arn(state.name),
        "DeliveryStreamStatus": state.status,
        "DeliveryStreamType": state.definition.delivery_stream_type,
        "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
        "VersionId": str(state.version_id),
        "CreateTimestamp": epoch_seconds(state.created_ms),
        "LastUpdateTimestamp": epoch_seconds(state.updated_ms),
        "Source": _source_description(state),
        "Destinations": [{"DestinationId": DESTINATION_ID, **_destination_description(state)}],
        "HasMoreDestinations": False,
    }


def _source_description(state: StreamState) -> Body:
    source = state.definition.kinesis_stream_source_configuration
    if source is not None:
        return {"KinesisStreamSourceDescription": {"KinesisStreamARN": source.kinesis_stream_arn,
                                                   "RoleARN": source.role_arn,
                                                   "DeliveryStartTimestamp": epoch_seconds(state.created_ms)}}
    return {"DirectPutSourceDescription": {"ThroughputHintInMBs": _throughput_hint(state)}}


_S3_DEFAULTS = {
    "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 300},
    "CompressionFormat": "UNCOMPRESSED",
    "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
}
_S3_MEMBERS = ("RoleARN", "BucketARN", "Prefix", "ErrorOutputPrefix", "BufferingHints", "CompressionFormat",
               "EncryptionConfiguration", "CloudWatchLoggingOptions")


def _s3_view(config: Body) -> Body:
    """An S3DestinationDescription: the S3 members, with AWS's defaults filled in (they are required)."""
    view = {k: config[k] for k in _S3_MEMBERS if k in config}
    for key, value in _S3_DEFAULTS.items():
        view.setdefault(key, value)
    return view


def _destination_description(state: StreamState) -> Body:
    """Descriptions name things differently from create inputs, fill defaults and never echo secrets."""
    definition = state.definition
    if definition.is_s3:
        dest = definition.destination.dump()
        for key, value in _S3_DEFAULTS.items():
            dest.setdefault(key, value)
        if "S3BackupConfiguration" in dest:
            dest["S3BackupDescription"] = _s3_view(dest.pop("S3BackupConfiguration"))
        dest.setdefault("S3BackupMode", "Disabled")
        return {"S3DestinationDescription": _s3_view(dest), "ExtendedS3DestinationDescription": dest}
    config = definition.record_destination
    body = config.dump()
    body.pop("Password", None)
    if "EndpointConfiguration" in body:  # an HttpEndpointDescription has no AccessKey
        body["EndpointConfiguration"].pop("AccessKey", None)
    body["S3DestinationDescription"] = _s3_view(body.pop("S3Configuration"))
    if "S3BackupConfiguration" in body:
        body["S3BackupDescription"] = _s3_view(body.pop("S3BackupConfiguration"))
    if "VpcConfiguration" in body:
        body["VpcConfigurationDescription"] = body.pop("VpcConfiguration")
    size, interval = config.buffering()
    if "BufferingHints" in type(config).model_fields or "buffering_hints" in type(config).model_fields:
        body.setdefault("BufferingHints", {"SizeInMBs": size // (1024 * 1024), "IntervalInSeconds": interval})
    body.setdefault("RetryOptions", {"DurationInSeconds": config.retry_seconds})
    return {config.description_member: body}


def _throughput_hint(state: StreamState) -> int:
    cfg = state.definition.direct_put_source_configuration
    return cfg.throughput_hint_in_mbs if cfg else 5


async def list_delivery_streams(svc: Services, body: Body) -> Body:
    req = _parse(shapes.ListDeliveryStreamsInput, body)
    names = svc.catalog.names(req.delivery_stream_type)
    if req.exclusive_start_delivery_stream_name:
        names = [n for n in names if n > req.exclusive_start_delivery_stream_name]
    limit = req.limit or 10
    return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}


async def update_destination(svc: Services, body: Body) -> Body:
    req = _parse(shapes.UpdateDestinationInput, body)
    given = [m for m in shapes.DESTINATION_UPDATE_MEMBERS if body.get(m) is not None]
    if len(given) != 1:
        raise InvalidArgumentException(
            "Exactly one destination update is required (e.g. ExtendedS3DestinationUpdate); "
            f"got {len(given)}.")
    update = body[given[0]]
    if not isinstance(update, dict):
        raise SerializationException(f"{given[0]} must be a structure")
    try:
        svc.catalog.update_destination(
            req.delivery_stream_name, req.current_delivery_stream_version_id, req.destination_id, given[0], update)
    except ValidationError as exc:
        raise InvalidArgumentException(validation_message(exc)) from exc
    return {}


async def tag_delivery_stream(svc: Services, body: Body) -> Body:
    req = _parse(shapes.TagDeliveryStreamInput, body)
    svc.catalog.tag(req.delivery_stream_name, [(t.key, t.value or "") for t in req.tags])
    return {}


async def untag_delivery_stream(svc: Services, body: Body) -> Body:
    req = _parse(shapes.UntagDeliveryStreamInput, body)
    svc.catalog.untag(req.delivery_stream_name, req.tag_keys)
    return {}


async def list_tags_for_delivery_stream(svc: Services, body: Body) -> Body:
    req = _parse(shapes.ListTagsForDeliveryStreamInput, body)
    state = svc.catalog.get(req.delivery_stream_name)
    keys = sorted(state.tags)
    if req.exclusive_start_tag_key:
        keys = [k for k in keys if k > req.exclusive_start_tag_key]
    limit = req.limit or 50
    return {
        "Tags": [{"Key": k, "Value": state.tags[k]} for k in keys[:limit]],
        "HasMoreTags": len(keys) > limit,
    }


async def start_delivery_stream_encryption(svc: Services, body: Body) -> Body:
    svc.catalog.get(_stream_name(body))
    raise InvalidArgumentException("Server-side encryption of delivery streams is not supported by this daemon yet.")


async def stop_delivery_stream_encryption(svc: Services, body: Body) -> Body:
    svc.catalog.get(_stream_name(body))
    raise InvalidArgumentException("Server-side encryption of delivery streams is not supported by this daemon yet.")


Operation = Callable[[Services, Body], Awaitable[Body]]

OPERATIONS: dict[str, Operation] = {
    "PutRecord": put_record,
    "PutRecordBatch": put_record_batch,
    "CreateDeliveryStream": create_delivery_stream,
    "DeleteDeliveryStream": delete_delivery_stream,
    "DescribeDeliveryStream": describe_delivery_stream,
    "ListDeliveryStreams": list_delivery_streams,
    "UpdateDestination": update_destination,
    "TagDeliveryStream": tag_delivery_stream,
    "UntagDeliveryStream": untag_delivery_stream,
    "ListTagsForDeliveryStream": list_tags_for_delivery_stream,
    "StartDeliveryStreamEncryption": start_delivery_stream_encryption,
    "StopDeliveryStreamEncryption": stop_delivery_stream_encryption,
}
