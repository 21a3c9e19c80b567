"""Firehose data transformation that filters and redacts JSON records and sets their partition keys.

Each record's data is one JSON object, optionally followed by "\\n". Records
are dropped by field value, cut down to the fields wanted, have sensitive
fields masked, and get metadata.partitionKeys for dynamic partitioning, all
in one pass, in this order:

1. DROP_WHEN is checked on the record as it came.
2. REDACT_FIELDS are masked.
3. PARTITION_KEYS are read from the masked record, so a masked value never
   reaches an object key prefix (with REDACT_MODE=hash, a record can be
   partitioned by the hash of a field it must not carry in clear).
4. KEEP_FIELDS cuts the record down; partition keys need not be kept.

The output is the resulting object as compact JSON plus "\\n". A record that
is not one JSON object, or whose output would hold NaN or Infinity (JSON has
neither, but Python reads them, and reads 1e400 as Infinity), is
ProcessingFailed, as is one missing a partition key, since Firehose cannot
partition it.

A "dotted path" names a field by the keys leading to it through nested
objects: "user.id" is {"user": {"id": ...}}. Paths do not go into arrays, and
a key that itself contains a dot cannot be named. Where a field's value is
compared or used as text, a string is itself and anything else is its compact
JSON (200 -> "200", true -> "true").

Environment (read at each invocation, as on Lambda; unset or empty means off):
    DROP_WHEN: comma list of dotted.path=value; the record is Dropped when any
        listed field equals its value ("level=debug,source=healthcheck").
        A value cannot contain a comma.
    KEEP_FIELDS: comma list of dotted paths; the output holds only these, at
        the same nesting. A listed field the record lacks is left out.
    REDACT_FIELDS: comma list of dotted paths whose values, when present,
        become "REDACTED".
    REDACT_MODE: "replace" (the default) or "hash": the value becomes the
        SHA-256 hex digest of its text instead, so equal values can still be
        matched. The hash is unsalted: a value from a small set (a phone
        number, a postcode) can be recovered by hashing every candidate.
    PARTITION_KEYS: comma list of name=dotted.path, or dotted.path alone for a
        name that is the path's last segment ("customer=account.id,region").
        Each value must be a string, number or boolean; it goes, as text, to
        metadata.partitionKeys.
A malformed variable raises before any record is touched, so a typo fails the
invocation (which Firehose retries) instead of passing every record through
unfiltered or unredacted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

_REDACTED = "REDACTED"
_REDACT_MODES = ("replace", "hash")
_MISSING = object()  # what _get finds where a field is absent, distinct from a JSON null


class _Config(NamedTuple):
    drop_when: tuple[tuple[tuple[str, ...], str], ...]
    keep_fields: tuple[tuple[str, ...], ...]
    redact_fields: tuple[tuple[str, ...], ...]
    redact_hash: bool
    partition_keys: tuple[tuple[str, tuple[str, ...]], ...]


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = _config(os.environ)
    return {"records": [_transform(record, config) for record in event["records"]]}


def _config(environ: Mapping[str, str]) -> _Config:
    """Reads the environment; raises ValueError, naming the variable, for a malformed one."""
    mode = environ.get("REDACT_MODE") or "replace"
    if mode not in _REDACT_MODES:
        raise ValueError(f"REDACT_MODE must be 'replace' or 'hash', not {mode!r}")
    partition_keys = tuple(_partition_key(item) for item in _items(environ, "PARTITION_KEYS"))
    names = [name for name, _ in partition_keys]
    if len(set(names)) != len(names):
        raise ValueError(f"PARTITION_KEYS names a partition key twice: {names}")
    return _Config(
        drop_when=tuple(_condition(item) for item in _items(environ, "DROP_WHEN")),
        keep_fields=tuple(_path(item, "KEEP_FIELDS") for item in _items(environ, "KEEP_FIELDS")),
        redact_fields=tuple(_path(item, "REDACT_FIELDS") for item in _items(environ, "REDACT_FIELDS")),
        redact_hash=mode == "hash",
        partition_keys=partition_keys,
    )


def _items(environ: Mapping[str, str], variable: str) -> list[str]:
    return [item.strip() for item in (environ.get(variable) or "").split(",") if item.strip()]


def _condition(item: str) -> tuple[tuple[str, ...], str]:
    path, equals, value = item.partition("=")
    if not equals:
        raise ValueError(f"DROP_WHEN entries are dotted.path=value, not {item!r}")
    return _path(path, "DROP_WHEN"), value.strip()


def _partition_key(item: str) -> tuple[str, tuple[str, ...]]:
    name, equals, path = item.partition("=")
    if not equals:
        keys = _path(name, "PARTITION_KEYS")
        return keys[-1], keys
    if not name.strip():
        raise ValueError(f"PARTITION_KEYS entries are name=dotted.path or dotted.path, not {item!r}")
    return name.strip(), _path(path, "PARTITION_KEYS")


def _path(text: str, variable: str) -> tuple[str, ...]:
    keys = tuple(text.strip().split("."))
    if not all(keys):
        raise ValueError(f"{variable} has a dotted path with an empty segment: {text!r}")
    return keys


def _transform(record: dict[str, Any], config: _Config) -> dict[str, Any]:
    try:
        document = _document(record["data"])
        if any(_equals(document, path, value) for path, value in config.drop_when):
            return {"recordId": record["recordId"], "result": "Dropped", "data": ""}
        for path in config.redact_fields:
            _redact(document, path, config.redact_hash)
        partition_keys = {name: _partition_value(document, path) for name, path in config.partition_keys}
        text = _serialize(_keep(document, config.keep_fields) if config.keep_fields else document)
    except ValueError:
        return {"recordId": record["recordId"], "result": "ProcessingFailed", "data": record["data"]}
    data = base64.b64encode(text.encode()).decode()
    response: dict[str, Any] = {"recordId": record["recordId"], "result": "Ok", "data": data}
    if partition_keys:
        response["metadata"] = {"partitionKeys": partition_keys}
    return response


def _document(data: str) -> dict[str, Any]:
    """Decodes a record into a JSON object; raises ValueError for anything else."""
    document = json.loads(base64.b64decode(data, validate=True))
    if not isinstance(document, dict):
        raise ValueError("the record is JSON but not an object")
    return document


def _serialize(document: dict[str, Any]) -> str:
    """Compact JSON plus "\\n"; ValueError for NaN and Infinity, which JSON cannot carry."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def _get(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at path, or _MISSING when a key is absent or a step is not an object."""
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _equals(document: dict[str, Any], path: tuple[str, ...], expected: str) -> bool:
    value = _get(document, path)
    return value is not _MISSING and _text(value) == expected


def _text(value: Any) -> str:
    """A value as text: a string is itself, anything else its compact JSON (200 -> "200")."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _redact(document: dict[str, Any], path: tuple[str, ...], hash_values: bool) -> None:
    *parents, key = path
    parent = _get(document, tuple(parents))
    if isinstance(parent, dict) and key in parent:
        parent[key] = hashlib.sha256(_text(parent[key]).encode()).hexdigest() if hash_values else _REDACTED


def _partition_value(document: dict[str, Any], path: tuple[str, ...]) -> str:
    value = _get(document, path)
    if value is _MISSING or value is None or isinstance(value, (dict, list)):
        raise ValueError(f"partition key field {'.'.join(path)} is absent or not a string, number or boolean")
    return _text(value)


def _keep(document: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for path in paths:
        value = _get(document, path)
        if value is _MISSING:
            continue
        *parents, key = path
        target = kept
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    return kept


handler = lambda_handler
