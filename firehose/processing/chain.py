"""A stream's processing chain: what runs on its records, in what order, and where.

``plan`` reads a definition (and the daemon's settings) once and decides the
steps; it is also the deep validation of a definition (a processor parameter
out of range, a LambdaArn that names no file, a jq query that does not
compile, a conversion schema that does not exist), so config files and the
API refuse the same things before anything runs.

``Processor.process`` runs the steps that come before buffering, for one batch
of raw records, in AWS's order (spec: transforms.md §5):

    Decompression → CloudWatchLogProcessing → RecordDeAggregation → Lambda
    → SQL (this daemon's own, ``sql.py``) → MetadataExtraction (partition keys)
    → AppendDelimiterToRecord

and returns the records grouped by partition, with every record that could
not be processed turned into an error-output document of its category.
Built-in steps run in a thread, the Lambda in worker processes: never on the
event loop that answers PutRecordBatch. Format conversion, compression and
encryption happen later, per object (the encoding stage, ``firehose/encoding``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pybase64

from firehose import definitions, failures, objectkeys
from firehose.definitions import DeliveryStreamDefinition, ExtendedS3DestinationConfiguration
from firehose.partitions import data_partition, error_partition
from firehose.processing import builtin, otf, partition, sql
from firehose.processing.transform import (
    FunctionRef,
    LambdaProcessor,
    TransformInput,
    TransformResults,
    WorkerPool,
    resolve_function,
)
from firehose.records import Position
from firehose.settings import Settings

MiB = 1024 * 1024


@dataclass(frozen=True)
class LambdaStep:
    function: FunctionRef
    retries: int
    buffer_bytes: int
    buffer_interval_s: float


@dataclass(frozen=True)
class Plan:
    """The steps of one stream's chain (from one definition version)."""

    decompress: bool = False
    cloudwatch: bool = False
    deaggregate: str | None = None  # "JSON" or "DELIMITED"
    delimiter_in: bytes = b""
    transform: LambdaStep | None = None
    metadata_query: str | None = None
    append_delimiter: bytes | None = None
    dynamic_partitioning: bool = False
    prefix_keys: frozenset[str] = frozenset()
    #: Records are routed to Iceberg tables (``otf.py``) by the jq query and/or the transform's metadata.
    otf_routing: bool = False
    #: The SQL processor's query (``sql.py``): one SELECT over each buffer, after the transform.
    sql_query: str | None = None
    #: The SQL step's batch (BufferSizeInMBs, BufferIntervalInSeconds) when no Lambda step sets one.
    sql_buffer: tuple[int, float] | None = None

    @property
    def active(self) -> bool:
        """Whether records need processing before buffering at all."""
        return bool(self.decompress or self.cloudwatch or self.deaggregate or self.transform or self.sql_query
                    or self.metadata_query or self.append_delimiter is not None or self.dynamic_partitioning)

    @property
    def buffer_bytes(self) -> int:
        return self.transform.buffer_bytes if self.transform else self.sql_buffer[0] if self.sql_buffer else MiB

    @property
    def buffer_interval_s(self) -> float:
        return (self.transform.buffer_interval_s if self.transform
                else self.sql_buffer[1] if self.sql_buffer else 0.0)


def _params(processor: definitions.Processor) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in processor.parameters or []:
        if p.parameter_name in out:
            raise ValueError(f"{processor.type} processor: parameter {p.parameter_name} is given twice")
        out[p.parameter_name] = p.parameter_value
    return out


def _number(params: dict[str, str], name: str, default: float, lo: float, hi: float, what: str) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{what}: {name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{what}: {name} must be between {lo:g} and {hi:g}, got {raw}")
    return value


def plan(definition: DeliveryStreamDefinition, settings: Settings) -> Plan:
    """Decide the chain for a definition; ValueError says what is wrong and where."""
    s3 = definition.destination if definition.is_s3 else None
    proc = definition.processing
    steps: dict[str, Any] = {"dynamic_partitioning": bool(s3 and s3.dynamic_partitioning),
                             "prefix_keys": frozenset(objectkeys.partition_key_names(s3.prefix if s3 else None))}
    processors = proc.processors if proc and proc.enabled is not False and proc.processors else []
    seen: set[str] = set()
    for processor in processors:
        kind = processor.type
        if kind in seen:
            raise ValueError(f"ProcessingConfiguration has more than one {kind} processor")
        seen.add(kind)
        params = _params(processor)
        if kind == "Lambda":
            steps["transform"] = _lambda_step(params, settings)
        elif kind == "Decompression":
            fmt = params.get("CompressionFormat", "GZIP")
            if fmt != "GZIP":
                raise ValueError(f"Decompression processor: CompressionFormat must be GZIP, got {fmt!r}")
            steps["decompress"] = True
        elif kind == "CloudWatchLogProcessing":
            if params.get("DataMessageExtraction", "true").lower() != "true":
                raise ValueError("CloudWatchLogProcessing processor: DataMessageExtraction must be true")
            steps["cloudwatch"] = True
        elif kind == "RecordDeAggregation":
            steps.update(_deaggregation(params))
        elif kind == "MetadataExtraction" and definition.destination_member == "IcebergDestinationConfiguration":
            steps["metadata_query"] = _routing_query(params)
        elif kind == "MetadataExtraction":
            if s3 is None:
                raise ValueError("MetadataExtraction (dynamic partitioning) is for S3 destinations only")
            steps["metadata_query"] = _metadata_query(params, s3)
        elif kind == "SQL":
            steps["sql_query"] = sql.check_query(params.get(sql.QUERY, ""))
            size = _number(params, "BufferSizeInMBs", 1, 0.2, 3, "SQL processor")
            interval = _number(params, "BufferIntervalInSeconds", 60, 0, 900, "SQL processor")
            steps["sql_buffer"] = (int(size * MiB), interval)
        elif kind == "AppendDelimiterToRecord":
            raw = params.get("Delimiter")
            steps["append_delimiter"] = pybase64.b64decode(raw) if raw else b"\n"
    if definition.destination_member == "IcebergDestinationConfiguration":
        steps["otf_routing"] = "transform" in steps or "metadata_query" in steps
    result = Plan(**steps)
    _check_partitioning(result)
    return result


def _lambda_step(params: dict[str, str], settings: Settings) -> LambdaStep:
    arn = params.get("LambdaArn")
    if not arn:
        raise ValueError("Lambda processor: LambdaArn is required")
    what = f"Lambda processor {arn}"
    fn = resolve_function(arn, functions=settings.functions, transforms_dir=settings.transforms_dir)
    retries = _number(params, "NumberOfRetries", 3, 0, 300, what)
    size = _number(params, "BufferSizeInMBs", 1, 0.2, 3, what)
    # AWS's minimum interval is 60 s; 0 is allowed here so tests and low-latency
    # pipelines need not wait a minute.
    interval = _number(params, "BufferIntervalInSeconds", 60, 0, 900, what)
    return LambdaStep(fn, int(retries), int(size * MiB), interval)


def _deaggregation(params: dict[str, str]) -> dict[str, Any]:
    kind = params.get("SubRecordType")
    if kind == "JSON":
        return {"deaggregate": "JSON"}
    if kind == "DELIMITED":
        raw = params.get("Delimiter")
        if not raw:
            raise ValueError("RecordDeAggregation processor: DELIMITED needs a base64 Delimiter")
        try:
            return {"deaggregate": "DELIMITED", "delimiter_in": pybase64.b64decode(raw, validate=True)}
        except ValueError:
            raise ValueError("RecordDeAggregation processor: Delimiter must be base64") from None
    raise ValueError(f"RecordDeAggregation processor: SubRecordType must be JSON or DELIMITED, got {kind!r}")


def _jq_query(params: dict[str, str]) -> str:
    """A MetadataExtraction processor's query, with the one engine AWS offers."""
    query = params.get("MetadataExtractionQuery")
    if not query:
        raise ValueError("MetadataExtraction processor: MetadataExtractionQuery is required")
    engine = params.get("JsonParsingEngine", "JQ-1.6")
    if engine != "JQ-1.6":
        raise ValueError(f"MetadataExtraction processor: JsonParsingEngine must be JQ-1.6, got {engine!r}")
    return query


def _metadata_query(params: dict[str, str], cfg: ExtendedS3DestinationConfiguration) -> str:
    query = _jq_query(params)
    if not cfg.dynamic_partitioning:
        raise ValueError("MetadataExtraction requires DynamicPartitioningConfiguration.Enabled")
    partition.MetadataExtraction(query)  # compiles, or says why not
    return query


def _routing_query(params: dict[str, str]) -> str:
    """An Iceberg stream's MetadataExtractionQuery: a jq object with the table (and operation) of a record."""
    query = _jq_query(params)
    otf.Router(query)  # compiles, or says why not
    return query


def _check_partitioning(p: Plan) -> None:
    query_keys = {k for k in p.prefix_keys if k.startswith(partition.QUERY + ":")}
    if query_keys and not p.metadata_query:
        raise ValueError("Prefix uses !{partitionKeyFromQuery:...} but there is no MetadataExtraction processor")
    lambda_keys = {k for k in p.prefix_keys if k.startswith(partition.LAMBDA + ":")}
    if lambda_keys and not p.transform:
        raise ValueError("Prefix uses !{partitionKeyFromLambda:...} but there is no Lambda processor")
    if p.dynamic_partitioning and not p.prefix_keys:
        raise ValueError("dynamic partitioning is enabled but the Prefix uses no partition key")


# -- running a batch ------------------------------------------------------------


class RawRecord(NamedTuple):
    position: Position
    data: bytes
    arrival_ms: int
    #: kinesisRecordMetadata for records read from a Kinesis stream (mskRecordMetadata: from Kafka).
    kinesis: dict[str, Any] | None = None


@dataclass
class ProcessedBatch:
    """The chain's output for a batch: records by partition id, plus counts."""

    groups: dict[str, list[tuple[bytes, int]]] = field(default_factory=dict)
    dropped: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    #: The first reason given per error type (for the stream's log).
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, partition_id: str, data: bytes, arrival_ms: int) -> None:
        self.groups.setdefault(partition_id, []).append((data, arrival_ms))

    def fail(self, error_type: str, document: bytes, arrival_ms: int, reason: str = "") -> None:
        self.add(error_partition(error_type), document, arrival_ms)
        self.failed[error_type] = self.failed.get(error_type, 0) + 1
        if reason and error_type not in self.reasons:
            self.reasons[error_type] = reason

    def succeeded(self) -> tuple[int, int]:
        """Records passed on (not dropped, not failed) and their bytes: SucceedProcessing."""
        errors = {error_partition(t) for t in self.failed}
        records = size = 0
        for pid, group in self.groups.items():
            if pid not in errors:
                records += len(group)
                size += sum(len(data) for data, _ in group)
        return records, size


#: errorCode of records a chain could not run on (an unexpected error, not the records' content).
INTERNAL_ERROR = "Processing.InternalError"


def unprocessable(records: Sequence[RawRecord], message: str, attempts: int) -> ProcessedBatch:
    """Every record of a batch the chain failed on ``attempts`` times, as ``processing-failed``
    error documents with ``message``: the batch goes to the error output instead of being retried
    for ever in front of the rest of the stream."""
    out = ProcessedBatch()
    for r in records:
        out.fail(failures.PROCESSING_FAILED, failures.document(
            raw=r.data, arrival_ms=r.arrival_ms, code=INTERNAL_ERROR, message=message, attempts=attempts),
            r.arrival_ms, f"{INTERNAL_ERROR}: {message}")
    return out


class Processor:
    """Runs one stream's chain on batches of raw records."""

    def __init__(self, chain: Plan, keys: objectkeys.KeyTemplate, pool: WorkerPool | None, *, stream_arn: str,
                 region: str, source_arn: str | None = None, source_is_msk: bool = False,
                 on_invocation: Callable[[float, bool], None] | None = None) -> None:
        self.plan = chain
        self.keys = keys
        self._router = otf.Router(chain.metadata_query) if chain.otf_routing else None
        self._metadata = partition.MetadataExtraction(chain.metadata_query) \
            if chain.metadata_query and self._router is None else None
        self._lambda = None
        if chain.transform is not None:
            assert pool is not None, "a Lambda step needs the worker pool"
            self._lambda = LambdaProcessor(chain.transform.function, pool, retries=chain.transform.retries,
                                           stream_arn=stream_arn, region=region, source_arn=source_arn,
                                           source_is_msk=source_is_msk, on_invocation=on_invocation)
        self._sql = sql.SqlStep(chain.sql_query) if chain.sql_query else None

    async def process(self, records: Sequence[RawRecord]) -> ProcessedBatch:
        out = ProcessedBatch()
        derived = await asyncio.to_thread(self._before_transform, records, out)
        if self._lambda is not None:
            results = await self._lambda.run(derived)
        else:
            results = TransformResults.ok([d.data for d in derived])
        if self._sql is not None and derived:
            derived, results = await asyncio.to_thread(self._run_sql, self._sql, derived, results)
        await asyncio.to_thread(self._after_transform, derived, results, out)
        return out

    def _before_transform(self, records: Sequence[RawRecord], out: ProcessedBatch) -> list[TransformInput]:
        p = self.plan
        if not (p.decompress or p.cloudwatch or p.deaggregate):
            return [TransformInput(f"{r.position[0]}.{r.position[1]}.0", r.data, r.arrival_ms, r.kinesis)
                    for r in records]
        derived: list[TransformInput] = []
        for r in records:
            rid = f"{r.position[0]}.{r.position[1]}"
            data = r.data
            try:
                if p.decompress:
                    data = builtin.gunzip(data)
            except ValueError as exc:
                out.fail(failures.DECOMPRESSION_FAILED, failures.document(
                    raw=r.data, arrival_ms=r.arrival_ms, code="Decompression.Failed", message=str(exc)),
                    r.arrival_ms)
                continue
            try:
                if p.cloudwatch:
                    extracted = builtin.cloudwatch_messages(data)
                    if extracted is None:
                        out.dropped += 1
                        continue
                    data = extracted
                if p.deaggregate == "JSON":
                    subs = builtin.split_json(data)
                elif p.deaggregate == "DELIMITED":
                    subs = builtin.split_delimited(data, p.delimiter_in)
                else:
                    subs = [data]
            except ValueError as exc:
                out.fail(failures.PROCESSING_FAILED, failures.document(
                    raw=r.data, arrival_ms=r.arrival_ms, code="Processing.Failed", message=str(exc)), r.arrival_ms)
                continue
            for i, sub in enumerate(subs):
                derived.append(TransformInput(f"{rid}.{i}", sub, r.arrival_ms, r.kinesis))
        return derived

    @staticmethod
    def _run_sql(step: sql.SqlStep, derived: list[TransformInput], results: TransformResults
                 ) -> tuple[list[TransformInput], TransformResults]:
        """The SQL step over the records the transform passed (``sql.py``): its result rows replace them, as
        records of the buffer's oldest arrival; records it cannot read, or all of them when the query fails
        on the buffer, become ProcessingFailed (their error documents carry the record as it reached SQL)."""
        kept = [i for i, r in enumerate(results.result) if r != "Ok"]
        ok = [i for i, r in enumerate(results.result) if r == "Ok"]
        new_derived = [derived[i] for i in kept]
        new_results = TransformResults([results.result[i] for i in kept], [results.data[i] for i in kept],
                                       [results.metadata[i] for i in kept], [results.code[i] for i in kept],
                                       [results.message[i] for i in kept], results.attempts)
        if not ok:
            return new_derived, new_results

        def failed(i: int, code: str, message: str) -> None:
            d = derived[i]
            new_derived.append(TransformInput(d.record_id, results.data[i], d.arrival_ms, d.kinesis))
            new_results.result.append("ProcessingFailed")
            new_results.data.append(b"")
            new_results.metadata.append(None)
            new_results.code.append(code)
            new_results.message.append(message)

        try:
            outcome = step.run([results.data[i] for i in ok])
        except ValueError as exc:
            for i in ok:
                failed(i, "SQL.QueryFailed", f"The SQL processor's query failed on this buffer: {exc}")
            return new_derived, new_results
        for index, reason in outcome.failed:
            failed(ok[index], "SQL.RecordNotJSON", reason)
        oldest = min(derived[i].arrival_ms for i in ok)
        for n, data in enumerate(outcome.records):
            new_derived.append(TransformInput(f"sql.{n}", data, oldest, None))
            new_results.result.append("Ok")
            new_results.data.append(data)
            new_results.metadata.append(None)
            new_results.code.append("")
            new_results.message.append("")
        return new_derived, new_results

    def _after_transform(self, derived: list[TransformInput], results: TransformResults, out: ProcessedBatch) -> None:
        p = self.plan
        arn = p.transform.function.arn if p.transform else None
        default = data_partition()
        cache: dict[str, str] = {}
        if not derived:  # every record failed or was dropped before the transform
            return
        if not p.dynamic_partitioning and not p.otf_routing and p.append_delimiter is None \
                and "Ok" == results.result[0] \
                and all(r == "Ok" for r in results.result):  # the common case, in one step
            out.groups[default] = list(zip(results.data, (d.arrival_ms for d in derived), strict=True))
            return
        for i, d in enumerate(derived):
            result = results.result[i]
            if result == "Dropped":
                out.dropped += 1
                continue
            if result == "ProcessingFailed":
                out.fail(failures.PROCESSING_FAILED, failures.document(
                    raw=d.data, arrival_ms=d.arrival_ms, code=results.code[i], message=results.message[i],
                    attempts=results.attempts, extra={"lambdaArn": arn} if arn else None), d.arrival_ms,
                    f"{results.code[i]}: {results.message[i]}")
                continue
            data = results.data[i]
            pid = default
            if p.dynamic_partitioning:
                try:
                    pid = self._partition(data, results.metadata[i], d.arrival_ms, cache)
                except ValueError as exc:
                    out.fail(failures.PARTITIONING_FAILED, failures.document(
                        raw=data, arrival_ms=d.arrival_ms, code="DynamicPartitioning.KeyExtractionFailed",
                        message=str(exc)), d.arrival_ms)
                    continue
            elif self._router is not None:
                try:
                    route = self._router.route(data, results.metadata[i])
                except ValueError as exc:
                    out.fail(otf.ICEBERG_FAILED, failures.document(
                        raw=data, arrival_ms=d.arrival_ms, code=otf.ROUTING_FAILED, message=str(exc)),
                        d.arrival_ms, f"{otf.ROUTING_FAILED}: {exc}")
                    continue
                pid = cache.setdefault(str(route), data_partition(route)) if route else default
            if p.append_delimiter is not None:
                data = data + p.append_delimiter
            out.add(pid, data, d.arrival_ms)

    def _partition(self, data: bytes, metadata: Any, arrival_ms: int, cache: dict[str, str]) -> str:
        keys: dict[str, str] = {}
        if self._metadata is not None:
            keys.update(self._metadata.keys(data))
        keys.update(partition.lambda_keys(metadata))
        partition.check_prefix_keys(set(self.plan.prefix_keys), keys)
        used = {k: v for k, v in keys.items() if k in self.plan.prefix_keys}
        pid = data_partition(used)
        if pid not in cache:
            self.keys.render_prefix(arrival_ms, partition_keys=used)  # ValueError past 512 characters
            cache[pid] = pid
        return pid
