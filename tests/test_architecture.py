"""The folder layout is the architecture: the import contracts in pyproject.toml must hold, and the tests
and benchmarks share code only through ``tests.support``."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.repo import REPO

SUPPORT = "tests.support"


def test_import_contracts_hold() -> None:
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), "import-linter is a test dependency"
    out = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    contracts = (REPO / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert f"{contracts} kept, 0 broken" in out.stdout


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module ``source`` (the text of ``module``) imports, at any depth, relative imports resolved.

    ``from a import b`` yields ``a.b`` as well as ``a``: ``b`` may be a module of package ``a``.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x: level 1 is this package, each further dot one up
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = str(node.module)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def forbidden_test_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The modules of ``tests`` that ``module`` may not import: a conftest (pytest finds fixtures; nothing
    imports them) and any module of ``tests`` outside ``tests.support``."""
    bad = set()
    for name in imported_modules(source, module, is_package):
        if name.split(".")[-1] == "conftest":
            bad.add(name)
        elif name.startswith("tests.") and not (name == SUPPORT or name.startswith(SUPPORT + ".")):
            bad.add(name)
    return sorted(bad)


def _module(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def test_tests_and_benchmarks_share_code_only_through_tests_support() -> None:
    """No test module imports another or a conftest; ``bench/`` imports nothing of the tests but
    ``tests.support``; and ``tests.support`` imports nothing of the tests outside itself."""
    broken = {}
    for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]):
        module, is_package = _module(path)
        if bad := forbidden_test_imports(path.read_text(), module, is_package):
            broken[module] = bad
    assert broken == {}


def test_the_import_check_sees_what_it_forbids() -> None:
    """The check above is not vacuous: it catches each kind of import it forbids, however spelt."""
    module = "tests.pipeline.test_x"
    assert forbidden_test_imports("from tests.conftest import free_port", module) == ["tests.conftest",
                                                                                      "tests.conftest.free_port"]
    assert forbidden_test_imports("def f():\n    from tests.agent import test_delivery", module) == [
        "tests.agent", "tests.agent.test_delivery"]
    assert forbidden_test_imports("import tests.streams.test_wire", module) == ["tests.streams.test_wire"]
    assert forbidden_test_imports("from ..agent.conftest import flow", module) == [
        "tests.agent.conftest", "tests.agent.conftest.flow"]
    assert forbidden_test_imports("from .helpers import x", "bench.destinations") == []
    assert forbidden_test_imports("from tests.support.daemon import RunningDaemon", module) == []
    assert forbidden_test_imports("from tests.support import daemon", "bench.destinations") == []
    assert forbidden_test_imports("from tests.test_processing import x", "tests.support.daemon") == [
        "tests.test_processing", "tests.test_processing.x"]
