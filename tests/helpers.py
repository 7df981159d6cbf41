"""Test-only helpers: demo images compared across code paths, pixel-bomb images, peak memory.

What the benchmarks use too is in ``bench.harness``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
from PIL import Image

from webui.schema import GenerationRequest

if TYPE_CHECKING:
    from webui.worker.pipelines.diffusers import PortraitPipeline


def blank_png(path: Path, width: int, height: int) -> Path:
    """Write a black greyscale PNG of ``width`` x ``height``: a pixel bomb of a few hundred KB at most."""
    Image.new("L", (width, height)).save(path, optimize=True)
    return path


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset a process's peak resident memory (Linux ``clear_refs``); return its resident bytes now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return psutil.Process(None if pid == "self" else int(pid)).memory_info().rss


def peak_rss(pid: int | str = "self") -> int:
    """A process's peak resident memory in bytes since it started or since ``reset_peak_rss``."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024


def generate(pipe: PortraitPipeline, **fields) -> np.ndarray:
    """One small, few-step demo image (seed 5 unless ``fields`` say otherwise) as an array."""
    fields = {"prompt": "a portrait in soft light", "steps": 3, "width": 128, "height": 128, "seed": 5, **fields}
    request = GenerationRequest(**fields)
    return np.asarray(pipe.generate(pipe.effective_params(request, seed=request.seed))[0])


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """The same picture by two code paths: float rounding may differ by CPU (one pixel of 49152 was off
    by 1 on an AMD EPYC), so allow off-by-one-or-two values in at most 0.1 % of them. One path with one
    seed is bit-exact: ``tests/test_pipeline.py`` checks that."""
    difference = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape and difference.max() <= 2 and (difference > 0).mean() <= 0.001


def record_figures(artifact: Path, name: str, figures: dict) -> None:
    """Add measured figures under ``name`` to a test artifact (JSON): reported, not asserted."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(artifact.read_text()) if artifact.exists() else {}
    data[name] = figures
    artifact.write_text(json.dumps(data, indent=2))


def write_section(path: Path, markdown: str) -> None:
    """Put ``markdown`` (a heading, then text without headings) into ``path`` in place of the section with the
    same heading line (up to the next heading of any level), else at its end: other tests' sections are kept."""
    heading = markdown.split("\n", 1)[0]
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    else:
        start = end = len(lines)
    kept_before, kept_after = lines[:start], lines[end:]
    parts = ["\n".join(kept_before).rstrip("\n"), markdown.strip("\n"), "\n".join(kept_after).strip("\n")]
    path.write_text("\n\n".join(part for part in parts if part) + "\n", encoding="utf-8")


class FakeClock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def unquotable_checkout() -> str | None:
    """Why keepalived cannot run this checkout's scripts (its path holds a quote or a backslash, which keepalived
    cannot escape: launch.py refuses such an install in words, ``test_keepalived``'s refusal test), else None."""
    from bench.harness.processes import REPO

    if any(char in str(REPO) for char in "'\"\\"):
        return f"keepalived cannot quote this checkout's path ({REPO}): install under a plainer path"
    return None


def node_server_lines(config: str) -> list[str]:
    """The ``server`` lines of a rendered haproxy.cfg that name node parts: every backend's but the jobs
    service's, and the workers' backup (the same loopback process of the balancer itself: no agent, no TLS)."""
    from balancer.haproxy.names import HOLDING_SERVER, JOBS_BACKEND

    lines, backend = [], None
    for line in config.splitlines():
        if line.startswith(("backend ", "frontend ", "listen ", "defaults", "global", "userlist ", "peers ")):
            backend = line.split()[1] if line.startswith("backend ") else None
        elif line.startswith("    server ") and backend != JOBS_BACKEND and line.split()[1] != HOLDING_SERVER:
            lines.append(line)
    return lines
