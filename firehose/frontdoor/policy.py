"""IAM policy documents: parsed once, evaluated on every request the way AWS evaluates them.

``Policy.parse`` checks a document against the IAM grammar (security.md §9.1) and compiles it: action
and resource globs become regular expressions (or set lookups when they hold no wildcard), condition
values are converted to what their operator compares (numbers, instants, CIDR blocks, booleans), so
evaluation does no parsing of the policy. A malformed document is a ValueError whose message names
the statement and the element (it surfaces as a configuration error).

``evaluate`` follows AWS's logic for identity-based and resource-based policies (§9.2):

* any applicable Deny statement is final (identity-based policies are consulted first, so that is
  the reason given when both deny);
* otherwise an applicable Allow allows: in the caller's own account one from an identity-based
  policy, or from a resource-based policy that names the caller itself (its ARN, or ``*``); across
  accounts both an identity-based and a resource-based Allow are needed;
* the root user of the resource's account is allowed unless explicitly denied;
* otherwise the request is implicitly denied.

Matching rules: actions are case-insensitive globs; resources are case-sensitive ARN globs where a
wildcard in the first five ``:``-separated fields stays inside its field while in the resource part
(after the fifth ``:``) it may span ``/`` and ``:``; condition keys are case-insensitive. A condition
on a key the request lacks is false, except that negated operators (``StringNotEquals``,
``NotIpAddress``, ``ArnNotLike`` ...) are then true, ``…IfExists`` is true, ``ForAllValues:`` is true
and ``Null`` tests exactly that (IAM User Guide, "Condition operators"). Policy variables
(``${aws:username}``, ``${aws:PrincipalTag/team, 'default'}``, ``${*}``, ``${?}``, ``${$}``) are
substituted in Resource and in string, ARN and Bool condition values of Version 2012-10-17 documents;
a substituted value is literal text (its ``*`` is not a wildcard), and a variable the request has no
value for (and no default) makes that one pattern match nothing.

Globs compile to regexes that cannot backtrack catastrophically: every ``*`` except the last becomes
an atomic group that takes the first place the following text matches (as ``fnmatch`` does), so a
request-chosen resource name costs time linear in its length whatever the policy's wildcards.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

VERSIONS = ("2012-10-17", "2008-10-17")
_VARIABLES_VERSION = "2012-10-17"

_DOCUMENT_ELEMENTS = ("Version", "Id", "Statement")
_STATEMENT_ELEMENTS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
                       "NotResource", "Condition")
_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")


class Reason(StrEnum):
    """Why a request was allowed or denied (the ``because``/``with`` tail of AccessDenied, security.md §9.4)."""

    ALLOWED = "allowed"
    NO_IDENTITY_ALLOW = "no identity-based policy allows"
    IDENTITY_DENY = "explicit deny in identity-based policy"
    NO_RESOURCE_ALLOW = "no resource-based policy allows"
    RESOURCE_DENY = "explicit deny in resource-based policy"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason


ALLOWED = Decision(True, Reason.ALLOWED)
_NO_IDENTITY_ALLOW = Decision(False, Reason.NO_IDENTITY_ALLOW)
_IDENTITY_DENY = Decision(False, Reason.IDENTITY_DENY)
_NO_RESOURCE_ALLOW = Decision(False, Reason.NO_RESOURCE_ALLOW)
_RESOURCE_DENY = Decision(False, Reason.RESOURCE_DENY)


def denied_message(decision: Decision, principal_arn: str, action: str, resource: str) -> str:
    """AccessDeniedException's message for a denial, in IAM's current wording (no trailing period)."""
    head = f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource}"
    reason = decision.reason
    if reason is Reason.NO_IDENTITY_ALLOW:
        return f"{head} because no identity-based policy allows the {action} action"
    if reason is Reason.NO_RESOURCE_ALLOW:
        return f"{head} because no resource-based policy allows the {action} action"
    if reason is Reason.IDENTITY_DENY:
        return f"{head} with an explicit deny in an identity-based policy"
    if reason is Reason.RESOURCE_DENY:
        return f"{head} with an explicit deny in a resource-based policy"
    raise ValueError("the decision allows the request; there is no denial to describe")


# -- the request context ---------------------------------------------------------------------------

_MISSING: Any = object()


class _Context:
    """Condition keys looked up as written first, then case-insensitively (the lower-cased copy of the
    context is made only when a lookup needs it)."""

    __slots__ = ("context", "lowered")

    def __init__(self, context: Mapping[str, Any]) -> None:
        self.context = context
        self.lowered: dict[str, Any] | None = None

    def get(self, key: str, key_lower: str) -> Any:
        value = self.context.get(key, _MISSING)
        if value is _MISSING:
            lowered = self.lowered
            if lowered is None:
                lowered = self.lowered = {str(k).lower(): v for k, v in self.context.items()}
            value = lowered.get(key_lower, _MISSING)
        if value is None or (isinstance(value, list | tuple | set | frozenset) and not value):
            return _MISSING  # an empty set of values is as good as no value
        return value


# -- globs and policy variables ------------------------------------------------------------------

#: A piece of a pattern after substitution: (text, whether ``*`` and ``?`` in it are wildcards).
_Chunk = tuple[str, bool]
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_BODY = re.compile(r"\s*([^,\s][^,]*?)\s*(?:,\s*'([^']*)'\s*)?")


@dataclass(frozen=True, slots=True)
class _Variable:
    key: str
    key_lower: str
    default: str | None


def _template(text: str, variables: bool) -> tuple[Any, ...] | None:
    """The parts of a pattern holding policy variables, or None when it holds none (or they are off).

    A part is pattern text (a str, wildcards active), literal text (a 1-tuple: ``${*}`` and the like)
    or a ``_Variable``.
    """
    if not variables or "${" not in text:
        return None
    parts: list[Any] = []
    position = 0
    for found in _VARIABLE.finditer(text):
        if found.start() > position:
            parts.append(text[position:found.start()])
        body = found.group(1)
        if body in ("*", "?", "$"):
            parts.append((body,))
        else:
            match = _VARIABLE_BODY.fullmatch(body)
            if match is None:
                raise ValueError(f"policy variable '{found.group(0)}' is malformed")
            parts.append(_Variable(match.group(1), match.group(1).lower(), match.group(2)))
        position = found.end()
    if position < len(text):
        parts.append(text[position:])
    return tuple(parts)


def _substitute(parts: tuple[Any, ...], context: _Context) -> list[_Chunk] | None:
    """The template with its variables' values in place (literal text); None when one has no value."""
    chunks: list[_Chunk] = []
    for part in parts:
        if isinstance(part, str):
            chunks.append((part, True))
        elif isinstance(part, tuple):
            chunks.append((part[0], False))
        else:
            value = context.get(part.key, part.key_lower)
            if value is _MISSING or isinstance(value, list | tuple | set | frozenset | dict):
                if part.default is None:
                    return None
                value = part.default
            chunks.append((_text(value), False))
    return chunks


def _glob_source(chunks: Sequence[_Chunk], *, arn: bool) -> str:
    """A regex for a glob. ``arn``: wildcards in the first five ``:``-fields stay in their field."""
    fields = min(5, sum(text.count(":") for text, _ in chunks)) if arn else 0
    colons = 0
    items: list[str | None] = []  # None marks a star; the star kind is decided by position below
    kinds: list[str] = []
    for text, wild in chunks:
        for ch in text:
            crossing = not arn or colons >= fields
            if wild and ch == "*":
                if items and items[-1] is None:
                    continue  # "**" is "*"
                items.append(None)
                kinds.append("." if crossing else "[^:]")
            elif wild and ch == "?":
                items.append("." if crossing else "[^:]")
            else:
                if ch == ":" and arn:
                    colons += 1
                items.append(re.escape(ch))
    # Every star but the last takes the first place the text up to the next star matches (an atomic
    # group): correct for globs, and immune to catastrophic backtracking.
    out: list[str] = []
    chunk: list[str] = []
    star: str | None = None
    stars = iter(kinds)
    for item in items:
        if item is None:
            if star is None:
                out.extend(chunk)
            else:
                out.append(f"(?>{star}*?{''.join(chunk)})")
            chunk = []
            star = next(stars)
        else:
            chunk.append(item)
    if star is not None:
        out.append(f"{star}*")
    out.extend(chunk)
    return "".join(out)


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


class _Globs:
    """A list of glob patterns, matched as one: a set for literal patterns, one regex for the rest, and
    per-request compilation (cached) for patterns with policy variables."""

    __slots__ = ("everything", "literals", "regex", "templates", "arn", "lower", "_cache")

    _CACHE_SIZE: ClassVar[int] = 128

    def __init__(self, patterns: Sequence[str | Sequence[_Chunk]], *, arn: bool, lower: bool,
                 variables: bool) -> None:
        """``patterns`` are glob strings, or already substituted chunk lists (condition values with
        variables)."""
        self.arn = arn
        self.lower = lower
        self.everything = False
        literals: set[str] = set()
        sources: list[str] = []
        templates: list[tuple[Any, ...]] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                if any(wild and _has_wildcard(text) for text, wild in pattern):
                    sources.append(_glob_source(pattern, arn=arn))
                else:
                    literals.add("".join(text for text, _ in pattern))
                continue
            if lower:
                pattern = pattern.lower()
            template = _template(pattern, variables)
            if template is not None:
                templates.append(template)
            elif pattern == "*":
                self.everything = True
            elif _has_wildcard(pattern):
                sources.append(_glob_source([(pattern, True)], arn=arn))
            else:
                literals.add(pattern)
        self.literals = frozenset(literals)
        self.regex = re.compile("|".join(f"(?:{s})" for s in sources), re.DOTALL) if sources else None
        self.templates = tuple(templates)
        self._cache: dict[tuple[_Chunk, ...], re.Pattern[str]] = {}

    def matches(self, value: str, context: _Context) -> bool:
        if self.everything or value in self.literals:
            return True
        if self.regex is not None and self.regex.fullmatch(value) is not None:
            return True
        for template in self.templates:
            chunks = _substitute(template, context)
            if chunks is not None and self._compiled(chunks).fullmatch(value) is not None:
                return True
        return False

    def _compiled(self, chunks: list[_Chunk]) -> re.Pattern[str]:
        key = tuple(chunks)
        regex = self._cache.get(key)
        if regex is None:
            if self.lower:
                chunks = [(text.lower(), wild) for text, wild in chunks]
            regex = re.compile(_glob_source(chunks, arn=self.arn), re.DOTALL)
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = regex
        return regex


# -- condition values ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A context or policy value as IAM compares strings (JSON booleans are "true"/"false")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return number if number == number else None  # NaN compares with nothing
    return None


def _instant(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 date/time (UTC unless it says otherwise) or of epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if not isinstance(value, str):
        return None
    text = value.strip()
    number = _number(text)
    if number is not None:
        return float(number)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


_Network = tuple[int, int, int]  # (IP version, network address, netmask)
_ADDRESSES: dict[str, tuple[int, int] | None] = {}


def _network(text: str) -> _Network:
    network = ipaddress.ip_network(text.strip(), strict=False)
    return network.version, int(network.network_address), int(network.netmask)


def _address(value: Any) -> tuple[int, int] | None:
    """(IP version, address) of a source IP; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    if not isinstance(value, str):
        value = str(value)
    cached = _ADDRESSES.get(value, _MISSING)
    if cached is not _MISSING:
        return cached
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        parsed = None
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        parsed = (address.version, int(address))
    if len(_ADDRESSES) >= 1024:
        _ADDRESSES.clear()
    _ADDRESSES[value] = parsed
    return parsed


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}

#: Operator → (family, comparison, negated). Families: string, ignorecase, like, numeric, date, bool,
#: binary, ip, arn, null.
_OPERATORS: dict[str, tuple[str, str, bool]] = {
    "StringEquals": ("string", "eq", False),
    "StringNotEquals": ("string", "eq", True),
    "StringEqualsIgnoreCase": ("ignorecase", "eq", False),
    "StringNotEqualsIgnoreCase": ("ignorecase", "eq", True),
    "StringLike": ("like", "eq", False),
    "StringNotLike": ("like", "eq", True),
    "NumericEquals": ("numeric", "eq", False),
    "NumericNotEquals": ("numeric", "eq", True),
    "NumericLessThan": ("numeric", "lt", False),
    "NumericLessThanEquals": ("numeric", "le", False),
    "NumericGreaterThan": ("numeric", "gt", False),
    "NumericGreaterThanEquals": ("numeric", "ge", False),
    "DateEquals": ("date", "eq", False),
    "DateNotEquals": ("date", "eq", True),
    "DateLessThan": ("date", "lt", False),
    "DateLessThanEquals": ("date", "le", False),
    "DateGreaterThan": ("date", "gt", False),
    "DateGreaterThanEquals": ("date", "ge", False),
    "Bool": ("bool", "eq", False),
    "BinaryEquals": ("binary", "eq", False),
    "IpAddress": ("ip", "eq", False),
    "NotIpAddress": ("ip", "eq", True),
    "ArnEquals": ("arn", "eq", False),
    "ArnLike": ("arn", "eq", False),
    "ArnNotEquals": ("arn", "eq", True),
    "ArnNotLike": ("arn", "eq", True),
    "Null": ("null", "eq", False),
}
#: Families whose values may hold policy variables (IAM User Guide, per operator category).
_VARIABLE_FAMILIES = frozenset({"string", "ignorecase", "like", "arn", "bool"})

_SINGLE, _ANY_VALUE, _ALL_VALUES = 0, 1, 2

Matcher = Callable[[Any], bool]


def _matcher(family: str, comparison: str, values: Sequence[Any]) -> Matcher:
    """Whether one context value matches any of the (already converted) policy values."""
    if family == "string":
        strings = frozenset(values)
        return lambda v: _text(v) in strings
    if family == "ignorecase":
        folded = frozenset(s.lower() for s in values)
        return lambda v: _text(v).lower() in folded
    if family == "binary":
        blobs = frozenset(values)
        return lambda v: _text(v) in blobs
    if family in ("like", "arn"):
        globs = _Globs(values, arn=family == "arn", lower=False, variables=False)
        empty = _Context({})
        return lambda v: globs.matches(_text(v), empty)
    if family == "numeric":
        compare = _COMPARE[comparison]
        numbers = tuple(values)

        def numeric(v: Any) -> bool:
            number = _number(v)
            return number is not None and any(compare(number, n) for n in numbers)
        return numeric
    if family == "date":
        compare = _COMPARE[comparison]
        instants = tuple(values)

        def date(v: Any) -> bool:
            instant = _instant(v)
            return instant is not None and any(compare(instant, i) for i in instants)
        return date
    if family == "bool":
        wanted = frozenset(str(b).lower() for b in values)
        return lambda v: _text(v).lower() in wanted
    if family == "ip":
        networks = tuple(values)

        def ip(v: Any) -> bool:
            address = _address(v)
            return address is not None and any(
                version == address[0] and address[1] & mask == net for version, net, mask in networks)
        return ip
    raise AssertionError(family)


class _Condition:
    """One key under one operator: ``{"StringEquals": {"aws:username": ["a", "b"]}}`` → one _Condition."""

    __slots__ = ("key", "key_lower", "family", "comparison", "negated", "quantifier", "if_exists", "values",
                 "match", "templates", "_cache")

    def __init__(self, operator: str, key: str, raw: Any, variables: bool) -> None:
        name = operator
        quantifier = _SINGLE
        if name.startswith("ForAnyValue:"):
            quantifier, name = _ANY_VALUE, name[len("ForAnyValue:"):]
        elif name.startswith("ForAllValues:"):
            quantifier, name = _ALL_VALUES, name[len("ForAllValues:"):]
        if_exists = name.endswith("IfExists") and name != "IfExists"
        if if_exists:
            name = name[:-len("IfExists")]
        spec = _OPERATORS.get(name)
        if spec is None:
            raise ValueError(f"unknown condition operator '{operator}'")
        family, comparison, negated = spec
        if family == "null" and (if_exists or quantifier != _SINGLE):
            raise ValueError(f"condition operator '{operator}' is not allowed: Null takes no IfExists or set prefix")
        self.key = key
        self.key_lower = key.lower()
        self.family = family
        self.comparison = comparison
        self.negated = negated
        self.quantifier = quantifier
        self.if_exists = if_exists
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise ValueError(f"condition {operator} on '{key}' has no values")
        templates: list[tuple[tuple[Any, ...] | None, Any]] = []
        for item in items:
            if item is None or isinstance(item, dict | list):
                raise ValueError(f"condition {operator} on '{key}': a value must be a string, number or boolean, "
                                 f"not {_json_type(item)}")
            template = _template(item, True) if (variables and isinstance(item, str)
                                                 and family in _VARIABLE_FAMILIES) else None
            templates.append((template, None if template is not None else _convert(family, operator, key, item)))
        self.values = tuple(value for template, value in templates if template is None)
        self.templates = tuple(template for template, _ in templates if template is not None)
        self.match: Matcher | None = None if family == "null" else _matcher(family, comparison, self.values)
        self._cache: dict[tuple[tuple[_Chunk, ...], ...], Matcher] = {}

    def holds(self, context: _Context) -> bool:
        value = context.get(self.key, self.key_lower)
        if self.family == "null":
            absent = value is _MISSING
            return any(wanted == absent for wanted in self.values)
        if value is _MISSING:
            if self.if_exists or self.quantifier == _ALL_VALUES:
                return True
            return self.negated and self.quantifier == _SINGLE
        match = self.match if not self.templates else self._resolved(context)
        assert match is not None
        values = value if isinstance(value, list | tuple | set | frozenset) else (value,)
        negated = self.negated
        if self.quantifier == _ANY_VALUE:
            return any(match(v) != negated for v in values)
        if self.quantifier == _ALL_VALUES or negated:
            return all(match(v) != negated for v in values)
        return any(match(v) for v in values)

    def _resolved(self, context: _Context) -> Matcher:
        """The matcher for this request's values of the policy variables in the condition's values."""
        substituted: list[tuple[_Chunk, ...]] = []
        for template in self.templates:
            chunks = _substitute(template, context)
            if chunks is not None:  # a value whose variable has no value matches nothing
                substituted.append(tuple(chunks))
        key = tuple(substituted)
        match = self._cache.get(key)
        if match is None:
            values: list[Any] = list(self.values)
            for pieces in substituted:
                if self.family in ("like", "arn"):
                    values.append(pieces)
                else:
                    value = _convert(self.family, "", self.key, "".join(text for text, _ in pieces), lenient=True)
                    if value is not None:
                        values.append(value)
            match = _matcher(self.family, self.comparison, values)
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[key] = match
        return match


def _convert(family: str, operator: str, key: str, item: Any, *, lenient: bool = False) -> Any:
    """A condition value as its operator compares it; ValueError (or None when ``lenient``) if it is not one."""
    if family in ("string", "ignorecase", "like", "arn", "binary"):
        return _text(item)
    if family in ("bool", "null"):
        flag = _boolean(item)
        if flag is None:
            if lenient:
                return None
            raise ValueError(f"{operator} value {item!r} for key '{key}' must be true or false")
        return flag
    if family == "numeric":
        number = _number(item)
        if number is None:
            raise ValueError(f"{operator} value {item!r} for key '{key}' is not a number")
        return number
    if family == "date":
        instant = _instant(item)
        if instant is None:
            raise ValueError(f"{operator} value {item!r} for key '{key}' is not an ISO-8601 date or epoch seconds")
        return instant
    if family == "ip":
        try:
            return _network(_text(item))
        except ValueError:
            raise ValueError(f"{operator} value {item!r} for key '{key}' is not an IP address or CIDR block") from None
    raise AssertionError(family)


# -- principals (resource-based policies) --------------------------------------------------------

_DIRECT, _INDIRECT = 2, 1  # how a resource-based statement names the caller: itself, or its account/role
_ACCOUNT_ID = re.compile(r"\d{12}")
_ROOT_ARN = re.compile(r"arn:[\w-]+:iam::(\d{12}):root")
_ROLE_ARN = re.compile(r"arn:([\w-]+):iam::(\d{12}):role/(?:.*/)?([^/]+)")
_SESSION_ARN = re.compile(r"arn:([\w-]+):sts::(\d{12}):assumed-role/([^/]+)/.+")


class _Principals:
    """The principals a statement names. ``AWS`` entries may be ``*``, an account id, an account's root
    ARN (any principal of that account), a role ARN (the role's sessions) or a user/session ARN."""

    __slots__ = ("everyone", "arns", "accounts", "roles")

    def __init__(self, raw: Any, element: str) -> None:
        self.everyone = False
        self.arns: set[str] = set()
        self.accounts: set[str] = set()
        self.roles: set[tuple[str, str, str]] = set()
        if raw == "*":
            self.everyone = True
            return
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f'{element} must be "*" or an object such as {{"AWS": "arn:aws:iam::111122223333:root"}}')
        for kind, entries in raw.items():
            if kind not in _PRINCIPAL_TYPES:
                raise ValueError(f"{element} has unknown principal type '{kind}' (expected one of "
                                 f"{', '.join(_PRINCIPAL_TYPES)})")
            for entry in _strings(entries, f"{element}.{kind}"):
                if kind == "AWS":
                    self._add_aws(entry, element)
                # Service, Federated and CanonicalUser principals never sign requests to this daemon.

    def _add_aws(self, entry: str, element: str) -> None:
        if entry == "*":
            self.everyone = True
        elif _ACCOUNT_ID.fullmatch(entry):
            self.accounts.add(entry)
        elif (root := _ROOT_ARN.fullmatch(entry)) is not None:
            self.accounts.add(root.group(1))
        elif entry.startswith("arn:"):
            self.arns.add(entry)
            if (role := _ROLE_ARN.fullmatch(entry)) is not None:
                self.roles.add((role.group(1), role.group(2), role.group(3)))
        else:
            raise ValueError(f"{element}.AWS entry '{entry}' must be \"*\", a 12-digit account id or an ARN")

    def match(self, arn: str, account: str) -> int:
        """_DIRECT when the caller itself is named, _INDIRECT for its account or role, else 0."""
        if self.everyone or (arn and arn in self.arns):
            return _DIRECT
        if self.roles and arn and (session := _SESSION_ARN.fullmatch(arn)) is not None:
            if (session.group(1), session.group(2), session.group(3)) in self.roles:
                return _INDIRECT
        if account and account in self.accounts:
            return _INDIRECT
        return 0


# -- statements and documents --------------------------------------------------------------------


class _Statement:
    __slots__ = ("sid", "deny", "actions", "not_action", "resources", "not_resource", "conditions", "principals",
                 "not_principal")

    def __init__(self, raw: Any, where: str, variables: bool, resource_based: bool) -> None:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a statement must be an object, not {_json_type(raw)}")
        sid = raw.get("Sid")
        if sid is not None and not isinstance(sid, str):
            raise ValueError(f"{where}: Sid must be a string")
        if sid:
            where = f"{where} (Sid {sid!r})"
        for element in raw:
            if element not in _STATEMENT_ELEMENTS:
                raise ValueError(f"{where}: unknown element {element!r} (expected {', '.join(_STATEMENT_ELEMENTS)})")
        self.sid = sid or ""
        effect = raw.get("Effect")
        if effect is None:
            raise ValueError(f"{where}: Effect is required")
        if effect not in ("Allow", "Deny"):
            raise ValueError(f"{where}: Effect must be 'Allow' or 'Deny', not {effect!r}")
        self.deny = effect == "Deny"
        action_key = _exactly_one(raw, "Action", "NotAction", where)
        self.not_action = action_key == "NotAction"
        actions = _strings(raw[action_key], f"{where}: {action_key}")
        for action in actions:
            if action != "*" and ":" not in action:
                raise ValueError(f"{where}: {action_key} {action!r} must be \"*\" or service:action "
                                 "(e.g. firehose:PutRecordBatch)")
        self.actions = _Globs(actions, arn=False, lower=True, variables=False)
        resource_key = _exactly_one(raw, "Resource", "NotResource", where)
        self.not_resource = resource_key == "NotResource"
        resources = _strings(raw[resource_key], f"{where}: {resource_key}")
        for resource in resources:
            if resource != "*" and not resource.startswith("arn:"):
                raise ValueError(f"{where}: {resource_key} {resource!r} must be \"*\" or an ARN")
        try:
            self.resources = _Globs(resources, arn=True, lower=False, variables=variables)
        except ValueError as exc:
            raise ValueError(f"{where}: {resource_key}: {exc}") from None
        self.principals: _Principals | None = None
        self.not_principal = False
        if "Principal" in raw or "NotPrincipal" in raw:
            if not resource_based:
                raise ValueError(f"{where}: Principal and NotPrincipal belong in resource-based policies, "
                                 "not in an identity-based policy")
            principal_key = _exactly_one(raw, "Principal", "NotPrincipal", where)
            self.not_principal = principal_key == "NotPrincipal"
            self.principals = _Principals(raw[principal_key], f"{where}: {principal_key}")
        elif resource_based:
            raise ValueError(f"{where}: a resource-based policy statement needs Principal or NotPrincipal")
        self.conditions = _conditions(raw.get("Condition"), where, variables)

    def applies(self, action: str, resource: str, context: _Context) -> bool:
        """Whether the statement covers this action on this resource under these conditions."""
        if self.actions.matches(action, context) == self.not_action:
            return False
        if self.resources.matches(resource, context) == self.not_resource:
            return False
        for condition in self.conditions:
            if not condition.holds(context):
                return False
        return True

    def names(self, arn: str, account: str) -> int:
        """How this resource-based statement names the caller (_DIRECT, _INDIRECT or 0)."""
        assert self.principals is not None
        found = self.principals.match(arn, account)
        if self.not_principal:
            return 0 if found else _DIRECT
        return found


def _conditions(raw: Any, where: str, variables: bool) -> tuple[_Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: Condition must be an object of operators, not {_json_type(raw)}")
    conditions = []
    for operator, block in raw.items():
        if not isinstance(block, dict) or not block:
            raise ValueError(f"{where}: Condition {operator!r} must map condition keys to values")
        for key, values in block.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"{where}: Condition {operator!r} has an empty or non-string key")
            try:
                conditions.append(_Condition(str(operator), key, values, variables))
            except ValueError as exc:
                raise ValueError(f"{where}: Condition: {exc}") from None
    return tuple(conditions)


def _exactly_one(raw: dict[str, Any], first: str, second: str, where: str) -> str:
    if first in raw and second in raw:
        raise ValueError(f"{where}: give {first} or {second}, not both")
    if first in raw:
        return first
    if second in raw:
        return second
    raise ValueError(f"{where}: {first} or {second} is required")


def _strings(raw: Any, element: str) -> list[str]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{element} must be a non-empty string or a non-empty list of non-empty strings")
    return items


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class Policy:
    """One compiled IAM policy document (identity-based, or resource-based with ``resource_based=True``)."""

    __slots__ = ("version", "id", "statements", "resource_based")

    def __init__(self, version: str, id: str, statements: tuple[_Statement, ...], resource_based: bool) -> None:
        self.version = version
        self.id = id
        self.statements = statements
        self.resource_based = resource_based

    @classmethod
    def parse(cls, document: Any, *, resource_based: bool = False) -> Policy:
        """Check and compile a policy document (a dict as decoded from JSON).

        ValueError names what is wrong. Identity-based documents may not name principals;
        resource-based ones (``resource_based=True``) must, in every statement.
        """
        if not isinstance(document, dict):
            raise ValueError(f"a policy document must be a JSON object, not {_json_type(document)}")
        for element in document:
            if element not in _DOCUMENT_ELEMENTS:
                raise ValueError(f"unknown policy element {element!r} (expected {', '.join(_DOCUMENT_ELEMENTS)})")
        version = document.get("Version", "2008-10-17")
        if version not in VERSIONS:
            raise ValueError(f"Version must be '2012-10-17' or '2008-10-17', not {version!r}")
        policy_id = document.get("Id", "")
        if not isinstance(policy_id, str):
            raise ValueError("Id must be a string")
        raw = document.get("Statement")
        if raw is None:
            raise ValueError("Statement is required")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise ValueError("Statement must be an object or a non-empty list of objects")
        variables = version == _VARIABLES_VERSION
        statements = tuple(_Statement(item, f"Statement[{i}]", variables, resource_based) for i, item in enumerate(raw))
        return cls(version, policy_id, statements, resource_based)

    @property
    def context_keys(self) -> frozenset[str]:
        """Every request-context key (lower case) the policy's conditions and variables read."""
        keys: set[str] = set()
        for statement in self.statements:
            keys.update(condition.key_lower for condition in statement.conditions)
            for condition in statement.conditions:
                keys.update(_template_keys(condition.templates))
            keys.update(_template_keys(statement.resources.templates))
        return frozenset(keys)


def _template_keys(templates: Sequence[tuple[Any, ...]]) -> set[str]:
    return {part.key_lower for template in templates for part in template if isinstance(part, _Variable)}


# -- evaluation ------------------------------------------------------------------------------------


def evaluate(action: str, resource: str, *, identity: Sequence[Policy], context: Mapping[str, Any],
             resource_policies: Sequence[Policy] = (), principal_arn: str = "", principal_account: str = "",
             resource_account: str = "") -> Decision:
    """Whether ``principal_arn`` may perform ``action`` (``service:Operation``) on ``resource`` (an ARN, or
    ``*`` for operations on no resource), by its identity-based policies and the resource's policies."""
    lowered = action.lower()
    ctx = _Context(context)
    identity_allows = False
    for policy in identity:
        for statement in policy.statements:
            if statement.applies(lowered, resource, ctx):
                if statement.deny:
                    return _IDENTITY_DENY
                identity_allows = True
    resource_allows = 0  # the strongest way an applicable Allow names the caller
    for policy in resource_policies:
        for statement in policy.statements:
            naming = statement.names(principal_arn, principal_account)
            if naming and statement.applies(lowered, resource, ctx):
                if statement.deny:
                    return _RESOURCE_DENY
                resource_allows = max(resource_allows, naming)
    if principal_account and resource_account and principal_account != resource_account:
        if not identity_allows:
            return _NO_IDENTITY_ALLOW
        return ALLOWED if resource_allows else _NO_RESOURCE_ALLOW
    if identity_allows or resource_allows == _DIRECT:
        return ALLOWED
    root = _ROOT_ARN.fullmatch(principal_arn)
    if root is not None and root.group(1) == (resource_account or principal_account):
        return ALLOWED
    return _NO_IDENTITY_ALLOW
