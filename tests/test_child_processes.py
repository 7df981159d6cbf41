"""The sidecar's child processes (``balancer.supervision.children.CommandProcess``) find the project's packages
from wherever launch.py was started: an operator who runs ``python /opt/portrait-ha/launch.py`` from their home
directory gets parts that start, not ``ModuleNotFoundError: No module named 'webui'`` on every restart."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from balancer.supervision.children import PROJECT_ROOT, CommandProcess


def run_child(command: list[str], env: dict[str, str], log: Path) -> int:
    async def run() -> int:
        child = CommandProcess("probe", command, env, log, stop_grace=5)
        await child.start()
        return await asyncio.wait_for(child.wait(), timeout=60)

    return asyncio.run(run())


def test_a_part_started_outside_the_checkout_imports_the_project(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    log = tmp_path / "child.log"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/nonexistent/site"}  # an operator's own path stays after ours
    code = "import os, sys, webui.contract; print(os.getcwd(), *sys.path[1:3])"
    assert run_child([sys.executable, "-c", code], env, log) == 0, log.read_text()
    cwd, *paths = log.read_text().split()[-3:]
    assert cwd == str(elsewhere)  # relative paths in settings still mean the launch directory
    assert paths == [str(PROJECT_ROOT), "/nonexistent/site"]
