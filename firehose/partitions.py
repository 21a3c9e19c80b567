"""Partition ids: how the record chain names where a record goes, and the spool stores it.

A partition id is a canonical JSON string: ``{"k":{...}}`` for data partitioned
by the given keys (``{"k":{}}`` when there is no dynamic partitioning) and
``{"e":"<error output type>"}`` for error output. Canonical (sorted keys), so
equal partitions have equal ids, and ids can be compared and stored as they are.

It sits at the foundation because two layers that must not know each other
share it: the processing chain produces ids, the spool keeps them in its
processed entries and seals.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


def data_partition(keys: Mapping[str, str] | None = None) -> str:
    return orjson.dumps({"k": dict(keys or {})}, option=orjson.OPT_SORT_KEYS).decode()


def error_partition(error_type: str) -> str:
    return orjson.dumps({"e": error_type}).decode()


DEFAULT_PARTITION = data_partition()


def describe_partition(partition: str) -> tuple[dict[str, str] | None, str | None]:
    """(partition keys, None) for data, (None, error output type) for errors."""
    d = orjson.loads(partition)
    return (d["k"], None) if "k" in d else (None, d["e"])


#: The partition keys of a record routed to an Iceberg table (``processing/otf.py`` sets them, the
#: Iceberg destination reads them): its database, table and operation (insert, update or delete).
OTF_DATABASE = "otf:database"
OTF_TABLE = "otf:table"
OTF_OPERATION = "otf:operation"
