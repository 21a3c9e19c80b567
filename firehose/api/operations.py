"""One coroutine per Firehose operation, and the ``OPERATIONS`` table keyed by AWS name.

Operations take the services of the caller's account and the request body,
which the front door has already checked against the AWS model (types,
required members, lengths, patterns, ranges), and return the answer's body.
They know nothing about HTTP; errors are raised as ``FirehoseError``
subclasses. Each entry of the table also says which resource the call acts on,
for authorization.

PutRecordBatch is the hot path and validates itself: a fast check proves the
call-level shape valid, and only when it fails does the model's validator run
(so its answers are the validator's). It decodes every record's base64 with a
SIMD decoder, rejects bad records *one by one* (a record with no data, data
that is not base64, empty, or over 1,000 KiB gets its own ``ErrorCode`` while
the others are accepted), hands the good ones to the spool as one entry, and
answers only when that entry is fsynced. Per-record rejection goes beyond AWS,
which refuses the whole call for some of these; a client that resends failed
entries then loses nothing but the bad record. Call-level problems (no
records, over 500, over 4 MiB in total, unknown stream) still fail the whole
call, as on AWS.
"""

from __future__ import annotations

import binascii
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pybase64
from pydantic import ValidationError

from firehose.api import shapes
from firehose.catalog import DESTINATION_ID, Catalog, StreamState
from firehose.clock import now_ms
from firehose.definitions import DeliveryStreamDefinition, delivery_stream_arn, validation_message
from firehose.errors import (
    InvalidArgumentException,
    InvalidKMSResourceException,
    ResourceNotFoundException,
    ServiceUnavailableException,
)
from firehose.frontdoor import wire
from firehose.frontdoor.door import Caller, Check, Operation
from firehose.frontdoor.quotas import Quotas
from firehose.frontdoor.wire import epoch_seconds
from firehose.settings import Settings
from firehose.spool import Spool, StreamSpool
from firehose.sse import AWS_OWNED_CMK
from firehose.storage.sealing import KeyringLoader
from firehose.telemetry import Metrics

Body = dict[str, Any]

#: PutRecordBatch checks each record's data itself, so that a bad record fails alone.
_PER_RECORD = frozenset({"Records.*.Data"})


@dataclass
class Services:
    """What the operations need, for one account, handed in by the daemon."""

    catalog: Catalog
    spool: Spool
    stream_spool: Callable[[StreamState], StreamSpool]
    metrics: Metrics
    settings: Settings
    account_id: str
    quotas: Quotas
    #: The daemon's keyring, which seals the spools of encrypted streams (``firehose.sse``).
    keyring: KeyringLoader | None = None

    def arn(self, name: str) -> str:
        return delivery_stream_arn(self.settings.region, self.account_id, name)


def stream_arn(body: Body, caller: Caller) -> str:
    """The delivery stream a request names, as the resource it is authorized on."""
    name = body.get("DeliveryStreamName")
    return delivery_stream_arn(caller.region, caller.account_id, name if isinstance(name, str) else "")


def _definition(body: Body) -> DeliveryStreamDefinition:
    """The stream definition a CreateDeliveryStream body describes (the AWS model is already checked)."""
    try:
        return DeliveryStreamDefinition.model_validate(body)
    except ValidationError as exc:
        raise InvalidArgumentException(validation_message(exc)) from exc


def _put_batch_checks(body: Body, check: Check) -> tuple[str, list[Any]]:
    """(stream name, records) of a PutRecordBatch, proven valid by a fast check or by the model's validator.

    The records themselves are not looked at here: decoding them (``_decode_all``) is the fast check
    of their shape, and only a batch that fails it pays for the model's validator."""
    name = body.get("DeliveryStreamName")
    records = body.get("Records")
    if not (type(name) is str and 0 < len(name) <= 64 and shapes.STREAM_NAME_RE.match(name)
            and type(records) is list and 0 < len(records) <= shapes.MAX_BATCH_RECORDS):
        check(skip=_PER_RECORD)
    return name, records  # type: ignore[return-value]


def _writable(svc: Services, name: str) -> StreamState:
    state = svc.catalog.find(name)
    if state is None:
        raise ResourceNotFoundException(f"Firehose {name} under account {svc.account_id} not found.")
    status = state.status
    if status != "ACTIVE":
        raise ResourceNotFoundException(f"Firehose {name} is {status}, not ACTIVE; retry when it is ACTIVE.")
    if state.definition.delivery_stream_type != "DirectPut":
        raise InvalidArgumentException(f"This operation is not permitted on "
                                       f"{state.definition.delivery_stream_type} delivery stream type for {name}.")
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


#: Per input record of a PutRecordBatch: its index in the spool entry, or (ErrorCode, ErrorMessage).
Slot = int | tuple[str, str]


def _decode_all(records: list[Any], check: Check) -> tuple[list[bytes], list[Slot] | None]:
    """Decode a batch: (good records, per-record slots or None when all are good).

    The common case, every record valid, runs as one comprehension; only a
    batch with a bad record pays for the model's validator (a record that is
    not an object fails the whole call, as on AWS) and for the
    record-by-record path that says which record's data is bad and why.
    """
    try:
        good = [pybase64.b64decode(r["Data"], validate=True) for r in records]
        if min(map(len, good)) > 0 and max(map(len, good)) <= shapes.MAX_RECORD_BYTES:
            return good, None
    except (binascii.Error, ValueError, TypeError, KeyError):
        pass
    check(skip=_PER_RECORD)
    good = []
    slots: list[Slot] = []
    for i, record in enumerate(records):
        raw = _decode(record, i)
        if isinstance(raw, str):
            slots.append(("InvalidArgumentException", raw))
        else:
            slots.append(len(good))
            good.append(raw)
    return good, slots


_SLOW_DOWN = "Slow down."
_THROTTLED = ("ServiceUnavailableException", _SLOW_DOWN)
#: Record ids are <incarnation><entry seq, 16 hex><index in the entry, 4 hex>.
_ID_SUFFIXES = [f"{i:04x}" for i in range(shapes.MAX_BATCH_RECORDS)]


def _all_accepted(base: str, n: int, encrypted: bool) -> wire.JsonAnswer:
    """PutRecordBatch's answer when all ``n`` records were accepted: record ids ``base`` + ``_ID_SUFFIXES``
    (``base`` is hex, so nothing in it needs escaping)."""
    ids = ('"},{"RecordId":"' + base).join(_ID_SUFFIXES[:n])
    head = '{"FailedPutCount":0,"Encrypted":' + ("true" if encrypted else "false")
    return wire.JsonAnswer((head + ',"RequestResponses":[{"RecordId":"' + base + ids + '"}]}').encode())


async def _accept(svc: Services, state: StreamState, records: list[bytes], arrival_ms: int,
                  total: int) -> tuple[str, bool]:
    """Spool the records durably; returns the record-id prefix of their entry and whether it is encrypted.

    Record ids are unique across the stream's life: incarnation (new per
    create), entry sequence number, index in the entry.
    """
    stream = svc.stream_spool(state)
    encrypted = stream.encryption.sealing  # what ``append`` decides before it first awaits
    seq = await svc.spool.append(stream, records, arrival_ms, total)
    ingest = svc.metrics.ingest(state.name)
    ingest.records.inc(len(records))
    ingest.bytes.inc(total)
    return f"{state.incarnation}{seq:016x}", encrypted


def _admit(svc: Services, state: StreamState, good: list[bytes], slots: list[Slot] | None
           ) -> tuple[list[bytes], list[Slot] | None]:
    """Apply the stream's quota (``quotas:``): a call over the request rate fails as a whole, records
    over the record or byte rate fail one by one with ServiceUnavailableException "Slow down."."""
    quota = svc.quotas.stream(state.key)
    if quota is None:
        return good, slots
    if not quota.admit_call():
        svc.metrics.ingest(state.name).throttled.inc(len(good))
        raise ServiceUnavailableException(_SLOW_DOWN)
    admitted = quota.admit_records([len(r) for r in good])
    if admitted == len(good):
        return good, slots
    svc.metrics.ingest(state.name).throttled.inc(len(good) - admitted)
    if slots is None:
        slots = list(range(len(good)))
    slots = [_THROTTLED if isinstance(slot, int) and slot >= admitted else slot for slot in slots]
    return good[:admitted], slots


async def put_record_batch(svc: Services, body: Body, check: Check) -> Body | wire.JsonAnswer:
    arrival_ms = now_ms()
    name, records = _put_batch_checks(body, check)
    n = len(records)
    good, slots = _decode_all(records, check)  # before the stream is looked up: shape errors come first
    state = _writable(svc, name)
    total = sum(map(len, good))
    if total > shapes.MAX_BATCH_BYTES:
        raise InvalidArgumentException(
            f"Records total {total} bytes decoded; PutRecordBatch accepts at most {shapes.MAX_BATCH_BYTES} "
            "bytes per call.")
    invalid = n - len(good)
    good, slots = _admit(svc, state, good, slots)
    accepted = sum(map(len, good))
    base, encrypted = await _accept(svc, state, good, arrival_ms, accepted) if good else ("", False)
    ingest = svc.metrics.ingest(state.name)
    ingest.put_requests.inc()
    ingest.batch_records.inc(len(good))
    ingest.batch_bytes.inc(accepted)
    failed = n - len(good)
    if invalid:
        svc.metrics.failed_records.labels(name, "InvalidArgumentException").inc(invalid)
    if slots is None:  # every record accepted, in order: the common answer, written directly
        return _all_accepted(base, n, encrypted)
    responses = [
        {"RecordId": base + _ID_SUFFIXES[slot]} if isinstance(slot, int)
        else {"ErrorCode": slot[0], "ErrorMessage": slot[1]}
        for slot in slots
    ]
    return {"FailedPutCount": failed, "Encrypted": encrypted, "RequestResponses": responses}


async def put_record(svc: Services, body: Body) -> Body:
    arrival_ms = now_ms()
    name, record = body["DeliveryStreamName"], body["Record"]
    state = _writable(svc, name)
    raw = _decode(record, 0)
    if isinstance(raw, str):
        raise InvalidArgumentException(raw.removeprefix("Record 0: "))
    good, slots = _admit(svc, state, [raw], None)
    if not good:
        raise ServiceUnavailableException(_SLOW_DOWN)
    base, encrypted = await _accept(svc, state, good, arrival_ms, len(raw))
    ingest = svc.metrics.ingest(state.name)
    ingest.put_requests.inc()
    ingest.put_record_bytes.inc(len(raw))
    return {"RecordId": base + _ID_SUFFIXES[0], "Encrypted": encrypted}


# -- control plane ---------------------------------------------------------------


async def create_delivery_stream(svc: Services, body: Body) -> Body:
    definition = _definition(body)
    if definition.delivery_stream_encryption_configuration_input is not None:
        _check_keyring(svc)
    state = svc.catalog.create(definition, origin="api")
    return {"DeliveryStreamARN": svc.arn(state.name)}


def _check_keyring(svc: Services) -> None:
    """A stream created encrypted seals from its first record: the keyring must have a key.

    KMS's own failure here would be NotFoundException, which Firehose answers as InvalidKMSResourceException."""
    try:
        ids = svc.keyring().ids if svc.keyring is not None else ()
    except ValueError as exc:
        raise InvalidKMSResourceException(f"The keyring that stands in for KMS cannot be loaded: {exc}") from None
    if not ids:
        raise InvalidKMSResourceException(
            "Server-side encryption needs a key in the daemon's keyring (a <key id>.key file in encryption.keys_dir "
            "or an encryption.env_prefix variable, then restart); it has none.")


async def delete_delivery_stream(svc: Services, body: Body) -> Body:
    svc.catalog.delete(body["DeliveryStreamName"])
    return {}


async def describe_delivery_stream(svc: Services, body: Body) -> Body:
    state = svc.catalog.get(body["DeliveryStreamName"])
    return {"DeliveryStreamDescription": describe(svc, state)}


def describe(svc: Services, state: StreamState) -> Body:
    """As AWS describes a stream (its answers recorded against AWS, 2022-2024): no LastUpdateTimestamp
    until the stream is updated, and no DeliveryStreamEncryptionConfiguration for a stream that reads a
    Kinesis stream or a Kafka topic (server-side encryption is only for DirectPut)."""
    out: Body = {
        "DeliveryStreamName": state.name,
        "DeliveryStreamARN": svc.arn(state.name),
        "DeliveryStreamStatus": state.status,
        "DeliveryStreamType": state.definition.delivery_stream_type,
        "VersionId": str(state.version_id),
        "CreateTimestamp": epoch_seconds(state.created_ms),
        "Source": _source_description(state),
        "Destinations": [{"DestinationId": DESTINATION_ID, **_destination_description(state)}],
        "HasMoreDestinations": False,
    }
    if state.definition.delivery_stream_type == "DirectPut":
        out["DeliveryStreamEncryptionConfiguration"] = state.encryption.describe()
    if state.version_id > 1:
        out["LastUpdateTimestamp"] = epoch_seconds(state.updated_ms)
    return out


def _source_description(state: StreamState) -> Body:
    msk = state.definition.msk_source_configuration
    if msk is not None:
        described = msk.dump()
        # Reading starts at ReadFromTimestamp, else at the stream's creation (firehose.sources.kafka).
        start = msk.read_from_timestamp if msk.read_from_timestamp is not None else epoch_seconds(state.created_ms)
        return {"MSKSourceDescription": {**described, "DeliveryStartTimestamp": start}}
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
    "CloudWatchLoggingOptions": {"Enabled": False},
}
#: A Lambda processor's parameters AWS fills in when they were not given, in the order it lists them
#: after the given ones (recorded against AWS, 2024); ``RoleArn`` is the destination's role. These are
#: the values the processing chain uses when they are absent.
_LAMBDA_DEFAULTS = (("NumberOfRetries", "3"), ("RoleArn", None), ("BufferSizeInMBs", "1"),
                    ("BufferIntervalInSeconds", "60"))
#: DynamicPartitioningConfiguration's retry duration when not given, as AWS fills it in (described
#: only: delivery to S3 here retries a failed object until it lands, whatever this says).
_PARTITIONING_RETRY = {"DurationInSeconds": 300}


def _fill_processing(body: Body) -> None:
    """Fill in the defaults of the Lambda processors of ``body``'s ProcessingConfiguration, in place."""
    for processor in (body.get("ProcessingConfiguration") or {}).get("Processors") or []:
        if processor.get("Type") != "Lambda":
            continue
        params = processor.setdefault("Parameters", [])
        given = {p.get("ParameterName") for p in params}
        for name, default in _LAMBDA_DEFAULTS:
            value = default if default is not None else body.get("RoleARN")
            if name not in given and value is not None:
                params.append({"ParameterName": name, "ParameterValue": value})
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
        partitioning = dest.get("DynamicPartitioningConfiguration")
        if partitioning is not None:
            partitioning.setdefault("RetryOptions", dict(_PARTITIONING_RETRY))
        _fill_processing(dest)
        return {"S3DestinationDescription": _s3_view(dest), "ExtendedS3DestinationDescription": dest}
    config = definition.record_destination
    body = config.dump()
    body.pop("Password", None)
    if "EndpointConfiguration" in body:  # an HttpEndpointDescription has no AccessKey
        body["EndpointConfiguration"].pop("AccessKey", None)
    body["S3DestinationDescription"] = _s3_view(body.pop("S3Configuration"))
    if "S3BackupConfiguration" in body:
        body["S3BackupDescription"] = _s3_view(body.pop("S3BackupConfiguration"))
    if config.member == "RedshiftDestinationConfiguration":
        body.setdefault("S3BackupMode", "Disabled")
    if "VpcConfiguration" in body:
        body["VpcConfigurationDescription"] = body.pop("VpcConfiguration")
    size, interval = config.buffering()
    if "BufferingHints" in type(config).model_fields or "buffering_hints" in type(config).model_fields:
        body.setdefault("BufferingHints", {"SizeInMBs": size // (1024 * 1024), "IntervalInSeconds": interval})
    body.setdefault("RetryOptions", {"DurationInSeconds": config.retry_seconds})
    _fill_processing(body)
    return {config.description_member: body}


def _throughput_hint(state: StreamState) -> int:
    cfg = state.definition.direct_put_source_configuration
    return cfg.throughput_hint_in_mbs if cfg else 5


async def list_delivery_streams(svc: Services, body: Body) -> Body:
    names = svc.catalog.names(body.get("DeliveryStreamType"))
    start = body.get("ExclusiveStartDeliveryStreamName")
    if start:
        names = [n for n in names if n > start]
    limit = body.get("Limit") or 10
    return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}


async def update_destination(svc: Services, body: Body) -> Body:
    given = [m for m in shapes.DESTINATION_UPDATE_MEMBERS if body.get(m) is not None]
    if len(given) != 1:
        raise InvalidArgumentException(
            "Exactly one destination update is required (e.g. ExtendedS3DestinationUpdate); "
            f"got {len(given)}.")
    try:
        svc.catalog.update_destination(body["DeliveryStreamName"], body["CurrentDeliveryStreamVersionId"],
                                       body["DestinationId"], given[0], body[given[0]])
    except ValidationError as exc:
        raise InvalidArgumentException(validation_message(exc)) from exc
    return {}


async def tag_delivery_stream(svc: Services, body: Body) -> Body:
    svc.catalog.tag(body["DeliveryStreamName"], [(t["Key"], t.get("Value") or "") for t in body["Tags"]])
    return {}


async def untag_delivery_stream(svc: Services, body: Body) -> Body:
    svc.catalog.untag(body["DeliveryStreamName"], body["TagKeys"])
    return {}


async def list_tags_for_delivery_stream(svc: Services, body: Body) -> Body:
    state = svc.catalog.get(body["DeliveryStreamName"])
    keys = sorted(state.tags)
    start = body.get("ExclusiveStartTagKey")
    if start:
        keys = [k for k in keys if k > start]
    limit = body.get("Limit") or 50
    return {
        "Tags": [{"Key": k, "Value": state.tags[k]} for k in keys[:limit]],
        "HasMoreTags": len(keys) > limit,
    }


async def start_delivery_stream_encryption(svc: Services, body: Body) -> Body:
    """ENABLING now, ENABLED once the spool seals (or ENABLING_FAILED): see ``firehose.sse``."""
    given = body.get("DeliveryStreamEncryptionConfigurationInput") or {}
    svc.catalog.start_encryption(body["DeliveryStreamName"], given.get("KeyType") or AWS_OWNED_CMK,
                                 given.get("KeyARN"))
    return {}


async def stop_delivery_stream_encryption(svc: Services, body: Body) -> Body:
    """DISABLING now, DISABLED once new records are stored plain."""
    svc.catalog.stop_encryption(body["DeliveryStreamName"])
    return {}


def _stream_changing(operation: str, handler: Callable[[Services, Body], Any]) -> Callable[[Services, Body], Any]:
    """``handler``, refused in a fleet (``cluster.mode: fleet``): there, every node reads its streams
    from the same config file, and a change made over the API would exist only on the node the load
    balancer picked. The operator changes the shared file and reloads every node instead."""

    async def guarded(svc: Services, body: Body) -> Body:
        if svc.settings.cluster.mode == "fleet":
            raise InvalidArgumentException(
                f"{operation} is not available on a daemon of a fleet (cluster.mode: fleet): delivery streams "
                "come from the shared config file; change it and reload every daemon (SIGHUP).")
        result: Body = await handler(svc, body)
        return result

    return guarded


OPERATIONS: dict[str, Operation] = {
    "PutRecord": Operation(put_record, stream_arn),
    "PutRecordBatch": Operation(put_record_batch, stream_arn, self_validating=True),
    "CreateDeliveryStream": Operation(create_delivery_stream, stream_arn),
    "DeleteDeliveryStream": Operation(delete_delivery_stream, stream_arn),
    "DescribeDeliveryStream": Operation(describe_delivery_stream, stream_arn),
    "ListDeliveryStreams": Operation(list_delivery_streams),
    "UpdateDestination": Operation(update_destination, stream_arn),
    "TagDeliveryStream": Operation(tag_delivery_stream, stream_arn),
    "UntagDeliveryStream": Operation(untag_delivery_stream, stream_arn),
    "ListTagsForDeliveryStream": Operation(list_tags_for_delivery_stream, stream_arn),
    "StartDeliveryStreamEncryption": Operation(start_delivery_stream_encryption, stream_arn),
    "StopDeliveryStreamEncryption": Operation(stop_delivery_stream_encryption, stream_arn),
}
#: Operations that change streams: refused in a fleet (``_stream_changing``).
STREAM_CHANGING = ("CreateDeliveryStream", "DeleteDeliveryStream", "UpdateDestination", "TagDeliveryStream",
                   "UntagDeliveryStream", "StartDeliveryStreamEncryption", "StopDeliveryStreamEncryption")
for _name in STREAM_CHANGING:
    OPERATIONS[_name] = dataclasses.replace(OPERATIONS[_name],
                                            handler=_stream_changing(_name, OPERATIONS[_name].handler))
