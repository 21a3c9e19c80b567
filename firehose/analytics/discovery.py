"""DiscoverInputSchema: an input schema inferred from sample records, as the AWS console proposes one.

JSON records (objects, one document per record) give one column per leaf element: nested objects are
followed (``$.a.b``, column ``a_b``), arrays are kept whole as JSON text in a VARCHAR column (mapping
``$.a``). Other records are read as CSV: the delimiter is the one of ``,`` ``|`` ``\\t`` ``;`` that splits
every sample row into the same number (more than one) of fields, else ``,``; columns are ``COL1``,
``COL2`` … in order. A column's name is its key, with characters other than letters, digits and ``_``
made ``_`` (a key that was upper case in the data, as in AWS's examples, stays the name SQL uses).

Types, from every sample's value (our rules, matching AWS's examples where they show one — the demo stock
stream's ``TICKER_SYMBOL VARCHAR(4)``, ``SECTOR VARCHAR(16)``, ``CHANGE REAL``, ``PRICE REAL``):

* only whole numbers: ``INTEGER``, or ``BIGINT`` beyond 32 bits;
* any number with a fraction: ``REAL`` (``DOUBLE`` when a value needs more than a float's 7 digits);
* only booleans: ``BOOLEAN``;
* only ISO-8601 timestamps (``2018-06-13T14:11:05.766``): ``TIMESTAMP``;
* anything else: ``VARCHAR(n)``, n the longest value's length rounded up to a power of two (at least 1).

A column that is null in every sample is ``VARCHAR(1)``. ``ParsedInputRecords`` lists every sample row's
values as text in column order.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import orjson

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_DELIMITERS = (",", "|", "\t", ";")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _leaves(doc: Any, prefix: str, path: str, out: dict[str, tuple[str, Any]]) -> None:
    for key, value in doc.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        step = f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) else f"{path}['{key}']"
        if isinstance(value, dict) and value:
            _leaves(value, name, step, out)
        else:
            out.setdefault(name, (step, value))
            if out[name][1] is None:
                out[name] = (step, value)


def _type(values: Sequence[Any]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "VARCHAR(1)"
    if all(isinstance(v, bool) for v in present):
        return "BOOLEAN"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) or v.is_integer() for v in present):
            return "INTEGER" if all(-(2**31) <= v < 2**31 for v in present) else "BIGINT"
        digits = max(len(repr(float(v)).replace("-", "").replace(".", "").lstrip("0")) for v in present)
        return "REAL" if digits <= 7 else "DOUBLE"
    texts = [v if isinstance(v, str) else _json_text(v) for v in present]
    if all(_ISO.match(t) for t in texts) and all(_iso_ok(t) for t in texts):
        return "TIMESTAMP"
    longest = max(len(t) for t in texts)
    return f"VARCHAR({1 << max(0, (longest - 1).bit_length())})"


def _iso_ok(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _column_name(name: str, taken: set[str]) -> str:
    base = _UNSAFE.sub("_", name) or "COL"
    candidate, n = base, 1
    while candidate.upper() in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate.upper())
    return candidate


def _discover_json(docs: list[dict[str, Any]]) -> dict[str, Any]:
    leaves = [{} for _ in docs]  # type: list[dict[str, tuple[str, Any]]]
    order: dict[str, str] = {}
    for doc, found in zip(docs, leaves, strict=True):
        _leaves(doc, "", "$", found)
        for name, (path, _value) in found.items():
            order.setdefault(name, path)
    taken: set[str] = set()
    columns, rows = [], [[] for _ in docs]  # type: list[dict[str, str]], list[list[str]]
    for name, path in order.items():
        values = [found.get(name, (path, None))[1] for found in leaves]
        columns.append({"Name": _column_name(name, taken), "SqlType": _type(values), "Mapping": path})
        for row, value in zip(rows, values, strict=True):
            row.append("" if value is None else _json_text(value))
    return {"InputSchema": {
        "RecordFormat": {"RecordFormatType": "JSON",
                         "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
        "RecordEncoding": "UTF-8", "RecordColumns": columns}, "ParsedInputRecords": rows}


def _discover_csv(texts: list[str]) -> dict[str, Any]:
    lines = [line.rstrip("\r") for text in texts for line in text.split("\n") if line.strip()]
    if not lines:
        raise ValueError("the samples hold no rows")
    delimiter = ","
    for candidate in _DELIMITERS:
        counts = {len(next(csv.reader([line], delimiter=candidate))) for line in lines}
        if len(counts) == 1 and counts.pop() > 1:
            delimiter = candidate
            break
    rows = [next(csv.reader([line], delimiter=delimiter)) for line in lines]
    width = max(len(r) for r in rows)
    columns = []
    for i in range(width):
        values: list[Any] = []
        for row in rows:
            values.append(_number(row[i]) if i < len(row) and row[i] != "" else None)
        columns.append({"Name": f"COL{i + 1}", "SqlType": _type(values)})
    return {"InputSchema": {
        "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {"CSVMappingParameters": {
            "RecordRowDelimiter": "\n", "RecordColumnDelimiter": delimiter}}},
        "RecordEncoding": "UTF-8", "RecordColumns": columns},
        "ParsedInputRecords": [row + [""] * (width - len(row)) for row in rows]}


def _number(text: str) -> Any:
    """A CSV field as the JSON value it reads as (numbers and booleans typed), else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def discover_schema(records: Sequence[bytes]) -> dict[str, Any]:
    """``InputSchema`` and ``ParsedInputRecords`` for sample ``records``; ValueError when none can be read."""
    texts: list[str] = []
    for data in records:
        try:
            texts.append(bytes(data).decode("utf-8"))
        except UnicodeDecodeError:
            continue
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no sample record is UTF-8 text")
    docs: list[dict[str, Any]] = []
    for text in texts:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            break
        if not isinstance(doc, dict):
            break
        docs.append(doc)
    if len(docs) == len(texts):
        if not any(docs):
            raise ValueError("the sample JSON objects have no members")
        return _discover_json(docs)
    return _discover_csv(texts)
