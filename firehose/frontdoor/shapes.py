"""Request validation for both APIs, declared once: by the AWS service models botocore ships.

An operation's input shape (member types, ``required``, ``min``/``max``,
``pattern``, ``enum``) is compiled once into a tree of small node objects;
``OperationValidator.validate`` walks a parsed request body (from JSON or
CBOR) along that tree and raises AWS's errors (kinesis-fidelity.md §5.2-5.3):

* **Type pass** → ``SerializationException`` for the first value whose type
  does not fit its member, in model member order, with the current AWS text
  (``NUMBER_VALUE can not be converted to a String``, ``Start of list found
  where not expected``, ``Expected map or null`` ...). Nothing is checked
  against constraints while any type is wrong.
* **Constraint pass** → ``validation_error`` (``ValidationException`` for
  Kinesis, ``InvalidArgumentException`` for Firehose, whose model has no
  ValidationException) listing the violations: ``<N> validation error(s)
  detected: <item>; <item>`` with at most ``MAX_LISTED`` items, N counting
  those listed (AWS stops at ten: kinesalite recorded 501 bad PutRecords
  entries answered as "10 validation errors detected"). An item is
  ``Value null at '<path>' failed to satisfy constraint: Member must not be
  null`` for an absent required member, and ``Value at '<path>' failed to
  satisfy constraint: <constraint>`` for a present value
  (current AWS omits the value; ``show_values=True`` renders it as kinesalite
  recorded AWS doing: ``Value '<v>' at``, blobs as
  ``java.nio.HeapByteBuffer[pos=0 lim=<n> cap=<n>]``).

Both passes run as one walk: the walk visits values in the order the type
pass would and raises on the first wrong type, discarding the violations it
collected so far, which gives exactly the two-pass result at half the cost.

Order of violations (AWS's own order is not stable, so this one is a choice,
taken from kinesalite's recordings): members in model member order; within a
member, ``Member must not be null`` alone, or its own constraints in the order
min value, max value, pattern, min length, max length, enum, and then its
children (a list's length before its elements, e.g. ``records`` then
``records.1.member.partitionKey``). A list (or map) whose elements are scalars
reports failing elements as one item at the list's path, ``Member must satisfy
constraint: [<every constraint of the element shape>]`` (``Map keys must ...``
/ ``Map value must ...`` for maps), listing max before min as AWS does, after
the list's own length; a ``null`` element is reported at its own path
(``tagKeys.2.member``). Elements that are structures, lists or maps are
descended into: ``records.1.member.data``, ``tags.<key>.member.x``.

Values, as AWS's JSON protocols read them:

* ``null`` is an absent member; members the model does not declare are
  ignored and never walked, however deep.
* Integer and Long: a number with a fraction is floored, and one beyond the
  type's range (32 or 64 bits) clamped, *in place in the body* (the operation
  then sees the int AWS would have used), before range checks. NaN and
  infinities are a SerializationException. Booleans are never numbers.
* Timestamp: epoch seconds as a number (CBOR tag 1 arrives already converted).
  Strings are refused as AWS refuses them (``STRING_VALUE can not be
  converted to milliseconds since epoch``), and so are non-finite numbers and
  numbers whose milliseconds do not fit a Java long (e.g. 1e308).
* Blob: a base64 string (standard alphabet, padded, canonical final
  character; checked in the order kinesalite recorded: length, alphabet, final
  character) or raw bytes (CBOR byte strings). Length constraints count
  decoded bytes.
* String lengths count UTF-16 code units, as Java's ``String.length()`` does
  (a character outside the BMP counts 2).
* Patterns are Java regexes matched against the whole value; ``java_regex``
  translates them (``.`` and ``$`` keep Java's line-terminator rules, ``\\d``
  ``\\w`` ``\\s`` are ASCII as in Java, ``\\p{L}`` ``\\p{N}`` ``\\p{Z}`` become
  Unicode classes) and refuses Java syntax it does not know rather than guess.
* CBOR oddities (maps with non-string keys where a map is declared, tags,
  undefined) are SerializationExceptions, never another exception: whatever
  the body, ``validate`` raises only SerializationException or the
  validation error.

A body nested deeper than Python's recursion allows (possible only through a
recursive shape; neither model has one) is a SerializationException ("The
request is nested too deeply."). ``overrides`` patches named shapes where the
daemon deliberately accepts more than AWS (an extra enum value, a looser
pattern), so those stay declared in one place too.

``skip`` names members an operation validates itself (``Records.*.Data``;
``*`` is a list element or a map value): they get neither type nor constraint
checks, their siblings still do. Each distinct skip set compiles its own tree
once.
"""

from __future__ import annotations

import json
import math
import re
import threading
import unicodedata
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from botocore.loaders import Loader

from firehose.errors import FirehoseError, SerializationException

__all__ = ["MAX_LISTED", "OperationValidator", "ServiceShapes", "java_regex"]

#: Violations listed in one message, and counted in its "<N> validation errors detected".
MAX_LISTED = 10

_NOT_NULL = "Member must not be null"
_LIST_START = "Start of list found where not expected"
_MAP_START = "Start of structure or map found where not expected."
#: Timestamps must be epoch seconds whose milliseconds fit a Java long.
_MAX_EPOCH_S = 9223372036854775.0

# A path is a linked tuple (parent, segment) built only as far as the walk goes; it is rendered
# to 'records.1.member.partitionKey' only for the violations that are listed. A segment is a
# member name (already lower-camel), an int list index (0-based), or '<key>.member' for a map value.
Path = tuple[Any, "str | int"] | None
Violation = tuple[Path, "str | int", str, Any, "_Node"]
Walk = Callable[[Any, Path, "str | int", list[Violation]], Any]


def _render(parent: Path, seg: str | int) -> str:
    parts = []
    while True:
        parts.append(f"{seg + 1}.member" if isinstance(seg, int) else seg)
        if parent is None:
            break
        parent, seg = parent
    return ".".join(reversed(parts))


def _token(value: Any) -> str:
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "BLOB_VALUE"
    return "EMBEDDED_OBJECT_VALUE"


def _mismatch(value: Any, target: str) -> SerializationException:
    """A scalar member got something else."""
    if isinstance(value, list):
        return SerializationException(_LIST_START)
    if isinstance(value, dict):
        return SerializationException(_MAP_START)
    return SerializationException(f"{_token(value)} can not be converted to {target}")


def _utf16_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) >> 1


def _number(value: float | int) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# -- Java regular expressions ------------------------------------------------------------

#: Java's line terminators: what '.' does not match and what '$' may precede.
_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"
_DOLLAR = "(?=(?:\\r\\n|[\\n\\r\\u0085\\u2028\\u2029])?\\Z)"
#: \p{Z} (Zs, Zl, Zp), spelled out (checked against unicodedata by the tests).
_Z_CHARS = "\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: \p{L} and \p{N} together: Python's Unicode \w is exactly letters, numbers and '_'.
_LETTERS_NUMBERS = "(?u:[^\\W_])"
_CATEGORY = re.compile(r"\\[pP](?:\{(\w+)\}|(\w))")
#: Escapes whose meaning is the same in Java and Python (with re.ASCII for \d \w \s \b).
_SAME_ESCAPES = frozenset("dDwWsSbBAntrfaux123456789")
_category_classes: dict[str, str] = {}
_regex_cache: dict[str, re.Pattern[str]] = {}


def _category_class(category: str) -> str:
    """Ranges of one Unicode general category (``L``, ``Lu`` ...), for categories without a shortcut."""
    if category not in _category_classes:
        if not re.fullmatch(r"[A-Z][a-z]?", category):
            raise ValueError(f"unsupported Java character property \\p{{{category}}}")
        ranges: list[str] = []
        start = -1
        for cp in range(0x110001):
            inside = cp <= 0x10FFFF and unicodedata.category(chr(cp)).startswith(category)
            if inside and start < 0:
                start = cp
            elif not inside and start >= 0:
                end = cp - 1
                ranges.append(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}")
                start = -1
        _category_classes[category] = "".join(ranges)
    return _category_classes[category]


def _escape(java: str, i: int) -> tuple[str, int]:
    """The Python spelling of the escape at ``java[i]`` (a backslash) and the index after it."""
    if i + 1 >= len(java):
        raise ValueError("Java regex ends with a backslash")
    c = java[i + 1]
    if c in "pP":
        raise ValueError("malformed Java regex property escape (\\p{Name} expected)")
    if c == "z":
        return "\\Z", i + 2
    if c == "Z":
        return _DOLLAR, i + 2
    if c == "x" and java.startswith("{", i + 2):
        raise ValueError("unsupported Java regex escape \\x{...}")
    if c.isascii() and c.isalnum():
        if c not in _SAME_ESCAPES:
            raise ValueError(f"unsupported Java regex escape \\{c}")
        return "\\" + c, i + 2
    return "\\" + c, i + 2


def _char_class(java: str, i: int) -> tuple[str, int]:
    """Translate the class starting at ``java[i] == '['``; returns (python, index after ']')."""
    j = i + 1
    negated = java.startswith("^", j)
    if negated:
        j += 1
    if java.startswith("]", j):
        raise ValueError("unsupported Java regex: ']' first in a character class")
    body: list[str] = []
    categories: set[str] = set()
    while True:
        if j >= len(java):
            raise ValueError("unclosed character class")
        c = java[j]
        if c == "]":
            break
        if c == "[" or java.startswith("&&", j):
            raise ValueError("unsupported Java regex: nested class, union or intersection")
        if c == "\\":
            m = _CATEGORY.match(java, j)
            if m:
                if java[j + 1] == "P":
                    raise ValueError("unsupported Java regex: \\P{...}")
                categories.add(m.group(1) or m.group(2))
                j = m.end()
                continue
            if java.startswith(("\\z", "\\Z"), j):
                raise ValueError("unsupported Java regex: boundary escape inside a class")
            piece, j = _escape(java, j)
            body.append(piece)
            continue
        body.append(c)
        j += 1
    end = j + 1
    if not categories:
        return "[" + ("^" if negated else "") + "".join(body) + "]", end
    if negated:
        raise ValueError("unsupported Java regex: Unicode property in a negated class")
    options: list[str] = []
    if {"L", "N"} <= categories:
        options.append(_LETTERS_NUMBERS)
        categories -= {"L", "N"}
    if "Z" in categories:
        body.insert(0, _Z_CHARS)
        categories.discard("Z")
    body[:0] = [_category_class(cat) for cat in sorted(categories)]
    if body:
        options.append("[" + "".join(body) + "]")
    return "(?:" + "|".join(options) + ")", end


def java_regex(pattern: str) -> re.Pattern[str]:
    """The model's Java ``pattern`` as a Python regex with the same meaning; use ``fullmatch``.

    Raises ValueError for Java syntax it does not translate (``\\Q``, ``\\h``, class
    intersections ...), so a new model with such a pattern fails loudly in the tests
    instead of validating differently from AWS.
    """
    compiled = _regex_cache.get(pattern)
    if compiled is not None:
        return compiled
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            m = _CATEGORY.match(pattern, i)
            if m:
                piece, i = _char_class("[" + m.group(0) + "]", 0)[0], m.end()
            else:
                piece, i = _escape(pattern, i)
            out.append(piece)
            continue
        if c == "[":
            piece, i = _char_class(pattern, i)
            out.append(piece)
            continue
        if c == ".":
            out.append(_DOT)
        elif c == "$":
            out.append(_DOLLAR)
        elif pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    compiled = re.compile("".join(out), re.ASCII)
    _regex_cache[pattern] = compiled
    return compiled


# -- base64 ------------------------------------------------------------------------------

_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_BYTES = _B64_ALPHABET.encode()
#: The last character before padding may only hold bits that decode (2 resp. 4 low bits zero).
_B64_BEFORE_ONE_PAD = frozenset(_B64_ALPHABET[::4])
_B64_BEFORE_TWO_PADS = frozenset(_B64_ALPHABET[::16])
_B64_BAD = re.compile(r"[^A-Za-z0-9+/=]|=[^=]")


def _b64_length(text: str, show_values: bool) -> int:
    """Decoded length of a JSON blob, or SerializationException for text that is not canonical base64.

    Deleting the alphabet from the text leaves its padding, which must be at most two '=' at
    the end; the character before the padding must not carry bits the decoded bytes drop.
    """
    n = len(text)
    if n % 4 == 0 and text.isascii():
        pad = text.encode("ascii").translate(None, _B64_BYTES)
        if not pad:
            return n // 4 * 3
        if pad == b"=":
            if text[-1] == "=" and text[-2] in _B64_BEFORE_ONE_PAD:
                return n // 4 * 3 - 1
        elif pad == b"==" and text[-1] == text[-2] == "=" and text[-3] in _B64_BEFORE_TWO_PADS:
            return n // 4 * 3 - 2
    head = f"'{text}'" if show_values else "STRING_VALUE"
    if n % 4:
        reason = f"Base64 encoded length is expected a multiple of 4 bytes but found: {n}"
    elif m := _B64_BAD.search(text):
        reason = f"Invalid Base64 character: '{m.group(0)[0]}'"
    else:
        reason = "Invalid last non-pad Base64 character dectected"  # sic: AWS's spelling
    raise SerializationException(f"{head} can not be converted to a Blob: {reason}")


# -- nodes ---------------------------------------------------------------------------------


class _Node:
    """One compiled shape. ``walk`` type-checks a present value, normalizes it (returning the
    value to store if it changed), and appends its violations; scalars also answer ``accepts``
    (for the one-item form lists and maps use for scalar elements) and ``nested`` (the texts of
    every constraint the shape has, max before min, for that form)."""

    __slots__ = ("name",)
    scalar: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        raise NotImplementedError

    def accepts(self, value: Any) -> tuple[Any, bool]:
        return self.walk(value, None, "", []), True

    def nested(self) -> list[str]:
        return []

    def show(self, value: Any) -> str:
        return str(value)


class _Any(_Node):
    """A shape type this module does not know: accepted as is."""

    __slots__ = ()

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        return value


class _String(_Node):
    __slots__ = ("min", "max", "regex", "pattern", "enum", "enum_text", "constrained")

    def __init__(self, name: str, shape: dict[str, Any]) -> None:
        super().__init__(name)
        self.min: int | None = shape.get("min")
        self.max: int | None = shape.get("max")
        self.pattern: str | None = shape.get("pattern")
        self.regex = java_regex(self.pattern) if self.pattern is not None else None
        values = shape.get("enum")
        self.enum: frozenset[str] | None = frozenset(values) if values else None
        self.enum_text = "Member must satisfy enum value set: [" + ", ".join(values or ()) + "]"
        self.constrained = any(x is not None for x in (self.min, self.max, self.regex, self.enum))

    def problems(self, value: str) -> list[str]:
        out = []
        if self.regex is not None and self.regex.fullmatch(value) is None:
            out.append(f"Member must satisfy regular expression pattern: {self.pattern}")
        if self.min is not None or self.max is not None:
            n = _utf16_length(value)
            if self.min is not None and n < self.min:
                out.append(f"Member must have length greater than or equal to {self.min}")
            if self.max is not None and n > self.max:
                out.append(f"Member must have length less than or equal to {self.max}")
        if self.enum is not None and value not in self.enum:
            out.append(self.enum_text)
        return out

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if not isinstance(value, str):
            raise _mismatch(value, "a String")
        if self.constrained:
            # The common case, a short ASCII value within bounds, costs two comparisons.
            if self.regex is None and self.enum is None and value.isascii() and (
                    self.min is None or len(value) >= self.min) and (self.max is None or len(value) <= self.max):
                return value
            for text in self.problems(value):
                errors.append((parent, seg, text, value, self))
        return value

    def accepts(self, value: Any) -> tuple[Any, bool]:
        if not isinstance(value, str):
            raise _mismatch(value, "a String")
        return value, not (self.constrained and self.problems(value))

    def nested(self) -> list[str]:
        out = []
        if self.max is not None:
            out.append(f"Member must have length less than or equal to {self.max}")
        if self.min is not None:
            out.append(f"Member must have length greater than or equal to {self.min}")
        if self.pattern is not None:
            out.append(f"Member must satisfy regular expression pattern: {self.pattern}")
        if self.enum is not None:
            out.append(self.enum_text)
        return out


class _Blob(_Node):
    __slots__ = ("min", "max", "show_values")

    def __init__(self, name: str, shape: dict[str, Any], show_values: bool) -> None:
        super().__init__(name)
        self.min: int | None = shape.get("min")
        self.max: int | None = shape.get("max")
        self.show_values = show_values

    def size(self, value: Any) -> int:
        if isinstance(value, str):
            return _b64_length(value, self.show_values)
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        raise _mismatch(value, "a Blob")

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        n = _b64_length(value, self.show_values) if type(value) is str else self.size(value)
        if self.min is not None and n < self.min:
            errors.append((parent, seg, f"Member must have length greater than or equal to {self.min}", value, self))
        if self.max is not None and n > self.max:
            errors.append((parent, seg, f"Member must have length less than or equal to {self.max}", value, self))
        return value

    def accepts(self, value: Any) -> tuple[Any, bool]:
        n = self.size(value)
        return value, (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    def nested(self) -> list[str]:
        out = []
        if self.max is not None:
            out.append(f"Member must have length less than or equal to {self.max}")
        if self.min is not None:
            out.append(f"Member must have length greater than or equal to {self.min}")
        return out

    def show(self, value: Any) -> str:
        try:
            n = self.size(value)
        except SerializationException:
            n = 0
        return f"java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]"


class _Number(_Node):
    """Integer and Long (floored and clamped to ``bits``), Double and Float (``bits`` 0)."""

    __slots__ = ("min", "max", "low", "high", "target")

    def __init__(self, name: str, shape: dict[str, Any], bits: int, target: str) -> None:
        super().__init__(name)
        self.min: float | None = shape.get("min")
        self.max: float | None = shape.get("max")
        self.low = -(1 << (bits - 1)) if bits else None
        self.high = (1 << (bits - 1)) - 1 if bits else None
        self.target = target

    def coerce(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(value, self.target)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise SerializationException(f"NUMBER_VALUE can not be converted to {self.target}")
            if self.low is None:
                return value
            value = math.floor(value)
        elif self.low is None:
            return value
        elif type(value) is not int:
            value = int(value)
        assert self.high is not None
        return self.low if value < self.low else self.high if value > self.high else value

    def problems(self, value: int | float) -> list[str]:
        out = []
        if self.min is not None and value < self.min:
            out.append(f"Member must have value greater than or equal to {_number(self.min)}")
        if self.max is not None and value > self.max:
            out.append(f"Member must have value less than or equal to {_number(self.max)}")
        return out

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        value = self.coerce(value)
        for text in self.problems(value):
            errors.append((parent, seg, text, value, self))
        return value

    def accepts(self, value: Any) -> tuple[Any, bool]:
        value = self.coerce(value)
        return value, not self.problems(value)

    def nested(self) -> list[str]:
        out = []
        if self.max is not None:
            out.append(f"Member must have value less than or equal to {_number(self.max)}")
        if self.min is not None:
            out.append(f"Member must have value greater than or equal to {_number(self.min)}")
        return out


class _Boolean(_Node):
    __slots__ = ()

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if not isinstance(value, bool):
            raise _mismatch(value, "an Boolean")  # sic: AWS still says "an Boolean"
        return value

    def show(self, value: Any) -> str:
        return "true" if value else "false"


class _Timestamp(_Node):
    __slots__ = ()

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(value, "milliseconds since epoch")
        if not -_MAX_EPOCH_S <= value <= _MAX_EPOCH_S:  # also false for NaN
            raise SerializationException("NUMBER_VALUE can not be converted to milliseconds since epoch")
        return value


class _Struct(_Node):
    __slots__ = ("members", "java_class")
    scalar = False

    def __init__(self, name: str, java_class: str) -> None:
        super().__init__(name)
        #: (member name, path segment, node, required, node.walk) in model order.
        self.members: tuple[tuple[str, str, _Node, bool, Walk], ...] = ()
        self.java_class = java_class

    def link(self, members: list[tuple[str, str, _Node, bool]]) -> None:
        self.members = tuple((name, camel, node, required, node.walk) for name, camel, node, required in members)

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if not isinstance(value, dict):
            raise SerializationException(_LIST_START if isinstance(value, list) else "Expected null")
        members = self.members
        if not members:
            return value
        here: Path = (parent, seg) if seg != "" else parent
        get = value.get
        for name, camel, node, required, walk in members:
            member = get(name)
            if member is None:
                if required:
                    errors.append((here, camel, _NOT_NULL, None, node))
                continue
            new = walk(member, here, camel, errors)
            if new is not member:
                value[name] = new
        return value

    def show(self, value: Any) -> str:
        return f"{self.java_class}@{zlib.crc32(repr(value).encode()):08x}"


def _collection_limits(node: _List | _Map, size: int, value: Any, parent: Path, seg: str | int,
                       errors: list[Violation]) -> None:
    if node.min is not None and size < node.min:
        errors.append((parent, seg, f"Member must have length greater than or equal to {node.min}", value, node))
    if node.max is not None and size > node.max:
        errors.append((parent, seg, f"Member must have length less than or equal to {node.max}", value, node))


class _List(_Node):
    __slots__ = ("member", "min", "max", "nested_text")
    scalar = False

    def __init__(self, name: str, shape: dict[str, Any]) -> None:
        super().__init__(name)
        self.member: _Node | None = None  # None: elements are skipped
        self.min: int | None = shape.get("min")
        self.max: int | None = shape.get("max")
        self.nested_text = ""

    def link(self, member: _Node | None) -> None:
        self.member = member
        texts = member.nested() if member is not None and member.scalar else []
        self.nested_text = "Member must satisfy constraint: [" + ", ".join(texts) + "]" if texts else ""

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if not isinstance(value, list):
            raise SerializationException(_MAP_START if isinstance(value, dict) else "Expected list or null")
        _collection_limits(self, len(value), value, parent, seg, errors)
        node = self.member
        if node is None:
            return value
        here: Path = (parent, seg)
        if node.scalar:
            bad = False
            nulls = []
            for i, item in enumerate(value):
                if item is None:
                    nulls.append(i)
                    continue
                new, ok = node.accepts(item)
                if new is not item:
                    value[i] = new
                bad = bad or not ok
            if bad and self.nested_text:
                errors.append((parent, seg, self.nested_text, value, self))
            for i in nulls:
                errors.append((here, i, _NOT_NULL, None, node))
            return value
        walk = node.walk
        for i, item in enumerate(value):
            if item is None:
                errors.append((here, i, _NOT_NULL, None, node))
                continue
            new = walk(item, here, i, errors)
            if new is not item:
                value[i] = new
        return value

    def show(self, value: Any) -> str:
        node = self.member or _Any("")
        return "[" + ", ".join("null" if x is None else node.show(x) for x in value) + "]"


class _Map(_Node):
    __slots__ = ("key", "value", "min", "max", "key_text", "value_text")
    scalar = False

    def __init__(self, name: str, shape: dict[str, Any]) -> None:
        super().__init__(name)
        self.key: _Node = _Any("")
        self.value: _Node | None = None  # None: values are skipped
        self.min: int | None = shape.get("min")
        self.max: int | None = shape.get("max")
        self.key_text = self.value_text = ""

    def link(self, key: _Node, value: _Node | None) -> None:
        self.key, self.value = key, value
        texts = key.nested()
        self.key_text = "Map keys must satisfy constraint: [" + ", ".join(texts) + "]" if texts else ""
        texts = value.nested() if value is not None and value.scalar else []
        self.value_text = "Map value must satisfy constraint: [" + ", ".join(texts) + "]" if texts else ""

    def walk(self, value: Any, parent: Path, seg: str | int, errors: list[Violation]) -> Any:
        if not isinstance(value, dict):
            raise SerializationException(_LIST_START if isinstance(value, list) else "Expected map or null")
        _collection_limits(self, len(value), value, parent, seg, errors)
        here: Path = (parent, seg)
        key_node, node = self.key, self.value
        bad_key = bad_value = False
        later: list[Violation] = []
        for key, item in value.items():
            _, ok = key_node.accepts(key)
            bad_key = bad_key or not ok
            if node is None:
                continue
            if item is None:
                later.append((here, f"{key}.member", _NOT_NULL, None, node))
            elif node.scalar:
                new, ok = node.accepts(item)
                if new is not item:
                    value[key] = new
                bad_value = bad_value or not ok
            else:
                new = node.walk(item, here, f"{key}.member", later)
                if new is not item:
                    value[key] = new
        if bad_key and self.key_text:
            errors.append((parent, seg, self.key_text, value, self))
        if bad_value and self.value_text:
            errors.append((parent, seg, self.value_text, value, self))
        errors.extend(later)
        return value

    def show(self, value: Any) -> str:
        node = self.value or _Any("")
        return "{" + ", ".join(f"{k}={'null' if v is None else node.show(v)}" for k, v in value.items()) + "}"


# -- services and operations ---------------------------------------------------------------

SkipTree = dict[str, "SkipTree | bool"]


def _skip_tree(paths: frozenset[str]) -> SkipTree:
    """``{"Records.*.Data"}`` → ``{"Records": {"*": {"Data": True}}}`` (True: skip the whole member)."""
    tree: SkipTree = {}
    for path in paths:
        parts = path.split(".")
        if not all(parts):
            raise ValueError(f"bad skip path {path!r}")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            assert isinstance(child, dict)
            node = child
        else:
            node[parts[-1]] = True
    return tree


class OperationValidator:
    """Validates request bodies of one operation (see the module docstring)."""

    def __init__(self, service: ServiceShapes, operation: str, shape: str | None) -> None:
        self.service = service
        self.operation = operation
        self.shape = shape
        self._roots: dict[frozenset[str], _Node] = {}
        self._lock = threading.Lock()

    def _root(self, skip: frozenset[str]) -> _Node:
        root = self._roots.get(skip)
        if root is None:
            with self._lock:
                root = self._roots.get(skip)
                if root is None:
                    root = self.service._compile_input(self.shape, _skip_tree(skip))
                    self._roots[skip] = root
        return root

    def validate(self, body: dict[str, Any], *, skip: frozenset[str] = frozenset(), cbor: bool = False) -> None:
        """Raise SerializationException or the service's validation error if ``body`` does not fit.

        ``cbor`` says the body came from CBOR. Values are told apart by their Python type
        (bytes are blobs, strings base64), so both wire forms validate alike and the flag
        changes nothing today; callers pass it so that stays a local decision.
        Integer and Long members are floored and clamped in place.
        """
        root = self._root(skip)
        errors: list[Violation] = []
        try:
            root.walk(body, None, "", errors)
        except RecursionError:
            raise SerializationException("The request is nested too deeply.") from None
        if errors:
            raise self.service.validation_error(self.service.message(errors))


class ServiceShapes:
    """The compiled input shapes of one AWS service model, shared by all its operations."""

    _cache: ClassVar[dict[tuple[str, type[FirehoseError], bool, str], ServiceShapes]] = {}
    _models: ClassVar[dict[str, dict[str, Any]]] = {}
    _class_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: dict[str, Any], *, validation_error: type[FirehoseError],
                 show_values: bool = False, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.validation_error = validation_error
        self.show_values = show_values
        shapes: dict[str, dict[str, Any]] = model["shapes"]
        if overrides:
            shapes = dict(shapes)
            for name, patch in overrides.items():
                if name not in shapes:
                    raise KeyError(f"overrides name a shape the model does not have: {name}")
                merged = dict(shapes[name])
                for key, value in patch.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                shapes[name] = merged
        self._shapes = shapes
        self._inputs: dict[str, str | None] = {
            name: (op.get("input") or {}).get("shape") for name, op in model["operations"].items()}
        #: Operations the model gives no output: AWS answers them with an empty body (Kinesis's
        #: CreateStream, AddTagsToStream, ...: "an HTTP 200 response with an empty HTTP body").
        self.without_output = frozenset(name for name, op in model["operations"].items() if "output" not in op)
        meta = model.get("metadata", {})
        self._java_package = "com.amazonaws.{}.v{}".format(
            meta.get("endpointPrefix", "aws"), str(meta.get("apiVersion", "")).replace("-", ""))
        self._nodes: dict[str, _Node] = {}
        self._validators: dict[str, OperationValidator] = {}
        self._lock = threading.RLock()

    @classmethod
    def load(cls, service: str, *, validation_error: type[FirehoseError], show_values: bool = False,
             overrides: Mapping[str, Mapping[str, Any]] | None = None) -> ServiceShapes:
        """The shapes of botocore's ``service`` model ("firehose", "kinesis"); loaded once per process.

        ``validation_error`` is what constraint violations raise (Firehose's model has no
        ValidationException: InvalidArgumentException there). ``show_values`` renders values in
        items as kinesalite recorded (``Value '<v>' at``) instead of current AWS's ``Value at``.
        ``overrides`` patches named shapes where the daemon deliberately accepts more than AWS
        (``{"CompressionFormat": {"enum": [..., "ZSTD"]}}``; a None value removes the key, e.g.
        ``{"HttpEndpointUrl": {"pattern": None}}``); it must be JSON-serializable.
        """
        key = (service, validation_error, show_values, json.dumps(overrides or {}, sort_keys=True))
        shapes = cls._cache.get(key)
        if shapes is None:
            with cls._class_lock:
                shapes = cls._cache.get(key)
                if shapes is None:
                    model = cls._models.get(service)
                    if model is None:
                        model = Loader().load_service_model(service, "service-2")
                        cls._models[service] = model
                    shapes = cls(model, validation_error=validation_error, show_values=show_values,
                                 overrides=overrides)
                    cls._cache[key] = shapes
        return shapes

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._inputs)

    def validator(self, operation: str) -> OperationValidator:
        """The validator of ``operation`` (KeyError if the model has no such operation)."""
        validator = self._validators.get(operation)
        if validator is None:
            with self._lock:
                validator = self._validators.get(operation)
                if validator is None:
                    validator = OperationValidator(self, operation, self._inputs[operation])
                    self._validators[operation] = validator
        return validator

    # -- compiling

    def _compile_input(self, shape: str | None, skip: SkipTree) -> _Node:
        with self._lock:
            if shape is None:
                if skip:
                    raise ValueError(f"skip paths {sorted(skip)} name members of an operation without input")
                return _Struct("", "")
            return self._node(shape, skip)

    def _node(self, name: str, skip: SkipTree | None) -> _Node:
        if not skip:
            node = self._nodes.get(name)
            return node if node is not None else self._build(name, None)
        return self._build(name, skip)

    def _build(self, name: str, skip: SkipTree | None) -> _Node:
        shape = self._shapes[name]
        kind = shape["type"]
        node: _Node
        if kind == "structure":
            struct = _Struct(name, f"{self._java_package}.{name}")
            if not skip:
                self._nodes[name] = struct  # before the members: a recursive shape finds itself
            members = shape.get("members", {})
            required = set(shape.get("required", ()))
            if skip and not set(skip) <= set(members):
                raise ValueError(f"skip paths name no member of {name}: {sorted(set(skip) - set(members))}")
            compiled = []
            for member, ref in members.items():
                sub = skip.get(member) if skip else None
                if sub is True:
                    continue
                compiled.append((member, member[:1].lower() + member[1:], self._node(ref["shape"], sub or None),
                                 member in required))
            struct.link(compiled)
            return struct
        if kind in ("list", "map"):
            if skip and set(skip) != {"*"}:
                raise ValueError(f"skip paths under {name} must continue with '*': {sorted(skip)}")
            sub = skip.get("*") if skip else None
            element = None if sub is True else self._node(shape["member" if kind == "list" else "value"]["shape"],
                                                          sub or None)
            if kind == "list":
                lst = _List(name, shape)
                lst.link(element)
                node = lst
            else:
                mp = _Map(name, shape)
                mp.link(self._node(shape["key"]["shape"], None), element)
                node = mp
        elif skip:
            raise ValueError(f"skip paths descend into the scalar shape {name}: {sorted(skip)}")
        elif kind == "string":
            node = _String(name, shape)
        elif kind == "blob":
            node = _Blob(name, shape, self.show_values)
        elif kind == "integer":
            node = _Number(name, shape, 32, "an Integer")
        elif kind == "long":
            node = _Number(name, shape, 64, "a Long")
        elif kind == "double":
            node = _Number(name, shape, 0, "a Double")
        elif kind == "float":
            node = _Number(name, shape, 0, "a Float")
        elif kind == "boolean":
            node = _Boolean(name)
        elif kind == "timestamp":
            node = _Timestamp(name)
        else:
            node = _Any(name)
        if not skip:
            self._nodes[name] = node
        return node

    # -- messages

    def message(self, errors: list[Violation]) -> str:
        listed = errors[:MAX_LISTED]
        n = len(listed)
        items = []
        for parent, seg, text, value, node in listed:
            path = _render(parent, seg)
            if value is None:
                items.append(f"Value null at '{path}' failed to satisfy constraint: {text}")
            elif self.show_values:
                items.append(f"Value '{node.show(value)}' at '{path}' failed to satisfy constraint: {text}")
            else:
                items.append(f"Value at '{path}' failed to satisfy constraint: {text}")
        return f"{n} validation error{'' if n == 1 else 's'} detected: " + "; ".join(items)
