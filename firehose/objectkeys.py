"""S3 object keys: the prefix expression language and the Firehose suffix.

``key = <evaluated prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><extension>``
(spec: delivery.md §2-3). Prefixes may hold ``!{namespace:value}`` expressions:

* ``!{timestamp:<Java DateTimeFormatter pattern>}``: every occurrence evaluates
  to the same instant, the arrival time of the oldest record in the object,
  in UTC or the stream's ``CustomTimeZone``.
* ``!{firehose:random-string}``: 11 random characters, new for each occurrence.
* ``!{firehose:error-output-type}``: the failure category (ErrorOutputPrefix only).
* ``!{partitionKeyFromQuery:k}`` / ``!{partitionKeyFromLambda:k}``: dynamic
  partitioning keys (only when dynamic partitioning is enabled), looked up in
  the record's keys as ``"partitionKeyFromQuery:k"`` / ``"partitionKeyFromLambda:k"``.

A Prefix without a timestamp expression gets ``!{timestamp:yyyy/MM/dd/HH/}``
appended. The validation rules that AWS applies at create/update time live
in ``validate_prefixes`` so config files and the API reject the same things.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NAMESPACES = ("timestamp", "firehose", "partitionKeyFromQuery", "partitionKeyFromLambda")
FIREHOSE_VALUES = ("random-string", "error-output-type")
DEFAULT_TIME_PREFIX = "!{timestamp:yyyy/MM/dd/HH/}"
MAX_EVALUATED_PREFIX = 512

#: Failure categories used as ``!{firehose:error-output-type}`` (spec: delivery.md §3.2).
ERROR_OUTPUT_TYPES = (
    "processing-failed",
    "format-conversion-failed",
    "AmazonOpenSearchService-failed",
    "elasticsearch-failed",
    "splunk-failed",
    "http-endpoint-failed",
    "decompression-failed",
    "partitioning-failed",
)


@dataclass(frozen=True, slots=True)
class Expr:
    namespace: str
    value: str


Part = str | Expr


# -- Java DateTimeFormatter subset ---------------------------------------------

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _num(value: int, width: int) -> str:
    return str(value).zfill(width)


def _year(dt: datetime, n: int) -> str:
    return _num(dt.year % 100, 2) if n == 2 else _num(dt.year, n)


def _week_year(dt: datetime, n: int) -> str:
    y = dt.isocalendar().year
    return _num(y % 100, 2) if n == 2 else _num(y, n)


def _text(full: tuple[str, ...], index: int, n: int) -> str:
    return full[index] if n >= 4 else full[index][:3]


def _offset(dt: datetime, n: int, zulu: bool) -> str:
    delta = dt.utcoffset()
    seconds = int(delta.total_seconds()) if delta else 0
    if seconds == 0 and zulu:
        return "Z"
    sign = "+" if seconds >= 0 else "-"
    hh, mm = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hh:02d}:{mm:02d}" if n >= 3 else f"{sign}{hh:02d}{mm:02d}"


#: pattern letter -> (function of datetime and repeat count, allowed counts or None for any)
_LETTERS: dict[str, Callable[[datetime, int], str]] = {
    "y": _year,
    "u": _year,
    "Y": _week_year,
    "M": lambda dt, n: _text(_MONTHS, dt.month - 1, n) if n >= 3 else _num(dt.month, n),
    "L": lambda dt, n: _text(_MONTHS, dt.month - 1, n) if n >= 3 else _num(dt.month, n),
    "d": lambda dt, n: _num(dt.day, n),
    "D": lambda dt, n: _num(dt.timetuple().tm_yday, n),
    "Q": lambda dt, n: _num((dt.month - 1) // 3 + 1, n),
    "w": lambda dt, n: _num(dt.isocalendar().week, n),
    "E": lambda dt, n: _text(_DAYS, dt.weekday(), n),
    "e": lambda dt, n: _num(dt.isoweekday(), n),
    "a": lambda dt, n: "AM" if dt.hour < 12 else "PM",
    "H": lambda dt, n: _num(dt.hour, n),
    "k": lambda dt, n: _num(dt.hour or 24, n),
    "K": lambda dt, n: _num(dt.hour % 12, n),
    "h": lambda dt, n: _num(dt.hour % 12 or 12, n),
    "m": lambda dt, n: _num(dt.minute, n),
    "s": lambda dt, n: _num(dt.second, n),
    "S": lambda dt, n: _num(dt.microsecond, 6)[:n].ljust(n, "0"),
    "A": lambda dt, n: _num(((dt.hour * 60 + dt.minute) * 60 + dt.second) * 1000 + dt.microsecond // 1000, n),
    "X": lambda dt, n: _offset(dt, n, zulu=True),
    "x": lambda dt, n: _offset(dt, n, zulu=False),
    "Z": lambda dt, n: _offset(dt, 1, zulu=False),
    "z": lambda dt, n: dt.tzname() or "UTC",
    "V": lambda dt, n: str(getattr(dt.tzinfo, "key", "UTC")),
}

Token = tuple[str, int] | str  # (letter, count) or literal text


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> tuple[Token, ...]:
    """Parse a DateTimeFormatter pattern; raises ValueError naming what is wrong."""
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            end = i + 1
            literal = []
            while True:
                if end >= n:
                    raise ValueError(f"unterminated quote in timestamp pattern {pattern!r}")
                if pattern[end] == "'":
                    if end + 1 < n and pattern[end + 1] == "'":
                        literal.append("'")
                        end += 2
                        continue
                    break
                literal.append(pattern[end])
                end += 1
            tokens.append("".join(literal) if literal or end > i + 1 else "'")
            i = end + 1
        elif c.isascii() and c.isalpha():
            j = i
            while j < n and pattern[j] == c:
                j += 1
            if c not in _LETTERS:
                raise ValueError(f"unsupported pattern letter {c!r} in timestamp pattern {pattern!r}")
            tokens.append((c, j - i))
            i = j
        elif c in "[]{}#":
            raise ValueError(f"reserved character {c!r} in timestamp pattern {pattern!r}")
        else:
            tokens.append(c)
            i += 1
    return tuple(tokens)


def format_instant(pattern: str, dt: datetime) -> str:
    return "".join(t if isinstance(t, str) else _LETTERS[t[0]](dt, t[1]) for t in compile_pattern(pattern))


# -- prefix templates ----------------------------------------------------------

_EXPR = re.compile(r"!\{([^:{}]*):([^{}]*)\}")


@lru_cache(maxsize=1024)
def parse(template: str) -> tuple[Part, ...]:
    """Split a prefix into literal text and expressions; ValueError if malformed."""
    parts: list[Part] = []
    pos = 0
    for m in _EXPR.finditer(template):
        literal = template[pos : m.start()]
        if "!{" in literal:
            raise ValueError(f"'!{{' must start an expression !{{namespace:value}} (in {template!r})")
        if literal:
            parts.append(literal)
        namespace, value = m.group(1), m.group(2)
        if namespace not in NAMESPACES:
            raise ValueError(f"unknown expression namespace {namespace!r} in {template!r}; "
                             f"use one of {', '.join(NAMESPACES)}")
        if namespace == "firehose" and value not in FIREHOSE_VALUES:
            raise ValueError(f"unknown firehose expression {value!r} in {template!r}; "
                             f"use one of {', '.join(FIREHOSE_VALUES)}")
        if namespace == "timestamp":
            compile_pattern(value)
        if namespace.startswith("partitionKey") and not value:
            raise ValueError(f"empty partition key name in {template!r}")
        parts.append(Expr(namespace, value))
        pos = m.end()
    rest = template[pos:]
    if "!{" in rest:
        raise ValueError(f"'!{{' must start an expression !{{namespace:value}} (in {template!r})")
    if rest:
        parts.append(rest)
    return tuple(parts)


def partition_key_names(template: str | None) -> set[str]:
    """The namespaced partition keys a prefix uses ("partitionKeyFromQuery:k", ...)."""
    return {f"{p.namespace}:{p.value}" for p in parse(template or "")
            if isinstance(p, Expr) and p.namespace.startswith("partitionKey")}


def has_expressions(template: str | None) -> bool:
    return bool(template) and any(isinstance(p, Expr) for p in parse(template or ""))


def _uses(parts: tuple[Part, ...], namespace: str, value: str | None = None) -> bool:
    return any(isinstance(p, Expr) and p.namespace == namespace and (value is None or p.value == value)
               for p in parts)


def validate_prefixes(prefix: str | None, error_prefix: str | None, *, dynamic_partitioning: bool) -> None:
    """AWS's create/update-time rules for Prefix and ErrorOutputPrefix (spec: delivery.md §3.4).

    Raises ValueError with a message naming the rule that failed.
    """
    p = parse(prefix or "")
    e = parse(error_prefix or "")
    if _uses(p, "firehose", "error-output-type"):
        raise ValueError("Prefix must not contain !{firehose:error-output-type}; it is for ErrorOutputPrefix only")
    if not error_prefix and any(isinstance(x, Expr) for x in p):
        raise ValueError("ErrorOutputPrefix is required when Prefix contains expressions")
    if any(isinstance(x, Expr) for x in e) and not _uses(e, "firehose", "error-output-type"):
        raise ValueError("ErrorOutputPrefix with expressions must contain !{firehose:error-output-type}")
    for ns in ("partitionKeyFromQuery", "partitionKeyFromLambda"):
        if _uses(e, ns):
            raise ValueError(f"ErrorOutputPrefix must not contain !{{{ns}:...}} expressions")
        if _uses(p, ns) and not dynamic_partitioning:
            raise ValueError(f"!{{{ns}:...}} in Prefix requires DynamicPartitioningConfiguration.Enabled")
    if dynamic_partitioning and not error_prefix:
        raise ValueError("ErrorOutputPrefix is required when dynamic partitioning is enabled")


def zone(custom_time_zone: str | None) -> tzinfo:
    if not custom_time_zone:
        return UTC
    try:
        return ZoneInfo(custom_time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown CustomTimeZone {custom_time_zone!r}") from exc


def random_string() -> str:
    """11 characters in the shape AWS uses (e.g. ``046b6c7f-0b``)."""
    h = secrets.token_hex(5)
    return f"{h[:8]}-{h[8:]}"


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A destination's compiled Prefix/ErrorOutputPrefix and suffix settings."""

    prefix: tuple[Part, ...]
    error_prefix: tuple[Part, ...]
    tz: tzinfo
    extension: str

    @classmethod
    def build(cls, prefix: str | None, error_prefix: str | None, *, custom_time_zone: str | None,
              extension: str) -> KeyTemplate:
        p = prefix or ""
        uses_time = any(isinstance(x, Expr) and x.namespace == "timestamp" for x in parse(p))
        uses_partition = any(isinstance(x, Expr) and x.namespace.startswith("partitionKey") for x in parse(p))
        if not uses_time and not uses_partition:
            p = p + DEFAULT_TIME_PREFIX
        if error_prefix:
            e = error_prefix
        else:
            e = (prefix or "") + "!{firehose:error-output-type}/" + DEFAULT_TIME_PREFIX
        return cls(parse(p), parse(e), zone(custom_time_zone), extension)

    def with_error_prefix(self, error_prefix: str) -> KeyTemplate:
        """The same keys with another ErrorOutputPrefix (an Iceberg table's ``S3ErrorOutputPrefix``)."""
        return replace(self, error_prefix=parse(error_prefix))

    def render_prefix(self, arrival_ms: int, *, partition_keys: Mapping[str, str] | None = None) -> str:
        return _render(self.prefix, self._instant(arrival_ms), None, partition_keys)

    def render_error_prefix(self, arrival_ms: int, error_type: str) -> str:
        return _render(self.error_prefix, self._instant(arrival_ms), error_type, None)

    def suffix(self, stream: str, version: str, delivered_ms: int, unique: uuid.UUID) -> str:
        stamp = format_instant("yyyy-MM-dd-HH-mm-ss", self._instant(delivered_ms))
        return f"{stream}-{version}-{stamp}-{unique}{self.extension}"

    def _instant(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=self.tz)


def _render(parts: tuple[Part, ...], instant: datetime, error_type: str | None,
            partition_keys: Mapping[str, str] | None) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part.namespace == "timestamp":
            out.append(format_instant(part.value, instant))
        elif part.value == "random-string":
            out.append(random_string())
        elif part.value == "error-output-type":
            if error_type is None:
                raise ValueError("!{firehose:error-output-type} outside an error prefix")
            out.append(error_type)
        else:
            value = (partition_keys or {}).get(f"{part.namespace}:{part.value}")
            if not value:
                raise ValueError(f"partition key {part.value!r} ({part.namespace}) has no value for this record")
            out.append(value)
    text = "".join(out)
    if len(text) > MAX_EVALUATED_PREFIX:
        raise ValueError(f"evaluated prefix is {len(text)} characters; the limit is {MAX_EVALUATED_PREFIX}")
    return text
