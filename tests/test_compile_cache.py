"""One torch.compile cache per host: the sidecar hands every worker the same one, and a restart reuses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from balancer.config.cluster import ClusterSpec
from balancer.operations.parts import PartFactory
from balancer.supervision.state import PartStatus
from webui.settings_common import COMPILE_CACHE_ENV, default_compile_cache_dir
from webui.worker.compile_cache import use_compile_cache

PROJECT = Path(__file__).resolve().parent.parent


class _Registry:
    """The sidecar's metrics, reduced to what building a supervisor calls."""

    def register(self, status: PartStatus) -> None:
        pass


def test_every_worker_of_the_host_gets_the_same_compile_cache(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate({"run_dir": str(tmp_path / "run"), "nodes": [
        {"name": "a", "web": {"port": 9001}, "worker": {"port": 9002, "gpu": 0}},
        {"name": "b", "worker": {"port": 9003, "standby": True}},
    ]})
    cache = str(tmp_path / "compile")
    factory = PartFactory(spec, None, {COMPILE_CACHE_ENV: cache}, None, None, _Registry())
    envs = {}
    for node in spec.nodes:
        child = factory.node_part(node, "worker", node.worker).child
        envs[f"{node.name}/worker"] = child.env
        if node.worker.standby:
            envs[f"{node.name}/standby"] = child.standby.process.env
    assert {name: env.get(COMPILE_CACHE_ENV) for name, env in envs.items()} == {
        "a/worker": cache, "b/worker": cache, "b/standby": cache}
    # Without one in the sidecar's environment: the host's default, still one for all.
    node = spec.nodes[0]
    default = PartFactory(spec, None, {}, None, None, _Registry()).node_part(node, "worker", node.worker)
    assert default.child.env[COMPILE_CACHE_ENV] == str(default_compile_cache_dir())


def test_the_compile_cache_is_private_and_points_torch_into_it(tmp_path: Path) -> None:
    cache = tmp_path / "compile"
    environ = {"TRITON_CACHE_DIR": "/srv/triton"}  # an operator's explicit choice wins
    assert use_compile_cache(cache, environ) == {"TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}
    assert environ == {"TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": "/srv/triton"}
    assert cache.stat().st_mode & 0o777 == 0o700
    cache.chmod(0o755)
    use_compile_cache(cache, {})
    assert cache.stat().st_mode & 0o777 == 0o700


def _compile_once(env: dict[str, str], *args: str) -> dict:
    """A fresh process (a restarted worker) compiling the bench's tiny model; its JSON report."""
    done = subprocess.run([sys.executable, "-m", "bench.compile_probe", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.soak
def test_a_restarted_worker_reuses_what_the_first_compiled(tmp_path: Path) -> None:
    base = {key: value for key, value in os.environ.items()
            if key not in (COMPILE_CACHE_ENV, "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "PORTRAIT_CACHE_DIR")}

    def worker_env(name: str, **extra: str) -> dict[str, str]:
        fresh = tmp_path / name  # its own /tmp and home, as after a reboot or under systemd PrivateTmp
        (fresh / "tmp").mkdir(parents=True)
        return {**base, "TMPDIR": str(fresh / "tmp"), "HOME": str(fresh), **extra}

    shared = str(tmp_path / "compile")
    first = _compile_once(worker_env("first", **{COMPILE_CACHE_ENV: shared}))
    assert first["fxgraph_cache_miss"] >= 1 and first["fxgraph_cache_hit"] == 0
    assert any((tmp_path / "compile" / "inductor").rglob("*.so"))
    restarted = _compile_once(worker_env("restarted", **{COMPILE_CACHE_ENV: shared}))
    assert restarted["fxgraph_cache_hit"] >= 1 and restarted["fxgraph_cache_miss"] == 0
    # The control: without the worker's setting, a fresh /tmp means compiling from scratch again.
    control = _compile_once(worker_env("control"), "off")
    assert control["fxgraph_cache_hit"] == 0 and control["fxgraph_cache_miss"] >= 1
