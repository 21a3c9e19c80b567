"""The transform functions the repository ships in ``transforms/``, loaded as the daemon's workers load them."""

from __future__ import annotations

import importlib.util
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
