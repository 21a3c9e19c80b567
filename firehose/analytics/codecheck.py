"""The application code check: does the SQL compile against the application's inputs and reference tables?

CreateApplication, UpdateApplication, AddApplicationInput and
AddApplicationReferenceDataSource run it; a ``CodeError`` of the SQL
compiler (``firehose.analytics.sql``) becomes CodeValidationException with
the compiler's message, which names the construct and its line. The
compiler sees the in-application input streams (``<NamePrefix>_001`` ...,
one per unit of parallelism, columns from ``RecordColumns``) and the
reference tables (``TableName``, columns from ``ReferenceSchema``), never
ROWTIME or APPROXIMATE_ARRIVAL_TIME, which it adds itself.

Empty code (or none) is not checked: an application may be created before
its SQL is written, as on AWS. While the SQL compiler is not installed in
this build the check is skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from firehose.analytics.applications import Application, Body, in_app_stream_names
from firehose.analytics.errors import CodeValidationException
from firehose.analytics.sqltypes import Column, StreamSchema, parse_sql_type

_SQL_PACKAGE = "firehose.analytics.sql"
#: compile_program and CodeError, once imported (None: the compiler is not part of this build).
_compiler: tuple[Callable[..., Any], type[Exception]] | None | bool = False


def _load_compiler() -> tuple[Callable[..., Any], type[Exception]] | None:
    global _compiler
    if _compiler is False:
        try:
            module = importlib.import_module(_SQL_PACKAGE)
        except ModuleNotFoundError as exc:
            if exc.name != _SQL_PACKAGE:  # the compiler is there but broken: say so
                raise
            _compiler = None
        else:
            _compiler = (module.compile_program, module.CodeError)
    return _compiler if _compiler is not False else None  # type: ignore[return-value]


def _columns(schema: Body) -> tuple[Column, ...]:
    return tuple(Column(c["Name"], parse_sql_type(c["SqlType"])) for c in schema["RecordColumns"])


def input_schemas(app: Application) -> list[StreamSchema]:
    """The in-application input streams of ``app``, in order."""
    out: list[StreamSchema] = []
    for config in app.inputs:
        columns = _columns(config["InputSchema"])
        out.extend(StreamSchema(name, columns) for name in in_app_stream_names(config))
    return out


def reference_schemas(app: Application) -> list[StreamSchema]:
    return [StreamSchema(r["TableName"], _columns(r["ReferenceSchema"])) for r in app.references]


def check_code(app: Application) -> None:
    """CodeValidationException when ``app``'s code does not compile against its inputs and references."""
    if not app.code or not app.code.strip():
        return
    compiler = _load_compiler()
    if compiler is None:
        return
    compile_program, code_error = compiler
    inputs: Sequence[StreamSchema] = input_schemas(app)
    try:
        compile_program(app.code, inputs, reference_schemas(app))
    except code_error as exc:
        raise CodeValidationException(str(exc)) from None
