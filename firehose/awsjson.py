"""awsJson1_1 wire helpers shared by the Firehose API and the Kinesis API.

Everything about the protocol that is not an operation lives here: the
``X-Amz-Target`` header, content types, the error envelope botocore parses
(``{"__type": ..., "message": ...}``, spec: firehose-api.md §1.1), epoch-second
timestamps, and AWS-style wording of validation errors so clients that print
``e.response["Error"]["Message"]`` see what AWS would tell them.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pydantic import ValidationError

CONTENT_TYPE = "application/x-amz-json-1.1"
#: Content types a JSON request may carry. application/json is accepted for
#: curl users; AWS itself is stricter.
JSON_CONTENT_TYPES = frozenset({"application/x-amz-json-1.1", "application/json"})


def request_id() -> str:
    return str(uuid.uuid4())


def error_body(aws_type: str, message: str) -> bytes:
    return orjson.dumps({"__type": aws_type, "message": message})


def epoch_seconds(ms: int) -> float:
    """AWS sends timestamps as epoch seconds (a JSON number)."""
    return ms / 1000


def split_target(target: str | None, prefix: str) -> str | None:
    """The operation name from ``X-Amz-Target`` if it belongs to ``prefix``."""
    if not target or "." not in target:
        return None
    service, _, operation = target.partition(".")
    return operation if service == prefix and operation else None


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:] if name else name


def _constraint(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind in ("less_than_equal", "less_than"):
        return f"Member must have value less than or equal to {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"Member must have value greater than or equal to {ctx.get('ge', ctx.get('gt'))}"
    if kind == "string_too_long":
        return f"Member must have length less than or equal to {ctx.get('max_length')}"
    if kind == "string_too_short":
        return f"Member must have length greater than or equal to {ctx.get('min_length')}"
    if kind == "too_long":
        return f"Member must have length less than or equal to {ctx.get('max_length')}"
    if kind == "too_short":
        return f"Member must have length greater than or equal to {ctx.get('min_length')}"
    if kind == "string_pattern_mismatch":
        return f"Member must satisfy regular expression pattern: {ctx.get('pattern')}"
    if kind == "missing":
        return "Member must not be null"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return f"Member must satisfy enum value set: [{expected.replace(' or ', ', ')}]"
    msg = str(err.get("msg", ""))
    return msg.removeprefix("Value error, ")


def validation_message(exc: ValidationError, *, aws_paths: bool = True, limit: int = 10) -> str:
    """Phrase pydantic errors the way AWS phrases constraint failures.

    With ``aws_paths`` the member path is camelCase as in AWS messages
    (``extendedS3DestinationConfiguration.bufferingHints.sizeInMBs``);
    otherwise it keeps the PascalCase names a config file uses.
    """
    errors = exc.errors()
    parts = []
    for err in errors[:limit]:
        loc = [str(x) for x in err["loc"] if not str(x).startswith("function-")]
        path = ".".join(_camel(x) if aws_paths else x for x in loc)
        constraint = _constraint(err)
        if err["type"] in ("value_error", "assertion_error"):
            parts.append(f"{path}: {constraint}" if path else constraint)
            continue
        value = err.get("input")
        shown = "null" if value is None or err["type"] == "missing" else _short(value)
        parts.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")
    n = len(errors)
    head = f"{n} validation error{'s' if n != 1 else ''} detected: "
    return head + "; ".join(parts)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > 80:
        text = text[:77] + "..."
    return f"'{text}'"
