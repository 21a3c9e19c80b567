"""The transform functions the repository ships in ``transforms/``, loaded as the daemon's workers load them."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

from tests.support.repo import REPO

TRANSFORMS_DIR = REPO / "transforms"


def load(name: str) -> ModuleType:
    """``transforms/{name}.py`` as a module (not imported by name: ``transforms/`` is no package)."""
    spec = importlib.util.spec_from_file_location(name, TRANSFORMS_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_function(directory: Path, name: str, body: str) -> None:
    """A transform function ``name`` (Python source ``body``, dedented) in a transforms directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def verdicts(ok_data: str) -> str:
    """A Lambda handler's source that answers by prefix, as Firehose's contract allows: ``drop...`` is
    Dropped, ``fail...`` ProcessingFailed (data unchanged), anything else Ok with ``ok_data``, a Python
    expression over ``data`` (the record's bytes) and ``r`` (the event's record)."""
    return f"""
    import base64, json

    def lambda_handler(event, context):
        out = []
        for r in event["records"]:
            data = base64.b64decode(r["data"])
            if data.startswith(b"drop"):
                out.append({{"recordId": r["recordId"], "result": "Dropped", "data": ""}})
            elif data.startswith(b"fail"):
                out.append({{"recordId": r["recordId"], "result": "ProcessingFailed", "data": r["data"]}})
            else:
                out.append({{"recordId": r["recordId"], "result": "Ok",
                            "data": base64.b64encode({ok_data}).decode()}})
        return {{"records": out}}
"""
