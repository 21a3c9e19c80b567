"""Error output documents: one JSON line per record that could not be delivered as data.

Firehose writes each failed record under ``ErrorOutputPrefix`` (with
``!{firehose:error-output-type}`` set to the failure category) as a JSON
document that carries the original bytes, so nothing is lost and the record
can be replayed (spec: delivery.md §6.1, transforms.md §4, formats.md §4).
Field names follow AWS per category: processing and partitioning failures use
``errorCode``/``errorMessage``, format-conversion failures ``lastErrorCode``/
``lastErrorMessage`` plus the table they were converted against.

Three stages write these documents (the record chain for records it could
not process or partition, encoding for records that do not fit the table's
schema or a partition buffer, the deliverer for what a record destination
refused), so the format lives below all three, among the foundation modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pybase64

from firehose.clock import now_ms

PROCESSING_FAILED = "processing-failed"
FORMAT_CONVERSION_FAILED = "format-conversion-failed"
DECOMPRESSION_FAILED = "decompression-failed"
#: Dynamic partitioning failures (key extraction, prefix evaluation, too many active
#: partitions). AWS files them under the error prefix without naming the type here.
PARTITIONING_FAILED = "partitioning-failed"
#: How many error documents of a stream the console keeps (its newest); an error-output object
#: carries its last this many in plain form (``ObjectBatch.documents``) for that.
RECENT = 20


def document(
    *, raw: bytes | memoryview, arrival_ms: int, code: str, message: str, attempts: int = 1,
    ended_ms: int | None = None, extra: dict[str, Any] | None = None,
) -> bytes:
    """A processing/partitioning failure, as one newline-terminated JSON line."""
    doc: dict[str, Any] = {
        "attemptsMade": attempts,
        "arrivalTimestamp": arrival_ms,
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": ended_ms if ended_ms is not None else now_ms(),
        "rawData": pybase64.b64encode(bytes(raw)).decode(),
    }
    if extra:
        doc.update(extra)
    return orjson.dumps(doc) + b"\n"


def conversion_document(
    *, raw: bytes | memoryview, arrival_ms: int, message: str, table: dict[str, Any], ended_ms: int,
    code: str = "DataFormatConversion.MalformedData",
) -> bytes:
    """A format-conversion failure (the record did not fit the table's schema, or the batch could
    not be written in the output format: ``code`` says which)."""
    doc = {
        "attemptsMade": 1,
        "arrivalTimestamp": arrival_ms,
        "lastErrorCode": code,
        "lastErrorMessage": message,
        "attemptEndingTimestamp": ended_ms,
        "rawData": pybase64.b64encode(bytes(raw)).decode(),
        "sequenceNumber": None,
        "subSequenceNumber": None,
        "dataCatalogTable": table,
    }
    return orjson.dumps(doc) + b"\n"


def tail(docs: Sequence[bytes | memoryview]) -> tuple[bytes, ...]:
    """The last ``RECENT`` documents, as bytes (an object may cross to a worker process: no views)."""
    return tuple(bytes(d) for d in docs[-RECENT:])
