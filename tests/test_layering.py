"""Dependencies between the project's packages point one way.

The node (``webui``) is the contract the balancer (``balancer``, ``launch.py``) builds on; the
benchmarks' harness serves the tests. So ``webui`` imports none of ``balancer``, ``launch``,
``bench``, ``tests``; ``balancer`` none of ``launch``, ``bench``, ``tests``; ``bench`` not
``tests``; ``tests`` may import anything. Checked with ``ast`` over every import statement,
function-local ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.harness.processes import REPO

FORBIDDEN: dict[str, set[str]] = {
    "webui": {"balancer", "launch", "bench", "tests"},
    "balancer": {"launch", "bench", "tests"},
    "bench": {"tests"},
}
"""Package -> the project packages it must not import."""


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of ``package``.

    ``from a import b`` counts as ``a.b`` (``b`` may be a module); relative imports are resolved.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            target = ".".join(filter(None, [*base, node.module or ""]))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def violations(package: str) -> list[str]:
    """``file:line imports module`` for each import that ``package`` must not make."""
    found = []
    paths = sorted((REPO / package).rglob("*.py"))
    assert paths, f"no Python files under {package}/"
    for path in paths:
        name = module_name(path)
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, module in imported_modules(path.read_text(encoding="utf-8"), own_package):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    found = violations(package)
    assert not found, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(found)


def test_the_checker_sees_every_kind_of_import() -> None:
    source = ("import os, tests.helpers\nfrom balancer import haproxy\n"
              "def f():\n    from tests.fake_node import main\n    from . import report\n"
              "    from ..report import fmt_ms\n")
    assert sorted(module for _, module in imported_modules(source, "bench.harness")) == [
        "balancer.haproxy", "bench.harness.report", "bench.report.fmt_ms", "os", "tests.fake_node.main",
        "tests.helpers"]
