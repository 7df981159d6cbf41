"""What a dead keepalived leaves behind (``balancer.multihost.keepalived_leftovers``), and when the sidecar calls
keepalived ready: real processes, no namespaces. The floating address itself leaving a crashed holder, and a
first restart that works, are ``tests/test_pair_restart.py`` (``-m hosts``, root).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from balancer.config.loading import parse_cluster
from balancer.multihost.keepalived import KeepalivedChild
from balancer.multihost.keepalived_leftovers import Leftovers, running_in_group
from bench.harness.waiting import wait_until
from tests.test_keepalived import example

NOT_HERE = ("192.0.2.1", 32, "lo")
"""A documentation address (RFC 5737), never on this host's loopback: clearing it changes nothing here."""


def leftovers(tmp_path: Path) -> Leftovers:
    return Leftovers(*NOT_HERE, (tmp_path / "keepalived.pid", tmp_path / "keepalived-vrrp.pid"))


@pytest.fixture
def sleepers(tmp_path: Path):
    """Start ``sleep`` processes (optionally under another program name); all killed afterwards."""
    started: list[subprocess.Popen] = []

    def start(name: str = "sleep", new_session: bool = False) -> subprocess.Popen:
        program = shutil.which("sleep")
        assert program is not None
        if name != "sleep":
            program = shutil.copy(program, tmp_path / name)
        started.append(subprocess.Popen([program, "30"], start_new_session=new_session))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_pid_files_naming_no_running_keepalived_are_removed_and_a_running_ones_is_kept(tmp_path: Path,
                                                                                         sleepers) -> None:
    gone = sleepers()
    gone.kill()
    gone.wait()
    zombie = sleepers("keepalived")
    zombie.send_signal(signal.SIGKILL)  # not waited for: a zombie, as a SIGKILLed VRRP child is until reaped
    wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, "a zombie keepalived", 5)
    reused = sleepers()  # a PID another program holds now
    running = sleepers("keepalived")  # a keepalived (by name) that runs
    files = {name: tmp_path / f"{name}.pid" for name in ("gone", "zombie", "reused", "garbage", "running")}
    for name, proc in (("gone", gone), ("zombie", zombie), ("reused", reused), ("running", running)):
        files[name].write_text(f"{proc.pid}\n")
    files["garbage"].write_text("not a pid\n")
    Leftovers(*NOT_HERE, tuple(files.values())).clear(None)
    assert sorted(path.name for path in tmp_path.glob("*.pid")) == ["running.pid"]


def test_the_last_keepalived_process_group_ends_and_no_other(sleepers, tmp_path: Path) -> None:
    leader = sleepers(new_session=True)
    group = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    other = sleepers(new_session=True)
    try:
        wait_until(lambda: len(running_in_group(group.pid)) == 3, "the shell and its two sleeps running", 5)
        leftovers(tmp_path).clear(group.pid)
        assert running_in_group(group.pid) == []
        assert group.wait(timeout=5) == -signal.SIGKILL
        assert leader.poll() is None and other.poll() is None
    finally:
        group.kill()
        group.wait()


def test_keepalived_is_ready_only_once_it_said_its_vrrp_state(tmp_path: Path) -> None:
    spec = parse_cluster({**example(), "run_dir": str(tmp_path)})
    child = KeepalivedChild(spec, tmp_path / "keepalived.conf")
    child.command = [shutil.which("sleep") or "sleep", "30"]  # a process that runs and says nothing, like a
    child.leftovers = leftovers(tmp_path)  # keepalived before its first notify; no address of this host touched
    child.state_path.write_text("MASTER\n")  # the last run's word

    async def probes() -> list[bool]:
        answers = []
        await child.start()
        try:
            answers.append((await child.probe()).ok)
            for state in ("BACKUP", "FAULT", "STOP", "MASTER"):
                child.state_path.write_text(f"{state}\n")
                answers.append((await child.probe()).ok)
        finally:
            await child.kill()
        return answers

    assert asyncio.run(probes()) == [False, True, True, False, True]
