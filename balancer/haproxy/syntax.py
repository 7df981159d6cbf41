"""How a value is written as an argument in haproxy.cfg: durations and file paths."""

from __future__ import annotations

from pathlib import Path

from balancer.config.basics import ClusterConfigError


def duration(seconds: float) -> str:
    """An HAProxy time value: whole seconds as ``Ns``, anything else in milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def config_path_arg(path: Path) -> str:
    """An absolute file path as one double-quoted config argument."""
    text = str(path.resolve())
    if '"' in text or "\\" in text:
        raise ClusterConfigError(f"{text}: file paths in haproxy.cfg must not contain quotes or backslashes")
    return f'"{text}"'
