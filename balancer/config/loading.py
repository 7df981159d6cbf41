"""Reading a cluster description: from YAML (``load_cluster_file``), validated into a ``ClusterSpec``
(``parse_cluster``, one line per problem), and the local nodes ``launch.py`` describes (``local_nodes``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from webui.settings import WebSettings, WorkerSettings


def validation_message(exc: ValidationError) -> str:
    """One line per problem, each naming the field: ``nodes.0.web.port: ...``."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "cluster"
        lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


def parse_cluster(data: dict) -> ClusterSpec:
    """Validate a cluster description given as plain data (e.g. parsed YAML)."""
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise ClusterConfigError(validation_message(exc)) from None


def load_cluster_file(path: Path) -> dict:
    """Read a cluster YAML file into plain data (validated later, after overrides)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterConfigError(f"cannot read cluster file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"cluster file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClusterConfigError(f"cluster file {path}: expected a mapping at the top level")
    return data


DISPATCH_AGENT_PORT_OFFSET = 1000
"""A local worker's dispatch agent listens this far above its own port (7960 -> 8960), or below it where above
is past the last port (65000 -> 64000)."""


def dispatch_agent_port(worker_port: int) -> int:
    """The dispatch agent's port of a local worker on ``worker_port`` (``DISPATCH_AGENT_PORT_OFFSET``)."""
    above = worker_port + DISPATCH_AGENT_PORT_OFFSET
    return above if above <= 65535 else worker_port - DISPATCH_AGENT_PORT_OFFSET


def local_nodes(
    count: int,
    *,
    first_web_port: int = WebSettings.model_fields["port"].default,
    first_worker_port: int = WorkerSettings.model_fields["port"].default,
    worker_args: list[str] | None = None,
    web_args: list[str] | None = None,
    name_prefix: str = "node",
    gpus: Sequence[int | None] = (),
    standby: bool = False,
) -> list[dict]:
    """Descriptions of ``count`` managed nodes on this host, ports counting up from the firsts;
    node ``i``'s worker on GPU ``gpus[i]`` (none given, or None: no GPU of its own); ``standby``:
    each worker with a warm standby."""
    nodes = []
    for index in range(count):
        worker = {"port": first_worker_port + index,
                  "dispatch_agent_port": dispatch_agent_port(first_worker_port + index),
                  "args": list(worker_args or [])}
        if standby:
            worker["standby"] = True
        if index < len(gpus) and gpus[index] is not None:
            worker["gpu"] = gpus[index]
        nodes.append({
            "name": f"{name_prefix}{index + 1}",
            "managed": True,
            "web": {"port": first_web_port + index, "args": list(web_args or [])},
            "worker": worker,
        })
    return nodes
