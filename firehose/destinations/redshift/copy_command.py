"""The definition's CopyCommand, as the loads read it: the target, and the CopyOptions.

Both modes load into ``copy_target``. Redshift's COPY takes CopyOptions verbatim (only their GZIP
is checked against the staged objects' compression, in both modes); the PostgreSQL load reads
them itself: what it can honour becomes a ``LoadFormat``, anything else is refused when the
definition is created, rather than loading different data than Redshift would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from firehose.definitions import CopyCommand

_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^'\\]|''|\\.)*')|(?P<word>[A-Za-z_]\w*)|(?P<number>\d+)"
                    r"|(?P<other>\S))", re.S)
_ESCAPE = re.compile(r"''|\\(.)", re.S)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "'": "'"}
#: Options without an argument, and options with one (its token kind); the rest are refused.
_FLAGS = frozenset({"CSV", "GZIP"})
_ARGUMENTS = {"DELIMITER": "string", "QUOTE": "string", "NULL": "string", "IGNOREHEADER": "number",
              "JSON": "string", "REGION": "string", "TIMEFORMAT": "string", "DATEFORMAT": "string"}
_DELIMITED_ONLY = ("DELIMITER", "QUOTE", "NULL", "IGNOREHEADER")
_OPTIONS = "CopyCommand.CopyOptions"
SUPPORTED_OPTIONS = ("DELIMITER 'c', CSV [QUOTE 'c'], NULL AS 's', IGNOREHEADER n, GZIP, "
                     "JSON 'auto' / 'auto ignorecase', REGION, TIMEFORMAT 'auto', DATEFORMAT 'auto'")

Token = tuple[str, str]


def copy_target(cmd: CopyCommand) -> str:
    """``<DataTableName> [(<DataTableColumns>)]``: what a COPY loads, Redshift's and the PostgreSQL load's alike."""
    return cmd.data_table_name + (f" ({cmd.data_table_columns})" if cmd.data_table_columns else "")


def _unquote(literal: str) -> str:
    """The value of a quoted CopyOptions argument: ``''`` is a quote; ``\\t``, ``\\n``, ``\\r``,
    ``\\\\`` and ``\\'`` are escapes; any other backslash stays (``'\\N'`` is backslash-N)."""
    return _ESCAPE.sub(lambda m: "'" if m.group(0) == "''" else _ESCAPES.get(m.group(1), m.group(0)),
                       literal[1:-1])


def _tokens(text: str) -> list[Token]:
    """CopyOptions as (kind, value) tokens: words upper-cased, quoted strings unquoted."""
    tokens: list[Token] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        value = m.group(kind)
        if kind == "other" and value == "'":
            raise ValueError(f"{_OPTIONS} has an unterminated quoted string: {text!r}")
        if kind == "word":
            value = value.upper()
        elif kind == "string":
            value = _unquote(value)
        tokens.append((kind, value))
    return tokens


@dataclass(frozen=True, slots=True)
class LoadFormat:
    """How the PostgreSQL load reads a staged object: the CopyOptions it honours.

    ``text`` is Redshift's default format (one record per line, fields split on ``delimiter``,
    backslashes are data); ``csv`` is PostgreSQL's CSV; ``json`` is Redshift's JSON 'auto'.
    """

    kind: Literal["text", "csv", "json"]
    delimiter: str = "|"
    quote: str = '"'
    null: str = "\\N"
    ignore_header: int = 0
    gzip: bool = False


def _skip_as(tokens: list[Token], i: int) -> int:
    return i + 1 if tokens[i:i + 1] == [("word", "AS")] else i


def _options(tokens: list[Token]) -> dict[str, str]:
    """{OPTION: argument} ('' for flags); ValueError for an option the PostgreSQL load cannot honour."""
    given: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        kind, word = tokens[i]
        i += 1
        if kind != "word":
            raise ValueError(f"{_OPTIONS}: unexpected {word!r}")
        if word == "FORMAT":  # FORMAT [AS] CSV | JSON '...': the format's own word follows
            i = _skip_as(tokens, i)
            continue
        if word in given:
            raise ValueError(f"{_OPTIONS}: {word} is given twice")
        if word in _FLAGS:
            given[word] = ""
            continue
        if word not in _ARGUMENTS:
            raise ValueError(f"{_OPTIONS}: {word} cannot be honoured when loading into PostgreSQL (the "
                             f"daemon reads the staged object itself); supported: {SUPPORTED_OPTIONS}")
        i = _skip_as(tokens, i)
        if i >= len(tokens) or tokens[i][0] != _ARGUMENTS[word]:
            wanted = "a quoted string" if _ARGUMENTS[word] == "string" else "a number"
            raise ValueError(f"{_OPTIONS}: {word} needs {wanted}")
        given[word] = tokens[i][1]
        i += 1
    return given


def load_format(copy_options: str | None) -> LoadFormat:
    """Translate CopyOptions for a PostgreSQL load; ValueError for anything it cannot honour.

    REGION is accepted and has no effect (the batch's bytes are at hand); TIMEFORMAT and
    DATEFORMAT are accepted only as 'auto', which PostgreSQL's own input parsing stands for.
    """
    given = _options(_tokens(copy_options or ""))
    for word in ("TIMEFORMAT", "DATEFORMAT"):
        if given.get(word, "auto").lower() != "auto":
            raise ValueError(f"{_OPTIONS}: only {word} 'auto' can be honoured when loading into "
                             f"PostgreSQL, not {given[word]!r}")
    gz = "GZIP" in given
    if "JSON" in given:
        if "CSV" in given:
            raise ValueError(f"{_OPTIONS}: CSV and JSON are two data formats; choose one")
        if given["JSON"].lower() not in ("auto", "auto ignorecase"):
            raise ValueError(f"{_OPTIONS}: JSON {given['JSON']!r} cannot be honoured when loading into "
                             "PostgreSQL; only JSON 'auto' and 'auto ignorecase' (no JSONPaths files)")
        delimited = [w for w in _DELIMITED_ONLY if w in given]
        if delimited:
            raise ValueError(f"{_OPTIONS}: {delimited[0]} applies to delimited text, not JSON")
        return LoadFormat("json", gzip=gz)
    csv = "CSV" in given
    if "QUOTE" in given and not csv:
        raise ValueError(f"{_OPTIONS}: QUOTE needs CSV")
    fmt = LoadFormat("csv" if csv else "text", delimiter=given.get("DELIMITER", "," if csv else "|"),
                     quote=given.get("QUOTE", '"'), null=given.get("NULL", "" if csv else "\\N"),
                     ignore_header=int(given.get("IGNOREHEADER", "0")), gzip=gz)
    for name, value in (("DELIMITER", fmt.delimiter), ("QUOTE", fmt.quote)):
        if len(value.encode()) != 1:
            raise ValueError(f"{_OPTIONS}: {name} must be a single-byte character, not {value!r}")
    if csv and fmt.delimiter == fmt.quote:
        raise ValueError(f"{_OPTIONS}: DELIMITER and QUOTE must differ")
    return fmt


def check_compression(copy_options: str | None, compression: str) -> None:
    """GZIP in CopyOptions must match a GZIP ``S3Configuration.CompressionFormat`` (both modes):
    COPY reads the staged objects as they are."""
    gzip_option = ("word", "GZIP") in _tokens(copy_options or "")
    if compression == "GZIP" and not gzip_option:
        raise ValueError(f"{_OPTIONS} must include GZIP: S3Configuration.CompressionFormat is GZIP, and "
                         "COPY reads the staged objects as they are")
    if gzip_option and compression != "GZIP":
        raise ValueError(f"{_OPTIONS} has GZIP but S3Configuration.CompressionFormat is "
                         f"{compression}: the staged objects are not compressed")
