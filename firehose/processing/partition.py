"""Dynamic partitioning: partition keys for each record, from jq queries and transform metadata.

Keys are namespaced as they appear in prefixes: ``partitionKeyFromQuery:<name>``
for keys computed by the ``MetadataExtraction`` processor's jq query on the
record's JSON, and ``partitionKeyFromLambda:<name>`` for keys a transform
returned in ``metadata.partitionKeys``. Records with the same keys share a
buffer and objects; the keys are inserted into the prefix verbatim.

A record whose keys cannot be computed (not JSON, jq error, a key that is
null or empty, a prefix key missing, an evaluated prefix over 512 characters)
raises ``ValueError`` with the reason, and the caller sends it to the error
output instead of guessing a partition (spec: delivery.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jq
import orjson

MAX_KEYS = 50
QUERY = "partitionKeyFromQuery"
LAMBDA = "partitionKeyFromLambda"


def _text(name: str, value: Any) -> str:
    if value is None or value == "":
        raise ValueError(f"partition key {name!r} is null or empty")
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    raise ValueError(f"partition key {name!r} is a {type(value).__name__}, not a scalar")


class MetadataExtraction:
    """A compiled ``MetadataExtractionQuery`` (jq)."""

    def __init__(self, query: str) -> None:
        try:
            self._program = jq.compile(query)
        except ValueError as exc:
            raise ValueError(f"MetadataExtractionQuery is not a valid jq program: {exc}") from exc
        self.query = query

    def keys(self, data: bytes | memoryview) -> dict[str, str]:
        result = query_object(self._program, data, "its partition keys", "a JSON object of partition keys")
        if len(result) > MAX_KEYS:
            raise ValueError(f"MetadataExtractionQuery produced {len(result)} keys; the limit is {MAX_KEYS}")
        return {f"{QUERY}:{k}": _text(k, v) for k, v in result.items()}


def query_object(program: Any, data: bytes | memoryview, finding: str, wanted: str) -> dict[str, Any]:
    """The JSON object a compiled MetadataExtractionQuery makes of one JSON record, or ValueError
    saying why not (``finding``: what the query was for; ``wanted``: what it must produce)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"record is not JSON, so {finding} cannot be found: {exc}") from exc
    try:
        result = program.input_value(value).first()
    except (ValueError, StopIteration) as exc:
        raise ValueError(f"MetadataExtractionQuery failed on this record: {exc}") from exc
    if not isinstance(result, dict):
        raise ValueError(f"MetadataExtractionQuery must produce {wanted}")
    return result


def lambda_keys(metadata: Any) -> dict[str, str]:
    """Keys from a transform's ``metadata.partitionKeys`` (validated by the transform step)."""
    if not metadata:
        return {}
    keys = metadata.get("partitionKeys") if isinstance(metadata, dict) else None
    if not keys:
        return {}
    return {f"{LAMBDA}:{k}": _text(k, v) for k, v in keys.items()}


def check_prefix_keys(needed: set[str], keys: Mapping[str, str]) -> None:
    missing = sorted(n for n in needed if not keys.get(n))
    if missing:
        raise ValueError(f"the Prefix uses {', '.join('!{' + m + '}' for m in missing)} "
                         "but this record has no value for it")
