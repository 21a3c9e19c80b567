"""The runtime of SQL applications: each running application reads its source, runs its SQL, sends its rows.

Per application, one task runs ticks (``tick_seconds`` apart, one second by default):

1. take what the reader fetched since the last tick (``inputs.py``; a bounded queue, so a slow
   application holds its reader back and the backlog stays in the source);
2. run the Lambda preprocessor on it, when configured (``preprocess.py``);
3. map the records to rows through the input schema (``rows.map_records``) and stamp them:
   ``ROWTIME = max(previous ROWTIME, now)`` in ms, ``APPROXIMATE_ARRIVAL_TIME`` from the source;
   push them into ``<NamePrefix>_00k``, k chosen by a hash of the shard id (``InputParallelism``);
4. ``engine.advance(max(now, last ROWTIME))``: the rows every in-application stream gained;
5. serialise the rows of each output's stream (``DestinationSchema.RecordFormatType``); the output
   named ``error_stream`` gets the error rows (records that could not be preprocessed or mapped, and
   the engine's own);
6. save the checkpoint (positions after the records of 1, the engine's snapshot after 4, and the
   output records of 5) atomically, then send the outputs, retrying forever (``outputs.py``).

A tick that read nothing and emitted nothing changes nothing durable and saves nothing.

Durability. Because a tick's outputs are in its checkpoint before they are sent, and the next
tick begins only once they were all taken, a ``kill -9`` anywhere loses no row: the restart sends
what the checkpoint still holds (``outputs.py``: exactly once into a delivery stream of this daemon,
at least once into Kinesis and Lambda), then continues from the checkpoint's positions and engine
state, so no input record is processed twice and no window emits twice. A clean stop saves the
checkpoint once more without pending outputs. Tick numbers only grow over an application's life
(its checkpoint keeps the last), so output markers never repeat.

Starting positions: ``LAST_STOPPED_POINT`` restores positions and engine state from the checkpoint
(an application never started before begins at ``NOW``); ``NOW`` and ``TRIM_HORIZON`` ignore them and
start a fresh engine (outputs pending from the last run are still sent first).

Reference data (``ReferenceDataSources[].S3ReferenceDataSource``) is read when the application starts
and on every update: from the bucket's local ``directory`` when ``buckets:`` gives the bucket one (the
same setting that makes a bucket a local folder for delivery), else from S3 through the daemon's S3
client for that bucket. A source that cannot be read leaves the table empty, with an error in the log
(AWS: the application runs, the table is not loaded).

The SQL engine (``firehose.analytics.sql``) and the record mapping (``firehose.analytics.rows``) are
given to the runtime (``engine_factory``, ``rows``), the real ones by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import importlib
import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from firehose.analytics.checkpoints import Checkpoint, CheckpointStore, PendingOutput
from firehose.analytics.inputs import (
    LAST_STOPPED_POINT,
    NOW,
    Fetched,
    FirehoseReader,
    InputRecord,
    KinesisReader,
)
from firehose.analytics.outputs import DeliveryStreamSink, KinesisStreamSink, LambdaSink, Sink
from firehose.analytics.preprocess import Failure, Preprocessor
from firehose.clock import now_ms
from firehose.processing.transform import WorkerPool, resolve_function
from firehose.settings import Settings
from firehose.sources.kinesis import make_client
from firehose.spool import StreamSpool

if TYPE_CHECKING:  # pyarrow loads with the first application, not with the daemon (its memory at rest)
    import pyarrow as pa

    from firehose.analytics.sqltypes import StreamSchema

log = logging.getLogger("firehose.analytics")

#: Fetched batches an application's reader may be ahead of its ticks.
_QUEUE_BATCHES = 64
#: How long ``stop`` lets the current tick finish (its outputs may be retrying) before cancelling it.
STOP_TIMEOUT_SECONDS = 10.0


class EngineLike(Protocol):
    def set_reference(self, table: str, rows: pa.Table) -> None: ...
    def push(self, stream: str, rows: pa.Table) -> None: ...
    def advance(self, now_ms: int) -> dict[str, pa.Table]: ...
    def snapshot(self) -> bytes: ...
    def state_bytes(self) -> int: ...
    def restore(self, data: bytes) -> None: ...


#: (ApplicationCode, input stream schemas, reference table schemas) -> a fresh engine.
EngineFactory = Callable[[str, Sequence["StreamSchema"], Sequence["StreamSchema"]], EngineLike]


def sql_engine(code: str, inputs: Sequence[StreamSchema], references: Sequence[StreamSchema]) -> EngineLike:
    """The real engine (``firehose.analytics.sql``), imported when first needed."""
    sql = importlib.import_module("firehose.analytics.sql")
    return sql.Engine(sql.compile_program(code, inputs, references))  # type: ignore[no-any-return]


def firehose_name(arn: str) -> tuple[str, str]:
    """(account, name) of ``arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME``."""
    parts = arn.split(":", 5)
    return parts[4], parts[5].split("/", 1)[1]


def _member(item: dict[str, Any], *names: str) -> dict[str, Any] | None:
    """The first of ``names`` ``item`` has (Describe's ``...Description`` shapes, or Create's)."""
    for name in names:
        value = item.get(name)
        if isinstance(value, dict):
            return value
    return None


class ApplicationRuntime:
    """Runs SQL applications (the API's ``Runtime``): start, stop, update, discover, forget.

    ``delivery_stream(account, name, writing)`` is the spool of a delivery stream of this daemon, raising
    LookupError while there is none that is ACTIVE (or, ``writing``, that takes direct records);
    ``s3_client(bucket)`` a boto3 S3 client for the bucket; ``workers`` the transform worker pool
    (preprocessors, Lambda outputs);
    ``kinesis_endpoint``/``kinesis_verify`` the in-process Kinesis sidecar, used for Kinesis ARNs the
    AWS configuration does not send elsewhere (as delivery streams reading Kinesis do).
    """

    def __init__(self, *, settings: Settings, state_dir: Path,
                 delivery_stream: Callable[[str, str, bool], StreamSpool],
                 workers: WorkerPool | None = None, s3_client: Callable[[str], Any] | None = None,
                 kinesis_endpoint: str | None = None, kinesis_verify: bool | str = True,
                 engine_factory: EngineFactory | None = None, rows: Any = None,
                 clock: Callable[[], int] = now_ms, tick_seconds: float = 1.0, poll_seconds: float = 0.2,
                 rowtime_clock: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.checkpoints = CheckpointStore(Path(state_dir) / "analytics")
        self.delivery_stream = delivery_stream
        self.workers = workers
        self.s3_client = s3_client
        self.kinesis_endpoint = kinesis_endpoint
        self.kinesis_verify = kinesis_verify
        self.engine_factory = engine_factory or sql_engine
        self._rows = rows
        self.clock = clock
        #: What ROWTIME and window ends are read from: the clock, or a faster one (``scaled_clock``).
        self.rowtime_clock = rowtime_clock or (lambda: self.clock())
        self.tick_seconds = tick_seconds
        self.poll_seconds = poll_seconds
        self.running: dict[tuple[str, str], Application] = {}

    @property
    def rows(self) -> Any:
        """The record mapping (``firehose.analytics.rows`` unless one was given)."""
        if self._rows is None:
            self._rows = importlib.import_module("firehose.analytics.rows")
        return self._rows

    def kinesis_client(self, arn: str) -> Any:
        return make_client(arn, self.settings.kinesis, self.kinesis_endpoint, self.kinesis_verify)

    def function(self, arn: str) -> Any:
        return resolve_function(arn, functions=self.settings.functions, transforms_dir=self.settings.transforms_dir)

    def pool(self) -> WorkerPool:
        if self.workers is None:
            self.workers = WorkerPool(self.settings.processing.workers, nice=self.settings.processing.worker_nice)
        return self.workers

    # -- the Runtime protocol ----------------------------------------------------------

    def start(self, account: str, detail: dict[str, Any], positions: dict[str, str]) -> None:
        key = (account, detail["ApplicationName"])
        if key in self.running:
            return
        app = self.running[key] = Application(self, account, detail, positions)
        app.start()

    async def stop(self, account: str, name: str) -> None:
        app = self.running.pop((account, name), None)
        if app is not None:
            await app.stop()

    def update(self, account: str, detail: dict[str, Any]) -> None:
        app = self.running.get((account, detail["ApplicationName"]))
        if app is not None:
            app.update(detail)

    async def discover(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        from firehose.analytics.sampling import discover

        return await discover(self, account, body)

    def forget(self, account: str, name: str) -> None:
        self.checkpoints.forget(account, name)

    async def close(self) -> None:
        """The daemon stops: every application stops, leaving its checkpoint."""
        await asyncio.gather(*(self.stop(a, n) for a, n in list(self.running)), return_exceptions=True)

    # -- reference data ----------------------------------------------------------------

    def read_object(self, bucket_arn: str, key: str) -> bytes:
        """An S3 object, or the file of a bucket that ``buckets:`` maps to a local directory (blocking)."""
        bucket = bucket_arn.rsplit(":", 1)[-1]
        local = self.settings.buckets.get(bucket)
        if local is not None and local.directory is not None:
            return (Path(local.directory) / key).read_bytes()
        if self.s3_client is None:
            raise LookupError(f"no S3 client for bucket {bucket}")
        return bytes(self.s3_client(bucket).get_object(Bucket=bucket, Key=key)["Body"].read())


class Application:
    """One running application (see the module docstring)."""

    def __init__(self, runtime: ApplicationRuntime, account: str, detail: dict[str, Any],
                 starting: dict[str, str]) -> None:
        self.rt = runtime
        self.account = account
        self.name: str = detail["ApplicationName"]
        self.arn: str = detail.get("ApplicationARN", "")
        self.detail = detail
        self._starting = starting
        #: When StartApplication asked: ``NOW`` means the records after this instant, not after whenever the
        #: application's task gets to open its reader.
        self._requested_ms = runtime.clock()
        self._firehose_now = self._firehose_end(detail)
        self._updated: dict[str, Any] | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Fetched] = asyncio.Queue(_QUEUE_BATCHES)
        self.reader: KinesisReader | FirehoseReader | None = None
        self.positions: dict[str, Any] = {}
        self.tick = 0
        self.rowtime = 0
        self._pending = False
        self.engine: EngineLike | None = None
        self.sinks: dict[str, tuple[dict[str, Any], Sink]] = {}
        self.preprocessor: Preprocessor | None = None
        self.last_error: str | None = None
        #: The engine held ``analytics.max_state_bytes`` or more at the last tick: it takes no input.
        self.holding = False

    # -- configuration -------------------------------------------------------------------

    @property
    def input(self) -> dict[str, Any] | None:
        inputs = self.detail.get("InputDescriptions") or self.detail.get("Inputs") or []
        return inputs[0] if inputs else None

    def stream_names(self) -> list[str]:
        inp = self.input
        if inp is None:
            return []
        count = int((inp.get("InputParallelism") or {}).get("Count", 1))
        return [f"{inp['NamePrefix']}_{k:03d}" for k in range(1, count + 1)]

    def references(self) -> list[dict[str, Any]]:
        return list(self.detail.get("ReferenceDataSourceDescriptions") or self.detail.get("ReferenceDataSources") or [])

    def _engine_shape(self) -> tuple[Any, ...]:
        """What the engine is built from: a change of it needs a new engine."""
        return (self.detail.get("ApplicationCode"), self.stream_names(), (self.input or {}).get("InputSchema"),
                [(r.get("TableName"), r.get("ReferenceSchema")) for r in self.references()])

    def _build_engine(self) -> EngineLike:
        rows = self.rt.rows
        inp = self.input
        inputs = [rows.schema_of(inp["InputSchema"], n) for n in self.stream_names()] if inp else []
        refs = [rows.schema_of(r["ReferenceSchema"], r["TableName"]) for r in self.references()]
        return self.rt.engine_factory(self.detail.get("ApplicationCode") or "", inputs, refs)

    def _build_sinks(self) -> None:
        self.sinks = {}
        marker = f"analytics:{self.account}:{self.name}"
        for out in self.detail.get("OutputDescriptions") or self.detail.get("Outputs") or []:
            output_id = str(out.get("OutputId") or out["Name"])
            firehose = _member(out, "KinesisFirehoseOutputDescription", "KinesisFirehoseOutput")
            kinesis = _member(out, "KinesisStreamsOutputDescription", "KinesisStreamsOutput")
            function = _member(out, "LambdaOutputDescription", "LambdaOutput")
            sink: Sink
            if firehose is not None:
                account, stream = firehose_name(firehose["ResourceARN"])
                resolve = functools.partial(self.rt.delivery_stream, account, stream, True)
                sink = DeliveryStreamSink(out["Name"], resolve, marker, self.rt.clock)
            elif kinesis is not None:
                arn = kinesis["ResourceARN"]
                sink = KinesisStreamSink(out["Name"], arn, functools.partial(self.rt.kinesis_client, arn))
            elif function is not None:
                sink = LambdaSink(out["Name"], self.rt.function(function["ResourceARN"]), self.rt.pool(), self.arn)
            else:
                continue
            self.sinks[output_id] = (out, sink)

    def _build_preprocessor(self) -> None:
        self.preprocessor = None
        inp = self.input
        if inp is None:
            return
        config = _member(inp, "InputProcessingConfigurationDescription", "InputProcessingConfiguration") or {}
        processor = _member(config, "InputLambdaProcessorDescription", "InputLambdaProcessor")
        if processor is not None:
            source = self._source()
            self.preprocessor = Preprocessor(self.rt.function(processor["ResourceARN"]), self.rt.pool(),
                                             application_arn=self.arn, stream_arn=source[1] if source else "")

    def _source(self) -> tuple[str, str] | None:
        """("kinesis" | "firehose", ARN) of the input."""
        inp = self.input
        if inp is None:
            return None
        kinesis = _member(inp, "KinesisStreamsInputDescription", "KinesisStreamsInput")
        if kinesis is not None:
            return "kinesis", kinesis["ResourceARN"]
        firehose = _member(inp, "KinesisFirehoseInputDescription", "KinesisFirehoseInput")
        return ("firehose", firehose["ResourceARN"]) if firehose is not None else None

    async def _load_references(self) -> None:
        assert self.engine is not None
        for ref in self.references():
            s3 = _member(ref, "S3ReferenceDataSourceDescription", "S3ReferenceDataSource") or {}
            try:
                data = await asyncio.to_thread(self.rt.read_object, s3["BucketARN"], s3["FileKey"])
                table = self.rt.rows.load_reference(data, ref["ReferenceSchema"])
                self.engine.set_reference(ref["TableName"], table)
            except Exception as exc:  # the application runs on without the table, as on AWS
                log.error("Could not load reference data; the table stays empty.",
                          extra={"application": self.name, "table": ref.get("TableName"), "error": str(exc)})

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def update(self, detail: dict[str, Any]) -> None:
        self._updated = detail

    async def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait([self._task], timeout=timeout)
        if not done:  # outputs still retrying: the checkpoint keeps them for the next start
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._main()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("A SQL application stopped on an error.", extra={"application": self.name})
        finally:
            if self.reader is not None:
                await self.reader.stop()

    async def _main(self) -> None:
        store = self.rt.checkpoints
        checkpoint = await asyncio.to_thread(store.load, self.account, self.name)
        self.engine = self._build_engine()
        self._build_sinks()
        self._build_preprocessor()
        if checkpoint is not None:
            self.tick = checkpoint.tick
            self.rowtime = checkpoint.rowtime_ms
            for pending in checkpoint.pending:
                sink = self.sinks.get(pending.output_id)
                if sink is not None:
                    await sink[1].recover(checkpoint.tick, pending)
        source = self._source()
        inp = self.input
        start = self._starting.get(str(inp.get("InputId"))) if inp else None
        start = start or next(iter(self._starting.values()), NOW)
        resume = start == LAST_STOPPED_POINT and checkpoint is not None
        if resume:
            assert checkpoint is not None
            if checkpoint.snapshot:
                self.engine.restore(checkpoint.snapshot)
            self.positions = copy.deepcopy(checkpoint.positions)
        await self._load_references()
        if source is not None:
            self.reader = self._reader(source, start if start != LAST_STOPPED_POINT else NOW, resume)
            self.reader.start()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.rt.tick_seconds)
            if self._updated is not None:
                await self._apply_update()
            await self.run_tick()
        if self._pending:  # everything was sent: the next start has nothing to send again
            await asyncio.to_thread(store.save, self.account, self.name, self._checkpoint([]))

    def _firehose_end(self, detail: dict[str, Any]) -> dict[str, Any] | None:
        """A delivery stream input's end as of the request (``NOW``), when the stream can be found now."""
        inputs = detail.get("InputDescriptions") or []
        arn = ((inputs[0].get("KinesisFirehoseInputDescription") or {}).get("ResourceARN") if inputs else None)
        if not arn:
            return None
        try:
            return FirehoseReader.initial(self.rt.delivery_stream(*firehose_name(arn), False))
        except LookupError:
            return None

    def _reader(self, source: tuple[str, str], start: str, resume: bool) -> KinesisReader | FirehoseReader:
        kind, arn = source
        if kind == "kinesis":
            if not resume or "shards" not in self.positions:
                self.positions = KinesisReader.initial(start, self._requested_ms)
            return KinesisReader(arn, lambda: self.rt.kinesis_client(arn), self.positions, self._queue,
                                 poll_seconds=self.rt.poll_seconds, name=self.name)
        account, name = firehose_name(arn)
        stream = self.rt.delivery_stream(account, name, False)
        if not resume or "position" not in self.positions:
            self.positions = self._firehose_now or FirehoseReader.initial(stream)
        return FirehoseReader(stream, self.positions, self._queue, hold=f"analytics-{self.account}-{self.name}",
                              poll_seconds=self.rt.poll_seconds, name=self.name)

    async def _apply_update(self) -> None:
        detail, self._updated = self._updated, None
        assert detail is not None
        before = self._engine_shape()
        self.detail = detail
        if self._engine_shape() != before:
            log.info("The application's code or schemas changed: its state starts afresh.",
                     extra={"application": self.name})
            self.engine = self._build_engine()
        self._build_sinks()
        self._build_preprocessor()
        await self._load_references()

    # -- a tick --------------------------------------------------------------------------

    def _checkpoint(self, pending: list[PendingOutput]) -> Checkpoint:
        assert self.engine is not None
        return Checkpoint(self.tick, copy.deepcopy(self.positions), self.engine.snapshot(), pending, self.rowtime)

    async def run_tick(self) -> None:
        """One tick (module docstring): take, preprocess, map, push, advance, checkpoint, send."""
        fetched: list[Fetched] = []
        if not self._holds_too_much():
            while not self._queue.empty():
                fetched.append(self._queue.get_nowait())
        records: list[tuple[InputRecord, str]] = [(r, f.shard) for f in fetched for r in f.records]
        now = self.rt.rowtime_clock()
        # Each tick's rows get a later ROWTIME than every earlier tick's (the engine's invariant).
        stamp = max(self.rowtime + 1, now) if records else max(self.rowtime, now)
        failures: list[Failure] = []
        if self.preprocessor is not None and records:
            done = await self.preprocessor.run([r for r, _ in records])
            failures = done.failures
            inputs = [(data, arrival, records[i][1]) for data, arrival, i in done.records]
        else:
            inputs = [(r.data, r.arrival_ms, shard) for r, shard in records]
        outputs = await asyncio.to_thread(self._compute, inputs, failures, stamp, now)
        if records:
            self.rowtime = stamp
        if not fetched and not any(outputs.values()):
            return
        reader = self.reader
        if reader is not None:
            for f in fetched:
                reader.apply(self.positions, f)
        self.tick += 1
        pending = [PendingOutput(oid, recs, self.sinks[oid][1].since()) for oid, recs in outputs.items() if recs]
        checkpoint = self._checkpoint(pending)
        await asyncio.to_thread(self.rt.checkpoints.save, self.account, self.name, checkpoint)
        self._pending = bool(pending)
        if isinstance(reader, FirehoseReader):
            reader.checkpointed_at(checkpoint.positions)
        for p in pending:
            await self.sinks[p.output_id][1].send(self.tick, p.records)

    def _holds_too_much(self) -> bool:
        """Whether the engine's windows hold ``analytics.max_state_bytes`` or more. Then the tick takes no
        input, only advances the clock, which closes windows and lets go of their rows; the reader's queue
        stays full, so the reader waits and the backlog stays in the source (bounded memory, nothing lost).
        A tick's input is taken whole, so the engine may exceed the limit by one tick's rows."""
        if self.engine is None:
            return False
        limit = self.rt.settings.analytics.max_state_bytes
        held = self.engine.state_bytes()
        holding = held >= limit
        if holding != self.holding:
            self.holding = holding
            if holding:
                log.warning("A SQL application's windows hold analytics.max_state_bytes; it takes no input until "
                            "they close.", extra={"application": self.name, "held_bytes": held, "limit_bytes": limit})
            else:
                log.info("A SQL application takes input again.", extra={"application": self.name, "held_bytes": held})
        return holding

    def _compute(self, inputs: list[tuple[bytes, int, str]], failures: list[Failure], stamp: int,
                 now: int) -> dict[str, list[bytes]]:
        """Map, push and advance (blocking: the engine's work runs off the event loop); records per output."""
        import pyarrow as pa

        from firehose.analytics.sqltypes import ERROR_STREAM

        assert self.engine is not None
        rows = self.rt.rows
        names = self.stream_names()
        errors: list[pa.Table] = [error_rows(failures, stamp, now)] if failures else []
        if inputs and names:
            groups: dict[str, tuple[list[bytes], list[int]]] = {}
            for data, arrival, shard in inputs:
                name = names[zlib.crc32(shard.encode()) % len(names)]
                datas, arrivals = groups.setdefault(name, ([], []))
                datas.append(data)
                arrivals.append(arrival)
            schema = (self.input or {})["InputSchema"]
            for name, (datas, arrivals) in groups.items():
                mapped = rows.map_records(datas, schema, rowtimes=[stamp] * len(datas), arrivals=arrivals)
                if mapped.rows.num_rows:
                    self.engine.push(name, mapped.rows)
                if mapped.errors is not None and mapped.errors.num_rows:
                    errors.append(mapped.errors)
        emitted = self.engine.advance(max(now, self.rowtime, stamp if inputs else 0))
        engine_errors = emitted.pop(ERROR_STREAM, None)
        if engine_errors is not None and engine_errors.num_rows:
            errors.append(engine_errors)
        error_table = pa.concat_tables(errors, promote_options="permissive") if errors else None
        out: dict[str, list[bytes]] = {}
        for oid, (config, _sink) in self.sinks.items():
            table = error_table if config["Name"] == ERROR_STREAM else emitted.get(config["Name"])
            if table is not None and table.num_rows:
                fmt = (config.get("DestinationSchema") or {}).get("RecordFormatType", "JSON")
                out[oid] = rows.serialize_rows(table, fmt)
        return out


#: ``scaled_clock``'s fixed point (2026-01-01T00:00:00Z): fixed, so scaled time only goes forward across restarts.
_SCALE_ANCHOR_MS = 1_767_225_600_000


def scaled_clock(rate: float) -> Callable[[], int] | None:
    """A clock running ``rate`` times faster than the wall clock (``testing.analytics_clock_rate``), or None
    for the wall clock itself. Anchored at a fixed instant, so it never goes back across restarts."""
    if rate == 1.0:
        return None
    return lambda: int(_SCALE_ANCHOR_MS + (now_ms() - _SCALE_ANCHOR_MS) * rate)


def error_rows(failures: Sequence[Failure], rowtime: int, now: int) -> pa.Table:
    """``error_stream`` rows for records the preprocessor failed (DATA_ROW: the record's bytes in hex)."""
    import pyarrow as pa

    from firehose.analytics.sqltypes import ERROR_STREAM_SCHEMA

    n = len(failures)
    columns = {"ROWTIME": [rowtime] * n, "ERROR_TIME": [now] * n, "ERROR_LEVEL": ["Error"] * n,
               "ERROR_NAME": [f.name[:32] for f in failures], "MESSAGE": [f.message[:4096] for f in failures],
               "DATA_ROWTIME": [rowtime] * n, "DATA_ROW": [f.data.hex()[:49152] for f in failures],
               "PUMP_NAME": [None] * n}
    return pa.table(columns, schema=ERROR_STREAM_SCHEMA.arrow_schema())
