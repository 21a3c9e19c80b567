"""DiscoverInputSchema: read sample records of a source and infer its schema from them.

The samples come from a Kinesis stream (every shard, from ``InputStartingPositionConfiguration``:
``TRIM_HORIZON`` and ``LAST_STOPPED_POINT`` from the oldest record, ``NOW`` from the records that arrive
within ``WAIT_SECONDS`` of the call), a delivery stream of this daemon (the records its spool holds, or
those arriving within ``WAIT_SECONDS`` for ``NOW``), or an S3 object (``S3Configuration``: one record per
non-empty line; a local file when ``buckets:`` maps the bucket to a directory). At most
``MAX_SAMPLES`` records are read. The preprocessor runs on them when the request names one; the
answer is ``rows.discover_schema``'s with ``RawInputRecords`` (and ``ProcessedInputRecords``) added.
Nothing to read, or nothing that parses, is ``UnableToDetectSchemaException`` (which carries the raw
and processed records, as AWS's does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from firehose.analytics.inputs import NOW, Fetched, FirehoseReader, InputRecord, KinesisReader
from firehose.analytics.preprocess import Preprocessor
from firehose.errors import FirehoseError, InvalidArgumentException

if TYPE_CHECKING:
    from firehose.analytics.runtime import ApplicationRuntime

MAX_SAMPLES = 100
WAIT_SECONDS = 3.0


class UnableToDetectSchemaException(FirehoseError):
    """The samples could not be read or parsed; carries what was read."""

    def __init__(self, message: str, raw: list[str] | None = None, processed: list[str] | None = None) -> None:
        super().__init__(message)
        self.raw_input_records = raw or []
        self.processed_input_records = processed or []


async def discover(runtime: ApplicationRuntime, account: str, body: dict[str, Any]) -> dict[str, Any]:
    s3 = body.get("S3Configuration")
    arn = body.get("ResourceARN")
    if s3:
        data = await asyncio.to_thread(runtime.read_object, s3["BucketARN"], s3["FileKey"])
        samples = [line for line in data.splitlines() if line.strip()][:MAX_SAMPLES]
        records = [InputRecord(line, runtime.clock(), str(i), {}) for i, line in enumerate(samples)]
    elif arn:
        start = (body.get("InputStartingPositionConfiguration") or {}).get("InputStartingPosition", NOW)
        records = await _read_stream(runtime, arn, start)
    else:
        raise InvalidArgumentException("Either ResourceARN or S3Configuration is required.")
    raw = [r.data.decode("utf-8", "replace") for r in records]
    datas = [r.data for r in records]
    processed: list[str] = []
    lambda_config = ((body.get("InputProcessingConfiguration") or {}).get("InputLambdaProcessor") or {})
    if lambda_config.get("ResourceARN") and records:
        done = await Preprocessor(runtime.function(lambda_config["ResourceARN"]), runtime.pool(),
                                  application_arn="", stream_arn=arn or "").run(records)
        datas = [data for data, _arrival, _i in done.records]
        processed = [d.decode("utf-8", "replace") for d in datas]
    if not datas:
        raise UnableToDetectSchemaException("No data was read from the source to discover a schema from.",
                                            raw, processed)
    try:
        answer = dict(runtime.rows.discover_schema(datas))
    except (ValueError, TypeError) as exc:
        raise UnableToDetectSchemaException(f"Unable to detect a schema: {exc}", raw, processed) from exc
    answer["RawInputRecords"] = raw
    if processed:
        answer["ProcessedInputRecords"] = processed
    return answer


async def _read_stream(runtime: ApplicationRuntime, arn: str, start: str) -> list[InputRecord]:
    """Up to ``MAX_SAMPLES`` records of a Kinesis stream or delivery stream (module docstring)."""
    queue: asyncio.Queue[Fetched] = asyncio.Queue()
    reader: KinesisReader | FirehoseReader
    if arn.split(":")[2] == "kinesis":
        positions = KinesisReader.initial(start if start == NOW else "TRIM_HORIZON", runtime.clock())
        reader = KinesisReader(arn, lambda: runtime.kinesis_client(arn), positions, queue,
                               poll_seconds=runtime.poll_seconds, name="DiscoverInputSchema")
    else:
        from firehose.analytics.runtime import firehose_name

        stream = runtime.delivery_stream(*firehose_name(arn), False)
        positions = FirehoseReader.initial(stream) if start == NOW else {"position": [stream.log.first_seq, 0]}
        reader = FirehoseReader(stream, positions, queue, hold="analytics-discover",
                                poll_seconds=runtime.poll_seconds, name="DiscoverInputSchema")
    records: list[InputRecord] = []
    reader.start()
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(records) < MAX_SAMPLES and (left := deadline - time.monotonic()) > 0:
            try:
                fetched = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                break
            records.extend(fetched.records)
            if start != NOW and queue.empty() and records:
                # From the oldest record: what is there now is read; a short wait for the other shards.
                with contextlib.suppress(TimeoutError):
                    while len(records) < MAX_SAMPLES:
                        records.extend((await asyncio.wait_for(queue.get(), 0.5)).records)
                break
    finally:
        await reader.stop()
    return records[:MAX_SAMPLES]

