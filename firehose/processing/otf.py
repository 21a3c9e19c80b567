"""Routing records to Apache Iceberg tables: which table each record goes to, and what it does there.

Each record of an Iceberg stream needs ``(database, table, operation)`` (spec: iceberg.md §2). The
values come, highest precedence first, from a transform's ``metadata.otfMetadata``
(``destinationDatabaseName``, ``destinationTableName``, ``operation``), from the
``MetadataExtraction`` processor's jq query on the transformed record (an object with the same
keys), or, for neither, from the stream's single ``DestinationTableConfigurationList`` entry (the
destination knows it; the record then has no route here). Lambda runs before jq, so jq sees the
transformed record and Lambda's values win where it gives them (our choice: AWS does not say).

A route becomes the record's partition keys (``otf:database``, ``otf:table``, ``otf:operation``),
the same machinery dynamic partitioning uses: records of one route share a buffer and a batch, and
the Iceberg destination reads the route of a batch from its keys. A record whose route cannot be
resolved (not JSON, jq error, a database without a table, an operation other than insert, update
or delete) raises ``ValueError`` with the reason; the chain sends it to the error output.
"""

from __future__ import annotations

from typing import Any

import jq

from firehose.partitions import OTF_DATABASE as DATABASE
from firehose.partitions import OTF_OPERATION as OPERATION
from firehose.partitions import OTF_TABLE as TABLE
from firehose.processing.partition import query_object

OPERATIONS = ("insert", "update", "delete")
#: The error output type of records that cannot be written to a table, routing failures included.
ICEBERG_FAILED = "iceberg-failed"
ROUTING_FAILED = "Iceberg.RoutingFailed"

_FIELDS = (("destinationDatabaseName", DATABASE), ("destinationTableName", TABLE), ("operation", OPERATION))


class Router:
    """Computes a record's route from an optional jq query and a transform's metadata."""

    def __init__(self, query: str | None) -> None:
        self._program = None
        if query is not None:
            try:
                self._program = jq.compile(query)
            except ValueError as exc:
                raise ValueError(f"MetadataExtractionQuery is not a valid jq program: {exc}") from exc

    def route(self, data: bytes, metadata: Any) -> dict[str, str]:
        """The record's route as partition keys; empty when nothing routes it (the default table)."""
        found: dict[str, str] = {}
        if self._program is not None:
            found.update(self._from_query(data))
        otf = metadata.get("otfMetadata") if isinstance(metadata, dict) else None
        if otf:
            found.update({key: str(otf[name]) for name, key in _FIELDS if otf.get(name)})
        if not found:
            return {}
        if (DATABASE in found) != (TABLE in found):
            raise ValueError("the record's route names only one of destinationDatabaseName and "
                             "destinationTableName")
        op = found.get(OPERATION, "insert")
        if op not in OPERATIONS:
            raise ValueError(f"operation {op!r} is not one of insert, update, delete")
        found[OPERATION] = op
        return found

    def _from_query(self, data: bytes) -> dict[str, str]:
        assert self._program is not None
        result = query_object(self._program, data, "its table",
                              "a JSON object with destinationDatabaseName and destinationTableName")
        out: dict[str, str] = {}
        for name, key in _FIELDS:
            value = result.get(name)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise ValueError(f"MetadataExtractionQuery gave {name} as a {type(value).__name__}, not a string")
            out[key] = value
        return out
