"""The run directory and the files in it: private (0700/0600), ours, never written through a link.

Real directories, files, symlinks and processes (launch.py, the sidecar and stand-in parts).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from balancer.config.basics import ClusterConfigError
from balancer.haproxy.process import write_config
from balancer.system.run_dir import SUBDIRS, open_private_log, prepare_run_dir
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_until

OTHER_UID = 12345


def mode(path: Path) -> int:
    """Permission bits of ``path`` itself (a symlink's own, not its target's)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree(root: Path) -> dict[Path, tuple[int, int]]:
    """Mode and owner of everything under ``root``, symlinks not followed."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            info = os.lstat(Path(folder, name))
            found[Path(folder, name)] = (info.st_mode, info.st_uid)
    return found


def test_a_fresh_run_dir_and_its_subdirectories_are_created_0700(tmp_path: Path) -> None:
    run_dir = tmp_path / "parent" / "run"
    old_umask = os.umask(0o022)  # what a careless caller would have
    try:
        assert prepare_run_dir(run_dir) == run_dir
    finally:
        os.umask(old_umask)
    for path in (run_dir, *(run_dir / name for name in SUBDIRS)):
        assert path.is_dir() and mode(path) == 0o700
    assert prepare_run_dir(run_dir) == run_dir  # an existing private one is fine


def _symlink(run_dir: Path) -> None:
    (run_dir.parent / "elsewhere").mkdir(mode=0o700)
    run_dir.symlink_to(run_dir.parent / "elsewhere")


def _file(run_dir: Path) -> None:
    run_dir.write_text("not a directory")


def _other_owner(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, OTHER_UID, -1)


def _open_to_others(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    os.chmod(run_dir, 0o755)


def _symlinked_logs(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    _symlink(run_dir / "logs")


def _world_writable_gradio(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    (run_dir / "gradio").mkdir()
    os.chmod(run_dir / "gradio", 0o777)


@pytest.mark.parametrize(
    ("make_unsafe", "problem"),
    [
        (_symlink, "is a symbolic link"),
        (_file, "is not a directory"),
        pytest.param(_other_owner, f"is owned by uid {OTHER_UID}", marks=pytest.mark.skipif(
            os.getuid() != 0, reason="giving a directory to another user needs root")),
        (_open_to_others, "has mode 0755, open to other users"),
        (_symlinked_logs, "is a symbolic link"),
        (_world_writable_gradio, "has mode 0777"),
    ],
)
def test_an_unsafe_run_dir_is_refused_and_left_alone(
    tmp_path: Path, make_unsafe: Callable[[Path], None], problem: str
) -> None:
    run_dir = tmp_path / "run"
    make_unsafe(run_dir)
    before = tree(tmp_path)
    with pytest.raises(ClusterConfigError, match=problem) as refused:
        prepare_run_dir(run_dir)
    assert "--run-dir" in str(refused.value)
    after = tree(tmp_path)
    assert {path: after.get(path) for path in before} == before  # nothing changed or followed
    assert all(path.parent == run_dir for path in after.keys() - before.keys())  # at most a subdir of ours


def test_write_config_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    run_dir = prepare_run_dir(tmp_path / "run")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    config = run_dir / "haproxy.cfg"
    config.symlink_to(victim)
    write_config("global\n    maxconn 10\n", config)
    assert victim.read_text() == "precious\n"
    assert not config.is_symlink() and config.read_text() == "global\n    maxconn 10\n"
    assert mode(config) == 0o600
    assert sorted(path.name for path in run_dir.iterdir()) == sorted(["haproxy.cfg", *SUBDIRS])  # no temp left


def test_a_log_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    run_dir = prepare_run_dir(tmp_path / "run")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run_dir / "logs" / "node1-worker.log").symlink_to(victim)
    with pytest.raises(OSError):
        open_private_log(run_dir / "logs" / "node1-worker.log")
    assert victim.read_text() == "precious\n"
    with open_private_log(run_dir / "logs" / "node1-web.log") as log:
        log.write(b"started\n")
    assert mode(run_dir / "logs" / "node1-web.log") == 0o600


# --- the entry points: umask, run dir checks, Gradio's temp dir --------------------------------

WRITES_FILES = """
import os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / "image.png").write_bytes(b"png")
(out / "cache").mkdir()
(out / "env.part").write_text(os.environ.get("GRADIO_TEMP_DIR", ""))
os.replace(out / "env.part", out / "env.txt")  # appears whole: the test waits for it
time.sleep(120)
"""


@pytest.fixture(scope="module")
def sidecar_outputs(tmp_path_factory: pytest.TempPathFactory):
    """A sidecar supervising stand-in parts that write files; yields (run dir, {part: its output dir})."""
    run_dir = tmp_path_factory.mktemp("sidecar-files")
    outputs = {part: run_dir / f"out-{part}" for part in ("web", "worker")}
    for path in outputs.values():
        path.mkdir()
    parts = {part: {"port": free_port(), "command": [sys.executable, "-c", WRITES_FILES, str(path)]}
             for part, path in outputs.items()}
    cluster_file = run_dir / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "run_dir": str(run_dir), "sidecar": {"port": free_port()}, "nodes": [{"name": "a", **parts}],
    }))
    with Processes("run-dir") as processes:
        sidecar = processes.start(["python", "-m", "balancer.sidecar", "--no-haproxy", "--cluster", str(cluster_file)],
                                  log_name="sidecar-files")
        for path in outputs.values():
            wait_until(lambda path=path: (path / "env.txt").exists() or sidecar.poll() is not None,
                       f"{path}/env.txt", 30)
        assert sidecar.poll() is None, sidecar.log_path.read_text()
        yield run_dir, outputs


def test_files_written_by_the_sidecars_children_are_private(sidecar_outputs: tuple[Path, dict[str, Path]]) -> None:
    run_dir, outputs = sidecar_outputs
    for out in outputs.values():
        assert mode(out / "image.png") == 0o600 and mode(out / "cache") == 0o700
    for part in ("web", "worker"):
        assert mode(run_dir / "logs" / f"a-{part}.log") == 0o600


def test_each_web_front_gets_a_private_gradio_temp_dir(sidecar_outputs: tuple[Path, dict[str, Path]]) -> None:
    run_dir, outputs = sidecar_outputs
    gradio_dir = run_dir / "gradio" / "a"
    assert (outputs["web"] / "env.txt").read_text() == str(gradio_dir)
    assert gradio_dir.is_dir() and mode(gradio_dir) == 0o700 and mode(run_dir / "gradio") == 0o700
    assert (outputs["worker"] / "env.txt").read_text() == ""  # a worker serves no Gradio files


@pytest.mark.parametrize("entry_point", ["launch", "sidecar"])
def test_entry_points_refuse_an_unsafe_run_dir(tmp_path: Path, processes: Processes, entry_point: str) -> None:
    run_dir = tmp_path / "run"
    _symlink(run_dir)
    if entry_point == "launch":
        command = ["python", "launch.py", "--nodes", "0", "--run-dir", str(run_dir),
                   "--port", str(free_port()), "--worker-queue-port", str(free_port()),
                   "--stats-port", str(free_port()), "--sidecar-port", str(free_port())]
    else:
        cluster_file = tmp_path / "cluster.yaml"
        cluster_file.write_text(yaml.safe_dump({"run_dir": str(run_dir), "sidecar": {"port": free_port()}}))
        command = ["python", "-m", "balancer.sidecar", "--no-haproxy", "--cluster", str(cluster_file)]
    proc = processes.start(command, log_name=f"unsafe-run-dir-{entry_point}")
    assert proc.wait(timeout=60) == 2
    assert f"error: unsafe run directory {run_dir}: it is a symbolic link" in proc.log_path.read_text()
    assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing written through the link
