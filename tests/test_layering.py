"""Dependencies between the project's packages, and between the balancer's rooms, point one way.

The node (``webui``) is the contract the jobs package (``jobs``) and the balancer (``balancer``,
``launch.py``) build on; the benchmarks' harness serves the tests. So ``webui`` imports none of
``jobs``, ``balancer``, ``launch``, ``bench``, ``tests``; ``jobs`` none of ``balancer``, ``launch``,
``bench``, ``tests``; ``balancer`` (which runs the jobs service) none of ``launch``, ``bench``, ``tests``; ``bench``
not ``tests``; ``tests`` may import anything. Inside ``balancer`` and ``jobs`` each room (subpackage or
top-level module) imports only the rooms below it (``BALANCER_ROOMS``, ``JOBS_ROOMS``), and no modules
of ``webui``, ``jobs``, ``balancer`` or ``bench`` import each other in a circle. Checked with ``ast`` over every
import statement, function-local and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.harness.processes import REPO

FORBIDDEN: dict[str, set[str]] = {
    "webui": {"jobs", "balancer", "launch", "bench", "tests"},
    "jobs": {"balancer", "launch", "bench", "tests"},
    "balancer": {"launch", "bench", "tests"},
    "bench": {"tests"},
}
"""Package -> the project packages it must not import."""

BALANCER_ROOMS: tuple[set[str], ...] = (
    {"config"},       # the cluster description: models, loading, launch settings, GPUs
    {"system"},       # this host's OS: the private run directory, children that die with their parent
    {"haproxy"},      # haproxy.cfg, the HAProxy process, its runtime API, the gate, the agent protocol
    {"supervision"},  # the restart loop, children, part state, causes, hang, standbys
    {"multihost"},    # host agent, keepalived, certificates, the parts' mutual TLS
    {"operations"},   # rolling restart, node changes, traffic counts
    {"api"},          # the sidecar's HTTP API and metrics
    {"deploy", "cli"},  # Kubernetes manifests; the operator's command line (neither imports the other)
    {"sidecar"},      # the composition root (balancer/sidecar.py)
)
"""The balancer's rooms, lowest first: a room imports only its own and lower rows' rooms."""

JOBS_ROOMS: tuple[set[str], ...] = (
    {"contract", "errors", "secret_file"},  # shared values; domain errors; secrets kept in files (apart)
    {"store"},               # the durable store: tables, engine, migrations, the repository functions
    {"account_metrics"},     # usage per account (jobs, images, GPU seconds, refusals) for the metrics
    {"metrics"},             # the service's Prometheus metrics (counted by runs, read from the store)
    {"webhooks"},            # signing and target checks; delivery from the store's queue
    {"running"},             # a held job on the workers' queue to its outcome: the dispatcher's and /generate's
    {"dispatch", "api", "janitor", "relay"},  # to the workers; the /v1/jobs API; retention; streams (apart)
    {"settings"},            # python -m jobs's flags
    {"service", "accounts_cli", "listeners"},  # the composition root; the accounts commands; its listeners
    {"__main__"},            # python -m jobs
)
"""The jobs package's rooms, lowest first: a room imports only its own and lower rows' rooms."""

CIRCLE_SCOPE = ("webui", "jobs", "balancer", "bench")
"""Packages whose modules must not import each other in a circle."""


def module_name(path: Path, root: Path = REPO) -> str:
    """Dotted module name of a file under ``root`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
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


def imports_of(packages: tuple[str, ...], root: Path = REPO) -> dict[str, list[tuple[Path, int, str]]]:
    """Module -> (file, line, imported module) of each of its imports, for every module under ``packages``."""
    found: dict[str, list[tuple[Path, int, str]]] = {}
    for package in packages:
        paths = sorted((root / package).rglob("*.py"))
        assert paths, f"no Python files under {package}/"
        for path in paths:
            name = module_name(path, root)
            own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            found[name] = [(path, line, module)
                           for line, module in imported_modules(path.read_text(encoding="utf-8"), own_package)]
    return found


def violations(package: str) -> list[str]:
    """``file:line imports module`` for each import that ``package`` must not make."""
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for imports in imports_of((package,)).values() for path, line, module in imports
            if module.split(".")[0] in FORBIDDEN[package]]


def room_of(module: str, package: str) -> str | None:
    """The room of ``package``'s ``module``: its subpackage, or a top-level module's own name; None for others."""
    parts = module.split(".")
    return parts[1] if parts[0] == package and len(parts) > 1 else None


def upward_imports(package: str, rooms: tuple[set[str], ...], root: Path = REPO) -> list[str]:
    """``file:line imports module (room A may not import room B)`` for each import out of order among ``rooms``;
    a room that ``rooms`` does not name is an error of its own (every room must have its place)."""
    rank = {room: index for index, row in enumerate(rooms) for room in row}
    found: list[str] = []
    for module, imports in imports_of((package,), root).items():
        room = room_of(module, package)
        if room is None:
            continue
        if room not in rank:
            found += [f"{package}.{room}: a room with no place in the order"] * (module == f"{package}.{room}")
            continue
        for path, line, target in imports:
            other = room_of(target, package)
            if other in rank and rank[other] >= rank[room] and other != room:
                found.append(f"{path.relative_to(root)}:{line} imports {target} ({room} may not import {other})")
    return found


def import_graph(packages: tuple[str, ...], root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b``: module ``a.b`` if there is one, else ``a``)."""
    imports = imports_of(packages, root)
    graph: dict[str, set[str]] = {}
    for module, found in imports.items():
        targets = set()
        for _, _, target in found:
            parts = target.split(".")
            known = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in imports),
                         None)
            if known is not None and known != module:
                targets.add(known)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The modules that import each other in a circle: each strongly connected group of two or more (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while not group or module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    found = violations(package)
    assert not found, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(found)


def test_balancer_rooms_import_only_lower_rooms() -> None:
    found = upward_imports("balancer", BALANCER_ROOMS)
    assert not found, "balancer's rooms import downwards only (tests/test_layering.py BALANCER_ROOMS):\n" + "\n".join(
        found)


def test_jobs_rooms_import_only_lower_rooms() -> None:
    found = upward_imports("jobs", JOBS_ROOMS)
    assert not found, "jobs' rooms import downwards only (tests/test_layering.py JOBS_ROOMS):\n" + "\n".join(found)


def test_no_modules_import_each_other_in_a_circle() -> None:
    found = circles(import_graph(CIRCLE_SCOPE))
    assert not found, "modules that import each other in a circle:\n" + "\n".join(
        ", ".join(sorted(group)) for group in found)


def test_the_checker_sees_every_kind_of_import() -> None:
    source = ("import os, tests.helpers\nfrom balancer import haproxy\n"
              "def f():\n    from tests.fake_node import main\n    from . import report\n"
              "    from ..report import fmt_ms\n")
    assert sorted(module for _, module in imported_modules(source, "bench.harness")) == [
        "balancer.haproxy", "bench.harness.report", "bench.report.fmt_ms", "os", "tests.fake_node.main",
        "tests.helpers"]


def write_package(root: Path, files: dict[str, str]) -> None:
    """Python files (relative path -> source) under ``root``, each package with its ``__init__.py``."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
        path.write_text(source, encoding="utf-8")


def test_the_checker_catches_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """A made-up package with a low room that imports a high one, and two modules that import each other only
    behind ``TYPE_CHECKING`` and inside a function: both are reported; its clean twin is not."""
    write_package(tmp_path, {
        "shop/low/prices.py": "from shop.high.orders import Order\n",
        "shop/high/orders.py": "from shop.low import prices\nclass Order: ...\n",
        "shop/high/stock.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from shop.high.basket import Basket\n"),
        "shop/high/basket.py": "def count():\n    from .stock import TYPE_CHECKING\nclass Basket: ...\n",
        "tidy/low/prices.py": "PRICE = 1\n",
        "tidy/high/orders.py": "from tidy.low.prices import PRICE\n",
    })
    rooms = ({"low"}, {"high"})
    assert upward_imports("shop", rooms, tmp_path) == [
        "shop/low/prices.py:1 imports shop.high.orders.Order (low may not import high)"]
    assert sorted(map(sorted, circles(import_graph(("shop",), tmp_path)))) == [
        ["shop.high.basket", "shop.high.stock"], ["shop.high.orders", "shop.low.prices"]]
    assert upward_imports("tidy", rooms, tmp_path) == []
    assert circles(import_graph(("tidy",), tmp_path)) == []
    assert upward_imports("tidy", ({"high"},), tmp_path) == ["tidy.low: a room with no place in the order"]
